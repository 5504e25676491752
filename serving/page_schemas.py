"""Bodies of the routes the CSM page opens on: the worklist and the program report (`serving.schemas`
holds the spec's routes and the page's search and disagreement list)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from serving.schemas import StrictBody


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
