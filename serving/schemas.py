"""Request and response bodies of the HTTP API (spec section 7), as pydantic models.

Field names are the spec's. Requests are validated strictly (a string where a number belongs is
rejected, never coerced), so a bad body comes back as a 400 that names the field. The feature record
of `POST /score_features` is built from `features.spec`, so a new feature is accepted (and required)
as soon as it exists there.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    create_model,
    field_validator,
)

from features.catalog import ASK_TYPE_NAMES, OUTCOMES, SEGMENTS
from features.contracts import MAX_ID_LENGTH, YEARS, read_timestamp
from features.spec import FEATURES, Feature
from models.campaign import MAX_WAVE_DAYS, MAX_WAVES
from models.references import MAX_K
from models.tiers import TIER_ORDER
from usecases.plans import DEFAULT_CONFIDENCE, MAX_NEED

MAX_IDS = 1000
MAX_RECORDS = 1000
MAX_ASKS = 10_000

# Surrounding whitespace is stripped before the length is checked; the pattern tells the OpenAPI
# spec what that means (at least one other character), without changing what is accepted.
Id = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_ID_LENGTH, pattern=r"\S")]
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200, pattern=r"\S")]


# Timestamps a caller sends fall in these years (within a day of them in UTC): every date derived from
# them (a day count back, a cooldown ahead) stays inside pandas' nanosecond range (1677-2262) and
# Python's (1-9999).
def _plausible(value: datetime) -> datetime:
    if not YEARS[0] <= value.year <= YEARS[1]:
        raise ValueError(f"must fall in the years {YEARS[0]} to {YEARS[1]}")
    return value


def _read_by_the_contract(value: Any, info: ValidationInfo) -> datetime:
    # The tables' rule, not pydantic's: ISO 8601 text only (pydantic reads 0, "86400" or milliseconds
    # as epoch times, 1970), naive read as UTC.
    return read_timestamp(info.field_name or "timestamp", value).to_pydatetime()


Timestamp = Annotated[datetime, BeforeValidator(_read_by_the_contract), AfterValidator(_plausible)]

# ---------------------------------------------------------------------------------------------
# Requests
# ---------------------------------------------------------------------------------------------


class StrictBody(BaseModel):
    # Unknown keys are refused so a misspelt field is reported rather than silently ignored.
    model_config = ConfigDict(extra="forbid", strict=True)


class ScoreRequest(StrictBody):
    """`POST /score`: the customers to score from the latest stored features."""

    customer_ids: list[Id] = Field(min_length=1, max_length=MAX_IDS, description=f"1 to {MAX_IDS} customer ids")


class ExplainRequest(StrictBody):
    """`POST /explain`: one customer."""

    customer_id: Id


class PlanRequestBody(StrictBody):
    """`POST /plan`: yeses needed per ask type, the confidence each list must reach, optional filters
    and waves (a campaign, spec 5a); or a campaign's `plan_id` (and `as_of`) for its next wave."""

    need: dict[str, Annotated[int, Field(ge=1, le=MAX_NEED)]] | None = Field(
        default=None,
        min_length=1,
        description=f"ask type -> yeses needed (1 to {MAX_NEED:,}); ask types: {', '.join(ASK_TYPE_NAMES)}",
    )
    waves: int = Field(default=1, ge=1, le=MAX_WAVES, description="ask in this many waves (1: all at once)")
    wave_days: int = Field(default=14, ge=1, le=MAX_WAVE_DAYS, description="days between waves")
    as_of: Timestamp | None = Field(default=None, description="the wave's date (default: now)")
    plan_id: Id | None = Field(default=None, description="a campaign's plan_id: plan its next wave")
    # The bounds are exclusive, checked below: the OpenAPI 3.0 document BentoML serves has no way to say
    # so (pydantic's `gt`/`lt` become 3.1's numeric exclusiveMinimum, which 3.0 readers refuse).
    confidence: float = Field(default=DEFAULT_CONFIDENCE, ge=0.0, le=1.0, description="between 0 and 1, exclusive")
    segment: Text | None = None
    industry: Text | None = None
    region: Text | None = None
    use_case: Text | None = None
    store: bool = Field(
        default=True, description="false: a look at the plan, not stored (asks cannot name its plan_id)"
    )

    @field_validator("confidence")
    @classmethod
    def _inside(cls, value: float) -> float:
        if not 0.0 < value < 1.0:
            raise ValueError("must be between 0 and 1, exclusive")
        return value

    @field_validator("need")
    @classmethod
    def _known_types(cls, value: dict[str, int] | None) -> dict[str, int] | None:
        unknown = [t for t in value or {} if t not in ASK_TYPE_NAMES]
        if unknown:
            raise ValueError(f"unknown ask type {unknown[0]!r} (one of {', '.join(ASK_TYPE_NAMES)})")
        return value


_PROSPECT = ("industry", "segment", "use_case")
_ONE_OF_DEAL_OR_PROSPECT: list[Any] = [
    {"required": ["opportunity_id"], "not": {"anyOf": [{"required": [name]} for name in _PROSPECT]}},
    {"required": list(_PROSPECT), "not": {"required": ["opportunity_id"]}},
]


class ReferencesRequest(StrictBody):
    """`POST /references`: a deal (its `opportunity_id`), or the prospect who wants to talk to a
    reference customer (industry, segment and use case); exactly one of the two
    (`usecases.references.ReferenceRequest` says so, naming the fields)."""

    # The rule in the OpenAPI document too, so that clients (and the fuzzer) see the two shapes.
    model_config = ConfigDict(json_schema_extra={"oneOf": _ONE_OF_DEAL_OR_PROSPECT})

    opportunity_id: Id | None = Field(
        default=None, description="a deal of the opportunities table: its industry, segment and use case are matched"
    )
    industry: Text | None = None
    # Matched case-insensitively; the spec's enum lists the canonical spellings.
    segment: Text | None = Field(
        default=None, description=f"one of {', '.join(SEGMENTS)}", json_schema_extra={"enum": [*SEGMENTS, None]}
    )
    use_case: Text | None = None
    k: int = Field(default=10, ge=1, le=MAX_K)

    @field_validator("segment")
    @classmethod
    def _known_segment(cls, value: str | None) -> str | None:
        if value is not None and value.casefold() not in SEGMENTS:
            raise ValueError(f"segment must be one of {', '.join(SEGMENTS)}")
        return None if value is None else value.casefold()


class SearchRequest(StrictBody):
    """`POST /search`: customers whose id starts with, or whose name contains, the query."""

    query: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
    limit: int = Field(default=10, ge=1, le=50)


class DisagreementsRequest(StrictBody):
    """`POST /disagreements`: where the model and the points rule differ most."""

    tier: Literal[TIER_ORDER] | None = Field(default=None, description="model tier")  # type: ignore[valid-type]
    segment: Text | None = Field(
        default=None, description=f"one of {', '.join(SEGMENTS)}", json_schema_extra={"enum": [*SEGMENTS, None]}
    )
    limit: int = Field(default=50, ge=1, le=200)

    @field_validator("segment")
    @classmethod
    def _known_segment(cls, value: str | None) -> str | None:
        if value is not None and value.casefold() not in SEGMENTS:
            raise ValueError(f"segment must be one of {', '.join(SEGMENTS)}")
        return None if value is None else value.casefold()


class AskRow(BaseModel):
    """One row of the asks table (spec section 2)."""

    # Timestamps arrive as JSON strings, which strict mode would refuse: this model is lax, per field.
    model_config = ConfigDict(extra="forbid")

    ask_id: Annotated[Id, Field(strict=True)]
    customer_id: Annotated[Id, Field(strict=True)]
    ask_type: Literal[ASK_TYPE_NAMES]  # type: ignore[valid-type]
    asked_at: Timestamp
    outcome: Literal[OUTCOMES] = "no_response"  # type: ignore[valid-type]
    responded_at: Timestamp | None = None
    plan_id: Annotated[Id, Field(strict=True)] | None = Field(
        default=None, description="the plan this ask was made from (`POST /plan`), if any"
    )
    opportunity_id: Annotated[Id, Field(strict=True)] | None = Field(
        default=None, description="the deal this ask was made for (a deal of the opportunities table), if any"
    )


class AsksRequest(StrictBody):
    """`POST /asks`: asks and their outcomes; re-sending an `ask_id` updates it."""

    asks: list[AskRow] = Field(min_length=1, max_length=MAX_ASKS)


def _feature_field(feature: Feature) -> tuple[Any, Any]:
    """(type, Field) of one feature in a record: required, null meaning unknown."""
    if feature.kind == "categorical":
        if feature.name == "segment":
            return Literal[SEGMENTS] | None, Field(description=feature.label)
        return Annotated[str, StringConstraints(max_length=200)] | None, Field(description=feature.label)
    # A value outside the feature's range is a caller's mistake (400), not something to score.
    number = Annotated[float, Field(strict=True, allow_inf_nan=False, ge=feature.low, le=feature.high)]
    return number | None, Field(description=feature.label)


def _feature_record_model() -> type[BaseModel]:
    fields: dict[str, Any] = {f.name: _feature_field(f) for f in FEATURES}
    fields["customer_id"] = (Id | None, Field(default=None, description="optional; echoed in the result"))
    fields["as_of"] = (
        Timestamp | None,
        Field(
            default=None,
            description=f"when the features were computed (UTC, years {YEARS[0]} to {YEARS[1]}); default now",
        ),
    )
    fields["last_urgent_ticket_at"] = (
        Timestamp | None,
        Field(default=None, description="optional; lets the urgent-ticket guardrail see an open ticket"),
    )
    # Extra keys (a name, other context) are ignored, like extra columns of a table.
    return create_model(
        "FeatureRecord",
        __config__=ConfigDict(extra="ignore"),
        __doc__="Every feature of `features.spec` (null = unknown), optionally customer_id and as_of.",
        **fields,
    )


if TYPE_CHECKING:
    FeatureRecord = BaseModel
else:
    FeatureRecord = _feature_record_model()


class ScoreFeaturesRequest(StrictBody):
    """`POST /score_features`: feature rows computed by the caller."""

    records: list[FeatureRecord] = Field(min_length=1, max_length=MAX_RECORDS)


# ---------------------------------------------------------------------------------------------
# Responses
# ---------------------------------------------------------------------------------------------


class BlockedAsk(BaseModel):
    ask_type: str
    guardrail: str
    reason: str
    until: str | None = Field(description="ISO time the guardrail lifts; null: not until health recovers")


class NextBestAsk(BaseModel):
    ask_type: str | None = Field(description="null when every ask type is blocked")
    probability: float | None
    blocked: list[BlockedAsk]


class Reason(BaseModel):
    feature: str
    text: str
    value: float | str | None
    contribution: float = Field(description="SHAP contribution in log-odds")
    direction: Literal["raises", "lowers", "none"]
    actionable: bool


class RulePoints(BaseModel):
    criterion: str
    label: str
    description: str
    points: int
    max_points: int


class Baseline(BaseModel):
    points: int
    qualified: bool
    tier: str
    breakdown: list[RulePoints]


class Disagreement(BaseModel):
    tiers: int
    direction: Literal["higher", "lower"]
    text: str
    drivers: list[Reason]


class Commitment(BaseModel):
    """The accepted ask not yet delivered that makes a customer committed pipeline."""

    ask_id: str | None = Field(description="null where the caller sent features without the ask")
    ask_type: str | None
    accepted_at: str | None


class Result(BaseModel):
    """One customer's scores (spec section 7)."""

    customer_id: str | None
    propensity: float | None = Field(description="calibrated; null on cold start (see baseline)")
    tier: str
    percentile: float | None
    cold_start: bool
    acceptance: dict[str, float]
    next_best_ask: NextBestAsk
    re_engage: bool
    reasons: list[Reason]
    baseline: Baseline
    disagreement: Disagreement | None
    committed: Commitment | None = Field(description="an accepted ask not yet delivered: tier `committed`")
    model_version: str
    rules_version: str
    features_as_of: str


class ScoreResponse(BaseModel):
    results: list[Result]


class HistoryEvent(BaseModel):
    at: str
    kind: str
    detail: str


class Explanation(Result):
    """A result with every contribution, the base value and the recent history."""

    base_value: float = Field(description="the model's expected log-odds before any feature")
    raw_score: float = Field(description="base value + contributions: the log-odds before calibration")
    contributions: list[Reason] = Field(description="every feature, largest effect first")
    history: list[HistoryEvent] = Field(description="the last 12 months of events, newest first")


class ReferenceCandidate(BaseModel):
    customer_id: str
    name: str | None
    industry: str | None
    segment: str | None
    use_case: str | None
    acceptance: float
    similarity: float
    score: float
    recent_reference_calls: int
    matched: list[str]


class ReferencesResponse(BaseModel):
    candidates: list[ReferenceCandidate]


class PlannedAsk(BaseModel):
    """One planned ask (the columns of `advocacy plan --out`)."""

    plan_id: str
    wave: int
    ask_type: str
    rank: int
    customer_id: str
    name: str | None
    acceptance: float
    expected_yes: float
    p_at_least_needed: float
    reason_1: str | None
    reason_2: str | None
    reason_3: str | None
    last_asked_at: datetime | None


class PlanSummary(BaseModel):
    need: int
    asked: int
    expected_yes: float
    p_at_least_needed: float
    met: bool
    acceptance_level_sd: float = Field(
        description="standard error (log-odds) of the type's calibrated acceptance level, counted in p_at_least_needed"
    )
    # A campaign's (spec 5a): p_at_least_needed is then the chance by the deadline under its policy.
    yeses_so_far: int | None = None
    pending: int | None = None
    expected_asks: float | None = Field(default=None, description="asks in all waves, expected")
    expected_overshoot: float | None = Field(default=None, description="yeses beyond the need, expected")
    invited_at_random: bool = Field(
        default=False,
        description=(
            "an ungated type (ADVOCACY_UNGATED_TYPES, public reviews by default): invitees drawn at random among"
            " customers no fatigue guardrail blocks, not chosen by how likely they are to say yes"
        ),
    )


class CampaignCalendar(BaseModel):
    wave: int
    waves: int
    wave_days: int
    deadline: str


class PlanResponse(BaseModel):
    plan_id: str
    asks: list[PlannedAsk]
    summary: dict[str, PlanSummary]
    campaign: CampaignCalendar | None = None


class AsksResponse(BaseModel):
    stored: int = Field(description="asks written (new or updated)")


class SearchHit(BaseModel):
    customer_id: str
    name: str | None
    tier: str
    propensity: float | None


class SearchResponse(BaseModel):
    customers: list[SearchHit]


class DisagreementRow(BaseModel):
    customer_id: str
    name: str | None
    segment: str | None
    tier: str = Field(description="the model's tier")
    baseline_tier: str
    baseline_points: int
    propensity: float | None
    gap: int = Field(description="model tier rank minus points tier rank")
    text: str


class DisagreementsResponse(BaseModel):
    customers: list[DisagreementRow]
