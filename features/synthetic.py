"""Deterministic synthetic customer base with known true probabilities.

The world is simulated in monthly steps. Every customer carries hidden traits (advocacy
affinity, a drifting satisfaction, product fit) that show only through noisy observable
signals: usage, health, NPS, tickets and social mentions. Each month the company asks some
customers for advocacy (a points rule plus exploration, mostly within the guardrails), the
customers accept with a probability that the generator knows exactly, and accepted asks turn
into activities; unsolicited advocacy happens too.

`generate_world` returns the seven raw tables of the data contract (spec section 2) and the
truth: the exact acceptance probability of every ask, and for every monthly snapshot the
probability of at least one activity in the next 90 days given the full hidden state. The
propensity truth is computed by simulating K futures from the state at the snapshot with the
same step function that produced the realised data, Rao-Blackwellized: activity occurrence is
never sampled in a future, the future instead carries the probability that no activity
happened so far and continues along the "no activity yet" branch. The realised path is one
sample of the same process, so the realised 90-day labels are draws from the truth.

Everything is vectorised over customers (and customers x futures); Python loops run over
months, futures chunks and the nine ask types only.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import pandas as pd

from features.contracts import as_utc

__all__ = [
    "ASK_EFFORT",
    "ASK_TYPES",
    "DEFAULT_END",
    "TABLE_COLUMNS",
    "SyntheticWorld",
    "generate_world",
]

ASK_TYPES: tuple[str, ...] = (
    "social_share",
    "review",
    "testimonial",
    "referral",
    "beta_feedback",
    "reference_call",
    "case_study",
    "advisory_board",
    "speaking",
)
ASK_EFFORT: dict[str, str] = dict(
    zip(ASK_TYPES, ("5 min", "15 min", "30 min", "30 min", "1 h", "1 h", "2 h", "2 h/quarter", "days"), strict=True)
)
SEGMENTS: tuple[str, ...] = ("smb", "mid_market", "enterprise")
PRIORITIES: tuple[str, ...] = ("low", "normal", "high", "urgent")
OUTCOMES: tuple[str, ...] = ("accepted", "declined", "no_response")
INDUSTRIES: tuple[str, ...] = (
    "software",
    "fintech",
    "healthcare",
    "retail",
    "manufacturing",
    "education",
    "media",
    "logistics",
)
REGIONS: tuple[str, ...] = ("north_america", "emea", "apac", "latam")
USE_CASES: tuple[str, ...] = (
    "analytics",
    "automation",
    "collaboration",
    "customer_support",
    "security",
    "marketing",
)
PLANS: tuple[str, ...] = ("starter", "growth", "enterprise")
CHANNELS: tuple[str, ...] = ("linkedin", "twitter", "g2", "reddit", "blog", "community")

TABLE_COLUMNS: dict[str, tuple[str, ...]] = {
    "customers": (
        "customer_id",
        "name",
        "industry",
        "segment",
        "region",
        "use_case",
        "plan",
        "contract_start",
        "churned_at",
        "arr",
    ),
    "usage": (
        "customer_id",
        "month",
        "licensed_seats",
        "active_users",
        "feature_adoption",
        "logins",
        "health_score",
    ),
    "nps": ("customer_id", "responded_at", "score"),
    "tickets": ("customer_id", "opened_at", "priority", "sentiment", "csat"),
    "social": ("customer_id", "mentioned_at", "sentiment", "channel"),
    "asks": ("ask_id", "customer_id", "ask_type", "asked_at", "outcome", "responded_at"),
    "activities": ("activity_id", "customer_id", "activity_type", "occurred_at", "ask_id"),
}

# --------------------------------------------------------------------------------------
# Model constants. Indices follow ASK_TYPES / SEGMENTS.
# --------------------------------------------------------------------------------------
DEFAULT_END = pd.Timestamp("2026-11-01", tz="UTC")
_K_FUTURES = 32  # futures per snapshot for the propensity truth
_ROWS_PER_CHUNK = 1 << 17  # customers x futures simulated at once (bounds memory, cache-friendly)
_HORIZON_DAYS = 90.0
_MONTH_DAYS = 30.4375  # tenure in months = days / this
_EPS = 2.0 / 86400.0  # keep event times strictly inside their interval after rounding to seconds
_N_ASK_MEMORY = 4  # asks remembered per customer (enough for "asks in the last 90 days")

_REF = ASK_TYPES.index("reference_call")
_URGENT = PRIORITIES.index("urgent")

# Acceptance: effort lowers acceptance (type main effect), segments prefer different asks.
_TYPE_EFFECT = np.array([0.85, 0.6, 0.25, 0.15, 0.0, -0.2, -0.75, -0.85, -1.45])
_SEG_TYPE_EFFECT = np.array(
    [
        [0.55, 0.5, 0.1, 0.2, 0.0, -0.6, -0.3, -0.8, -0.4],  # smb: quick public asks
        [0.0, 0.1, 0.1, 0.3, 0.3, 0.1, 0.1, 0.0, 0.0],  # mid_market: referrals, beta
        [-0.55, -0.45, 0.0, -0.2, 0.2, 0.75, 0.35, 0.85, 0.3],  # enterprise: peer-level asks
    ]
)
# How often the company picks each ask type, by segment (it only half knows what works).
_TYPE_FREQ = np.array(
    [
        [0.24, 0.24, 0.12, 0.12, 0.09, 0.07, 0.05, 0.03, 0.04],
        [0.16, 0.18, 0.12, 0.13, 0.11, 0.12, 0.08, 0.05, 0.05],
        [0.09, 0.12, 0.1, 0.1, 0.1, 0.2, 0.11, 0.11, 0.07],
    ]
)
_TYPE_FREQ_NOREF = _TYPE_FREQ.copy()
_TYPE_FREQ_NOREF[:, _REF] = 0.0
_TYPE_FREQ_NOREF /= _TYPE_FREQ_NOREF.sum(axis=1, keepdims=True)
# Probability that an accepted ask's activity happens in the same month as the response
# (otherwise the next month): big asks take longer to deliver.
_SAME_MONTH = np.array([0.65, 0.6, 0.5, 0.5, 0.5, 0.45, 0.25, 0.3, 0.15])
# Unsolicited advocacy is mostly low-effort.
_ORGANIC_FREQ = np.array([0.34, 0.26, 0.1, 0.16, 0.06, 0.03, 0.02, 0.01, 0.02])

_SEG_P = np.array([0.5, 0.33, 0.17])
_SEG_SEATS = np.array([[2.4, 0.6], [4.7, 0.6], [6.6, 0.7]])  # lognormal (mu, sigma) of seats
_SEG_TICKETS = np.array([0.25, 0.6, 1.4])  # tickets per month at average satisfaction
_SEG_ORGANIC = np.array([0.1, 0.0, -0.2])
_PLAN_BY_SEG = np.array([[0.62, 0.33, 0.05], [0.2, 0.6, 0.2], [0.03, 0.32, 0.65]])
_PLAN_PRICE = np.array([300.0, 550.0, 850.0])  # ARR per seat
_INDUSTRY_P = np.array([0.22, 0.12, 0.12, 0.13, 0.12, 0.09, 0.08, 0.12])
_INDUSTRY_AFFINITY = np.array([0.25, 0.05, -0.15, 0.1, -0.25, 0.1, 0.2, -0.2])
_REGION_P = np.array([0.45, 0.3, 0.17, 0.08])
_USE_CASE_P = np.array([0.22, 0.2, 0.18, 0.15, 0.12, 0.13])
_CHANNEL_P = np.array([0.35, 0.2, 0.15, 0.1, 0.08, 0.12])
_PRIORITY_OTHER_P = np.array([0.33, 0.47, 0.2])  # low, normal, high (urgent drawn separately)

_NAME_HEADS = np.array(
    [
        "Acme", "Globex", "Initech", "Umbrella", "Stark", "Wayne", "Hooli", "Vandelay", "Soylent",
        "Tyrell", "Cyberdyne", "Wonka", "Oscorp", "Aperture", "Massive", "Nimbus", "Vertex",
        "Quantum", "Blue Harbor", "Silverline", "Northwind", "Contoso", "Fabrikam", "Tailspin",
        "Litware", "Proseware", "Adatum", "Lucerne", "Woodgrove", "Bluebird", "Redwood", "Summit",
        "Pinnacle", "Horizon", "Evergreen", "Ironclad", "Brightpath", "Keystone", "Lighthouse",
        "Riverbend",
    ]
)  # fmt: skip
_NAME_TAILS = np.array(
    [
        "Labs", "Systems", "Group", "Holdings", "Analytics", "Logistics", "Health", "Retail",
        "Industries", "Software", "Partners", "Media", "Financial", "Works", "Technologies",
    ]
)  # fmt: skip


@dataclass(frozen=True)
class SyntheticWorld:
    """A generated world: the raw tables (spec section 2) and what the generator knows."""

    tables: dict[str, pd.DataFrame]
    truth: dict[str, pd.DataFrame]


# --------------------------------------------------------------------------------------
# Calendar
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Calendar:
    """Monthly grid; times are float days since the first simulated month start."""

    origin: np.datetime64  # first month start, datetime64[s]
    start: np.ndarray  # start of step k in days, k = 0..M (start[M] = grid end)
    days: np.ndarray  # length of step k in days
    act_lo: np.ndarray  # activities of step k fall in (start + act_lo, start + act_hi)
    act_hi: np.ndarray
    quarter: np.ndarray  # calendar quarter id of step k (reference-call guardrail)


def _calendar(end_month: np.datetime64, months: int) -> _Calendar:
    # Month starts for k = -3..M; the three extra months before the grid fix the activity bands.
    grid = end_month - months + np.arange(-3, months + 1)
    day = grid.astype("datetime64[D]")
    d = (day - day[3]).astype(np.float64)
    start = d[3:]
    days = np.diff(start)
    gap2 = d[3 : months + 3] - d[1 : months + 1]  # start_k - start_{k-2}
    gap3 = d[3 : months + 3] - d[0:months]  # start_k - start_{k-3}
    # Activities of step k occur only in the part of the month that lies in the 90-day window of
    # exactly the month starts k-2, k-1 and k. Then (t, t + 90 days] for t = start_j holds
    # exactly the activities of steps j, j+1, j+2, which is what the truth simulates.
    act_hi = np.minimum(days, _HORIZON_DAYS - gap2)
    act_lo = np.maximum(0.0, _HORIZON_DAYS - gap3)
    quarter = grid[3 : months + 3].astype(np.int64) // 3
    return _Calendar(
        origin=day[3].astype("datetime64[s]"),
        start=start,
        days=days,
        act_lo=act_lo,
        act_hi=act_hi,
        quarter=quarter,
    )


# --------------------------------------------------------------------------------------
# State
# --------------------------------------------------------------------------------------
@dataclass
class _State:
    """Per-row simulation state; a row is a customer, or a customer in one future."""

    cust: np.ndarray  # customer index
    seg: np.ndarray
    affinity: np.ndarray  # hidden advocacy affinity (static)
    mu: np.ndarray  # hidden long-run satisfaction
    fit: np.ndarray  # hidden product fit (drives adoption)
    start_day: np.ndarray  # contract start, days since origin
    alive: np.ndarray
    sat: np.ndarray  # hidden satisfaction, AR(1) around mu
    adoption: np.ndarray  # last observed month
    health: np.ndarray
    has_usage: np.ndarray
    seats: np.ndarray
    last_nps: np.ndarray  # NaN until the first response
    last_pos_social: np.ndarray
    last_urgent: np.ndarray
    accepted_ever: np.ndarray
    ask_t: np.ndarray  # (rows, _N_ASK_MEMORY) recent ask times, newest first, -inf if none
    decl_streak: np.ndarray
    last_decl: np.ndarray
    last_ref_q: np.ndarray
    pend: np.ndarray  # an accepted ask whose activity happens next month
    pend_type: np.ndarray
    pend_ask: np.ndarray
    last_act: np.ndarray

    def take(self, idx: np.ndarray) -> _State:
        return _State(**{f.name: getattr(self, f.name)[idx] for f in fields(self)})

    def put(self, idx: np.ndarray, other: _State) -> None:
        for f in fields(self):
            getattr(self, f.name)[idx] = getattr(other, f.name)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -40.0, 40.0)))


def _tenure_effect(months: np.ndarray) -> np.ndarray:
    """Acceptance by tenure: a dip for the very new, a honeymoon around months 3-9, slow trust."""
    return (
        -0.9 * np.exp(-months / 1.5)
        + 0.6 * np.exp(-0.5 * ((months - 6.0) / 2.0) ** 2)
        + 0.15 * np.clip(months / 36.0, 0.0, 1.0)
    )


def _draw_cat(rng: np.random.Generator, probs: np.ndarray, size: int, group: np.ndarray | int = 0) -> np.ndarray:
    """One categorical draw per row, from row `group` of the (groups x categories) `probs`.

    The groups' CDFs are stacked as g + cdf_g, so one searchsorted does all rows at once.
    """
    probs = np.atleast_2d(probs)
    n_cat = probs.shape[1]
    cdf = np.cumsum(probs / probs.sum(axis=1, keepdims=True), axis=1)
    stacked = (cdf + np.arange(probs.shape[0])[:, None]).ravel()
    g = np.asarray(group)
    idx = np.searchsorted(stacked, rng.random(size) + g, side="right") - g * n_cat
    return np.minimum(idx, n_cat - 1)


def _last_time(n: int, rows: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Latest time per row (-inf where a row has none)."""
    out = np.full(n, -np.inf)
    if rows.size:
        np.maximum.at(out, rows, times)
    return out


@dataclass
class _StepEvents:
    """Events of one simulated month (record mode), rows indexing the step's state."""

    churn: np.ndarray
    usage: dict[str, np.ndarray]
    nps: dict[str, np.ndarray]
    tickets: dict[str, np.ndarray]
    social: dict[str, np.ndarray]
    asks: dict[str, np.ndarray]
    activities: dict[str, np.ndarray]


def _step(
    st: _State,
    k: int,
    cal: _Calendar,
    rng: np.random.Generator,
    record: bool,
    ask_id0: int = 0,
) -> tuple[np.ndarray, _StepEvents | None]:
    """Advance every row of `st` through month k in place.

    record=True: the realised world; draws everything and returns the month's events.
    record=False: a future for the truth; activities are never drawn. Returns, per row, the
    probability that no activity happens this month given the state, and moves the state along
    the "no activity" branch, so the product over months is an unbiased estimate of
    P(no activity in the window) (sequential Rao-Blackwellization).
    """
    n = st.cust.size
    s0, dk = cal.start[k], cal.days[k]
    lo, hi = s0 + cal.act_lo[k], s0 + cal.act_hi[k]
    ar = np.arange(n)
    no_act = np.ones(n)

    # The company's points rule, from what it observed before this month (spec section 4).
    tenure0 = (s0 - st.start_day) / _MONTH_DAYS
    points = (
        25.0 * (st.last_nps >= 9)
        + 20.0 * (st.has_usage & (st.adoption > 0.7))
        + 20.0 * (st.has_usage & (st.health > 80.0))
        + 15.0 * (tenure0 > 12.0)
        + 10.0 * (st.last_pos_social >= s0 - 365.0)
        + 10.0 * st.accepted_ever
    )

    # Churn first: a churned customer does nothing in its churn month or later.
    health_seen = np.where(st.has_usage, st.health, 60.0)
    churn_logit = -4.8 - 0.75 * st.sat - 0.02 * (health_seen - 60.0) + 0.3 * (st.last_nps <= 6)
    churn = st.alive & (rng.random(n) < _sigmoid(churn_logit))
    alive = st.alive & ~churn
    st.alive = alive
    alive_f = alive.astype(np.float64)

    # Satisfaction drifts (AR(1) around the customer's own mean).
    sat = st.mu + 0.85 * (st.sat - st.mu) + 0.4 * rng.standard_normal(n)
    st.sat = sat
    a = st.affinity

    # Tickets. Urgent ones matter for the future (health, acceptance, guardrail); in a future only
    # those are drawn, as Poisson thinning of the full ticket stream, so the law is the same.
    lam_t = _SEG_TICKETS[st.seg] * np.exp(-0.35 * sat) * alive_f
    p_urg = np.minimum(0.08 * np.exp(-0.5 * sat), 0.35)
    tickets: dict[str, np.ndarray] = {}
    if record:
        t_rows = np.repeat(ar, rng.poisson(lam_t))
        m = t_rows.size
        t_time = s0 + rng.uniform(_EPS, dk - _EPS, m)
        urgent = rng.random(m) < p_urg[t_rows]
        prio = np.where(urgent, _URGENT, _draw_cat(rng, _PRIORITY_OTHER_P, m))
        t_sent = np.tanh(0.15 + 0.5 * sat[t_rows] - 0.25 * prio + 0.45 * rng.standard_normal(m))
        csat = np.clip(np.rint(3.7 + 0.7 * sat[t_rows] - 0.25 * prio + 0.9 * rng.standard_normal(m)), 1, 5)
        has_csat = rng.random(m) < 0.55
        tickets = {
            "row": t_rows,
            "time": t_time,
            "priority": prio,
            "sentiment": np.round(t_sent, 3),
            "csat": np.where(has_csat, csat, -1).astype(np.int64),
        }
        u_rows, u_time = t_rows[urgent], t_time[urgent]
    else:
        u_rows = np.repeat(ar, rng.poisson(lam_t * p_urg))
        u_time = s0 + rng.uniform(_EPS, dk - _EPS, u_rows.size)
    urgent_month = np.zeros(n, dtype=bool)
    urgent_month[u_rows] = True

    # NPS: sparse survey answers (only the latest score feeds the state, so the time is drawn
    # in record mode only).
    nps_resp = alive & (rng.random(n) < _sigmoid(-1.9 + 0.3 * a))
    nps_score = np.clip(np.rint(7.1 + 1.7 * sat + 0.35 * a + 1.1 * rng.standard_normal(n)), 0, 10)

    # Social mentions; only positive ones feed the state (the points rule), so a future draws
    # only those (thinning again: sentiment > 0 iff the logistic draw exceeds -loc/scale).
    lam_s = np.exp(-2.7 + 0.75 * a + 0.2 * sat) * alive_f
    s_loc = 0.3 + 0.7 * sat + 0.3 * a
    social: dict[str, np.ndarray] = {}
    if record:
        s_rows = np.repeat(ar, rng.poisson(lam_s))
        m = s_rows.size
        s_time = s0 + rng.uniform(_EPS, dk - _EPS, m)
        x = s_loc[s_rows] + 0.6 * rng.logistic(size=m)
        # Rounded, but never to 0: the sign is what the state (and the points rule) saw.
        s_sent = np.where(
            x > 0, np.maximum(np.round(np.tanh(x), 3), 0.001), np.minimum(np.round(np.tanh(x), 3), -0.001)
        )
        social = {
            "row": s_rows,
            "time": s_time,
            "sentiment": s_sent,
            "channel": _draw_cat(rng, _CHANNEL_P, m),
        }
        pos = x > 0
        p_rows, p_time = s_rows[pos], s_time[pos]
    else:
        p_rows = np.repeat(ar, rng.poisson(lam_s * _sigmoid(s_loc / 0.6)))
        p_time = s0 + rng.uniform(_EPS, dk - _EPS, p_rows.size)

    # Usage of this month (observed from next month on): adoption ramps up after onboarding.
    target = _sigmoid(-0.1 + 0.9 * st.fit + 0.45 * sat - 1.6 * np.exp(-tenure0 / 4.0))
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
    usage: dict[str, np.ndarray] = {}
    if record:
        grow = rng.random(n) < 0.03 * _sigmoid(sat)
        shrink = rng.random(n) < 0.02 * _sigmoid(-sat)
        seats = (
            st.seats
            * np.where(grow, rng.uniform(1.05, 1.3, n), 1.0)
            * np.where(shrink, rng.uniform(0.75, 0.95, n), 1.0)
        )
        seats = np.maximum(np.rint(seats), 1.0)
        util = np.clip(0.25 + 0.6 * adoption + 0.08 * sat + 0.05 * rng.standard_normal(n), 0.01, 1.0)
        active = rng.binomial(seats.astype(np.int64), util)
        logins = rng.poisson(active * (2.0 + 14.0 * adoption))
        st.seats = np.where(alive, seats, st.seats)
        usage = {
            "row": ar[alive],
            "licensed_seats": seats.astype(np.int64)[alive],
            "active_users": active[alive],
            "feature_adoption": adoption[alive],
            "logins": logins[alive],
            "health_score": health[alive],
        }
    st.adoption = np.where(alive, adoption, st.adoption)
    st.health = np.where(alive, health, st.health)
    st.has_usage = st.has_usage | alive

    # Activity of an ask accepted last month.
    pend_fire = st.pend & alive
    # Unsolicited advocacy.
    recent_act = st.last_act >= s0 - 180.0
    p_org = _sigmoid(-4.35 + 1.05 * a + 0.45 * sat + 0.8 * recent_act + _SEG_ORGANIC[st.seg]) * alive_f

    # Asks. The time of the ask is drawn first, so guardrails and fatigue are measured at it.
    ask_time = s0 + rng.uniform(0.01, dk - 12.0, n)
    since_last = ask_time - st.ask_t[:, 0]
    pause = (st.decl_streak >= 2) & (ask_time - st.last_decl < 90.0)
    in_month_urgent = np.zeros(n, dtype=bool)
    hit = (u_time < ask_time[u_rows]) & (u_time >= ask_time[u_rows] - 14.0)
    in_month_urgent[u_rows[hit]] = True
    urgent14 = in_month_urgent | (st.last_urgent >= ask_time - 14.0)
    tenure_ask = (ask_time - st.start_day) / _MONTH_DAYS
    p_ask = 0.065 + 0.4 * _sigmoid((points - 55.0) / 9.0)
    # Mostly respects the guardrails, sometimes not (so their effect can be learned).
    p_ask = p_ask * np.where(since_last < 30.0, 0.25, 1.0) * np.where(pause, 0.2, 1.0)
    p_ask = p_ask * np.where(urgent14 | (health_seen < 40.0), 0.4, 1.0)
    p_ask = p_ask * np.where(tenure_ask < 2.0, 0.35, 1.0)
    asked = alive & (rng.random(n) < p_ask)

    # Everything below concerns the asked rows only (a small share), `ai` indexes them.
    ai = np.flatnonzero(asked)
    na = ai.size
    seg_a = st.seg[ai]
    ask_type = _draw_cat(rng, _TYPE_FREQ, na, seg_a)
    ref_blocked = (ask_type == _REF) & (st.last_ref_q[ai] == cal.quarter[k]) & (rng.random(na) < 0.85)
    ask_type[ref_blocked] = _draw_cat(rng, _TYPE_FREQ_NOREF, int(ref_blocked.sum()), seg_a[ref_blocked])
    a_time = ask_time[ai]
    n90 = (st.ask_t[ai] >= a_time[:, None] - 90.0).sum(axis=1)
    a_sat, a_aff, a_streak = sat[ai], a[ai], st.decl_streak[ai]
    acc_logit = (
        -1.75
        + _TYPE_EFFECT[ask_type]
        + _SEG_TYPE_EFFECT[seg_a, ask_type]
        + 0.85 * a_aff
        + 0.55 * a_sat
        - 0.3 * n90
        - 0.5 * np.exp(-since_last[ai] / 20.0)
        - 0.45 * np.minimum(a_streak, 3)
        - 0.9 * urgent14[ai]
        + _tenure_effect(tenure_ask[ai])
        + 0.2 * st.accepted_ever[ai]
    )
    p_acc = _sigmoid(acc_logit)
    same = _SAME_MONTH[ask_type]
    u_acc = rng.random(na)
    if record:
        accepted = u_acc < p_acc
        late = accepted & (rng.random(na) >= same)
    else:
        # Condition on "no activity this month": an accept delivered this month is excluded.
        no_act[ai] *= 1.0 - p_acc * same
        late = u_acc < p_acc * (1.0 - same) / (1.0 - p_acc * same)
        accepted = late
    silent = ~accepted & (rng.random(na) < _sigmoid(-0.5 - 0.5 * a_sat - 0.3 * a_aff + 0.35 * n90))
    declined = ~accepted & ~silent
    resp_time = a_time + rng.uniform(0.05, 6.0, na)

    events: _StepEvents | None = None
    new_pend_ask = np.full(n, -1, dtype=np.int64)
    if record:
        org = rng.random(n) < p_org
        now = accepted & ~late
        ask_ids = ask_id0 + np.arange(na)
        # Activities: pending from last month, unsolicited, accepted and delivered this month.
        n_pend, n_org = int(pend_fire.sum()), int(org.sum())
        act_rows = np.concatenate([ar[pend_fire], ar[org], ai[now]])
        act_time = np.concatenate(
            [
                rng.uniform(lo + _EPS, hi - _EPS, n_pend + n_org),
                rng.uniform(resp_time[now] + 1.0, hi - _EPS),
            ]
        )
        act_type = np.concatenate([st.pend_type[pend_fire], _draw_cat(rng, _ORGANIC_FREQ, n_org), ask_type[now]])
        act_ask = np.concatenate([st.pend_ask[pend_fire], np.full(n_org, -1, np.int64), ask_ids[now]])
        st.last_act = np.maximum(st.last_act, _last_time(n, act_rows, act_time))
        events = _StepEvents(
            churn=churn,
            usage=usage,
            nps={
                "row": ar[nps_resp],
                "time": s0 + rng.uniform(_EPS, dk - _EPS, int(nps_resp.sum())),
                "score": nps_score[nps_resp].astype(np.int64),
            },
            tickets=tickets,
            social=social,
            asks={
                "row": ai,
                "id": ask_ids,
                "time": a_time,
                "type": ask_type,
                "outcome": np.where(accepted, 0, np.where(declined, 1, 2)),
                "responded": np.where(silent, np.nan, resp_time),
                "p_true": p_acc,
            },
            activities={"row": act_rows, "time": act_time, "type": act_type, "ask": act_ask},
        )
        new_pend_ask[ai[late]] = ask_ids[late]
    else:
        no_act *= np.where(pend_fire, 0.0, 1.0) * (1.0 - p_org)

    # State after the month.
    st.pend = np.zeros(n, dtype=bool)
    st.pend[ai[late]] = True
    st.pend_type = np.zeros(n, dtype=np.int64)
    st.pend_type[ai[late]] = ask_type[late]
    st.pend_ask = new_pend_ask
    st.last_nps = np.where(nps_resp, nps_score, st.last_nps)
    st.last_pos_social = np.maximum(st.last_pos_social, _last_time(n, p_rows, p_time))
    st.last_urgent = np.maximum(st.last_urgent, _last_time(n, u_rows, u_time))
    st.accepted_ever[ai[accepted]] = True
    st.ask_t[ai] = np.concatenate([a_time[:, None], st.ask_t[ai, :-1]], axis=1)
    st.decl_streak[ai] = np.where(accepted, 0, a_streak + declined)
    st.last_decl[ai[declined]] = resp_time[declined]
    st.last_ref_q[ai[ask_type == _REF]] = cal.quarter[k]
    return no_act, events


# --------------------------------------------------------------------------------------
# Population
# --------------------------------------------------------------------------------------
def _population(
    n: int, months: int, cal: _Calendar, rng: np.random.Generator
) -> tuple[dict[str, np.ndarray], _State, np.ndarray]:
    """Firmographics, hidden traits and initial state; customers ordered by contract start."""
    n_init = min(n, max(1, round(0.6 * n))) if n else 0
    n_new = n - n_init
    # Initial base signed before the window (tenure up to ~8 years); the rest join month by month.
    init_start = -1.0 - np.floor(np.minimum(rng.gamma(1.4, 420.0, n_init), 3000.0))
    w = 1.0 + 0.6 * np.arange(months) / max(months, 1)
    join_step = rng.choice(months, size=n_new, p=w / w.sum()) if n_new else np.zeros(0, np.int64)
    join_start = cal.start[join_step] + np.floor(rng.random(n_new) * cal.days[join_step])
    start_day = np.concatenate([init_start, join_start])
    first_step = np.concatenate([np.zeros(n_init, np.int64), join_step + 1])
    order = np.argsort(start_day + rng.random(n) * 0.5, kind="stable")  # random tie-break
    start_day, first_step = start_day[order], first_step[order]

    seg = _draw_cat(rng, _SEG_P, n)
    industry = _draw_cat(rng, _INDUSTRY_P, n)
    region = _draw_cat(rng, _REGION_P, n)
    use_case = _draw_cat(rng, _USE_CASE_P, n)
    plan = _draw_cat(rng, _PLAN_BY_SEG, n, seg)
    seats = np.maximum(np.rint(np.exp(_SEG_SEATS[seg, 0] + _SEG_SEATS[seg, 1] * rng.standard_normal(n))), 1.0)
    arr = np.round(seats * _PLAN_PRICE[plan] * np.exp(0.25 * rng.standard_normal(n)), 2)
    names = np.char.add(
        np.char.add(_NAME_HEADS[rng.integers(0, _NAME_HEADS.size, n)], " "),
        _NAME_TAILS[rng.integers(0, _NAME_TAILS.size, n)],
    )

    z = rng.standard_normal((n, 4))
    affinity = z[:, 0] + _INDUSTRY_AFFINITY[industry]
    mu = 0.6 * (0.35 * z[:, 0] + 0.94 * z[:, 1])
    fit = 0.3 * z[:, 0] + 0.3 * z[:, 1] + 0.9 * z[:, 2]
    sat = mu + 0.76 * z[:, 3]  # stationary spread of the AR(1)

    def full(value: float, dtype: Any = np.float64) -> np.ndarray:
        return np.full(n, value, dtype=dtype)

    state = _State(
        cust=np.arange(n, dtype=np.int64),
        seg=seg.astype(np.int64),
        affinity=affinity,
        mu=mu,
        fit=fit,
        start_day=start_day,
        alive=np.zeros(n, dtype=bool),
        sat=sat,
        adoption=full(0.0),
        health=full(0.0),
        has_usage=np.zeros(n, dtype=bool),
        seats=seats,
        last_nps=full(np.nan),
        last_pos_social=full(-np.inf),
        last_urgent=full(-np.inf),
        accepted_ever=np.zeros(n, dtype=bool),
        ask_t=np.full((n, _N_ASK_MEMORY), -np.inf),
        decl_streak=full(0, np.int64),
        last_decl=full(-np.inf),
        last_ref_q=full(-1, np.int64),
        pend=np.zeros(n, dtype=bool),
        pend_type=full(0, np.int64),
        pend_ask=full(-1, np.int64),
        last_act=full(-np.inf),
    )
    attrs = {
        "name": names,
        "industry": np.asarray(INDUSTRIES)[industry],
        "segment": np.asarray(SEGMENTS)[seg],
        "region": np.asarray(REGIONS)[region],
        "use_case": np.asarray(USE_CASES)[use_case],
        "plan": np.asarray(PLANS)[plan],
        "arr": arr,
    }
    return attrs, state, first_step


# --------------------------------------------------------------------------------------
# Truth
# --------------------------------------------------------------------------------------
def _propensity(state: _State, idx: np.ndarray, j: int, cal: _Calendar, rng: np.random.Generator) -> np.ndarray:
    """P(at least one activity in (start_j, start_j + 90 days]) for the rows `idx` of `state`."""
    out = np.empty(idx.size)
    per_chunk = max(1, _ROWS_PER_CHUNK // _K_FUTURES)
    for c0 in range(0, idx.size, per_chunk):
        chunk = idx[c0 : c0 + per_chunk]
        fut = state.take(np.repeat(chunk, _K_FUTURES))
        p_none = np.ones(fut.cust.size)
        for w in range(3):
            factor, _ = _step(fut, j + w, cal, rng, record=False)
            p_none *= factor
        out[c0 : c0 + chunk.size] = 1.0 - p_none.reshape(chunk.size, _K_FUTURES).mean(axis=1)
    return out


# --------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------
def _ts(cal: _Calendar, days: np.ndarray) -> pd.DatetimeIndex:
    """Float days since origin -> UTC timestamps, whole seconds (NaN -> NaT)."""
    sec = np.floor(np.nan_to_num(days, nan=0.0) * 86400.0).astype(np.int64)
    t = (cal.origin + sec.astype("timedelta64[s]")).astype("datetime64[us]")
    t[np.isnan(days)] = np.datetime64("NaT")
    return pd.DatetimeIndex(t).tz_localize("UTC")


def _ids(prefix: str, n: int, width: int) -> np.ndarray:
    """prefix + zero-padded 1..n, as Python strings."""
    if n == 0:
        return np.empty(0, dtype=object)
    return np.char.add(prefix, np.char.zfill(np.arange(1, n + 1).astype(str), width)).astype(object)


def _cat(parts: list[dict[str, np.ndarray]], key: str, dtype: Any = None) -> np.ndarray:
    arrays = [p[key] for p in parts]
    if not arrays:
        return np.zeros(0, dtype=dtype or np.float64)
    return np.concatenate(arrays)


def _frame(columns: dict[str, Any], order: np.ndarray) -> pd.DataFrame:
    """Columns (numpy arrays, DatetimeIndex or extension arrays) reordered into a frame.

    Object arrays hold Python strings (or None) and become pandas `str` columns, also when empty.
    """
    out = {}
    for name, col in columns.items():
        is_text = isinstance(col, np.ndarray) and col.dtype == object
        out[name] = pd.Series(col[order], dtype="str" if is_text else None)
    return pd.DataFrame(out)


def generate_world(
    n_customers: int = 2000,
    months: int = 30,
    seed: int = 0,
    end: pd.Timestamp = DEFAULT_END,
) -> SyntheticWorld:
    """Simulate `n_customers` customers (initial base plus joiners) over `months` months to `end`.

    `end` is read as UTC when naive; a mid-month `end` is floored to its month start for the
    monthly grid (no event happens at or after it). Returns the seven raw tables (spec section 2,
    sorted by customer then time) and the truth: `acceptance` (ask_id, p_true) for every ask, and
    `propensity` (customer_id, as_of, p_true) for every month start t from the second simulated
    month on whose 90-day window is simulated (t + 90 days <= end), for every customer with
    contract_start < t and not churned before t. Same seed, same frames.
    """
    if n_customers < 1:
        raise ValueError("n_customers must be at least 1")
    if months < 1:
        raise ValueError("months must be at least 1")
    end_ts = as_utc(end)
    cal = _calendar(np.datetime64(f"{end_ts.year:04d}-{end_ts.month:02d}", "M"), months)
    horizon_end_days = (end_ts - pd.Timestamp(cal.origin).tz_localize("UTC")) / pd.Timedelta(days=1)

    root = np.random.default_rng(seed)
    rng_pop, rng_sim, rng_truth = root.spawn(3)
    truth_rngs = rng_truth.spawn(months)
    attrs, state, first_step = _population(n_customers, months, cal, rng_pop)
    n = n_customers
    churn_day = np.full(n, np.nan)

    parts: dict[str, list[dict[str, np.ndarray]]] = {t: [] for t in TABLE_COLUMNS if t != "customers"}
    prop_parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    n_asks = 0
    for k in range(months):
        state.alive |= first_step == k
        idx = np.flatnonzero(state.alive)
        # Truth snapshot at t = start_k from the state before month k happens.
        if 1 <= k <= months - 3 and cal.start[k] + _HORIZON_DAYS <= horizon_end_days + 1e-9:
            p_k = _propensity(state, idx, k, cal, truth_rngs[k])
            prop_parts.append((idx, np.full(idx.size, k), p_k))
        sub = state.take(idx)
        _, ev = _step(sub, k, cal, rng_sim, record=True, ask_id0=n_asks)
        state.put(idx, sub)
        assert ev is not None
        churned = idx[ev.churn]
        churn_day[churned] = cal.start[k] + np.floor(1.0 + rng_sim.random(churned.size) * (cal.days[k] - 1.0))
        n_asks += ev.asks["row"].size
        for name in parts:
            table: dict[str, np.ndarray] = getattr(ev, name)
            block = {key: val for key, val in table.items() if key != "row"}
            block["cust"] = idx[table["row"]]
            if name == "usage":
                block["month"] = np.full(block["cust"].size, cal.start[k])
            parts[name].append(block)

    cust_ids = _ids("C", n, 7)
    tables: dict[str, pd.DataFrame] = {}
    tables["customers"] = pd.DataFrame(
        {
            "customer_id": pd.Series(cust_ids, dtype="str"),
            **{
                col: pd.Series(attrs[col].astype(object), dtype="str")
                for col in ("name", "industry", "segment", "region", "use_case", "plan")
            },
            "contract_start": _ts(cal, state.start_day),
            "churned_at": _ts(cal, churn_day),
            "arr": attrs["arr"],
        }
    )

    p = parts["usage"]
    cust, month = _cat(p, "cust", np.int64), _cat(p, "month")
    order = np.lexsort((month, cust))
    tables["usage"] = _frame(
        {
            "customer_id": cust_ids[cust],
            "month": _ts(cal, month),
            "licensed_seats": _cat(p, "licensed_seats", np.int64),
            "active_users": _cat(p, "active_users", np.int64),
            "feature_adoption": _cat(p, "feature_adoption"),
            "logins": _cat(p, "logins", np.int64),
            "health_score": _cat(p, "health_score"),
        },
        order,
    )

    p = parts["nps"]
    cust, time = _cat(p, "cust", np.int64), _cat(p, "time")
    tables["nps"] = _frame(
        {"customer_id": cust_ids[cust], "responded_at": _ts(cal, time), "score": _cat(p, "score", np.int64)},
        np.lexsort((time, cust)),
    )

    p = parts["tickets"]
    cust, time = _cat(p, "cust", np.int64), _cat(p, "time")
    csat = _cat(p, "csat", np.int64)
    tables["tickets"] = _frame(
        {
            "customer_id": cust_ids[cust],
            "opened_at": _ts(cal, time),
            "priority": np.asarray(PRIORITIES, dtype=object)[_cat(p, "priority", np.int64)],
            "sentiment": _cat(p, "sentiment"),
            "csat": pd.arrays.IntegerArray(np.maximum(csat, 1), csat < 0),
        },
        np.lexsort((time, cust)),
    )

    p = parts["social"]
    cust, time = _cat(p, "cust", np.int64), _cat(p, "time")
    tables["social"] = _frame(
        {
            "customer_id": cust_ids[cust],
            "mentioned_at": _ts(cal, time),
            "sentiment": _cat(p, "sentiment"),
            "channel": np.asarray(CHANNELS, dtype=object)[_cat(p, "channel", np.int64)],
        },
        np.lexsort((time, cust)),
    )

    # Ask ids are issued in time order (as a CRM would); rows are sorted by customer then time.
    p = parts["asks"]
    cust, time, internal = _cat(p, "cust", np.int64), _cat(p, "time"), _cat(p, "id", np.int64)
    ask_id_of = np.empty(n_asks, dtype=object)
    ask_id_of[internal[np.lexsort((cust, time))]] = _ids("A", n_asks, 8)
    order = np.lexsort((time, cust))
    types = np.asarray(ASK_TYPES, dtype=object)
    tables["asks"] = _frame(
        {
            "ask_id": ask_id_of[internal],
            "customer_id": cust_ids[cust],
            "ask_type": types[_cat(p, "type", np.int64)],
            "asked_at": _ts(cal, time),
            "outcome": np.asarray(OUTCOMES, dtype=object)[_cat(p, "outcome", np.int64)],
            "responded_at": _ts(cal, _cat(p, "responded")),
        },
        order,
    )
    acceptance = pd.DataFrame({"ask_id": tables["asks"]["ask_id"], "p_true": _cat(p, "p_true")[order]})

    p = parts["activities"]
    cust, time, ask_ref = _cat(p, "cust", np.int64), _cat(p, "time"), _cat(p, "ask", np.int64)
    act_ids = np.empty(cust.size, dtype=object)
    act_ids[np.lexsort((cust, time))] = _ids("V", cust.size, 8)
    ref = np.full(cust.size, None, dtype=object)
    has_ref = ask_ref >= 0
    ref[has_ref] = ask_id_of[ask_ref[has_ref]]
    tables["activities"] = _frame(
        {
            "activity_id": act_ids,
            "customer_id": cust_ids[cust],
            "activity_type": types[_cat(p, "type", np.int64)],
            "occurred_at": _ts(cal, time),
            "ask_id": ref,
        },
        np.lexsort((time, cust)),
    )

    if prop_parts:
        pc = np.concatenate([q[0] for q in prop_parts])
        pk = np.concatenate([q[1] for q in prop_parts])
        pp = np.concatenate([q[2] for q in prop_parts])
    else:
        pc, pk, pp = np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    order = np.lexsort((pk, pc))
    propensity = _frame(
        {"customer_id": cust_ids[pc], "as_of": _ts(cal, cal.start[pk]), "p_true": np.clip(pp, 0.0, 1.0)},
        order,
    )
    for name, cols in TABLE_COLUMNS.items():
        tables[name] = tables[name][list(cols)]
    return SyntheticWorld(tables=tables, truth={"acceptance": acceptance, "propensity": propensity})
