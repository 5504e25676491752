"""Guardrails on asks (spec section 5): which ask types a customer may not be asked now, why, until when.

Everything is vectorised over customers (integer codes, sorted arrays, `reduceat`), so a million
customers take seconds. Only what is known at `now` counts: an ask from its `asked_at`, its outcome
from its `responded_at` (before that it counts as `no_response`; an answer without a date is known
when asked), the same knowledge rule as the point-in-time features.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features.catalog import ANSWERS, ASK_TYPE_NAMES
from features.contracts import (
    DAY_MICROS,
    NAT_MICROS,
    NEVER_MICROS,
    TIMESTAMP,
    answer_known_at,
    as_utc,
    from_micros,
    to_micros,
)

GUARDRAILS: tuple[str, ...] = (
    "reference_call_per_quarter",
    "ask_cooldown",
    "decline_pause",
    "urgent_ticket",
    "low_health",
)
BLOCK_COLUMNS: tuple[str, ...] = ("customer_id", "ask_type", "guardrail", "reason", "until")
SIGNAL_COLUMNS: tuple[str, ...] = ("customer_id", "health_score", "last_urgent_ticket_at")
ASK_COLUMNS: tuple[str, ...] = ("customer_id", "ask_type", "asked_at", "outcome", "responded_at")

_ALL_TYPES = np.arange(len(ASK_TYPE_NAMES))
_REFERENCE_CALL = ASK_TYPE_NAMES.index("reference_call")
# Public reviews are not gated (spec 5a): asking only the customers expected to be happy is what the
# FTC's guide on soliciting reviews tells businesses not to do, and what review sites forbid.
UNGATED_TYPES: tuple[str, ...] = ("review",)


@dataclass(frozen=True)
class GuardrailConfig:
    """Guardrail limits (spec section 5 defaults), and the ask types invited without gating.

    For an ungated type only the fatigue guardrails hold (the cooldown between asks, the pause after
    declines): no health or ticket rule, since those would choose reviewers by how happy they are.
    """

    reference_calls_per_quarter: int = 1
    min_days_between_asks: int = 30
    declines_in_a_row: int = 2
    pause_days_after_declines: int = 90
    min_health: float = 40.0
    # The tickets table has no close date: an urgent ticket counts as open this long after opened_at.
    urgent_ticket_open_days: int = 14
    ungated_types: tuple[str, ...] = UNGATED_TYPES

    def __post_init__(self) -> None:
        unknown = [t for t in self.ungated_types if t not in ASK_TYPE_NAMES]
        if unknown:
            raise ValueError(f"ungated_types: unknown ask type {unknown[0]!r} (one of {', '.join(ASK_TYPE_NAMES)})")
        for f in fields(self):
            if f.name == "ungated_types":
                continue
            if getattr(self, f.name) < 0:
                raise ValueError(f"{f.name} must be >= 0, got {getattr(self, f.name)}")
        if self.declines_in_a_row < 1:
            raise ValueError(f"declines_in_a_row must be >= 1, got {self.declines_in_a_row}")

    @classmethod
    def from_saved(cls, saved: Mapping[str, Any] | None) -> GuardrailConfig:
        """The limits saved with a model (`Bundle.guardrails`), defaults where it saved none."""
        kwargs: dict[str, Any] = {}
        for f in fields(cls):
            if not saved or f.name not in saved:
                continue
            if f.name == "ungated_types":
                kwargs[f.name] = tuple(str(t) for t in saved[f.name])
            else:
                kwargs[f.name] = float(saved[f.name]) if f.type in ("float", float) else int(saved[f.name])
        return cls(**kwargs)

    def gated(self) -> np.ndarray:
        """The catalog columns of the types the health and ticket rules hold for."""
        return np.array([t for t, name in enumerate(ASK_TYPE_NAMES) if name not in self.ungated_types], dtype=int)

    def ungated(self) -> np.ndarray:
        """Boolean per catalog ask type: True where the type is invited without gating."""
        return np.array([name in self.ungated_types for name in ASK_TYPE_NAMES], dtype=bool)


def _require(frame: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{what}: missing column(s) {', '.join(missing)}")


def _quarter_bounds(now: pd.Timestamp) -> tuple[pd.Timestamp, pd.Timestamp]:
    start = now.tz_convert(None).to_period("Q").start_time.tz_localize("UTC")
    return start, start + pd.DateOffset(months=3)


@dataclass(frozen=True)
class _State:
    """Per-customer ask history known at `now`, aligned to a customer index; times in micros."""

    last_ask_at: np.ndarray
    reference_calls_quarter: np.ndarray
    decline_streak: np.ndarray
    pause_from: np.ndarray  # when the last `declines_in_a_row` declines were all known; NaT if not paused


def _positions(ids: pd.Series, values: pd.Series) -> np.ndarray:
    """Position of each of `values` in the unique `ids`, -1 where absent.

    Arrow's hash look-up: several times faster than `Index.get_indexer` on strings.
    """
    value_set = pa.array(ids.astype("str").array)
    found = pc.index_in(pa.array(values.astype("str").array), value_set=value_set)
    return np.asarray(found.fill_null(-1).to_numpy(zero_copy_only=False), dtype=np.int64)


def _order_by(codes: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Indices sorting by (codes, times): one sort of a combined key, about twice as fast as lexsort."""
    by_time = np.argsort(times, kind="stable")
    rank = np.empty(len(times), dtype=np.int64)
    rank[by_time] = np.arange(len(times))
    return np.argsort(codes.astype(np.int64) * len(times) + rank)


def _vocabulary_codes(values: pd.Series, vocabulary: Sequence[str]) -> np.ndarray:
    """Position of each value in `vocabulary` (-1 if absent), factorizing first so the look-up is tiny."""
    codes, uniques = pd.factorize(values)
    ranks = np.append(pd.Index(vocabulary).get_indexer(pd.Index(uniques, dtype=object)), -1)
    return ranks[codes]  # code -1 (missing) picks the appended -1


def _state(asks: pd.DataFrame, now: pd.Timestamp, config: GuardrailConfig, ids: pd.Series) -> _State:
    n = len(ids)
    now_us = to_micros([now])[0]
    asked = to_micros(asks["asked_at"])
    codes = _positions(ids, asks["customer_id"])
    keep = (codes >= 0) & (asked != NAT_MICROS) & (asked < now_us)
    codes, asked = codes[keep], asked[keep]
    # Compared in pandas (Arrow kernels): converting string columns to numpy objects is slow.
    is_reference = (asks["ask_type"] == "reference_call").to_numpy(dtype=bool)[keep]
    outcome = asks["outcome"]
    answered = outcome.isin(ANSWERS).to_numpy(dtype=bool)[keep]
    declined = (outcome == "declined").to_numpy(dtype=bool)[keep]
    known_at = to_micros(answer_known_at(asks))[keep]

    last_ask = np.full(n, NAT_MICROS, dtype=np.int64)
    np.maximum.at(last_ask, codes, asked)
    quarter_start = to_micros([_quarter_bounds(now)[0]])[0]
    is_ref_this_quarter = is_reference & (asked >= quarter_start)

    # Declines in a row: over the answers (accepted or declined) known at `now`, ordered by asked_at.
    # A pending ask and a no_response are not answers, so they neither extend nor break a streak:
    # otherwise asking again during a pause would lift the pause.
    is_answer = answered & (known_at < now_us)
    a_codes, a_asked = codes[is_answer], asked[is_answer]
    a_declined = declined[is_answer]
    a_known = known_at[is_answer]
    streak = np.zeros(n, dtype=np.int64)
    pause_from = np.full(n, NAT_MICROS, dtype=np.int64)
    if len(a_codes):
        order = _order_by(a_codes, a_asked)
        a_codes, a_declined, a_known = a_codes[order], a_declined[order], a_known[order]
        starts = np.flatnonzero(np.r_[True, a_codes[1:] != a_codes[:-1]])
        ends = np.r_[starts[1:], len(a_codes)]
        group = a_codes[starts]
        positions = np.arange(len(a_codes))
        last_non_decline = np.maximum.reduceat(np.where(a_declined, -1, positions), starts)
        streak[group] = ends - np.maximum(last_non_decline + 1, starts)
        # The pause runs from the moment the last N answers were all known (normally the Nth's reply).
        group_end = np.repeat(ends, ends - starts)
        in_last_n = positions >= group_end - config.declines_in_a_row
        streak_known = np.maximum.reduceat(np.where(in_last_n, a_known, NAT_MICROS), starts)
        paused = streak[group] >= config.declines_in_a_row
        pause_from[group[paused]] = streak_known[paused]
    return _State(
        last_ask_at=last_ask,
        reference_calls_quarter=np.bincount(codes[is_ref_this_quarter], minlength=n),
        decline_streak=streak,
        pause_from=pause_from,
    )


def _days(n: int) -> str:
    return "today" if n == 0 else "1 day ago" if n == 1 else f"{n} days ago"


class _Blocks:
    """Collects blocks as integer codes; strings are made once, at the end, with Arrow takes."""

    def __init__(self, ids: pd.Series) -> None:
        self.ids = ids.reset_index(drop=True)
        self.parts: list[tuple[np.ndarray, ...]] = []
        self.reasons: list[str] = []

    def add(
        self,
        guardrail: str,
        mask: np.ndarray,
        until: np.ndarray,
        types: np.ndarray,
        detail: np.ndarray,
        phrase: Callable[[Any], str],
    ) -> None:
        """Block `types` for customers where `mask`; the reason is `phrase(detail)` (made once per value)."""
        customers = np.flatnonzero(mask)
        if not len(customers) or not len(types):
            return
        uniques, inverse = np.unique(detail[customers], return_inverse=True)
        reason_codes = inverse.reshape(-1) + len(self.reasons)
        self.reasons.extend(phrase(u.item()) for u in uniques)
        k = len(types)
        self.parts.append(
            (
                np.repeat(customers, k),
                np.tile(types, len(customers)),
                np.full(len(customers) * k, GUARDRAILS.index(guardrail)),
                np.repeat(until[customers], k),
                np.repeat(reason_codes, k),
            )
        )

    def frame(self) -> pd.DataFrame:
        if not self.parts:
            return empty_blocks()
        cust, types, rails, until, reasons = (np.concatenate(cols) for cols in zip(*self.parts, strict=True))
        order = np.lexsort((rails, types, cust))

        def take(values: pd.Series | Sequence[str], codes: np.ndarray) -> pd.Series:
            return pd.Series(values, dtype="str").take(codes[order]).reset_index(drop=True)

        frame = pd.DataFrame(
            {
                "customer_id": take(self.ids, cust),
                "ask_type": take(ASK_TYPE_NAMES, types),
                "guardrail": take(GUARDRAILS, rails),
                "reason": take(self.reasons, reasons),
                "until": from_micros(until[order]),
            }
        )
        return frame


def empty_blocks() -> pd.DataFrame:
    """A zero-row frame with the columns and types of `blocked_asks`."""
    frame = pd.DataFrame({c: pd.Series([], dtype="str") for c in BLOCK_COLUMNS})
    frame["until"] = pd.Series([], dtype=TIMESTAMP)
    return frame


def blocked_asks(
    asks: pd.DataFrame,
    signals: pd.DataFrame,
    now: pd.Timestamp,
    config: GuardrailConfig = GuardrailConfig(),
) -> pd.DataFrame:
    """Rows (customer_id, ask_type, guardrail, reason, until) for every ask type each customer may not be asked now.

    `signals` has one row per customer to evaluate (customer_id, health_score, last_urgent_ticket_at);
    asks of other customers are ignored. `until` is when that guardrail lifts; NaT for low health
    ("until health recovers"). A type blocked by several guardrails has one row per guardrail: see
    `binding_blocks` for when it becomes available. Rows are ordered by signals order, catalog ask-type
    order, then `GUARDRAILS` order.
    """
    _require(asks, ASK_COLUMNS, "asks")
    _require(signals, SIGNAL_COLUMNS, "signals")
    now = as_utc(now)
    ids = signals["customer_id"].astype("str").reset_index(drop=True)
    if ids.duplicated().any():
        dup = ids[ids.duplicated()].unique()[:5].tolist()
        raise ValueError(f"signals: duplicate customer_id {', '.join(dup)}")
    n = len(ids)
    s = _state(asks, now, config, ids)
    now_us = to_micros([now])[0]
    blocks = _Blocks(ids)

    limit = config.reference_calls_per_quarter
    blocks.add(
        "reference_call_per_quarter",
        s.reference_calls_quarter >= limit,
        np.full(n, to_micros([_quarter_bounds(now)[1]])[0], dtype=np.int64),
        np.array([_REFERENCE_CALL]),
        s.reference_calls_quarter,
        lambda k: (
            f"Already asked for {k} reference call{'' if k == 1 else 's'} this quarter; at most {limit} per quarter"
        ),
    )

    has_ask = s.last_ask_at != NAT_MICROS
    cooldown_until = np.where(has_ask, s.last_ask_at + config.min_days_between_asks * DAY_MICROS, NAT_MICROS)
    blocks.add(
        "ask_cooldown",
        has_ask & (cooldown_until > now_us),
        cooldown_until,
        _ALL_TYPES,
        (now_us - s.last_ask_at) // DAY_MICROS,
        lambda d: f"Asked {_days(d)}; wait {config.min_days_between_asks} days between asks",
    )

    has_pause = s.pause_from != NAT_MICROS
    pause_until = np.where(has_pause, s.pause_from + config.pause_days_after_declines * DAY_MICROS, NAT_MICROS)
    blocks.add(
        "decline_pause",
        has_pause & (pause_until > now_us),
        pause_until,
        _ALL_TYPES,
        s.decline_streak,
        lambda k: f"Declined the last {k} asks; asks paused for {config.pause_days_after_declines} days",
    )

    _add_signal_blocks(blocks, signals, now_us, config)
    return blocks.frame()


def _add_signal_blocks(blocks: _Blocks, signals: pd.DataFrame, now_us: int, config: GuardrailConfig) -> None:
    """The guardrails read from the customer's signals, not the ask history: urgent tickets, low health.
    They hold for the gated types only (`GuardrailConfig.ungated_types`)."""
    n = len(signals)
    # A ticket opened after `now` is not known at `now`, so it blocks nothing.
    urgent_at = to_micros(signals["last_urgent_ticket_at"])
    has_urgent = (urgent_at != NAT_MICROS) & (urgent_at <= now_us)
    urgent_until = np.where(has_urgent, urgent_at + config.urgent_ticket_open_days * DAY_MICROS, NAT_MICROS)
    blocks.add(
        "urgent_ticket",
        has_urgent & (urgent_until > now_us),
        urgent_until,
        config.gated(),
        (now_us - urgent_at) // DAY_MICROS,
        lambda d: f"Urgent ticket opened {_days(d)}; no asks for {config.urgent_ticket_open_days} days after one",
    )

    # Unknown health (NaN) compares False: no evidence of an unhappy customer, so no block.
    health = pd.to_numeric(signals["health_score"], errors="coerce").to_numpy(dtype="float64")
    blocks.add(
        "low_health",
        health < config.min_health,
        np.full(n, NAT_MICROS, dtype=np.int64),
        config.gated(),
        np.round(health, 1),
        lambda h: f"Health score {h:g} is below {config.min_health:g}; wait until it recovers",
    )


def binding_blocks(blocks: pd.DataFrame) -> pd.DataFrame:
    """Per (customer_id, ask_type), the block row of the guardrail that lifts last.

    Its `until` is when the ask type becomes available again (NaT: not before health recovers, which
    outlasts any date). Ties go to the guardrail listed first in `GUARDRAILS`. Same columns as
    `blocked_asks`, in order of first appearance of the customer, then catalog ask-type order.
    """
    if blocks.empty:
        return empty_blocks()
    cust, _ = pd.factorize(blocks["customer_id"])
    pair = cust.astype(np.int64) * len(ASK_TYPE_NAMES) + _vocabulary_codes(blocks["ask_type"], ASK_TYPE_NAMES)
    rails = _vocabulary_codes(blocks["guardrail"], GUARDRAILS)
    until = to_micros(blocks["until"])
    lifts = np.where(until == NAT_MICROS, NEVER_MICROS, until)
    # Sorted so the last row of each (customer, type) is the latest-lifting, first-listed guardrail.
    order = np.lexsort((-rails, lifts, pair))
    pair = pair[order]
    last = np.r_[pair[1:] != pair[:-1], True]
    return blocks.iloc[order[last]].reset_index(drop=True).loc[:, list(BLOCK_COLUMNS)]
