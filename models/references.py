"""Reference matching (spec section 5): which customers to ask for a reference call with a prospect.

score = acceptance of `reference_call` x similarity to the prospect x load penalty. Similarity is a
weighted match of industry (0.4), segment (0.3) and use case (0.3): each attribute counts fully when
it is equal ignoring case and surrounding spaces, else not at all, so it lies in [0, 1]. The load
penalty 1 / (1 + n), with n the customer's reference-call asks in the last 90 days, spreads the load
so that the same favourite few are not asked again and again. Customers for whom a guardrail blocks
`reference_call`, whose acceptance is unknown, or who match nothing are not candidates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.catalog import SEGMENTS

SIMILARITY_WEIGHTS: dict[str, float] = {"industry": 0.4, "segment": 0.3, "use_case": 0.3}
MAX_K = 100
CUSTOMER_COLUMNS: tuple[str, ...] = ("customer_id", "name", "industry", "segment", "use_case")
REFERENCE_COLUMNS: tuple[str, ...] = (
    "customer_id",
    "name",
    "industry",
    "segment",
    "use_case",
    "acceptance",
    "similarity",
    "score",
    "recent_reference_calls",
    "matched",
)


def fold(value: str) -> str:
    """An attribute as customers are matched on it: surrounding spaces and case do not count."""
    return value.strip().casefold()


def folded(column: pd.Series) -> pd.Series:
    """`fold` of every value of a column of customer attributes (missing stays missing)."""
    return column.astype("str").str.strip().str.casefold()


def check_segment(value: str) -> None:
    """A misspelt segment would silently match nobody: refuse it, naming the ones there are."""
    if fold(value) not in SEGMENTS:
        raise ValueError(f"segment must be one of {', '.join(SEGMENTS)}, got {value!r}")


@dataclass(frozen=True)
class Prospect:
    """The prospect who wants to talk to a reference customer. An industry or use case left unknown
    (None: a deal whose table leaves it empty) matches no customer."""

    industry: str | None
    segment: str
    use_case: str | None

    def __post_init__(self) -> None:
        check_segment(self.segment)


def matches(prospect: Prospect, attr: str, column: pd.Series) -> np.ndarray:
    """Whether each value of a column of customer attribute `attr` equals the prospect's (`fold`ed;
    `folded` once per column by a caller that matches many prospects)."""
    value = getattr(prospect, attr)
    if value is None:
        return np.zeros(len(column), dtype=bool)
    return (column == fold(value)).fillna(False).to_numpy(dtype=bool)


def similarity(prospect: Prospect, customers: pd.DataFrame) -> tuple[np.ndarray, pd.DataFrame]:
    """Similarity in [0, 1] of each customer to the prospect, and which attributes matched (bool frame)."""
    matched = pd.DataFrame(
        {attr: matches(prospect, attr, folded(customers[attr])) for attr in SIMILARITY_WEIGHTS},
        index=customers.index,
    )
    weights = np.array(list(SIMILARITY_WEIGHTS.values()))
    # Rounded so that 0.4 + 0.3 shows as 0.7, not 0.7000000000000001.
    return np.round(matched.to_numpy(dtype=float) @ weights, 12), matched


def rank_references(
    prospect: Prospect,
    customers: pd.DataFrame,
    reference_acceptance: pd.Series,
    blocks: pd.DataFrame,
    recent_reference_calls: pd.Series,
    k: int = 10,
) -> pd.DataFrame:
    """The top `k` reference candidates for `prospect`, best first (ties by customer_id).

    `customers`: the active customers (customer_id, name, industry, segment, use_case).
    `reference_acceptance`: probability of accepting a `reference_call`, indexed by customer_id.
    `blocks`: output of `models.guardrails.blocked_asks`; a customer with any `reference_call` row is skipped.
    `recent_reference_calls`: reference-call asks in the last 90 days, indexed by customer_id (absent = 0).
    Returns the columns of `REFERENCE_COLUMNS`; `matched` lists the attributes equal to the prospect's.
    """
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 1 <= k <= MAX_K:
        raise ValueError(f"k must be an integer from 1 to {MAX_K}, got {k!r}")
    missing = [c for c in CUSTOMER_COLUMNS if c not in customers.columns]
    if missing:
        raise ValueError(f"customers: missing column(s) {', '.join(missing)}")

    frame = customers.loc[:, list(CUSTOMER_COLUMNS)].reset_index(drop=True)
    ids = frame["customer_id"].astype("str")
    sim, matched = similarity(prospect, frame)
    acceptance = pd.to_numeric(reference_acceptance, errors="coerce").reindex(ids).to_numpy(dtype=float)
    recent = (
        pd.to_numeric(recent_reference_calls, errors="coerce").reindex(ids).fillna(0).to_numpy(dtype=float).astype(int)
    )
    is_blocked = blocks.loc[blocks["ask_type"] == "reference_call", "customer_id"]
    blocked = ids.isin(is_blocked).to_numpy(dtype=bool)
    score = acceptance * sim / (1.0 + recent)

    candidate = ~blocked & np.isfinite(score) & (sim > 0)
    frame = frame.assign(
        acceptance=acceptance,
        similarity=sim,
        score=score,
        recent_reference_calls=recent,
    ).loc[candidate]
    matched = matched.loc[candidate]
    frame = frame.assign(_id=frame["customer_id"].astype("str"))
    top = frame.sort_values(["score", "_id"], ascending=[False, True], kind="stable").head(k)
    names = np.asarray(list(SIMILARITY_WEIGHTS), dtype=object)
    top = top.assign(matched=[names[row].tolist() for row in matched.loc[top.index].to_numpy()])
    return top.loc[:, list(REFERENCE_COLUMNS)].reset_index(drop=True)
