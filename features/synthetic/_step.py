"""One simulated month: the signals in their fixed order, then the state after the month."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from features.synthetic import _asks, _signals
from features.synthetic._asks import Asked, Responses
from features.synthetic._calendar import Calendar
from features.synthetic._params import REF, STATIONARY, Drift
from features.synthetic._signals import Events, Month, Usage
from features.synthetic._state import State, last_time


@dataclass
class StepEvents:
    """Events of one simulated month (record mode), rows indexing the step's state."""

    churn: np.ndarray
    usage: dict[str, np.ndarray]
    nps: dict[str, np.ndarray]
    tickets: dict[str, np.ndarray]
    social: dict[str, np.ndarray]
    asks: dict[str, np.ndarray]
    activities: dict[str, np.ndarray]
    acceptance_by_type: np.ndarray | None  # (rows x ask types) at the month start, when asked for


def step(
    st: State,
    k: int,
    cal: Calendar,
    rng: np.random.Generator,
    record: bool,
    ask_id0: int = 0,
    drift: Drift = STATIONARY,
    type_truth: bool = False,
) -> tuple[np.ndarray, StepEvents | None]:
    """Advance every row of `st` through month k in place.

    record=True: the realised world; draws everything and returns the month's events.
    record=False: a future for the truth; activities are never drawn. Returns, per row, the
    probability that no activity happens this month given the state, and moves the state along
    the "no activity" branch, so the product over months is an unbiased estimate of
    P(no activity in the window) (sequential Rao-Blackwellization).
    type_truth=True (record mode) also returns every row's true acceptance of each ask type at the
    month start; it draws nothing, so the world is the same either way.
    """
    n = st.cust.size
    month = Month.of(cal, k, drift)
    # The order of these calls is the order of the random draws: keep it.
    tenure0, points = _signals.points_rule(st, month.s0)
    churned, alive, health_seen = _signals.churn(rng, st)
    alive_f = alive.astype(np.float64)
    sat = _signals.satisfaction(rng, st)
    a = st.affinity
    tickets = _signals.tickets(rng, month, st.seg, sat, alive_f, record)
    urgent_month = np.zeros(n, dtype=bool)
    urgent_month[tickets.rows] = True
    nps_resp, nps_score = _signals.nps(rng, alive, sat, a)
    social = _signals.social(rng, month, sat, a, alive_f, record)
    usage = _signals.usage(rng, st, sat, tenure0, urgent_month, alive, record)

    pend_fire = st.pend & alive  # the activity of an ask accepted last month
    p_org = _asks.organic_probability(st, month, a, sat, alive_f)
    asked = _asks.choose_asked(rng, st, month, points, health_seen, (tickets.rows, tickets.time), alive)
    ai = asked.rows
    ask_type = _asks.choose_ask_types(rng, st, ai, month.quarter)
    a_sat, a_aff = sat[ai], a[ai]
    p_acc, n90 = _asks.acceptance(st, month, asked, ask_type, a_sat, a_aff)
    resp = _asks.respond(rng, month, p_acc, ask_type, asked.time[ai], a_sat, a_aff, n90, record)

    events: StepEvents | None = None
    new_pend_ask = np.full(n, -1, dtype=np.int64)
    last_act = st.last_act
    if record:
        ask_ids = ask_id0 + np.arange(ai.size)
        acts = _asks.activities(rng, month, st, pend_fire, p_org, ai, ask_type, ask_ids, resp)
        last_act = np.maximum(st.last_act, last_time(n, acts["row"], acts["time"]))
        events = StepEvents(
            churn=churned,
            usage=usage.events,
            nps=_signals.nps_events(rng, month, nps_resp, nps_score),
            tickets=tickets.events,
            social=social.events,
            asks=_ask_events(asked, ask_type, ask_ids, resp, p_acc),
            activities=acts,
            acceptance_by_type=_asks.acceptance_if_asked(st, month, sat) if type_truth else None,
        )
        new_pend_ask[ai[resp.late]] = ask_ids[resp.late]
        no_act = np.ones(n)
    else:
        assert resp.no_act is not None
        no_act = _asks.no_activity(n, ai, resp.no_act, pend_fire, p_org)

    _advance_signals(st, alive, sat, usage, nps_resp, nps_score, tickets, social)
    _advance_asks(st, month, asked, ask_type, resp, new_pend_ask, last_act)
    return no_act, events


def _ask_events(
    asked: Asked, ask_type: np.ndarray, ask_ids: np.ndarray, resp: Responses, p_acc: np.ndarray
) -> dict[str, np.ndarray]:
    """The month's ask records, with the exact acceptance probability of each."""
    return {
        "row": asked.rows,
        "id": ask_ids,
        "time": asked.time[asked.rows],
        "type": ask_type,
        "outcome": np.where(resp.accepted, 0, np.where(resp.declined, 1, 2)),
        "responded": np.where(resp.silent, np.nan, resp.time),
        "p_true": p_acc,
    }


def _advance_signals(
    st: State,
    alive: np.ndarray,
    sat: np.ndarray,
    usage: Usage,
    nps_resp: np.ndarray,
    nps_score: np.ndarray,
    tickets: Events,
    social: Events,
) -> None:
    """The state after the month: life, satisfaction and what the company observed."""
    n = st.cust.size
    st.alive = alive
    st.sat = sat
    st.seats = usage.seats
    st.adoption = np.where(alive, usage.adoption, st.adoption)
    st.health = np.where(alive, usage.health, st.health)
    st.has_usage = st.has_usage | alive
    st.last_nps = np.where(nps_resp, nps_score, st.last_nps)
    st.last_pos_social = np.maximum(st.last_pos_social, last_time(n, social.rows, social.time))
    st.last_urgent = np.maximum(st.last_urgent, last_time(n, tickets.rows, tickets.time))


def _advance_asks(
    st: State,
    month: Month,
    asked: Asked,
    ask_type: np.ndarray,
    resp: Responses,
    pend_ask: np.ndarray,
    last_act: np.ndarray,
) -> None:
    """The state after the month: pending deliveries, ask memory, fatigue and guardrails."""
    n = st.cust.size
    ai, late = asked.rows, resp.late
    a_streak = st.decl_streak[ai]
    st.pend = np.zeros(n, dtype=bool)
    st.pend[ai[late]] = True
    st.pend_type = np.zeros(n, dtype=np.int64)
    st.pend_type[ai[late]] = ask_type[late]
    st.pend_ask = pend_ask
    st.pend_after = np.full(n, -np.inf)
    st.pend_after[ai[late]] = resp.time[late] + 1.0
    st.last_act = last_act
    st.accepted_ever[ai[resp.accepted]] = True
    st.ask_t[ai] = np.concatenate([asked.time[ai][:, None], st.ask_t[ai, :-1]], axis=1)
    st.decl_streak[ai] = np.where(resp.accepted, 0, a_streak + resp.declined)
    st.last_decl[ai[resp.declined]] = resp.time[resp.declined]
    st.last_ref_q[ai[ask_type == REF]] = month.quarter
