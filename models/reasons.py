"""SHAP contributions phrased for customer success managers (spec section 6).

Each reason names the signal and its value, says whether it raises or lowers the likelihood,
and whether a CSM can act on it, e.g. "Gave NPS 10 on 2026-09-14 (raises likelihood)".
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

import numpy as np
import pandas as pd

from features.catalog import ASK_TYPES
from features.spec import FEATURES_BY_NAME

Row = Mapping[str, Any]
_EFFORT = {a.name: a.effort_label for a in ASK_TYPES}


def is_missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _plural(n: float, word: str) -> str:
    count = round(n)
    if count == 1:
        return f"{count} {word}"
    return f"{count} {word[:-1]}ies" if word.endswith("y") else f"{count} {word}s"


def _change(v: float, noun: str, unit: str, scale: float = 1.0, fmt: str = "{:.0f}") -> str:
    if v == 0:
        return f"{noun} unchanged {unit}".strip()
    word = "up" if v > 0 else "down"
    return f"{noun} {word} {fmt.format(abs(v) * scale)} {unit}".strip()


def _date_back(as_of: pd.Timestamp, days: float) -> str:
    try:
        # Python's datetime, not pandas' Timestamp - Timedelta: the same date at a tenth of the cost
        # (a batch of a million customers phrases this hundreds of thousands of times).
        return (as_of.to_pydatetime(warn=False) - timedelta(days=days)).date().isoformat()
    except (ValueError, OverflowError):  # off the calendar: say it without a date
        return f"{days:,.0f} days before {as_of:%Y-%m-%d}" if 1900 <= as_of.year < 10_000 else f"{days:,.0f} days ago"


def _nps_last(v: float, row: Row, as_of: pd.Timestamp) -> str:
    days = row.get("nps_days_since")
    when = "" if days is None or is_missing(days) else f" on {_date_back(as_of, float(days))}"
    return f"Gave NPS {v:.0f}{when}"


_PHRASES: dict[str, Callable[[Any, Row, pd.Timestamp], str]] = {
    "tenure_months": lambda v, r, t: f"Customer for {v:.0f} months",
    "industry": lambda v, r, t: f"Industry: {v}",
    "segment": lambda v, r, t: f"Segment: {v}",
    "region": lambda v, r, t: f"Region: {v}",
    "use_case": lambda v, r, t: f"Use case: {v}",
    "plan": lambda v, r, t: f"Plan: {v}",
    "log_arr": lambda v, r, t: f"Annual revenue about {math.expm1(min(v, 700.0)):,.0f}",
    "nps_last": _nps_last,
    "nps_days_since": lambda v, r, t: f"Last NPS response {v:.0f} days ago",
    "nps_mean_12m": lambda v, r, t: f"Average NPS {v:.1f} over 12 months",
    "nps_trend": lambda v, r, t: _change(v, "NPS", "points since the previous response"),
    "nps_promoter": lambda v, r, t: "Is a promoter (NPS 9-10)" if v >= 1 else "Is not a promoter",
    "nps_responses_12m": lambda v, r, t: f"{_plural(v, 'NPS response')} in 12 months",
    "nps_mean_all": lambda v, r, t: f"Average NPS {v:.1f} over all responses",
    "nps_responses_per_month": lambda v, r, t: f"Answers NPS surveys {v:.2f} times a month",
    "social_positive_per_month": lambda v, r, t: f"{v:.2f} positive social mentions a month",
    "organic_activities_total": lambda v, r, t: f"{_plural(v, 'unsolicited advocacy activity')} so far",
    "organic_activities_per_month": lambda v, r, t: f"{v:.2f} unsolicited advocacy activities a month",
    "social_mentions_per_month": lambda v, r, t: f"{v:.2f} social mentions a month",
    "social_sentiment_all": lambda v, r, t: f"Social mentions average sentiment {v:+.2f} overall",
    "tickets_per_month": lambda v, r, t: f"{v:.1f} support tickets a month",
    "ticket_sentiment_all": lambda v, r, t: f"Support ticket sentiment {v:+.2f} overall",
    "csat_mean_all": lambda v, r, t: f"Average CSAT {v:.1f}/5 overall",
    "health_mean_all": lambda v, r, t: f"Average health score {v:.0f} over all months",
    "unanswered_rate": lambda v, r, t: f"Left {v:.0%} of asks unanswered",
    "health_mean_6m": lambda v, r, t: f"Average health score {v:.0f} over 6 months",
    "tickets_12m": lambda v, r, t: f"{_plural(v, 'support ticket')} in 12 months",
    "ticket_sentiment_12m": lambda v, r, t: f"Support ticket sentiment {v:+.2f} over 12 months",
    "social_sentiment_12m": lambda v, r, t: f"Social mentions average sentiment {v:+.2f} over 12 months",
    "activities_90d": lambda v, r, t: f"{_plural(v, 'advocacy activity')} in 90 days",
    "organic_activities_12m": lambda v, r, t: f"{_plural(v, 'unsolicited advocacy activity')} in 12 months",
    "accepted_not_delivered": lambda v, r, t: (
        f"{_plural(v, 'accepted ask')} not yet delivered" if v else "No accepted ask waiting"
    ),
    "days_since_last_accept": lambda v, r, t: f"Last accepted an ask {v:.0f} days ago",
    "adoption": lambda v, r, t: f"Uses {v:.0%} of key features",
    "adoption_trend_3m": lambda v, r, t: _change(v, "Feature adoption", "points in 3 months", 100),
    "seat_utilisation": lambda v, r, t: f"{v:.0%} of licensed seats active",
    "active_users_trend_3m": lambda v, r, t: _change(v, "Active users", "% in 3 months", 100),
    "logins": lambda v, r, t: f"{_plural(v, 'login')} last month",
    "health_score": lambda v, r, t: f"Health score {v:.0f}",
    "health_trend_3m": lambda v, r, t: _change(v, "Health score", "points in 3 months"),
    "usage_months": lambda v, r, t: f"{_plural(v, 'month')} of usage data",
    "tickets_90d": lambda v, r, t: f"{_plural(v, 'support ticket')} in 90 days",
    "urgent_tickets_90d": lambda v, r, t: f"{_plural(v, 'urgent ticket')} in 90 days",
    "urgent_tickets_open": lambda v, r, t: f"{_plural(v, 'urgent ticket')} opened in the last 14 days",
    "ticket_sentiment_90d": lambda v, r, t: f"Support ticket sentiment {v:+.2f} over 90 days",
    "csat_mean_12m": lambda v, r, t: f"Average CSAT {v:.1f}/5 over 12 months",
    "social_positive_12m": lambda v, r, t: f"{_plural(v, 'positive social mention')} in 12 months",
    "social_negative_12m": lambda v, r, t: f"{_plural(v, 'negative social mention')} in 12 months",
    "asks_total": lambda v, r, t: f"Asked {_plural(v, 'time')} so far" if v else "Never asked",
    "accepts_total": lambda v, r, t: f"Accepted {_plural(v, 'earlier ask')}" if v else "Never accepted an ask",
    "declines_total": lambda v, r, t: f"Declined {_plural(v, 'earlier ask')}" if v else "Never declined an ask",
    "acceptance_rate": lambda v, r, t: f"Accepts about {v:.0%} of asks",
    "days_since_last_ask": lambda v, r, t: f"Last asked {v:.0f} days ago",
    "asks_90d": lambda v, r, t: f"Asked {_plural(v, 'time')} in 90 days",
    "reference_calls_quarter": lambda v, r, t: f"{_plural(v, 'reference call')} asked this quarter",
    "decline_streak": lambda v, r, t: f"Declined {_plural(v, 'ask')} in a row" if v else "No recent decline",
    "days_since_last_activity": lambda v, r, t: f"Last advocated {v:.0f} days ago",
    "activities_12m": lambda v, r, t: f"{_plural(v, 'advocacy activity')} in 12 months",
    "activities_total": lambda v, r, t: f"{_plural(v, 'advocacy activity')} so far",
    "ask_type": lambda v, r, t: f"The ask is a {str(v).replace('_', ' ')}",
    "ask_effort_hours": lambda v, r, t: f"The ask takes about {v:g} hours",
}

_WHEN_MISSING: dict[str, str] = {
    "nps_last": "No NPS response yet",
    "nps_days_since": "No NPS response yet",
    "nps_mean_12m": "No NPS response in 12 months",
    "nps_trend": "Only one NPS response so far",
    "adoption": "No usage data yet",
    "adoption_trend_3m": "Less than 3 months of usage data",
    "seat_utilisation": "No licensed seats recorded",
    "active_users_trend_3m": "Less than 3 months of usage data",
    "logins": "No usage data yet",
    "health_score": "No health score yet",
    "health_trend_3m": "Less than 3 months of health data",
    "ticket_sentiment_90d": "No support tickets in 90 days",
    "csat_mean_12m": "No CSAT answers in 12 months",
    "days_since_last_ask": "Never asked",
    "days_since_last_activity": "Has never advocated",
    "days_since_last_accept": "Never accepted an ask",
    "nps_mean_all": "No NPS response yet",
    "health_mean_6m": "No health score yet",
    "ticket_sentiment_12m": "No support tickets in 12 months",
    "social_sentiment_12m": "No social mentions in 12 months",
    "social_sentiment_all": "No social mentions yet",
    "ticket_sentiment_all": "No support tickets yet",
    "csat_mean_all": "No CSAT answers yet",
    "health_mean_all": "No health score yet",
}
assert set(_PHRASES) == set(FEATURES_BY_NAME), "every feature needs a phrase"


# The phrases that read more than their own value: the row's other signals, or `as_of`.
_READS_CONTEXT = frozenset({"nps_last"})


def worded_by_value(feature: str) -> bool:
    """Whether a reason about `feature` is worded from its value and direction alone, so that rows
    with the same value share the words (a batch words each distinct value once)."""
    return feature not in _READS_CONTEXT


def describe(feature: str, value: Any, row: Row, as_of: pd.Timestamp) -> str:
    """The signal and its value in plain words."""
    if is_missing(value):
        return _WHEN_MISSING.get(feature, f"{FEATURES_BY_NAME[feature].label.capitalize()} unknown")
    return _PHRASES[feature](value, row, as_of)


def reason_text(feature: str, value: Any, contribution: float, row: Row, as_of: pd.Timestamp) -> str:
    """A reason's words: the signal, its value and which way it pushes."""
    return f"{describe(feature, value, row, as_of)} ({'raises' if contribution > 0 else 'lowers'} likelihood)"


def reason(feature: str, value: Any, contribution: float, row: Row, as_of: pd.Timestamp) -> dict[str, Any]:
    """One reason: the phrase with its direction, and whether a CSM can act on it."""
    direction = "raises" if contribution > 0 else "lowers"
    return {
        "feature": feature,
        "text": reason_text(feature, value, contribution, row, as_of),
        "value": None if is_missing(value) else value,
        "contribution": float(contribution),
        "direction": direction,
        "actionable": FEATURES_BY_NAME[feature].actionable,
    }


def top_indices(contributions: np.ndarray, k: int) -> np.ndarray:
    """Per row, the column indices of the k largest absolute contributions, largest first."""
    k = min(k, contributions.shape[1])
    part = np.argpartition(-np.abs(contributions), k - 1, axis=1)[:, :k]
    order = np.argsort(-np.abs(np.take_along_axis(contributions, part, axis=1)), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def signed_tops(contributions: np.ndarray, k: int, signs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the column indices of the k contributions pushing most strongly in that row's
    direction (its sign, +1 or -1), strongest first, and which of them push that way at all."""
    pushed = contributions * np.asarray(signs, dtype=float)[:, None]
    picked = np.argsort(-pushed, axis=1, kind="stable")[:, :k]
    return picked, np.take_along_axis(pushed, picked, axis=1) > 0


def signed_top(contributions: np.ndarray, k: int, sign: int) -> list[int]:
    """`signed_tops` of one row: the indices that push its way."""
    picked, pushes = signed_tops(contributions[None, :], k, np.array([sign]))
    return [int(j) for j in picked[0][pushes[0]]]
