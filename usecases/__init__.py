"""The application layer: what each job reads, the one scoring recipe, and the use cases.

Every front door (the `advocacy` command line, the service in `serving`, the batch job in `batch`,
training in `training`) walks the same road through these: it parses its input, calls one use
case, and presents the result.

- `sources`: the raw tables, the ask log and the stored plans, read one way (which asks count,
  where the data ends);
- `recipe`: point-in-time features -> snapshot -> guardrails -> score;
- `plans`: make a plan and store it; `reports`: the program report, made and kept for the page;
  `asks`: record asks; `explain`: one customer's explanation from the sources; `references`:
  reference candidates for a deal or a prospect;
- the champion look-up (`models.registry`) and MLflow's set-up (`storage.tracking`), re-exported.
"""

from models.deal_report import DealReport
from models.program import ProgramReport
from models.registry import ChampionRef, ChampionUnavailableError, find_champion, load_champion
from storage.tracking import configure as configure_tracking
from usecases.asks import record_asks
from usecases.campaigns import load_campaign
from usecases.explain import explain_customer
from usecases.plans import (
    DEFAULT_CONFIDENCE,
    MAX_NEED,
    MadePlan,
    PlanJob,
    PlanRequest,
    Schedule,
    ScoredBase,
    base_from_sources,
    base_from_world,
    continue_campaign,
    make_and_store,
    parse_need,
    plan_candidates,
    plan_from_sources,
)
from usecases.recipe import Scored, features_at, restate_asks, score_inputs, score_world
from usecases.references import (
    FoundReferences,
    ReferencePool,
    ReferenceRequest,
    UnknownDealError,
    find_references,
    references_from_sources,
)
from usecases.reports import MadeReport, deal_options, keep_for_the_page, make_report, remake_and_keep, report_stamp
from usecases.sources import LEFT_OUT, Read, Sources, describe_left_out, leave_out_future, left_out_words

__all__ = [
    "DEFAULT_CONFIDENCE",
    "LEFT_OUT",
    "MAX_NEED",
    "ChampionRef",
    "ChampionUnavailableError",
    "DealReport",
    "FoundReferences",
    "MadePlan",
    "MadeReport",
    "PlanJob",
    "PlanRequest",
    "ProgramReport",
    "Read",
    "ReferencePool",
    "ReferenceRequest",
    "Schedule",
    "Scored",
    "ScoredBase",
    "Sources",
    "UnknownDealError",
    "base_from_sources",
    "base_from_world",
    "configure_tracking",
    "continue_campaign",
    "deal_options",
    "describe_left_out",
    "explain_customer",
    "features_at",
    "find_champion",
    "find_references",
    "keep_for_the_page",
    "leave_out_future",
    "left_out_words",
    "load_campaign",
    "load_champion",
    "make_and_store",
    "make_report",
    "parse_need",
    "plan_candidates",
    "plan_from_sources",
    "record_asks",
    "references_from_sources",
    "remake_and_keep",
    "report_stamp",
    "restate_asks",
    "score_inputs",
    "score_world",
]
