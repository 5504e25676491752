"""Committed pipeline (spec section 5): accepted asks matched to their activity by ask_id, lapsed
after the configured days, given the tier `committed` and left out of tiers, disagreements and plans."""

from __future__ import annotations

import pandas as pd
import pytest

from features.commitments import open_commitments
from features.context import build_snapshot
from features.io import World, world_from_tables
from features.labels import observed_until
from features.pointintime import active_points, build_features
from models.scoring import score
from tests.worldkit import raw_tables, utc


def _world(asks: list[tuple[str, str, str, str, str | None]], activities: list[tuple[str, str, str | None]]) -> World:
    """c1's asks (ask_id, type, asked_at, outcome, responded_at) and activities (type, occurred_at, ask_id)."""
    tables = raw_tables()
    tables["asks"] = pd.DataFrame(asks, columns=["ask_id", "ask_type", "asked_at", "outcome", "responded_at"]).assign(
        customer_id="c1"
    )
    tables["activities"] = pd.DataFrame(activities, columns=["activity_type", "occurred_at", "ask_id"]).assign(
        customer_id="c1", activity_id=[f"v{i}" for i in range(len(activities))]
    )
    return world_from_tables(tables)


def _points(when: str) -> pd.DataFrame:
    return pd.DataFrame({"customer_id": ["c1", "c2"], "as_of": [utc(when)] * 2})


def _open_at(world: World, when: str, lapse_days: int = 90) -> pd.Series:
    return open_commitments(world.asks, world.activities, _points(when), lapse_days).iloc[0]


def test_an_activity_delivers_only_the_ask_it_names() -> None:
    # Two accepted asks; the review was delivered, the case study was not. Subtracting counts (one
    # solicited activity, two accepts) said one was open, by luck; an unsolicited activity and
    # another ask's delivery must settle nothing.
    world = _world(
        [
            ("a1", "review", "2025-03-01", "accepted", "2025-03-02"),
            ("a2", "case_study", "2025-03-10", "accepted", "2025-03-12"),
        ],
        [("review", "2025-03-20", "a1"), ("social_share", "2025-03-21", None), ("review", "2025-03-22", "zz")],
    )
    row = _open_at(world, "2025-04-01")
    assert row["open_asks"] == 1
    # Another customer's activity naming c1's ask delivers nothing for c1.
    other = world.activities.assign(customer_id="c2", ask_id="a2")
    assert open_commitments(world.asks, other, _points("2025-04-01"))["open_asks"].iloc[0] == 2
    assert (row["committed_ask_id"], row["committed_ask_type"]) == ("a2", "case_study")
    assert row["committed_accepted_at"] == utc("2025-03-12")


def test_a_promise_lapses_after_the_configured_days_and_counts_only_once_known() -> None:
    world = _world([("a1", "review", "2025-01-01", "accepted", "2025-01-10")], [("review", "2025-06-01", "a1")])
    assert _open_at(world, "2025-01-10")["open_asks"] == 0  # the answer is known only after responded_at
    assert _open_at(world, "2025-01-10T00:00:01")["open_asks"] == 1
    assert _open_at(world, "2025-04-09")["open_asks"] == 1  # 89 days on
    assert _open_at(world, "2025-04-10")["open_asks"] == 0  # exactly 90 days: lapsed
    assert _open_at(world, "2025-04-11", lapse_days=120)["open_asks"] == 1
    assert _open_at(world, "2025-06-01", lapse_days=365)["open_asks"] == 1  # delivered at, not before
    assert _open_at(world, "2025-06-01T00:00:01", lapse_days=365)["open_asks"] == 0
    with pytest.raises(ValueError, match="lapse"):
        _open_at(world, "2025-02-01", lapse_days=0)


def test_the_feature_is_the_same_rule_and_ignores_events_at_or_after_as_of() -> None:
    asks = [("a1", "review", "2025-03-01", "accepted", "2025-03-02")]
    world = _world(asks, [])
    later = _world(
        [*asks, ("a2", "speaking", "2025-04-01", "accepted", "2025-04-01T00:00:00")],
        [("review", "2025-04-01", "a1")],
    )
    points = active_points(world, utc("2025-04-01"))
    before = build_features(world, points)
    pd.testing.assert_frame_equal(build_features(later, points), before)
    assert before.set_index("customer_id").loc["c1", "accepted_not_delivered"] == 1


@pytest.fixture(scope="module")
def scored_3k() -> list[tuple[World, pd.Timestamp, pd.DataFrame, pd.DataFrame]]:
    """A generated 3k world, a bundle trained on it, and everyone scored at two dates."""
    from features.synthetic import generate_world
    from training.datasets import build_training_data
    from training.fit import TrainConfig, fit_bundle

    world = world_from_tables(generate_world(n_customers=3000, months=30, seed=21, acceptance_truth=False).tables)
    bundle, _ = fit_bundle(world, build_training_data(world), TrainConfig())
    out = []
    for when in (observed_until(world), observed_until(world) - pd.DateOffset(months=2)):
        features = build_snapshot(world, pd.Timestamp(when), lapse_days=bundle.lapse_days).features
        out.append((world, pd.Timestamp(when), features, score(bundle, features, explain=False).columns()))
    return out


def _by_hand(world: World, features: pd.DataFrame, when: pd.Timestamp) -> pd.Series:
    """Accepted in the 90 days before `when` (answer known) and no activity naming the ask before `when`."""
    asks = world.asks
    accepted = asks[
        (asks["outcome"] == "accepted")
        & (asks["responded_at"] < when)
        & (asks["responded_at"] > when - pd.Timedelta(days=90))
    ]
    done = world.activities[world.activities["occurred_at"] < when].dropna(subset=["ask_id"])
    delivered = set(zip(done["customer_id"], done["ask_id"], strict=True))
    pending = accepted[
        [pair not in delivered for pair in zip(accepted["customer_id"], accepted["ask_id"], strict=True)]
    ]
    return features["customer_id"].isin(set(pending["customer_id"]))


@pytest.mark.slow
def test_committed_customers_get_their_own_tier_and_champions_are_three_percent_of_the_rest(
    scored_3k: list[tuple[World, pd.Timestamp, pd.DataFrame, pd.DataFrame]],
) -> None:
    for world, when, features, result in scored_3k:
        committed = result["committed"].to_numpy(dtype=bool)
        assert committed.sum() >= 10  # the world has pipeline to speak of
        agree = (committed == _by_hand(world, features, when).to_numpy()).mean()
        assert agree == 1.0, f"{when:%Y-%m-%d}: committed agrees with the hand count on {agree:.1%}"
        assert (result.loc[committed, "tier"] == "committed").all()
        assert result.loc[committed, "committed_ask_id"].notna().all()
        assert result.loc[~committed, "committed_ask_id"].isna().all()
        base = result[~committed & ~result["cold_start"].to_numpy(dtype=bool)]
        share = (base["tier"] == "champion").mean()
        assert 0.02 <= share <= 0.04, f"{when:%Y-%m-%d}: champions are {share:.1%} of the uncommitted base"
        # No disagreement is reported for committed pipeline: it has no model tier to compare.
        assert result.loc[committed, "disagreement"].isna().all()
        named = result.loc[committed, "committed_ask_id"]
        ask_customer = world.asks.set_index("ask_id").loc[named, "customer_id"].to_numpy()
        assert (ask_customer == result.loc[committed, "customer_id"].to_numpy()).all()


def test_the_lapse_setting_defaults_to_the_feature_definition() -> None:
    from features.commitments import COMMITMENT_LAPSE_DAYS
    from storage.settings import Settings

    assert Settings().commitment_lapse_days == COMMITMENT_LAPSE_DAYS
