"""The fixed vocabulary of the domain: ask types, segments, priorities, outcomes.

One place defines these so that the data contract, the generator, the models and the
service agree on every spelling.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AskType:
    """A kind of advocacy ask, with the effort it costs the customer."""

    name: str
    effort_hours: float
    effort_label: str
    default_value: float  # value weight of an accepted ask, used by the next-best-ask rule


ASK_TYPES: tuple[AskType, ...] = (
    AskType("social_share", 5 / 60, "5 min", 1.0),
    AskType("review", 0.25, "15 min", 2.0),
    AskType("testimonial", 0.5, "30 min", 3.0),
    AskType("referral", 0.5, "30 min", 5.0),
    AskType("beta_feedback", 1.0, "1 h", 2.0),
    AskType("reference_call", 1.0, "1 h", 6.0),
    AskType("case_study", 2.0, "2 h", 8.0),
    AskType("advisory_board", 2.0, "2 h a quarter", 6.0),
    AskType("speaking", 16.0, "days", 10.0),
)
ASK_TYPE_NAMES: tuple[str, ...] = tuple(a.name for a in ASK_TYPES)
ASK_EFFORT_HOURS: dict[str, float] = {a.name: a.effort_hours for a in ASK_TYPES}
DEFAULT_ASK_VALUES: dict[str, float] = {a.name: a.default_value for a in ASK_TYPES}

SEGMENTS: tuple[str, ...] = ("smb", "mid_market", "enterprise")
PRIORITIES: tuple[str, ...] = ("low", "normal", "high", "urgent")
OUTCOMES: tuple[str, ...] = ("accepted", "declined", "no_response")
ANSWERS: tuple[str, ...] = ("accepted", "declined")  # the outcomes that answer an ask; no_response does not

TABLES: tuple[str, ...] = (
    "customers",
    "usage",
    "nps",
    "tickets",
    "social",
    "asks",
    "activities",
)
REQUIRED_TABLES: tuple[str, ...] = ("customers", "usage")
# Deals of prospects (spec section 9): read beside the customer tables, never split with them by customer.
DEALS = "opportunities"
DEAL_OUTCOMES: tuple[str, ...] = ("won", "lost", "open")
CLOSED_OUTCOMES: tuple[str, ...] = ("won", "lost")
