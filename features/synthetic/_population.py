"""The customer base: contract starts, firmographics, hidden traits and the initial state.

The draws happen in a fixed order (starts, firmographics, traits), each from `rng_pop`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from features.catalog import SEGMENTS
from features.synthetic._calendar import Calendar
from features.synthetic._params import (
    INDUSTRIES,
    INDUSTRY_AFFINITY,
    INDUSTRY_P,
    N_ASK_MEMORY,
    NAME_HEADS,
    NAME_TAILS,
    PLAN_BY_SEG,
    PLAN_PRICE,
    PLANS,
    REGION_P,
    REGIONS,
    SEG_P,
    SEG_SEATS,
    STATIONARY,
    USE_CASE_P,
    USE_CASES,
    Drift,
)
from features.synthetic._state import State, draw_cat


def population(
    n: int, months: int, cal: Calendar, rng: np.random.Generator, drift: Drift = STATIONARY
) -> tuple[dict[str, np.ndarray], State, np.ndarray]:
    """Firmographics, hidden traits and initial state; customers ordered by contract start.

    The rapport is drawn last, and only when it matters, so a stationary world is unchanged.
    """
    start_day, first_step = _contract_starts(n, months, cal, rng)
    attrs, seg, industry, seats = _firmographics(n, rng)
    state = _initial_state(rng, seg, industry, seats, start_day)
    if drift.rapport:
        state.rapport = rng.standard_normal(n)
    return attrs, state, first_step


def _contract_starts(n: int, months: int, cal: Calendar, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Contract start (days since origin) and first simulated step of each customer, sorted."""
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
    return start_day[order], first_step[order]


def _firmographics(
    n: int, rng: np.random.Generator
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
    """The customers table's attributes, and the segment, industry and seats the model uses."""
    seg = draw_cat(rng, SEG_P, n)
    industry = draw_cat(rng, INDUSTRY_P, n)
    region = draw_cat(rng, REGION_P, n)
    use_case = draw_cat(rng, USE_CASE_P, n)
    plan = draw_cat(rng, PLAN_BY_SEG, n, seg)
    seats = np.maximum(np.rint(np.exp(SEG_SEATS[seg, 0] + SEG_SEATS[seg, 1] * rng.standard_normal(n))), 1.0)
    arr = np.round(seats * PLAN_PRICE[plan] * np.exp(0.25 * rng.standard_normal(n)), 2)
    names = np.char.add(
        np.char.add(NAME_HEADS[rng.integers(0, NAME_HEADS.size, n)], " "),
        NAME_TAILS[rng.integers(0, NAME_TAILS.size, n)],
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
    return attrs, seg, industry, seats


def _initial_state(
    rng: np.random.Generator, seg: np.ndarray, industry: np.ndarray, seats: np.ndarray, start_day: np.ndarray
) -> State:
    """Hidden traits (affinity, long-run satisfaction, fit) and an empty history."""
    n = seg.size
    z = rng.standard_normal((n, 4))
    affinity = z[:, 0] + INDUSTRY_AFFINITY[industry]
    mu = 0.6 * (0.35 * z[:, 0] + 0.94 * z[:, 1])
    fit = 0.3 * z[:, 0] + 0.3 * z[:, 1] + 0.9 * z[:, 2]
    sat = mu + 0.76 * z[:, 3]  # stationary spread of the AR(1)

    def full(value: float, dtype: Any = np.float64) -> np.ndarray:
        return np.full(n, value, dtype=dtype)

    return State(
        cust=np.arange(n, dtype=np.int64),
        seg=seg.astype(np.int64),
        affinity=affinity,
        mu=mu,
        fit=fit,
        rapport=full(0.0),
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
        ask_t=np.full((n, N_ASK_MEMORY), -np.inf),
        decl_streak=full(0, np.int64),
        last_decl=full(-np.inf),
        last_ref_q=full(-1, np.int64),
        pend=np.zeros(n, dtype=bool),
        pend_type=full(0, np.int64),
        pend_ask=full(-1, np.int64),
        pend_after=full(-np.inf),
        last_act=full(-np.inf),
    )
