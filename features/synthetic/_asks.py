"""Advocacy asks and activities of one month: whom the company asks, with what, whether they
accept, and the activities that follow (solicited, pending from last month, or unsolicited).

Each function draws its own random numbers; `_step.step` calls them in a fixed order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from features.catalog import ASK_TYPE_NAMES
from features.synthetic._params import (
    ANSWER_MAX_DAYS,
    ANSWER_MEAN_DAYS,
    EPS,
    MONTH_DAYS,
    ORGANIC_FREQ,
    REF,
    SAME_MONTH,
    SEG_ORGANIC,
    SEG_TYPE_EFFECT,
    TYPE_EFFECT,
    TYPE_FREQ,
    TYPE_FREQ_NOREF,
)
from features.synthetic._signals import Month
from features.synthetic._state import State, draw_cat, sigmoid, tenure_effect


@dataclass(frozen=True)
class Asked:
    """The rows asked this month (`rows`), and per row of the state what the rules saw at the ask."""

    rows: np.ndarray
    time: np.ndarray  # the time of the ask (drawn for every row)
    since_last: np.ndarray  # days since the previous ask
    urgent14: np.ndarray  # an urgent ticket in the 14 days before the ask
    tenure: np.ndarray  # tenure in months at the ask


@dataclass(frozen=True)
class Responses:
    """Per asked row: the outcome, the response time and (in a future) the no-activity factor."""

    accepted: np.ndarray
    late: np.ndarray  # accepted, the activity happens next month
    never: np.ndarray  # accepted, and the activity never happens (drifting world)
    silent: np.ndarray
    declined: np.ndarray
    time: np.ndarray
    no_act: np.ndarray | None  # record=False only: P(no activity this month from this ask)


def organic_probability(st: State, month: Month, a: np.ndarray, sat: np.ndarray, alive_f: np.ndarray) -> np.ndarray:
    """Probability of unsolicited advocacy this month (plus the month's drift and season)."""
    recent_act = st.last_act >= month.s0 - 180.0
    logit = -4.35 + 1.05 * a + 0.45 * sat + 0.8 * recent_act + SEG_ORGANIC[st.seg] + month.organic_shift
    return sigmoid(logit) * alive_f


def choose_asked(
    rng: np.random.Generator,
    st: State,
    month: Month,
    points: np.ndarray,
    health_seen: np.ndarray,
    urgent: tuple[np.ndarray, np.ndarray],
    alive: np.ndarray,
) -> Asked:
    """Whom the company asks: the points rule plus exploration, mostly within the guardrails.

    The time of the ask is drawn first, so guardrails and fatigue are measured at it.
    """
    n = st.cust.size
    u_rows, u_time = urgent
    ask_time = month.s0 + rng.uniform(0.01, month.dk - 12.0, n)
    since_last = ask_time - st.ask_t[:, 0]
    pause = (st.decl_streak >= 2) & (ask_time - st.last_decl < 90.0)
    in_month_urgent = np.zeros(n, dtype=bool)
    hit = (u_time < ask_time[u_rows]) & (u_time >= ask_time[u_rows] - 14.0)
    in_month_urgent[u_rows[hit]] = True
    urgent14 = in_month_urgent | (st.last_urgent >= ask_time - 14.0)
    tenure_ask = (ask_time - st.start_day) / MONTH_DAYS
    p_ask = 0.065 + 0.4 * sigmoid((points - 55.0) / 9.0)
    # Mostly respects the guardrails, sometimes not (so their effect can be learned).
    p_ask = p_ask * np.where(since_last < 30.0, 0.25, 1.0) * np.where(pause, 0.2, 1.0)
    p_ask = p_ask * np.where(urgent14 | (health_seen < 40.0), 0.4, 1.0)
    p_ask = p_ask * np.where(tenure_ask < 2.0, 0.35, 1.0)
    # A rapport no table records: account teams ask the customers they get on with (x1 when off).
    p_ask = p_ask * 2.0 * sigmoid(2.0 * month.drift.rapport * st.rapport)
    asked = alive & (rng.random(n) < p_ask)
    return Asked(np.flatnonzero(asked), ask_time, since_last, urgent14, tenure_ask)


def choose_ask_types(rng: np.random.Generator, st: State, ai: np.ndarray, quarter: np.int64) -> np.ndarray:
    """The ask type by segment; a second reference call in a quarter is usually swapped."""
    na = ai.size
    seg_a = st.seg[ai]
    ask_type = draw_cat(rng, TYPE_FREQ, na, seg_a)
    ref_blocked = (ask_type == REF) & (st.last_ref_q[ai] == quarter) & (rng.random(na) < 0.85)
    ask_type[ref_blocked] = draw_cat(rng, TYPE_FREQ_NOREF, int(ref_blocked.sum()), seg_a[ref_blocked])
    return ask_type


def acceptance(
    st: State, month: Month, asked: Asked, ask_type: np.ndarray, a_sat: np.ndarray, a_aff: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The exact acceptance probability of each ask, and the asks in the 90 days before it."""
    ai = asked.rows
    a_time = asked.time[ai]
    n90 = (st.ask_t[ai] >= a_time[:, None] - 90.0).sum(axis=1)
    acc_logit = (
        -1.75
        + TYPE_EFFECT[ask_type]
        + SEG_TYPE_EFFECT[st.seg[ai], ask_type]
        + 0.85 * a_aff
        + 0.55 * a_sat
        - 0.3 * n90
        - 0.5 * np.exp(-asked.since_last[ai] / 20.0)
        - 0.45 * np.minimum(st.decl_streak[ai], 3)
        - 0.9 * asked.urgent14[ai]
        + tenure_effect(asked.tenure[ai])
        + 0.2 * st.accepted_ever[ai]
        + month.acceptance_shift
        + month.drift.rapport * st.rapport[ai]
    )
    return sigmoid(acc_logit), n90


def acceptance_if_asked(st: State, month: Month, sat: np.ndarray) -> np.ndarray:
    """(rows x ask types): the exact acceptance of an ask of each type made at the month start,
    from the month's hidden state, whether or not the company asks then (the truth of a plan)."""
    n = st.cust.size
    at = np.full(n, month.s0)
    urgent14 = st.last_urgent >= month.s0 - 14.0
    at_start = Asked(np.arange(n), at, at - st.ask_t[:, 0], urgent14, (at - st.start_day) / MONTH_DAYS)
    by_type = [acceptance(st, month, at_start, np.full(n, t), sat, st.affinity)[0] for t in range(len(ASK_TYPE_NAMES))]
    return np.column_stack(by_type) if n else np.zeros((0, len(ASK_TYPE_NAMES)))


def respond(
    rng: np.random.Generator,
    month: Month,
    p_acc: np.ndarray,
    ask_type: np.ndarray,
    a_time: np.ndarray,
    a_sat: np.ndarray,
    a_aff: np.ndarray,
    n90: np.ndarray,
    record: bool,
) -> Responses:
    """Accept, decline or stay silent, when the answer comes, and when (or whether) an accepted
    ask is delivered. A stationary world draws exactly what it drew before drift existed."""
    na = p_acc.size
    drift = month.drift
    u_acc = rng.random(na)
    resp_time = None
    same = SAME_MONTH[ask_type]  # P(delivered in the month of the answer); big asks take longer
    if drift.slow_answers:  # days to weeks; an answer too late in the month is delivered next month
        resp_time = a_time + 0.05 + np.minimum(rng.exponential(ANSWER_MEAN_DAYS[ask_type]), ANSWER_MAX_DAYS)
        same = same * (resp_time + 1.0 < month.hi - EPS)
    keep = 1.0 - np.asarray(drift.never_delivered)[ask_type]  # P(an accepted ask is delivered)
    no_act = None
    if record:
        accepted = u_acc < p_acc
        kept = accepted & (rng.random(na) < keep) if drift.on else accepted
        late = kept & (rng.random(na) >= same)
        never = accepted & ~kept
    else:
        # Condition on "no activity this month": an accept delivered this month is excluded.
        q = p_acc * keep
        no_act = 1.0 - q * same
        late = u_acc < q * (1.0 - same) / no_act
        accepted = u_acc < (q * (1.0 - same) + p_acc * (1.0 - keep)) / no_act
        never = accepted & ~late
    silent = ~accepted & (rng.random(na) < sigmoid(-0.5 - 0.5 * a_sat - 0.3 * a_aff + 0.35 * n90))
    declined = ~accepted & ~silent
    if resp_time is None:
        resp_time = a_time + rng.uniform(0.05, 6.0, na)
    return Responses(accepted, late, never, silent, declined, resp_time, no_act)


def activities(
    rng: np.random.Generator,
    month: Month,
    st: State,
    pend_fire: np.ndarray,
    p_org: np.ndarray,
    ai: np.ndarray,
    ask_type: np.ndarray,
    ask_ids: np.ndarray,
    resp: Responses,
) -> dict[str, np.ndarray]:
    """The month's activities: pending from last month, unsolicited, accepted and delivered now."""
    n = st.cust.size
    ar = np.arange(n)
    org = rng.random(n) < p_org
    now = resp.accepted & ~resp.late & ~resp.never
    n_org = int(org.sum())
    act_rows = np.concatenate([ar[pend_fire], ar[org], ai[now]])
    # A pending activity comes after its answer (which, when answers are slow, may fall in this month).
    earliest = np.concatenate([np.maximum(month.lo, st.pend_after[pend_fire]), np.full(n_org, month.lo)])
    act_time = np.concatenate(
        [
            rng.uniform(earliest + EPS, month.hi - EPS),
            rng.uniform(resp.time[now] + 1.0, month.hi - EPS),
        ]
    )
    act_type = np.concatenate([st.pend_type[pend_fire], draw_cat(rng, ORGANIC_FREQ, n_org), ask_type[now]])
    act_ask = np.concatenate([st.pend_ask[pend_fire], np.full(n_org, -1, np.int64), ask_ids[now]])
    return {"row": act_rows, "time": act_time, "type": act_type, "ask": act_ask}


def no_activity(
    n: int, ai: np.ndarray, asked_factor: np.ndarray, pend_fire: np.ndarray, p_org: np.ndarray
) -> np.ndarray:
    """record=False: per row, P(no activity this month) given the state (pending, asked, organic)."""
    no_act = np.ones(n)
    no_act[ai] *= asked_factor
    no_act *= np.where(pend_fire, 0.0, 1.0) * (1.0 - p_org)
    return no_act
