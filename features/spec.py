"""The one ordered, typed definition of the model features (spec section 3).

Training, batch scoring, the API and the points baseline all take the feature list from here.
Bump `FEATURE_VERSION` whenever a name, meaning or order changes: the model bundle records it
and refuses features of another version.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

FEATURE_VERSION = "1.2.0"

Kind = Literal["numeric", "categorical"]


@dataclass(frozen=True)
class Feature:
    """One model input: its name, type, meaning for people, and whether a CSM can act on it."""

    name: str
    kind: Kind
    label: str
    group: str
    actionable: bool = False
    unit: str = ""
    # +1 where more of it can only raise advocacy propensity, -1 only lower; 0 unconstrained.
    monotone: int = 0
    # What the value can be, ends inclusive, None where open: a value outside is a caller's mistake,
    # refused at the API rather than scored.
    low: float | None = None
    high: float | None = None

    def __post_init__(self) -> None:
        if self.kind == "categorical" and (self.low is not None or self.high is not None):
            raise ValueError(f"{self.name}: a categorical feature has no range")
        if self.low is not None and self.high is not None and self.low > self.high:
            raise ValueError(f"{self.name}: range low {self.low} is above high {self.high}")


# Day-count features stop at a century, so `as_of` minus one stays inside the years the data
# contracts accept (`features.contracts.YEARS`) and therefore inside what pandas and Python can date.
MAX_DAYS = 36_500


def _n(
    name: str,
    label: str,
    group: str,
    actionable: bool = False,
    unit: str = "",
    monotone: int = 0,
    *,
    low: float | None = None,
    high: float | None = None,
) -> Feature:
    return Feature(name, "numeric", label, group, actionable, unit, monotone, low, high)


def _c(name: str, label: str) -> Feature:
    return Feature(name, "categorical", label, "firmographics")


FEATURES: tuple[Feature, ...] = (
    # tenure and firmographics
    _n("tenure_months", "tenure", "tenure", unit="months", low=0),
    _c("industry", "industry"),
    _c("segment", "segment"),
    _c("region", "region"),
    _c("use_case", "use case"),
    _c("plan", "plan"),
    # Capped because reasons show it back as an amount (its expm1), which must stay a finite float.
    _n("log_arr", "annual recurring revenue (log)", "firmographics", low=0, high=50),
    # NPS
    _n("nps_last", "latest NPS score", "nps", monotone=1, low=0, high=10),
    _n("nps_days_since", "days since the latest NPS response", "nps", unit="days", low=0, high=MAX_DAYS),
    _n("nps_mean_12m", "mean NPS over 12 months", "nps", monotone=1, low=0, high=10),
    _n("nps_trend", "change since the previous NPS response", "nps", low=-10, high=10),
    _n("nps_promoter", "promoter (NPS 9-10)", "nps", monotone=1, low=0, high=1),
    _n("nps_responses_12m", "NPS responses in 12 months", "nps", low=0),
    _n("nps_mean_all", "mean NPS over all responses", "nps", monotone=1, low=0, high=10),
    _n("nps_responses_per_month", "NPS responses per month of history", "nps", low=0),
    # usage
    _n(
        "adoption",
        "feature adoption",
        "usage",
        actionable=True,
        unit="share",
        monotone=1,
        low=0,
        high=1,
    ),
    _n(
        "adoption_trend_3m",
        "change in feature adoption over 3 months",
        "usage",
        actionable=True,
        low=-1,
        high=1,
    ),
    _n("seat_utilisation", "seat utilisation", "usage", actionable=True, unit="share", low=0),
    _n(
        "active_users_trend_3m",
        "change in active users over 3 months",
        "usage",
        actionable=True,
        low=-1,
    ),
    _n("logins", "logins last month", "usage", actionable=True, low=0),
    _n("health_score", "health score", "health", actionable=True, monotone=1, low=0, high=100),
    _n(
        "health_trend_3m",
        "change in health score over 3 months",
        "health",
        actionable=True,
        low=-100,
        high=100,
    ),
    _n("health_mean_6m", "mean health score over 6 months", "health", actionable=True, monotone=1, low=0, high=100),
    _n("usage_months", "months of usage history", "usage", unit="months", low=0),
    _n("health_mean_all", "mean health score over all months", "health", monotone=1, low=0, high=100),
    # support
    _n("tickets_90d", "support tickets in 90 days", "support", actionable=True, low=0),
    _n("urgent_tickets_90d", "urgent tickets in 90 days", "support", actionable=True, low=0),
    _n(
        "urgent_tickets_open",
        "urgent tickets opened in the last 14 days",
        "support",
        actionable=True,
        low=0,
    ),
    _n(
        "ticket_sentiment_90d",
        "mean ticket sentiment over 90 days",
        "support",
        actionable=True,
        low=-1,
        high=1,
    ),
    _n("csat_mean_12m", "mean CSAT over 12 months", "support", actionable=True, low=1, high=5),
    _n("tickets_12m", "support tickets in 12 months", "support", actionable=True, low=0),
    _n("ticket_sentiment_12m", "mean ticket sentiment over 12 months", "support", actionable=True, low=-1, high=1),
    _n("ticket_sentiment_all", "mean ticket sentiment over all tickets", "support", low=-1, high=1),
    _n("csat_mean_all", "mean CSAT over all tickets", "support", low=1, high=5),
    _n("tickets_per_month", "support tickets per month of history", "support", low=0),
    # social
    _n("social_positive_12m", "positive social mentions in 12 months", "social", low=0),
    _n("social_negative_12m", "negative social mentions in 12 months", "social", low=0),
    _n("social_sentiment_12m", "mean sentiment of social mentions over 12 months", "social", low=-1, high=1),
    _n("social_sentiment_all", "mean sentiment of all social mentions", "social", low=-1, high=1),
    _n("social_mentions_per_month", "social mentions per month of history", "social", low=0),
    _n("social_positive_per_month", "positive social mentions per month of history", "social", low=0),
    # past-response history
    _n("asks_total", "asks so far", "history", low=0),
    _n("accepts_total", "accepted asks so far", "history", low=0),
    _n("declines_total", "declined asks so far", "history", low=0),
    _n("acceptance_rate", "smoothed acceptance rate", "history", low=0, high=1),
    _n("unanswered_rate", "share of asks left unanswered", "history", low=0, high=1),
    _n(
        "days_since_last_ask",
        "days since the last ask",
        "history",
        actionable=True,
        unit="days",
        low=0,
        high=MAX_DAYS,
    ),
    _n("asks_90d", "asks in the last 90 days", "history", actionable=True, low=0),
    _n(
        "reference_calls_quarter",
        "reference calls asked this quarter",
        "history",
        actionable=True,
        low=0,
    ),
    _n("decline_streak", "declines in a row", "history", actionable=True, low=0),
    _n(
        "days_since_last_activity",
        "days since the last advocacy activity",
        "history",
        unit="days",
        low=0,
        high=MAX_DAYS,
    ),
    _n("activities_12m", "advocacy activities in 12 months", "history", low=0),
    _n("activities_total", "advocacy activities so far", "history", low=0),
    _n("activities_90d", "advocacy activities in 90 days", "history", low=0),
    _n("organic_activities_12m", "unsolicited advocacy activities in 12 months", "history", low=0),
    _n("organic_activities_total", "unsolicited advocacy activities so far", "history", low=0),
    _n("organic_activities_per_month", "unsolicited advocacy activities per month of history", "history", low=0),
    _n("accepted_not_delivered", "accepted asks not yet delivered (matched on ask_id, not lapsed)", "history", low=0),
    _n("days_since_last_accept", "days since the last accepted ask", "history", unit="days", low=0, high=MAX_DAYS),
)

# Extra inputs of the ask-acceptance model: the ask being made.
ASK_FEATURES: tuple[Feature, ...] = (
    Feature("ask_type", "categorical", "type of ask", "ask", actionable=True),
    _n("ask_effort_hours", "effort of the ask", "ask", actionable=True, unit="hours"),
)

FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)
CATEGORICAL_FEATURES: tuple[str, ...] = tuple(f.name for f in FEATURES if f.kind == "categorical")
NUMERIC_FEATURES: tuple[str, ...] = tuple(f.name for f in FEATURES if f.kind == "numeric")
ACCEPTANCE_FEATURE_NAMES: tuple[str, ...] = FEATURE_NAMES + tuple(f.name for f in ASK_FEATURES)
FEATURES_BY_NAME: dict[str, Feature] = {f.name: f for f in FEATURES + ASK_FEATURES}
# (low, high) of every numeric feature, None at an open end.
FEATURE_RANGES: dict[str, tuple[float | None, float | None]] = {
    f.name: (f.low, f.high) for f in FEATURES + ASK_FEATURES if f.kind == "numeric"
}

# Key columns that travel with every feature row.
KEYS: tuple[str, str] = ("customer_id", "as_of")

# Windows and constants of the feature definitions (part of the feature version).
WINDOW_90D_DAYS = 90
WINDOW_12M_DAYS = 365
URGENT_OPEN_DAYS = 14
ACCEPTANCE_PRIOR = 0.3
ACCEPTANCE_PRIOR_WEIGHT = 2.0
