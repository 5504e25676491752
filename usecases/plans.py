"""Making a plan (spec section 5): whom to ask, for what, to get the yeses needed; and storing it.

One road for `advocacy plan` and `POST /plan`: candidates built one way (`plan_candidates`) from a
scored base, the planner (`models.planner.make_plan`), the acceptance reasons of the planned asks,
the spec's table, and the plan stored under its `plan_id` so that asks recorded with it can be set
against the promise. The command line scores the base from the sources with the recipe; the
service hands over the snapshot it serves, which the same recipe wrote.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.io import World
from features.spec import FEATURE_NAMES
from models.bundle import Bundle
from models.planner import (
    DEFAULT_CONFIDENCE,
    FILTERS,
    MAX_NEED,
    Candidates,
    Plan,
    PlanRequest,
    acceptance_level_sd,
    acceptance_reasons,
    make_plan,
    parse_need,
    plan_record,
    plan_table,
    plannable,
)
from models.registry import ChampionRef
from storage.plans import PlanStore
from usecases.recipe import score_world
from usecases.sources import Sources

# The plan request is the use case's validated settings: the doors build it from their own input.
__all__ = [
    "DEFAULT_CONFIDENCE",
    "FILTERS",
    "MAX_NEED",
    "MadePlan",
    "PlanJob",
    "PlanRequest",
    "ScoredBase",
    "base_from_sources",
    "base_from_world",
    "make_and_store",
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


@dataclass
class MadePlan:
    plan: Plan
    table: pd.DataFrame  # one row per planned ask, in the spec's columns


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
    )
    return cands, frame


def make_and_store(
    bundle: Bundle, champion: ChampionRef, base: ScoredBase, job: PlanJob, plans: PlanStore | None
) -> MadePlan:
    """The plan for `job` over `base`, with each planned ask's acceptance reasons, stored under its
    `plan_id` when `job.store` and a store is given."""
    cands, frame = plan_candidates(bundle, base)
    made = make_plan(cands, job.request, base.as_of)
    picked = frame.iloc[made.asks["row"].to_numpy()]
    table = plan_table(made, acceptance_reasons(bundle, made, picked.loc[:, ["customer_id", "as_of", *FEATURE_NAMES]]))
    if plans is not None and job.store:
        plans.save(made.plan_id, table, plan_record(made, job.request, champion.version))
    return MadePlan(made, table)


def base_from_world(bundle: Bundle, world: World, as_of: pd.Timestamp) -> ScoredBase:
    """Every customer of `world` active at `as_of`, scored by the recipe, guardrails at `as_of`."""
    scored = score_world(bundle, world, as_of)
    ids = list(scored.features["customer_id"].astype("str"))
    return ScoredBase(
        as_of,
        scored.features,
        scored.scores.acceptance,
        scored.blocked.matrix(ids),
        plannable(scored.scores.cold_start, scored.scores.committed),
    )


def base_from_sources(bundle: Bundle, sources: Sources, as_of: pd.Timestamp | None) -> ScoredBase:
    """`base_from_world` on the sources (the ask log's asks included) at `as_of`, by default the
    end of the data."""
    read = sources.read()
    return base_from_world(bundle, read.world, as_of if as_of is not None else read.data_end)


def plan_from_sources(bundle: Bundle, champion: ChampionRef, sources: Sources, job: PlanJob) -> MadePlan:
    """`advocacy plan`: score the base from the sources, then `make_and_store`."""
    return make_and_store(bundle, champion, base_from_sources(bundle, sources, job.as_of), job, sources.plans())
