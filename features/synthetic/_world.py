"""`generate_world`: the calendar, the population, the monthly loop with its truth snapshots,
and the tables."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.catalog import TABLES
from features.contracts import CONTRACTS, as_utc
from features.synthetic import _tables
from features.synthetic._calendar import Calendar, make_calendar
from features.synthetic._deals import with_deals
from features.synthetic._params import DEFAULT_END, DRIFTING, HORIZON_DAYS, Drift
from features.synthetic._population import population
from features.synthetic._state import State
from features.synthetic._step import StepEvents, step
from features.synthetic._truth import propensity

Snapshot = tuple[np.ndarray, np.ndarray, np.ndarray]  # customer index, step, p_true


@dataclass(frozen=True)
class SyntheticWorld:
    """A generated world: the raw tables (spec section 2) and what the generator knows."""

    tables: dict[str, pd.DataFrame]
    truth: dict[str, pd.DataFrame]


@dataclass
class _Run:
    """What the monthly loop collects: event blocks per table, truth snapshots, churn days."""

    parts: dict[str, _tables.Parts]
    snapshots: list[Snapshot]
    churn_day: np.ndarray
    by_type: list[tuple[np.ndarray, int, np.ndarray]]  # customer index, step, (rows x ask types)
    n_asks: int = 0


def generate_world(
    n_customers: int = 2000,
    months: int = 30,
    seed: int = 0,
    end: pd.Timestamp = DEFAULT_END,
    drift: Drift = DRIFTING,
    acceptance_truth: bool = True,
) -> SyntheticWorld:
    """Simulate `n_customers` customers (initial base plus joiners) over `months` months to `end`.

    `end` is read as UTC when naive; a mid-month `end` is floored to its month start for the
    monthly grid (no event happens at or after it). Returns the seven raw tables (spec section 2,
    sorted by customer then time) and the truth: `acceptance` (ask_id, p_true) for every ask, and
    `propensity` (customer_id, as_of, p_true) for every month start t from the second simulated
    month on whose 90-day window is simulated (t + 90 days <= end), for every customer with
    contract_start < t and not churned before t. With `acceptance_truth`, also
    `acceptance_by_type` (customer_id, as_of, ask_type, p_true): the true acceptance of an ask of
    each type made at each month start t from the second month on, for every customer live at t,
    asked then or not. Same seed, same frames.

    `drift` is how the world changes over time and what its tables never record (`DRIFTING` by
    default); `STATIONARY` is the world as it was before drift existed, draw for draw.
    Answers that come after `end`, or after the customer churned, are recorded as no response yet.
    Deals of prospects (`opportunities`, the asks' `opportunity_id`, `truth/deals`) come from a
    random stream of their own (`features.synthetic._deals`): the other tables are the same with or
    without them.
    """
    if n_customers < 1:
        raise ValueError("n_customers must be at least 1")
    if months < 1:
        raise ValueError("months must be at least 1")
    end_ts = as_utc(end)
    cal = make_calendar(np.datetime64(f"{end_ts.year:04d}-{end_ts.month:02d}", "M"), months)
    horizon_end_days = (end_ts - pd.Timestamp(cal.origin).tz_localize("UTC")) / pd.Timedelta(days=1)

    root = np.random.default_rng(seed)
    rng_pop, rng_sim, rng_truth = root.spawn(3)
    truth_rngs = rng_truth.spawn(months)
    attrs, state, first_step = population(n_customers, months, cal, rng_pop, drift)
    parts: dict[str, _tables.Parts] = {t: [] for t in TABLES if t != "customers"}
    run = _Run(parts, snapshots=[], churn_day=np.full(n_customers, np.nan), by_type=[])
    for k in range(months):
        state.alive |= first_step == k
        idx = np.flatnonzero(state.alive)
        # Truth snapshot at t = start_k from the state before month k happens.
        if 1 <= k <= months - 3 and cal.start[k] + HORIZON_DAYS <= horizon_end_days + 1e-9:
            run.snapshots.append((idx, np.full(idx.size, k), propensity(state, idx, k, cal, truth_rngs[k], drift)))
        _simulate_month(run, state, idx, k, cal, rng_sim, drift, acceptance_truth and k >= 1)
    world = _assemble(cal, attrs, state, run, horizon_end_days)
    tables, deals = with_deals(world.tables, seed, end_ts)
    return SyntheticWorld(tables=tables, truth={**world.truth, "deals": deals})


def _simulate_month(
    run: _Run,
    state: State,
    idx: np.ndarray,
    k: int,
    cal: Calendar,
    rng: np.random.Generator,
    drift: Drift,
    type_truth: bool,
) -> None:
    """The realised month k for the live customers `idx`; its events go into `run`."""
    sub = state.take(idx)
    _, ev = step(sub, k, cal, rng, record=True, ask_id0=run.n_asks, drift=drift, type_truth=type_truth)
    state.put(idx, sub)
    assert ev is not None
    if ev.acceptance_by_type is not None:
        run.by_type.append((idx, k, ev.acceptance_by_type.astype(np.float32)))
    churned = idx[ev.churn]
    run.churn_day[churned] = cal.start[k] + np.floor(1.0 + rng.random(churned.size) * (cal.days[k] - 1.0))
    run.n_asks += ev.asks["row"].size
    _collect(run.parts, ev, idx, cal.start[k])


def _collect(parts: dict[str, _tables.Parts], ev: StepEvents, idx: np.ndarray, month_start: np.float64) -> None:
    """Append the month's event blocks, rows mapped from the step's state to customers."""
    for name in parts:
        table: dict[str, np.ndarray] = getattr(ev, name)
        block = {key: val for key, val in table.items() if key != "row"}
        block["cust"] = idx[table["row"]]
        if name == "usage":
            block["month"] = np.full(block["cust"].size, month_start)
        parts[name].append(block)


def _assemble(cal: Calendar, attrs: dict[str, np.ndarray], state: State, run: _Run, end_day: float) -> SyntheticWorld:
    """The seven raw tables in contract column order, and the truth."""
    cust_ids = _tables.ids("C", state.cust.size, 7)
    p = run.parts
    answered_by = np.minimum(np.nan_to_num(run.churn_day, nan=np.inf), end_day)  # no answer after these
    asks, acceptance, ask_id_of = _tables.asks_tables(cal, cust_ids, p["asks"], run.n_asks, answered_by)
    tables = {
        "customers": _tables.customers_table(cal, cust_ids, attrs, state.start_day, run.churn_day),
        "usage": _tables.usage_table(cal, cust_ids, p["usage"]),
        "nps": _tables.nps_table(cal, cust_ids, p["nps"]),
        "tickets": _tables.tickets_table(cal, cust_ids, p["tickets"]),
        "social": _tables.social_table(cal, cust_ids, p["social"]),
        "asks": asks,
        "activities": _tables.activities_table(cal, cust_ids, p["activities"], ask_id_of),
    }
    tables = {name: tables[name][list(CONTRACTS[name].columns)] for name in TABLES}
    truth = {"acceptance": acceptance, "propensity": _tables.propensity_table(cal, cust_ids, run.snapshots)}
    if run.by_type:
        truth["acceptance_by_type"] = _tables.acceptance_by_type_table(cal, cust_ids, run.by_type)
    return SyntheticWorld(tables=tables, truth=truth)
