"""Next best ask and re-engagement (spec section 5).

The next best ask is the ask type with the highest expected value (acceptance probability x the
type's value weight) that no guardrail blocks; ties go to the type listed first in the catalog.
Vectorised: one masked (customers x ask types) matrix and an argmax.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np
import pandas as pd

from features.catalog import ASK_TYPE_NAMES, DEFAULT_ASK_VALUES
from models.guardrails import binding_blocks, locate_blocks

REENGAGE_AFTER_DAYS = 180
NEXT_ASK_COLUMNS: tuple[str, ...] = ("next_best_ask", "next_best_ask_probability", "expected_value", "blocked_asks")

__all__ = ["DEFAULT_ASK_VALUES", "NEXT_ASK_COLUMNS", "REENGAGE_AFTER_DAYS", "next_best_asks", "re_engage"]


def _customer_ids(acceptance: pd.DataFrame) -> pd.Series:
    ids = acceptance["customer_id"] if "customer_id" in acceptance.columns else acceptance.index.to_series()
    ids = pd.Series(ids.to_numpy(), dtype="str")
    if ids.duplicated().any():
        dup = ids[ids.duplicated()].unique()[:5].tolist()
        raise ValueError(f"acceptance: duplicate customer_id {', '.join(dup)}")
    return ids


def _value_weights(values: Mapping[str, float]) -> np.ndarray:
    missing = [t for t in ASK_TYPE_NAMES if t not in values]
    if missing:
        raise ValueError(f"values: no value weight for ask type(s) {', '.join(missing)}")
    weights = np.array([float(values[t]) for t in ASK_TYPE_NAMES])
    bad = [t for t, w in zip(ASK_TYPE_NAMES, weights, strict=True) if not np.isfinite(w) or w < 0]
    if bad:
        raise ValueError(f"values: value weight must be a finite number >= 0 for {', '.join(bad)}")
    return weights


def _iso(until: pd.Series) -> list[str | None]:
    """ISO 8601 UTC strings ('2026-05-20T00:00:00Z'), rounded up to the second so never too early; NaT -> None."""
    # Formatting is slow and blocks repeat their `until` across ask types: format each value once.
    codes, uniques = pd.factorize(until)
    seconds = pd.Series(uniques).dt.ceil("s").dt.tz_convert(None).to_numpy().astype("datetime64[s]")
    text = [*np.datetime_as_string(seconds, timezone="UTC").astype(object).tolist(), None]
    return np.asarray(text, dtype=object)[codes].tolist()  # code -1 (NaT) picks the appended None


def _blocked_lists(bound: pd.DataFrame, rows: np.ndarray, cols: np.ndarray, n: int) -> list[list[dict[str, Any]]]:
    """Per customer (row), the binding block of each blocked ask type (col), as JSON-friendly dicts."""
    keep = np.flatnonzero((rows >= 0) & (cols >= 0))
    keep = keep[np.lexsort((cols[keep], rows[keep]))]
    chosen = bound.iloc[keep]
    with _gc_paused():
        return _group_records(chosen, rows[keep], n)


@contextmanager
def _gc_paused() -> Iterator[None]:
    # Building millions of small dicts and lists triggers many useless GC passes (3-5x slower).
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _group_records(chosen: pd.DataFrame, rows: np.ndarray, n: int) -> list[list[dict[str, Any]]]:
    records = [
        {"ask_type": a, "guardrail": g, "reason": r, "until": u}
        for a, g, r, u in zip(
            chosen["ask_type"].tolist(),
            chosen["guardrail"].tolist(),
            chosen["reason"].tolist(),
            _iso(chosen["until"]),
            strict=True,
        )
    ]
    counts = np.bincount(rows, minlength=n)
    ends = np.cumsum(counts)
    starts = ends - counts
    return [records[s:e] for s, e in zip(starts.tolist(), ends.tolist(), strict=True)]


def next_best_asks(
    acceptance: pd.DataFrame,
    blocks: pd.DataFrame,
    values: Mapping[str, float] = DEFAULT_ASK_VALUES,
) -> pd.DataFrame:
    """Per customer: the unblocked ask type with the highest expected value, and the blocked ones.

    `acceptance` holds one column per ask type (`ASK_TYPE_NAMES`) with the acceptance probability and
    the customer ids in a `customer_id` column or, without one, in the index. `blocks` is the output of
    `models.guardrails.blocked_asks`. Returns a frame indexed by `customer_id`, in `acceptance` order,
    with `next_best_ask` (type, or None when every type is blocked or unknown), `next_best_ask_probability`
    and `expected_value` (NaN with None), and `blocked_asks`: a list of {ask_type, guardrail, reason,
    until (ISO string, None = until health recovers)}, one per blocked type, naming the guardrail that
    lifts last. A NaN probability is treated as "cannot rank", like a blocked type.
    """
    missing = [t for t in ASK_TYPE_NAMES if t not in acceptance.columns]
    if missing:
        raise ValueError(f"acceptance: missing column(s) {', '.join(missing)}")
    weights = _value_weights(values)
    ids = _customer_ids(acceptance)
    probability = acceptance.loc[:, list(ASK_TYPE_NAMES)].to_numpy(dtype="float64")

    bound = binding_blocks(blocks)
    rows, cols = locate_blocks(bound, ids)
    known = (rows >= 0) & (cols >= 0)
    expected = probability * weights
    expected[rows[known], cols[known]] = -np.inf
    expected[np.isnan(expected)] = -np.inf
    # argmax returns the first maximum, so ties go to the earlier type in the catalog.
    best = np.argmax(expected, axis=1)
    picked = np.arange(len(ids))
    best_value = expected[picked, best]
    available = np.isfinite(best_value)

    names = np.asarray(ASK_TYPE_NAMES, dtype=object)[best]
    out = pd.DataFrame(
        {
            "next_best_ask": pd.Series(np.where(available, names, None), dtype=object),
            "next_best_ask_probability": np.where(available, probability[picked, best], np.nan),
            "expected_value": np.where(available, best_value, np.nan),
            "blocked_asks": pd.Series(_blocked_lists(bound, rows, cols, len(ids)), dtype=object),
        }
    )
    out.index = pd.Index(ids, name="customer_id")
    return out


def re_engage(features: pd.DataFrame | Mapping[str, Any]) -> np.ndarray:
    """True where the customer has advocated before and not in the last 180 days (strictly more)."""
    total = np.asarray(features["activities_total"], dtype="float64")
    days = np.asarray(features["days_since_last_activity"], dtype="float64")
    # NaN (no activity, or unknown) compares False.
    return (total > 0) & (days > REENGAGE_AFTER_DAYS)
