"""Bodies of the routes the CSM page opens on: the worklist, the campaigns in progress and the program
report (`serving.schemas` holds the spec's routes and the page's search and disagreement list)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from models.campaign import MAX_WAVES
from serving.schemas import Id, PlannedAsk, StrictBody


class WorklistRequest(StrictBody):
    """`POST /worklist`: what the CSM page opens on, besides the plan."""

    limit: int = Field(default=50, ge=1, le=200)


class DeliveryDue(BaseModel):
    customer_id: str
    name: str | None
    segment: str | None
    ask_id: str | None
    ask_type: str | None
    accepted_at: str | None
    lapses_at: str | None = Field(description="when the promise stops counting as pipeline")


class GoingCold(BaseModel):
    customer_id: str
    name: str | None
    segment: str | None
    tier: str
    propensity: float | None
    days_since_last_activity: float | None


class WorklistResponse(BaseModel):
    need: dict[str, int] = Field(description="the plan the page opens on (ADVOCACY_WORKLIST_NEED)")
    ask_types: list[str]
    as_of: str
    lapse_days: int
    deliveries_due: list[DeliveryDue] = Field(description="committed customers, the oldest promise first")
    going_cold: list[GoingCold] = Field(description="past advocates quiet for 180 days, likeliest first")


class ReportRequest(StrictBody):
    """`POST /report`: the latest program report; the service remakes a kept one when the ask log or
    the champion has changed since, and makes or remakes it at once with `refresh`."""

    refresh: bool = Field(default=False, description="remake the report from the data and the ask log now")


class ReportResponse(BaseModel):
    available: bool = Field(description="false until a report has been made (`advocacy report`, or by the service)")
    message: str
    written_at: str | None = None
    since: str | None = None
    until: str | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    left_out: dict[str, int] = Field(default_factory=dict, description="asks the report could not count, by why")
    tables: dict[str, list[dict[str, Any]]] = Field(default_factory=dict, description="aggregate tables by name")
    charts: dict[str, str] = Field(default_factory=dict, description="chart file name -> base64 PNG")
    deals: dict[str, Any] | None = Field(
        default=None,
        description="with an opportunities table: the adjusted estimate's status and notes (its figures are in tables)",
    )


class CampaignsRequest(StrictBody):
    """`POST /campaigns`: the campaigns in progress now (deadline ahead, some need not met yet)."""

    limit: int = Field(default=50, ge=1, le=200)


class CampaignTypeProgress(BaseModel):
    need: int
    yeses_so_far: int
    pending: int = Field(description="asks made for the campaign and not answered yet")
    met: bool


class CampaignWaveMade(BaseModel):
    wave: int
    date: str
    asks: int = Field(description="asks planned in this wave")


class CampaignInProgress(BaseModel):
    plan_id: str
    deadline: str
    waves: int
    wave_days: int
    types: dict[str, CampaignTypeProgress]
    planned: list[CampaignWaveMade] = Field(description="the waves planned so far, wave 1 first")
    next_wave: int | None = Field(description="null: no wave left to plan (answers count until the deadline)")
    next_wave_at: str | None = Field(description="its date by default: the last wave's plus wave_days")


class CampaignsResponse(BaseModel):
    as_of: str
    campaigns: list[CampaignInProgress] = Field(description="the nearest deadline first")


class CampaignWaveRequest(StrictBody):
    """`POST /campaign_wave`: the asks one wave of a campaign planned, for the page's CSV."""

    plan_id: Id
    wave: int = Field(ge=1, le=MAX_WAVES)


class CampaignWaveResponse(BaseModel):
    plan_id: str
    wave: int
    asks: list[PlannedAsk] = Field(description="rows as `advocacy plan --out` writes them")
