"""Advocacy asks and activities of one month: whom the company asks, with what, whether they
accept, and the activities that follow (solicited, pending from last month, or unsolicited).

Each function draws its own random numbers; `_step.step` calls them in a fixed order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from features.synthetic._params import (
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
    silent: np.ndarray
    declined: np.ndarray
    time: np.ndarray
    no_act: np.ndarray | None  # record=False only: P(no activity this month from this ask)


def organic_probability(st: State, s0: np.float64, a: np.ndarray, sat: np.ndarray, alive_f: np.ndarray) -> np.ndarray:
    """Probability of unsolicited advocacy this month."""
    recent_act = st.last_act >= s0 - 180.0
    return sigmoid(-4.35 + 1.05 * a + 0.45 * sat + 0.8 * recent_act + SEG_ORGANIC[st.seg]) * alive_f


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
    st: State, asked: Asked, ask_type: np.ndarray, a_sat: np.ndarray, a_aff: np.ndarray
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
    )
    return sigmoid(acc_logit), n90


def respond(
    rng: np.random.Generator,
    p_acc: np.ndarray,
    ask_type: np.ndarray,
    a_time: np.ndarray,
    a_sat: np.ndarray,
    a_aff: np.ndarray,
    n90: np.ndarray,
    record: bool,
) -> Responses:
    """Accept, decline or stay silent, and when an accepted ask is delivered."""
    na = p_acc.size
    same = SAME_MONTH[ask_type]  # P(delivered in the month of the answer); big asks take longer
    u_acc = rng.random(na)
    no_act = None
    if record:
        accepted = u_acc < p_acc
        late = accepted & (rng.random(na) >= same)
    else:
        # Condition on "no activity this month": an accept delivered this month is excluded.
        no_act = 1.0 - p_acc * same
        late = u_acc < p_acc * (1.0 - same) / (1.0 - p_acc * same)
        accepted = late
    silent = ~accepted & (rng.random(na) < sigmoid(-0.5 - 0.5 * a_sat - 0.3 * a_aff + 0.35 * n90))
    declined = ~accepted & ~silent
    resp_time = a_time + rng.uniform(0.05, 6.0, na)
    return Responses(accepted, late, silent, declined, resp_time, no_act)


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
    now = resp.accepted & ~resp.late
    n_pend, n_org = int(pend_fire.sum()), int(org.sum())
    act_rows = np.concatenate([ar[pend_fire], ar[org], ai[now]])
    act_time = np.concatenate(
        [
            rng.uniform(month.lo + EPS, month.hi - EPS, n_pend + n_org),
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
