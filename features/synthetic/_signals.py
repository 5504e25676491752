"""The observable signals of one simulated month, one function per signal.

Each function takes what it needs and returns what it produces, drawing its own random numbers;
`_step.step` calls them in a fixed order, which is the generator's draw sequence. With
record=True a function draws the realised events; with record=False (a future for the truth)
it draws only what feeds the state, by Poisson thinning of the same event stream.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from features.synthetic._calendar import Calendar
from features.synthetic._params import (
    CHANNEL_P,
    EPS,
    MONTH_DAYS,
    PRIORITY_OTHER_P,
    SEG_TICKETS,
    STATIONARY,
    URGENT,
    Drift,
)
from features.synthetic._state import State, draw_cat, sigmoid


@dataclass(frozen=True)
class Month:
    """Step k of the grid: its start and length, the band its activities fall in, its quarter,
    and how the world has drifted by then (logit shifts of acceptance and organic advocacy)."""

    k: int
    s0: np.float64
    dk: np.float64
    lo: np.float64
    hi: np.float64
    quarter: np.int64
    drift: Drift = STATIONARY
    acceptance_shift: float = 0.0
    organic_shift: float = 0.0

    @classmethod
    def of(cls, cal: Calendar, k: int, drift: Drift = STATIONARY) -> Month:
        s0 = cal.start[k]
        years = float(s0) / 365.25
        season = drift.season[int(cal.month_of_year[k])]
        return cls(
            k,
            s0,
            cal.days[k],
            s0 + cal.act_lo[k],
            s0 + cal.act_hi[k],
            cal.quarter[k],
            drift,
            drift.acceptance_per_year * years + season,
            drift.organic_per_year * years + season,
        )


@dataclass(frozen=True)
class Events:
    """A signal's realised events (empty in a future) and the times that feed the state."""

    events: dict[str, np.ndarray]
    rows: np.ndarray  # urgent tickets / positive mentions: the rows ...
    time: np.ndarray  # ... and their times


@dataclass(frozen=True)
class Usage:
    """This month's usage record (record mode), and the adoption, health and seats it leaves."""

    events: dict[str, np.ndarray]
    adoption: np.ndarray
    health: np.ndarray
    seats: np.ndarray


def points_rule(st: State, s0: np.float64) -> tuple[np.ndarray, np.ndarray]:
    """Tenure in months at the month start, and the company's points (spec section 4) from what
    it observed before this month."""
    tenure0 = (s0 - st.start_day) / MONTH_DAYS
    points = (
        25.0 * (st.last_nps >= 9)
        + 20.0 * (st.has_usage & (st.adoption > 0.7))
        + 20.0 * (st.has_usage & (st.health > 80.0))
        + 15.0 * (tenure0 > 12.0)
        + 10.0 * (st.last_pos_social >= s0 - 365.0)
        + 10.0 * st.accepted_ever
    )
    return tenure0, points


def churn(rng: np.random.Generator, st: State) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Who churns this month (a churned customer does nothing in its churn month or later), who
    stays alive, and the health the company last saw (60 before any usage)."""
    health_seen = np.where(st.has_usage, st.health, 60.0)
    churn_logit = -4.8 - 0.75 * st.sat - 0.02 * (health_seen - 60.0) + 0.3 * (st.last_nps <= 6)
    churned = st.alive & (rng.random(st.cust.size) < sigmoid(churn_logit))
    return churned, st.alive & ~churned, health_seen


def satisfaction(rng: np.random.Generator, st: State) -> np.ndarray:
    """Satisfaction drifts (AR(1) around the customer's own mean)."""
    return st.mu + 0.85 * (st.sat - st.mu) + 0.4 * rng.standard_normal(st.cust.size)


def tickets(
    rng: np.random.Generator, month: Month, seg: np.ndarray, sat: np.ndarray, alive_f: np.ndarray, record: bool
) -> Events:
    """Support tickets; the state keeps the urgent ones (health, acceptance, guardrail)."""
    ar = np.arange(sat.size)
    s0, dk = month.s0, month.dk
    lam_t = SEG_TICKETS[seg] * np.exp(-0.35 * sat) * alive_f
    p_urg = np.minimum(0.08 * np.exp(-0.5 * sat), 0.35)
    if not record:
        # A future draws only the urgent tickets: Poisson thinning, so the law is the same.
        u_rows = np.repeat(ar, rng.poisson(lam_t * p_urg))
        u_time = s0 + rng.uniform(EPS, dk - EPS, u_rows.size)
        return Events({}, u_rows, u_time)
    t_rows = np.repeat(ar, rng.poisson(lam_t))
    m = t_rows.size
    t_time = s0 + rng.uniform(EPS, dk - EPS, m)
    urgent = rng.random(m) < p_urg[t_rows]
    prio = np.where(urgent, URGENT, draw_cat(rng, PRIORITY_OTHER_P, m))
    t_sent = np.tanh(0.15 + 0.5 * sat[t_rows] - 0.25 * prio + 0.45 * rng.standard_normal(m))
    csat = np.clip(np.rint(3.7 + 0.7 * sat[t_rows] - 0.25 * prio + 0.9 * rng.standard_normal(m)), 1, 5)
    has_csat = rng.random(m) < 0.55
    events = {
        "row": t_rows,
        "time": t_time,
        "priority": prio,
        "sentiment": np.round(t_sent, 3),
        "csat": np.where(has_csat, csat, -1).astype(np.int64),
    }
    return Events(events, t_rows[urgent], t_time[urgent])


def nps(rng: np.random.Generator, alive: np.ndarray, sat: np.ndarray, a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sparse survey answers: who responds and the score (drawn for every row)."""
    n = sat.size
    responded = alive & (rng.random(n) < sigmoid(-1.9 + 0.3 * a))
    score = np.clip(np.rint(7.1 + 1.7 * sat + 0.35 * a + 1.1 * rng.standard_normal(n)), 0, 10)
    return responded, score


def nps_events(
    rng: np.random.Generator, month: Month, responded: np.ndarray, score: np.ndarray
) -> dict[str, np.ndarray]:
    """The month's NPS records. Only the latest score feeds the state, so the response time is
    drawn in record mode only, after the month's activities."""
    return {
        "row": np.arange(responded.size)[responded],
        "time": month.s0 + rng.uniform(EPS, month.dk - EPS, int(responded.sum())),
        "score": score[responded].astype(np.int64),
    }


def social(
    rng: np.random.Generator, month: Month, sat: np.ndarray, a: np.ndarray, alive_f: np.ndarray, record: bool
) -> Events:
    """Social mentions; the state keeps the positive ones (the points rule)."""
    ar = np.arange(sat.size)
    s0, dk = month.s0, month.dk
    lam_s = np.exp(-2.7 + 0.75 * a + 0.2 * sat) * alive_f
    s_loc = 0.3 + 0.7 * sat + 0.3 * a
    if not record:
        # Thinning again: sentiment > 0 iff the logistic draw exceeds -loc/scale.
        p_rows = np.repeat(ar, rng.poisson(lam_s * sigmoid(s_loc / 0.6)))
        p_time = s0 + rng.uniform(EPS, dk - EPS, p_rows.size)
        return Events({}, p_rows, p_time)
    s_rows = np.repeat(ar, rng.poisson(lam_s))
    m = s_rows.size
    s_time = s0 + rng.uniform(EPS, dk - EPS, m)
    x = s_loc[s_rows] + 0.6 * rng.logistic(size=m)
    # Rounded, but never to 0: the sign is what the state (and the points rule) saw.
    s_sent = np.where(x > 0, np.maximum(np.round(np.tanh(x), 3), 0.001), np.minimum(np.round(np.tanh(x), 3), -0.001))
    events = {
        "row": s_rows,
        "time": s_time,
        "sentiment": s_sent,
        "channel": draw_cat(rng, CHANNEL_P, m),
    }
    pos = x > 0
    return Events(events, s_rows[pos], s_time[pos])


def usage(
    rng: np.random.Generator,
    st: State,
    sat: np.ndarray,
    tenure0: np.ndarray,
    urgent_month: np.ndarray,
    alive: np.ndarray,
    record: bool,
) -> Usage:
    """Usage of this month (observed from next month on): adoption ramps up after onboarding."""
    n = sat.size
    target = sigmoid(-0.1 + 0.9 * st.fit + 0.45 * sat - 1.6 * np.exp(-tenure0 / 4.0))
    prev = np.where(st.has_usage, st.adoption, 0.5 * target)
    adoption = np.round(np.clip(prev + 0.35 * (target - prev) + 0.035 * rng.standard_normal(n), 0.0, 1.0), 3)
    health = np.round(
        np.clip(
            54.0 + 13.0 * sat + 30.0 * (adoption - 0.5) - 12.0 * urgent_month + 6.0 * rng.standard_normal(n),
            0.0,
            100.0,
        ),
        1,
    )
    if not record:
        return Usage({}, adoption, health, st.seats)
    grow = rng.random(n) < 0.03 * sigmoid(sat)
    shrink = rng.random(n) < 0.02 * sigmoid(-sat)
    seats = (
        st.seats * np.where(grow, rng.uniform(1.05, 1.3, n), 1.0) * np.where(shrink, rng.uniform(0.75, 0.95, n), 1.0)
    )
    seats = np.maximum(np.rint(seats), 1.0)
    util = np.clip(0.25 + 0.6 * adoption + 0.08 * sat + 0.05 * rng.standard_normal(n), 0.01, 1.0)
    active = rng.binomial(seats.astype(np.int64), util)
    logins = rng.poisson(active * (2.0 + 14.0 * adoption))
    events = {
        "row": np.arange(n)[alive],
        "licensed_seats": seats.astype(np.int64)[alive],
        "active_users": active[alive],
        "feature_adoption": adoption[alive],
        "logins": logins[alive],
        "health_score": health[alive],
    }
    return Usage(events, adoption, health, np.where(alive, seats, st.seats))
