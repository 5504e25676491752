"""The 100-point baseline: each criterion and each boundary, computed end to end from raw tables."""

from __future__ import annotations

import pandas as pd
import pytest

from features.baseline import RULES, baseline_tier, breakdown, qualified, score_baseline
from features.io import world_from_tables
from features.pointintime import build_features
from tests.worldkit import utc

AS_OF = "2026-01-15"


def one_customer(
    *,
    nps: int | None = None,
    adoption: float = 0.1,
    health: float = 10.0,
    contract_start: str = "2025-06-01",
    social_sentiment: float | None = None,
    accepted: bool = False,
) -> pd.Series:
    """Baseline of one customer as of AS_OF, from raw tables holding just the given signals."""
    raw = {
        "customers": pd.DataFrame(
            {
                "customer_id": ["c"],
                "name": ["n"],
                "industry": ["i"],
                "segment": ["smb"],
                "region": ["r"],
                "use_case": ["u"],
                "plan": ["p"],
                "contract_start": [contract_start],
                "churned_at": [None],
                "arr": [1.0],
            }
        ),
        "usage": pd.DataFrame(
            {
                "customer_id": ["c"],
                "month": ["2025-12-01"],
                "licensed_seats": [1],
                "active_users": [1],
                "feature_adoption": [adoption],
                "logins": [1],
                "health_score": [health],
            }
        ),
    }
    if nps is not None:
        raw["nps"] = pd.DataFrame({"customer_id": ["c"], "responded_at": ["2025-11-01"], "score": [nps]})
    if social_sentiment is not None:
        raw["social"] = pd.DataFrame(
            {"customer_id": ["c"], "mentioned_at": ["2025-10-01"], "sentiment": [social_sentiment], "channel": ["x"]}
        )
    if accepted:
        raw["asks"] = pd.DataFrame(
            {
                "ask_id": ["a"],
                "customer_id": ["c"],
                "ask_type": ["review"],
                "asked_at": ["2025-09-01"],
                "outcome": ["accepted"],
                "responded_at": ["2025-09-02"],
            }
        )
    world = world_from_tables(raw)
    features = build_features(world, pd.DataFrame({"customer_id": ["c"], "as_of": [utc(AS_OF)]}))
    return score_baseline(features).iloc[0]


def test_nothing_earns_nothing() -> None:
    row = one_customer()
    assert row["points"] == 0 and not row["qualified"] and row["tier"] == "none"


@pytest.mark.parametrize(("nps", "points"), [(8, 0), (9, 25), (10, 25), (0, 0)])
def test_promoter_needs_nps_9_or_10(nps: int, points: int) -> None:
    assert one_customer(nps=nps)["points_promoter"] == points


@pytest.mark.parametrize(("adoption", "points"), [(0.70, 0), (0.71, 20), (0.7000001, 20)])
def test_power_user_needs_adoption_above_70_percent(adoption: float, points: int) -> None:
    assert one_customer(adoption=adoption)["points_power_user"] == points


@pytest.mark.parametrize(("health", "points"), [(80.0, 0), (80.5, 20), (81.0, 20)])
def test_healthy_needs_health_above_80(health: float, points: int) -> None:
    assert one_customer(health=health)["points_healthy"] == points


@pytest.mark.parametrize(
    ("contract_start", "points"),
    [("2025-01-15", 0), ("2025-01-14T23:59:59", 15), ("2025-01-16", 0), ("2024-01-15", 15)],
    ids=["exactly-12-months", "12-months-and-1-second", "one-day-short", "24-months"],
)
def test_established_needs_tenure_above_12_months(contract_start: str, points: int) -> None:
    assert one_customer(contract_start=contract_start)["points_established"] == points


@pytest.mark.parametrize(("sentiment", "points"), [(0.0, 0), (-0.5, 0), (0.01, 10)])
def test_active_needs_a_positive_mention(sentiment: float, points: int) -> None:
    assert one_customer(social_sentiment=sentiment)["points_active"] == points


def test_willing_needs_an_accepted_ask() -> None:
    assert one_customer(accepted=True)["points_willing"] == 10
    assert one_customer(accepted=False)["points_willing"] == 0


def test_everything_earns_100_and_champion() -> None:
    row = one_customer(
        nps=10, adoption=0.9, health=95, contract_start="2020-01-01", social_sentiment=0.9, accepted=True
    )
    assert row["points"] == 100 and row["qualified"] and row["tier"] == "champion"
    assert sum(item["points"] for item in breakdown(row)) == 100
    assert [item["criterion"] for item in breakdown(row)] == [r.name for r in RULES]


@pytest.mark.parametrize(
    ("points", "tier"),
    [
        (0, "none"),
        (60, "none"),
        (61, "supporter"),
        (74, "supporter"),
        (75, "advocate"),
        (89, "advocate"),
        (90, "champion"),
        (100, "champion"),
    ],
)
def test_tier_boundaries(points: int, tier: str) -> None:
    assert baseline_tier([points])[0] == tier


def test_qualified_means_more_than_60() -> None:
    # promoter 25 + healthy 20 + established 15 = 60: not qualified; + active 10 = 70: qualified
    sixty = one_customer(nps=9, health=90, contract_start="2020-01-01")
    seventy = one_customer(nps=9, health=90, contract_start="2020-01-01", social_sentiment=0.5)
    assert (sixty["points"], bool(sixty["qualified"])) == (60, False)
    assert (seventy["points"], bool(seventy["qualified"]), seventy["tier"]) == (70, True, "supporter")


def test_qualified_is_one_rule_for_totals() -> None:
    """`qualified` is what the API's `baseline.qualified` and the batch's `baseline_qualified` use."""
    assert qualified([0, 60, 61, 100]).tolist() == [False, False, True, True]
