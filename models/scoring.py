"""The one scoring function behind the API, the batch job and the notebook (spec sections 5-7).

`score` turns feature rows into `Scores` (arrays); `Scores.results()` gives the JSON result of
section 7 per customer (API) and `Scores.columns()` the flattened batch columns. Both read the
same arrays, so the API and the batch job cannot disagree.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from features.baseline import RULES, baseline_tier, qualified, rule_points
from features.catalog import ASK_TYPE_NAMES
from features.commitments import COMMITMENT_COLUMNS
from features.spec import FEATURE_NAMES
from models.asks import re_engage
from models.bundle import Bundle, acceptance_matrix
from models.guardrails import GuardrailConfig, binding_blocks
from models.reasons import is_missing, reason, reason_text, signed_top, signed_tops, top_indices, worded_by_value
from models.tiers import COMMITTED, TIER_ORDER, is_committed, tier_rank

Values = Mapping[str, Any]  # column -> array-like: a DataFrame or a dict of arrays
TOP_REASONS = 3


class Blocked:
    """Guardrail blocks per customer: ask type -> (guardrail, reason, until ISO time or None).

    Built from `models.guardrails.blocked_asks` rows; for each ask type it keeps the guardrail
    that lifts last, so `until` is when that ask becomes possible again. Built from a frame, it
    answers for a whole batch in vectorised passes (`matrix`, `texts`); the per-customer mapping
    the API reads is made only when asked for.
    """

    def __init__(self, by_customer: Mapping[str, Mapping[str, tuple[str, str, str | None]]] | None = None) -> None:
        self._by_customer = by_customer
        self._bound: pd.DataFrame | None = None

    @classmethod
    def from_frame(cls, blocks: pd.DataFrame) -> Blocked:
        if blocks.empty:
            return NO_BLOCKS
        out = cls()
        bound = binding_blocks(blocks)
        until = bound["until"].dt.ceil("s").dt.strftime("%Y-%m-%dT%H:%M:%SZ")
        out._bound = bound.assign(until=until.astype(object).where(until.notna(), None))
        return out

    @property
    def by_customer(self) -> Mapping[str, Mapping[str, tuple[str, str, str | None]]]:
        if self._by_customer is None:
            out: dict[str, dict[str, tuple[str, str, str | None]]] = {}
            b = self._bound if self._bound is not None else binding_blocks(pd.DataFrame())
            for cid, ask_type, rail, why, when in zip(
                *(b[c].tolist() for c in ("customer_id", "ask_type", "guardrail", "reason", "until")), strict=True
            ):
                out.setdefault(cid, {})[ask_type] = (rail, why, when)
            self._by_customer = out
        return self._by_customer

    def for_customer(self, customer_id: str) -> Mapping[str, tuple[str, str, str | None]]:
        return self.by_customer.get(customer_id, {})

    def _rows(self, customer_ids: Sequence[str]) -> tuple[pd.DataFrame, np.ndarray] | None:
        """The binding blocks of these customers and each one's row in `customer_ids` (None when an
        id repeats, or the blocks came as a mapping: then the per-customer mapping answers)."""
        ids = pd.Index([str(c) for c in customer_ids], dtype=object)
        if self._bound is None or not ids.is_unique:
            return None
        where = ids.get_indexer(self._bound["customer_id"].astype(str))
        return self._bound[where >= 0], where[where >= 0]

    def matrix(self, customer_ids: Sequence[str]) -> np.ndarray:
        """Boolean (customers x ask types): True where blocked."""
        out = np.zeros((len(customer_ids), len(ASK_TYPE_NAMES)), dtype=bool)
        found = self._rows(customer_ids)
        if found is not None:
            bound, rows = found
            out[rows, bound["ask_type"].map(_TYPE_INDEX).to_numpy(dtype=np.int64)] = True
        elif self.by_customer:
            for i, c in enumerate(customer_ids):
                for t in self.by_customer.get(str(c), ()):
                    out[i, _TYPE_INDEX[t]] = True
        return out

    def texts(self, customer_ids: Sequence[str]) -> list[str]:
        """Per customer, the batch column `blocked_asks`: "type: guardrail until time" joined by "; "
        (until "cleared" where only recovery lifts it), in the mapping's order; "" if nothing is blocked."""
        found = self._rows(customer_ids)
        if found is None:
            return [
                "; ".join(_block_text(t, g, u) for t, (g, _, u) in self.for_customer(str(c)).items())
                for c in customer_ids
            ]
        bound, rows = found
        # Lists, not the Series: iterating Arrow-backed text element by element is several times slower.
        columns = (bound[c].tolist() for c in ("ask_type", "guardrail", "until"))
        pieces = [_block_text(t, g, u) for t, g, u in zip(*columns, strict=True)]
        # A customer's rows are contiguous in `binding_blocks`' order.
        starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]]) if len(rows) else np.zeros(0, dtype=np.int64)
        ends = np.r_[starts[1:], len(rows)]
        out = [""] * len(customer_ids)
        for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
            out[int(rows[a])] = "; ".join(pieces[a:b])
        return out


def _block_text(ask_type: str, guardrail: str, until: str | None) -> str:
    return f"{ask_type}: {guardrail} until {until or 'cleared'}"


NO_BLOCKS = Blocked({})
_TYPE_INDEX = {t: i for i, t in enumerate(ASK_TYPE_NAMES)}


@dataclass
class Scores:
    """Everything scored for n customers, as arrays (row i is one customer)."""

    bundle: Bundle
    values: Values
    customer_id: np.ndarray
    as_of: np.ndarray
    propensity: np.ndarray  # calibrated; NaN where the model cannot speak (cold start)
    model_propensity: np.ndarray  # the model's number even on cold start (for audit)
    cold_start: np.ndarray
    committed: np.ndarray  # an accepted ask not yet delivered: tier `committed`, no model tier
    tier: np.ndarray
    percentile: np.ndarray
    acceptance: np.ndarray  # n x len(ASK_TYPE_NAMES)
    rule_points: np.ndarray  # n x len(RULES)
    baseline_points: np.ndarray
    baseline_tier: np.ndarray
    re_engage: np.ndarray
    next_ask: np.ndarray  # index into ASK_TYPE_NAMES, -1 when every type is blocked
    contributions: np.ndarray | None  # n x (features + 1): SHAP log-odds, base value last
    blocked: Blocked
    _timestamps: dict[Any, pd.Timestamp] = field(default_factory=dict, init=False, repr=False)

    def __len__(self) -> int:
        return len(self.customer_id)

    # ---- per-row pieces -------------------------------------------------------------------
    def _row(self, i: int) -> _Row:
        return _Row(self.values, i)

    def _timestamp(self, i: int) -> pd.Timestamp:
        """Row i's `as_of` as a Timestamp (one per distinct value: a batch shares one)."""
        raw = self.as_of[i]
        found = self._timestamps.get(raw)
        if found is None:
            found = self._timestamps[raw] = pd.Timestamp(raw)
        return found

    def _phrases(self, i: int, picked: Sequence[int]) -> list[dict[str, Any]]:
        assert self.contributions is not None
        contrib, row, as_of = self.contributions[i], self._row(i), self._timestamp(i)
        return [reason(FEATURE_NAMES[j], row[FEATURE_NAMES[j]], contrib[j], row, as_of) for j in picked]

    def reasons(self, i: int, k: int = TOP_REASONS) -> list[dict[str, Any]]:
        if self.contributions is None:
            return []
        contrib = self.contributions[i, :-1]
        return self._phrases(i, [j for j in top_indices(contrib[None, :], k)[0] if contrib[j]])

    @cached_property
    def tier_gaps(self) -> np.ndarray:
        """Per row: model tier rank minus points tier rank (0 on cold start, where the tier is the rule's,
        and for committed pipeline, which has no model tier to compare)."""
        model_tier = np.where(self.committed, self.baseline_tier, self.tier)  # no model tier to compare
        gap = tier_rank(model_tier) - tier_rank(self.baseline_tier)
        return np.where(self.cold_start | self.committed, 0, gap)

    def disagreement(self, i: int) -> dict[str, Any] | None:
        """Where model and points rule differ by a tier or more: which way, and the reasons driving it."""
        gap = int(self.tier_gaps[i])
        if gap == 0:
            return None
        drivers: list[dict[str, Any]] = []
        if self.contributions is not None:
            drivers = self._phrases(i, signed_top(self.contributions[i, :-1], TOP_REASONS, 1 if gap > 0 else -1))
        text = self._disagreement_text(i, [d["text"] for d in drivers])
        return {"tiers": gap, "direction": _direction(gap), "text": text, "drivers": drivers}

    def _disagreement_text(self, i: int, drivers: Sequence[str]) -> str:
        """Row i's disagreement in words, with the texts of the reasons driving it."""
        because = "; ".join(drivers)
        return (
            f"The model rates this customer {_direction(int(self.tier_gaps[i]))} than the points rule "
            f"({self.tier[i]} vs {self.baseline_tier[i]})" + (f", mainly because: {because}." if because else ".")
        )

    def _reason_texts(self, rows: np.ndarray, columns: np.ndarray) -> list[str]:
        """`reason_text` of feature `columns[k]` for row `rows[k]`, for many pairs at once: grouped by
        feature, so that each feature's values are read from its column, not row by row."""
        assert self.contributions is not None
        out = [""] * len(rows)
        if not len(rows):
            return out
        contributions = self.contributions[rows, columns].tolist()
        order = np.argsort(columns, kind="stable")
        bounds = np.flatnonzero(np.r_[True, np.diff(columns[order]) != 0, True])
        for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
            at = order[a:b]
            name = FEATURE_NAMES[int(columns[at[0]])]
            column = self.values[name]
            # Equal values (counts, categories, missing) are worded once where the words read nothing
            # else; otherwise each row is its own key (a pair is worded once anyway).
            by_value = worded_by_value(name)
            memo: dict[tuple[Any, ...], str] = {}
            for k, i in zip(at.tolist(), rows[at].tolist(), strict=True):
                value = _item(column, i)
                key = _wording_key(value, contributions[k]) if by_value else (i,)
                text = memo.get(key)
                if text is None:
                    text = memo[key] = reason_text(name, value, contributions[k], self._row(i), self._timestamp(i))
                out[k] = text
        return out

    def _worded_reasons(self) -> tuple[list[list[str]], dict[int, list[str]]]:
        """The batch's texts: per row its top reasons, and per row with a tier gap the reasons driving
        the disagreement, each (row, feature) worded once (`_reason_texts`)."""
        n = len(self)
        if self.contributions is None or not n:
            return [[] for _ in range(n)], {}
        contrib = self.contributions[:, :-1]
        picked = top_indices(contrib, TOP_REASONS)
        shown = np.take_along_axis(contrib, picked, axis=1) != 0
        gaps = np.flatnonzero(self.tier_gaps)
        drivers, pushes = signed_tops(contrib[gaps], TOP_REASONS, np.sign(self.tier_gaps[gaps]))
        k = shown.shape[1]
        rows = np.r_[np.repeat(np.arange(n), k)[shown.ravel()], np.repeat(gaps, k)[pushes.ravel()]]
        cols = np.r_[picked.ravel()[shown.ravel()], drivers.ravel()[pushes.ravel()]]
        width = contrib.shape[1]
        pairs, where = np.unique(rows * width + cols, return_inverse=True)
        texts = self._reason_texts(pairs // width, pairs % width)
        worded = [texts[j] for j in where.tolist()]
        m = int(shown.sum())  # the first m pairs are the top reasons, the rest the drivers
        top: list[list[str]] = [[] for _ in range(n)]
        for i, text in zip(rows[:m].tolist(), worded[:m], strict=True):
            top[i].append(text)
        driving: dict[int, list[str]] = {i: [] for i in gaps.tolist()}
        for i, text in zip(rows[m:].tolist(), worded[m:], strict=True):
            driving[i].append(text)
        return top, driving

    def baseline(self, i: int) -> dict[str, Any]:
        points = int(self.baseline_points[i])
        return {
            "points": points,
            "qualified": bool(qualified(points)),
            "tier": str(self.baseline_tier[i]),
            "breakdown": [
                {
                    "criterion": r.name,
                    "label": r.label,
                    "description": r.description,
                    "points": int(self.rule_points[i, j]),
                    "max_points": r.points,
                }
                for j, r in enumerate(RULES)
            ],
        }

    def commitment(self, i: int) -> dict[str, Any] | None:
        """The accepted ask that makes row i committed (null fields where the caller sent bare features)."""
        if not self.committed[i]:
            return None
        ask_id, ask_type, accepted_at = (
            _item(self.values[c], i) if c in self.values else None for c in COMMITMENT_COLUMNS
        )
        known = accepted_at is not None and not pd.isna(accepted_at)
        return {
            "ask_id": None if ask_id is None else str(ask_id),
            "ask_type": None if ask_type is None else str(ask_type),
            "accepted_at": pd.Timestamp(accepted_at).isoformat() if known else None,
        }

    def next_best_ask(self, i: int) -> dict[str, Any]:
        blocks = self.blocked.for_customer(str(self.customer_id[i]))
        return next_best_ask(self.acceptance[i], int(self.next_ask[i]), blocks)

    def result(self, i: int, reasons: int = TOP_REASONS) -> dict[str, Any]:
        """The section 7 result of row i."""
        cold = bool(self.cold_start[i])
        return {
            "customer_id": str(self.customer_id[i]),
            "propensity": None if cold else float(self.propensity[i]),
            "tier": str(self.tier[i]),
            "percentile": None if cold else float(self.percentile[i]),
            "cold_start": cold,
            "acceptance": {t: float(self.acceptance[i, j]) for j, t in enumerate(ASK_TYPE_NAMES)},
            "next_best_ask": self.next_best_ask(i),
            "re_engage": bool(self.re_engage[i]),
            "reasons": self.reasons(i, reasons),
            "baseline": self.baseline(i),
            "disagreement": self.disagreement(i),
            "committed": self.commitment(i),
            "model_version": self.bundle.model_version,
            "rules_version": self.bundle.rules_version,
            "features_as_of": pd.Timestamp(self.as_of[i]).isoformat(),
        }

    def results(self, reasons: int = TOP_REASONS) -> list[dict[str, Any]]:
        return [self.result(i, reasons) for i in range(len(self))]

    # ---- flattened, for the batch job -----------------------------------------------------------
    def columns(self) -> pd.DataFrame:
        """The batch output columns of spec section 7, one row per customer."""
        n = len(self)
        out: dict[str, Any] = {
            "customer_id": self.customer_id,
            "propensity": self.propensity,
            "tier": self.tier,
            "percentile": np.where(self.cold_start, np.nan, self.percentile),
        }
        for j, t in enumerate(ASK_TYPE_NAMES):
            out[f"acceptance_{t}"] = self.acceptance[:, j]
        k = self.next_ask
        out["next_best_ask"] = np.where(k >= 0, np.array(ASK_TYPE_NAMES, dtype=object)[np.maximum(k, 0)], None)
        out["next_best_ask_probability"] = np.where(k >= 0, self.acceptance[np.arange(n), np.maximum(k, 0)], np.nan)
        out["blocked_asks"] = self.blocked.texts(list(self.customer_id))
        out["re_engage"] = self.re_engage
        worded, driving = self._worded_reasons()
        for r in range(TOP_REASONS):
            out[f"reason_{r + 1}"] = [texts[r] if len(texts) > r else None for texts in worded]
        out["baseline_points"] = self.baseline_points
        out["baseline_qualified"] = qualified(self.baseline_points)
        out["baseline_tier"] = self.baseline_tier
        earned = [
            [f"{r.label} {p}" for p in self.rule_points[:, j].astype(np.int64).tolist()] for j, r in enumerate(RULES)
        ]
        out["baseline_breakdown"] = [", ".join(parts) for parts in zip(*earned, strict=True)] if n else []
        texts: list[str | None] = [None] * n
        for i in np.flatnonzero(self.tier_gaps).tolist():
            texts[i] = self._disagreement_text(i, driving.get(i, ()))
        out["disagreement"] = texts
        out["cold_start"] = self.cold_start
        out["committed"] = self.committed
        ids = np.asarray(self.values["committed_ask_id"] if "committed_ask_id" in self.values else [None] * n, object)
        out["committed_ask_id"] = [
            str(a) if c and a is not None else None for a, c in zip(ids, self.committed, strict=True)
        ]
        out["model_version"] = self.bundle.model_version
        out["rules_version"] = self.bundle.rules_version
        out["features_as_of"] = pd.to_datetime(self.as_of, utc=True)
        return pd.DataFrame(out)


def next_best_ask(acceptance: np.ndarray, k: int, blocks: Mapping[str, tuple[str, str, str | None]]) -> dict[str, Any]:
    """The `next_best_ask` of one result: type `k` (-1: none) with its probability, and the blocked types.

    A function of its own so that the service can re-choose the next ask under fresh guardrails for
    results it keeps (everything else in a result depends only on the customer's features).
    """
    return {
        "ask_type": ASK_TYPE_NAMES[k] if k >= 0 else None,
        "probability": float(acceptance[k]) if k >= 0 else None,
        "blocked": [
            {"ask_type": t, "guardrail": g, "reason": why, "until": until}
            for t, (g, why, until) in sorted(blocks.items(), key=lambda kv: ASK_TYPE_NAMES.index(kv[0]))
        ],
    }


class _Row(Mapping[str, Any]):
    """Row i of the feature values, read on demand: a reason phrase reads one or two features."""

    __slots__ = ("_i", "_values")

    def __init__(self, values: Values, i: int) -> None:
        self._values, self._i = values, i

    def __getitem__(self, name: str) -> Any:
        if name not in _FEATURE_SET:
            raise KeyError(name)
        return _item(self._values[name], self._i)

    def __iter__(self) -> Iterator[str]:
        return iter(FEATURE_NAMES)

    def __len__(self) -> int:
        return len(FEATURE_NAMES)


_FEATURE_SET = frozenset(FEATURE_NAMES)


def _direction(gap: int) -> str:
    return "higher" if gap > 0 else "lower"


def _wording_key(value: Any, contribution: float) -> tuple[Any, ...]:
    """What a reason's words depend on for a feature `worded_by_value`: the value (missing as one),
    the sign of a float (-0.0 == 0.0, but "-0.00" is not "+0.00") and the direction."""
    sign = math.copysign(1.0, value) if isinstance(value, float) else 1.0
    return (None if is_missing(value) else value, sign, contribution > 0)


def _item(values: Any, i: int) -> Any:
    v = values.iloc[i] if isinstance(values, pd.Series) else values[i]
    return v.item() if isinstance(v, np.generic) else v


def next_asks(
    acceptance: np.ndarray, blocked: np.ndarray, values: Mapping[str, float], ungated: np.ndarray | None = None
) -> np.ndarray:
    """Per customer, the ask type with the highest expected value (acceptance x value weight) not blocked.

    An ungated type (`ungated`, per catalog type; `GuardrailConfig.ungated`) is never the next ask:
    choosing one customer for a public review by how likely they are to say yes is the very gating its
    random invitations avoid. Ties go to the type listed first in the catalog; -1 where every type is
    blocked.
    """
    weights = np.array([values.get(t, 1.0) for t in ASK_TYPE_NAMES], dtype=float)
    never = np.zeros(len(ASK_TYPE_NAMES), dtype=bool) if ungated is None else np.asarray(ungated, dtype=bool)
    expected = np.where(blocked | never, -np.inf, acceptance * weights)
    best = np.argmax(expected, axis=1)
    return np.where(np.isfinite(expected[np.arange(len(best)), best]), best, -1)


def ungated_of(bundle: Bundle) -> np.ndarray:
    """Per catalog ask type, whether the bundle's program invites it without gating."""
    return GuardrailConfig.from_saved(bundle.guardrails).ungated()


def cold_start(usage_months: Any, matrix: np.ndarray) -> np.ndarray:
    """Where the model does not speak and the points rule answers instead: no usage yet, or a
    segment the model never saw (its encoded code is missing)."""
    months = np.asarray(usage_months, dtype=float)
    return (np.nan_to_num(months) <= 0) | np.isnan(matrix[:, FEATURE_NAMES.index("segment")])


def score(
    bundle: Bundle,
    values: Values,
    *,
    matrix: np.ndarray | None = None,
    blocked: Blocked = NO_BLOCKS,
    explain: bool = True,
    num_threads: int = 1,
) -> Scores:
    """Score feature rows (`customer_id`, `as_of` and every feature) with the bundle.

    `matrix` may carry the rows already encoded (the service keeps its store encoded); it must
    equal `bundle.encoder.transform(values)`.
    """
    x = bundle.encoder.transform(values) if matrix is None else matrix
    customer_id = np.asarray(values["customer_id"], dtype=object)
    n = len(customer_id)
    model_p = bundle.propensity.proba(x, num_threads)
    cold = cold_start(values["usage_months"], x)
    acc = bundle.acceptance.proba(acceptance_matrix(x), num_threads).reshape(n, len(ASK_TYPE_NAMES))
    earned = rule_points(values)
    points = earned.sum(axis=1)
    base_tier = baseline_tier(points)
    model_tier = bundle.tiers.assign(model_p)
    committed = is_committed(values["accepted_not_delivered"])
    tier = np.where(committed, COMMITTED, np.where(cold, base_tier, model_tier))
    return Scores(
        bundle=bundle,
        values=values,
        customer_id=customer_id,
        as_of=np.asarray(values["as_of"]),
        propensity=np.where(cold, np.nan, model_p),
        model_propensity=model_p,
        cold_start=cold,
        committed=committed,
        tier=tier,
        percentile=bundle.tiers.percentile(model_p),
        acceptance=acc,
        rule_points=earned,
        baseline_points=points,
        baseline_tier=base_tier,
        re_engage=re_engage(values),
        next_ask=next_asks(acc, blocked.matrix(list(customer_id)), bundle.ask_values, ungated_of(bundle)),
        contributions=bundle.propensity.contributions(x, num_threads) if explain else None,
        blocked=blocked,
    )


__all__ = [
    "NO_BLOCKS",
    "TIER_ORDER",
    "Blocked",
    "Scores",
    "cold_start",
    "next_asks",
    "next_best_ask",
    "score",
    "ungated_of",
]
