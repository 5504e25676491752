"""Making a plan (spec section 5): whom to ask, for what, to get the yeses needed; and storing it.

One road for `advocacy plan` and `POST /plan`: candidates built one way (`plan_candidates`) from a
scored base, the planner (`models.planner.make_plan`), the acceptance reasons of the planned asks,
the spec's table, and the plan stored under its `plan_id` so that asks recorded with it can be set
against the promise. The command line scores the base from the sources with the recipe; the
service hands over the snapshot it serves, which the same recipe wrote.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from features.contracts import empty_table
from features.io import World
from features.plan_links import empty_plan_links
from features.spec import FEATURE_NAMES
from models.bundle import Bundle
from models.campaign import Pace, Schedule
from models.planner import (
    DEFAULT_CONFIDENCE,
    FILTERS,
    MAX_NEED,
    Candidates,
    Plan,
    PlanRequest,
    Wave,
    acceptance_level_sd,
    acceptance_reasons,
    make_plan,
    parse_need,
    plan_record,
    plan_table,
    plannable,
)
from models.registry import ChampionRef
from models.scoring import ungated_of
from storage.plans import PlanStore
from usecases.campaigns import (
    campaign_record,
    campaign_state,
    campaign_summary,
    load_campaign,
    reserved_elsewhere,
    wave_for,
)
from usecases.recipe import score_world
from usecases.sources import Read, Sources, left_out_words

# The plan request is the use case's validated settings: the doors build it from their own input.
__all__ = [
    "DEFAULT_CONFIDENCE",
    "FILTERS",
    "MAX_NEED",
    "MadePlan",
    "PlanJob",
    "PlanRequest",
    "Schedule",
    "ScoredBase",
    "base_from_sources",
    "base_from_world",
    "continue_campaign",
    "make_and_store",
    "next_wave",
    "parse_need",
    "plan_candidates",
    "plan_from_sources",
    "plannable",
]


@dataclass(frozen=True)
class PlanJob:
    """A plan to make: the manager's request (checked by `PlanRequest`), the moment it is made for
    (None: the end of the data, or the snapshot's time in the service), and whether to store it
    (a look at a plan, not one to record asks against, is not stored)."""

    request: PlanRequest
    as_of: pd.Timestamp | None = None
    store: bool = True
    schedule: Schedule = field(default_factory=Schedule)  # more than one wave: a campaign (spec 5a)


@dataclass
class MadePlan:
    plan: Plan
    table: pd.DataFrame  # one row per planned ask, in the spec's columns
    left_out: dict[str, int] = field(default_factory=dict)  # rows the reader left out, in words


@dataclass(frozen=True)
class ScoredBase:
    """What a plan is made from, one row per customer: feature rows (with `name` and the filter
    columns), acceptance (customers x ask types), guardrail blocks (the same shape), and whether
    the model speaks for each (`plannable`: not cold start, not committed pipeline)."""

    as_of: pd.Timestamp
    features: pd.DataFrame
    acceptance: np.ndarray
    blocked: np.ndarray
    plannable: np.ndarray
    asks: pd.DataFrame | None = None  # the asks known at as_of: how long answers take, for a campaign
    data_dir: str | None = None  # where the base was read from (a campaign's next wave reads it again)
    left_out: dict[str, int] = field(default_factory=dict)  # rows the reader left out, in words


def plan_candidates(bundle: Bundle, base: ScoredBase) -> tuple[Candidates, pd.DataFrame]:
    """The planner's candidates (the plannable rows) and their feature rows, for the reasons. A
    customer's last ask is read from `days_since_last_ask`, so both doors order ties alike."""
    keep = np.flatnonzero(base.plannable)
    frame = base.features.iloc[keep].reset_index(drop=True)
    days = frame["days_since_last_ask"].to_numpy(dtype=float)
    cands = Candidates(
        customer_id=frame["customer_id"].to_numpy(dtype=object),
        acceptance=base.acceptance[keep],
        blocked=base.blocked[keep],
        last_asked_at=pd.DatetimeIndex(base.as_of - pd.to_timedelta(days, unit="D")),
        attributes=frame.loc[:, ["name", *FILTERS]],
        level_sd=acceptance_level_sd(bundle),
        ungated=ungated_of(bundle),
    )
    return cands, frame


def make_and_store(
    bundle: Bundle,
    champion: ChampionRef,
    base: ScoredBase,
    job: PlanJob,
    plans: PlanStore | None,
    links: pd.DataFrame | None = None,
) -> MadePlan:
    """The plan for `job` over `base` (wave 1 of a campaign when its schedule has more waves), with
    each planned ask's acceptance reasons, stored under its `plan_id` when `job.store` and a store
    is given. `links` (ask_id -> plan_id, the asks table's and the log's) free the customers of other open campaigns
    once they have answered there; without them, those campaigns hold all theirs."""
    cands, frame = plan_candidates(bundle, base)
    if job.schedule.waves == 1:
        made = make_plan(cands, job.request, base.as_of)
        record = plan_record(made, job.request, champion.version)
    else:
        deadline = base.as_of + pd.Timedelta(days=job.schedule.waves * job.schedule.wave_days)
        asks = base.asks if base.asks is not None else empty_table("asks")
        links = links if links is not None else empty_plan_links()
        held = reserved_elsewhere(plans, links, asks, base.as_of) if plans is not None else frozenset()
        wave, times = wave_for(bundle, cands, job.request, job.schedule, 1, base.as_of, deadline, asks, None, held)
        made = make_plan(cands, job.request, base.as_of, wave=wave)
        pace = Pace(1, job.schedule.waves, float(job.schedule.wave_days))
        made.summary = campaign_summary(bundle, cands, job.request, wave, times, pace, _rows_by_type(made), None)
        record = plan_record(made, job.request, champion.version)
        record["campaign"] = campaign_record(job.schedule, base.as_of, base.data_dir)
        made.campaign = _calendar(record, 1)
    table = _table(bundle, made, frame)
    if plans is not None and job.store:
        plans.save(made.plan_id, table, record)
    return MadePlan(made, table, dict(base.left_out))


def continue_campaign(
    bundle: Bundle, champion: ChampionRef, sources: Sources, plan_id: str, as_of: pd.Timestamp | None
) -> MadePlan:
    """`advocacy plan --continue`: the next wave of a stored campaign (`next_wave`), the base
    scored by the recipe from the sources at the wave's date."""
    read = sources.read()
    made = next_wave(
        bundle,
        champion,
        sources.plans(),
        read.plan_links,
        plan_id,
        as_of,
        lambda when: base_from_world(bundle, read.world, when, str(sources.data_dir)),
    )
    made.left_out = left_out_words(read.left_out)
    return made


def next_wave(
    bundle: Bundle,
    champion: ChampionRef,
    plans: PlanStore,
    links: pd.DataFrame,
    plan_id: str,
    as_of: pd.Timestamp | None,
    base_at: Callable[[pd.Timestamp], ScoredBase],
) -> MadePlan:
    """The next wave of a stored campaign (spec 5a) at `as_of` (default: the last wave's date plus
    wave_days), from the campaign's own answers (the asks `links` ties to it, among the base's);
    stored with the campaign. `base_at(when)` is the scored base at the wave's date. After the last
    wave, or at the deadline, the wave is empty: nothing more to ask."""
    rows, record = load_campaign(plans, plan_id)
    calendar = record["campaign"]
    last = pd.Timestamp(calendar["wave_dates"][-1])
    base = base_at(as_of if as_of is not None else last + pd.Timedelta(days=int(calendar["wave_days"])))
    asks = base.asks if base.asks is not None else pd.DataFrame(columns=["ask_id", "asked_at"])
    state = campaign_state(plan_id, rows, record, asks, links, base.as_of)
    schedule, request = state.schedule, state.request
    cands, frame = plan_candidates(bundle, base)
    held = reserved_elsewhere(plans, links, asks, state.as_of, plan_id)
    wave, times = wave_for(bundle, cands, request, schedule, state.wave, state.as_of, state.deadline, asks, state, held)
    if state.wave > schedule.waves or state.as_of >= state.deadline:
        wave = Wave(wave.outlooks, wave.target, np.ones(cands.customer_id.size, dtype=bool))  # asks no one
    # Each wave goes on down the random draw of the campaign's first wave (its ungated types).
    made = make_plan(cands, request, state.as_of, plan_id=plan_id, wave=wave, draw=calendar["wave_dates"][0])
    made.wave = state.wave
    pace = Pace(min(state.wave, schedule.waves), schedule.waves, float(schedule.wave_days))
    made.summary = campaign_summary(bundle, cands, request, wave, times, pace, _rows_by_type(made), state)
    table = _table(bundle, made, frame)
    record = {**record, "summary": made.summary}
    record["campaign"] = {**calendar, "wave_dates": [*calendar["wave_dates"], state.as_of.isoformat()]}
    made.campaign = _calendar(record, state.wave)
    if state.wave <= schedule.waves:
        plans.save(plan_id, pd.concat([rows, table], ignore_index=True), record)
    return MadePlan(made, table, dict(base.left_out))


def _rows_by_type(plan: Plan) -> dict[str, np.ndarray]:
    asks = plan.asks
    return {name: asks.loc[asks["ask_type"] == name, "row"].to_numpy() for name in plan.summary}


def _calendar(record: dict[str, Any], wave: int) -> dict[str, Any]:
    calendar = record["campaign"]
    return {
        "wave": wave,
        "waves": calendar["waves"],
        "wave_days": calendar["wave_days"],
        "deadline": calendar["deadline"],
    }


def _table(bundle: Bundle, made: Plan, frame: pd.DataFrame) -> pd.DataFrame:
    """The spec's table of a plan, each planned ask with its acceptance reasons."""
    picked = frame.iloc[made.asks["row"].to_numpy()]
    return plan_table(made, acceptance_reasons(bundle, made, picked.loc[:, ["customer_id", "as_of", *FEATURE_NAMES]]))


def base_from_world(bundle: Bundle, world: World, as_of: pd.Timestamp, data_dir: str | None = None) -> ScoredBase:
    """Every customer of `world` active at `as_of`, scored by the recipe, guardrails at `as_of`."""
    scored = score_world(bundle, world, as_of)
    ids = list(scored.features["customer_id"].astype("str"))
    return ScoredBase(
        as_of,
        scored.features,
        scored.scores.acceptance,
        scored.blocked.matrix(ids),
        plannable(scored.scores.cold_start, scored.scores.committed),
        world.asks[world.asks["asked_at"] < as_of],
        data_dir,
    )


def base_from_sources(
    bundle: Bundle, sources: Sources, as_of: pd.Timestamp | None, read: Read | None = None
) -> ScoredBase:
    """`base_from_world` on the sources (the ask log's asks included) at `as_of`, by default the
    end of the data; `read`: the sources already read."""
    read = read if read is not None else sources.read()
    when = as_of if as_of is not None else read.data_end
    base = base_from_world(bundle, read.world, when, str(sources.data_dir))
    return replace(base, left_out=left_out_words(read.left_out))


def plan_from_sources(bundle: Bundle, champion: ChampionRef, sources: Sources, job: PlanJob) -> MadePlan:
    """`advocacy plan`: score the base from the sources, then `make_and_store`."""
    read = sources.read()
    base = base_from_sources(bundle, sources, job.as_of, read)
    return make_and_store(bundle, champion, base, job, sources.plans(), read.plan_links)
