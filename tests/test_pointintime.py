"""Point-in-time correctness and hand-checked feature values."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features.contracts import TIMESTAMP
from features.io import World, world_from_tables
from features.pointintime import active_points, build_features, tenure_months
from features.spec import FEATURE_NAMES, KEYS
from models.guardrails import GuardrailConfig, blocked_asks
from tests.worldkit import raw_tables, utc

EVENT_TIME = {"nps": "responded_at", "tickets": "opened_at", "social": "mentioned_at", "activities": "occurred_at"}


def with_future_events(world: World, as_of: pd.Timestamp, seed: int) -> World:
    """A copy of `world` with events at or after `as_of` added to every table, and the future rewritten.

    It adds copies of existing rows moved to `as_of` + [0, 400) days (exactly `as_of` included), the
    current month's usage (not complete at `as_of`, so not known), asks whose answer comes later,
    new customers who start at or after `as_of`, and churn dates at or after `as_of`.
    """
    rng = np.random.default_rng(seed)
    tables = world.as_dict()

    def later(n: int) -> pd.Series:
        days = rng.integers(0, 400, n).astype("timedelta64[D]").astype("timedelta64[us]")
        offsets = pd.to_timedelta(days) + pd.to_timedelta(rng.integers(0, 86_400, n), unit="s")
        offsets = offsets.where(rng.random(n) > 0.2, pd.Timedelta(0))  # many exactly at as_of
        return pd.Series(as_of + offsets)

    def sample(frame: pd.DataFrame, n: int) -> pd.DataFrame:
        return frame.iloc[rng.integers(0, len(frame), n)].reset_index(drop=True) if len(frame) else frame

    n = 50
    for name, col in EVENT_TIME.items():
        rows = sample(tables[name], n)
        if len(rows):
            rows[col] = later(len(rows)).to_numpy()
            if name == "activities":
                rows["activity_id"] = [f"future-v{i}" for i in range(len(rows))]
            tables[name] = pd.concat([tables[name], rows], ignore_index=True)

    asks = sample(tables["asks"], n)
    if len(asks):
        asks["ask_id"] = [f"future-a{i}" for i in range(len(asks))]
        asks["asked_at"] = later(len(asks)).to_numpy()
        asks["responded_at"] = (asks["asked_at"] + pd.Timedelta(days=3)).to_numpy()
        # An ask made before as_of but answered after it: its answer may change, unseen at as_of.
        past = tables["asks"].copy()
        open_at = (past["asked_at"] < as_of) & (past["responded_at"].isna() | (past["responded_at"] >= as_of))
        past.loc[open_at, "outcome"] = rng.choice(["accepted", "declined"], int(open_at.sum()))
        past.loc[open_at, "responded_at"] = later(int(open_at.sum())).to_numpy()
        tables["asks"] = pd.concat([past, asks], ignore_index=True)

    month = as_of.tz_convert(None).to_period("M").to_timestamp().tz_localize("UTC")
    usage = tables["usage"]
    current = usage.drop_duplicates("customer_id").assign(month=month)
    nexts = current.assign(month=month + pd.DateOffset(months=1))
    keep = ~usage.set_index(["customer_id", "month"]).index.isin(
        pd.MultiIndex.from_frame(pd.concat([current, nexts])[["customer_id", "month"]])
    )
    tables["usage"] = pd.concat([usage[keep], current, nexts], ignore_index=True)

    customers = tables["customers"].copy()
    churn = rng.random(len(customers)) < 0.3
    # A churn date at or after as_of, and never before the contract began (the contract refuses that).
    churn_at = np.maximum(later(len(customers)).to_numpy(), customers["contract_start"].to_numpy())
    customers["churned_at"] = (
        customers["churned_at"]
        .where(~churn, churn_at)
        .where(customers["churned_at"].isna() | (customers["churned_at"] >= as_of) | ~churn, customers["churned_at"])
    )
    newcomers = sample(customers, 5).assign(contract_start=later(5).to_numpy(), churned_at=pd.NaT)
    newcomers["customer_id"] = [f"future-c{i}" for i in range(len(newcomers))]
    tables["customers"] = pd.concat([customers, newcomers], ignore_index=True)
    return world_from_tables(tables)


def assert_future_changes_nothing(world: World, as_of: pd.Timestamp, seed: int) -> None:
    points = active_points(world, as_of)
    before = build_features(world, points)
    future = with_future_events(world, as_of, seed)
    pd.testing.assert_frame_equal(active_points(future, as_of), points)
    pd.testing.assert_frame_equal(build_features(future, points), before)


@pytest.mark.slow  # 30 examples, about 8 s
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    day=st.integers(min_value=0, max_value=200),
    second=st.integers(min_value=0, max_value=86_399),
    seed=st.integers(0, 2**16),
)
def test_events_at_or_after_as_of_change_no_feature_hand_world(day: int, second: int, seed: int) -> None:
    world = world_from_tables(raw_tables())
    as_of = utc("2025-01-01") + pd.Timedelta(days=day, seconds=second)
    assert_future_changes_nothing(world, as_of, seed)


def test_events_at_or_after_as_of_change_no_feature_generated_world(generated_world: World) -> None:
    for i, as_of in enumerate(pd.date_range("2025-03-01", "2026-09-01", freq="97D", tz="UTC")):
        assert_future_changes_nothing(generated_world, as_of + pd.Timedelta(hours=7 * i), seed=i)


def test_an_event_exactly_at_as_of_is_not_seen() -> None:
    raw = raw_tables()
    raw["nps"] = pd.concat(
        [raw["nps"], pd.DataFrame({"customer_id": ["c1"], "responded_at": ["2025-04-10"], "score": [0]})]
    )
    world = world_from_tables(raw)
    at = build_features(world, active_points(world, utc("2025-04-10"))).iloc[0]
    after = build_features(world, active_points(world, utc("2025-04-10T00:00:01"))).iloc[0]
    assert at["nps_last"] == 9 and after["nps_last"] == 0


def hand_features(as_of: str) -> pd.Series:
    world = world_from_tables(raw_tables())
    frame = build_features(world, active_points(world, utc(as_of)))
    return frame.set_index("customer_id").loc["c1"]


def test_hand_checked_values() -> None:
    f = hand_features("2025-04-10")
    # usage: March is known from April 1st, April's row not until May 1st
    assert f["adoption"] == 0.7 and f["health_score"] == 81 and f["usage_months"] == 3
    assert f["seat_utilisation"] == pytest.approx(0.7)
    # NPS: 7 on Jan 10, 9 on Mar 10
    assert (f["nps_last"], f["nps_trend"], f["nps_mean_12m"], f["nps_days_since"]) == (9, 2, 8, 31)
    assert f["nps_promoter"] == 1
    # asks: two declines, then a review asked Apr 2 and answered only on Apr 20
    assert (f["asks_total"], f["declines_total"], f["accepts_total"]) == (3, 2, 0)
    # The newest ask is still open: like a no_response it neither breaks nor extends the streak
    # (the guardrail counts the same way, so the pause after two declines holds).
    assert f["decline_streak"] == 2
    assert f["days_since_last_ask"] == 8 and f["asks_90d"] == 2
    assert f["reference_calls_quarter"] == 0  # the reference call was in Q1
    # tickets: an urgent one opened Apr 1 09:00 is open (within 14 days)
    assert (f["tickets_90d"], f["urgent_tickets_90d"], f["urgent_tickets_open"]) == (2, 1, 1)
    assert f["ticket_sentiment_90d"] == 0 and f["csat_mean_12m"] == 4
    assert (f["social_positive_12m"], f["social_negative_12m"]) == (1, 1)
    assert f["activities_total"] == 0 and np.isnan(f["days_since_last_activity"])


def test_outcomes_become_known_when_answered() -> None:
    f = hand_features("2025-04-21")
    assert f["accepts_total"] == 1 and f["decline_streak"] == 0
    g = hand_features("2025-03-01")
    assert g["decline_streak"] == 2 and g["reference_calls_quarter"] == 1
    assert g["acceptance_rate"] == pytest.approx((0 + 0.3 * 2) / (2 + 2))


def test_decline_streak_is_the_guardrails_count(generated_world: World) -> None:
    """The feature the models learn from and the pause the guardrail applies count declines alike."""
    # A pause that never ends: every customer with a streak long enough is paused now.
    config = GuardrailConfig(pause_days_after_declines=1_000_000)
    seen = 0
    for as_of in pd.date_range("2025-06-01", "2026-10-01", freq="61D", tz="UTC"):
        feature = build_features(generated_world, active_points(generated_world, as_of)).set_index("customer_id")
        signals = pd.DataFrame(
            {
                "customer_id": feature.index.to_numpy(),
                "health_score": np.full(len(feature), 100.0),
                "last_urgent_ticket_at": pd.Series([pd.NaT] * len(feature), dtype=TIMESTAMP),
            }
        )
        blocks = blocked_asks(generated_world.asks, signals, as_of, config)
        paused = blocks[blocks["guardrail"] == "decline_pause"].drop_duplicates("customer_id")
        counted = paused["reason"].str.extract(r"Declined the last (\d+) asks")[0].astype(int)
        expected = pd.Series(counted.to_numpy(), index=paused["customer_id"]).reindex(feature.index)
        streak = feature["decline_streak"]
        long_enough = streak >= config.declines_in_a_row
        np.testing.assert_array_equal(expected.notna().to_numpy(), long_enough.to_numpy())
        np.testing.assert_array_equal(expected[long_enough].to_numpy(), streak[long_enough].to_numpy())
        seen += int(long_enough.sum())
    assert seen > 0  # some customers were in a pause


def test_windows_drop_old_events() -> None:
    f = hand_features("2025-12-05")
    assert f["social_positive_12m"] == 0 and f["social_negative_12m"] == 1  # Dec 1 2024 mention is > 365 days old
    assert f["tickets_90d"] == 0 and f["urgent_tickets_open"] == 0
    assert f["activities_12m"] == 1 and f["days_since_last_activity"] == 224


def test_tenure_is_exactly_twelve_months_on_the_anniversary() -> None:
    start = pd.Series([utc("2024-01-15"), utc("2024-01-15"), utc("2024-01-15")])
    as_of = pd.Series([utc("2025-01-15"), utc("2025-01-14"), utc("2025-01-16")])
    months = tenure_months(start, as_of)
    assert months[0] == 12.0 and months[1] < 12 < months[2]


def test_output_has_keys_then_features_in_spec_order_and_caller_order() -> None:
    world = world_from_tables(raw_tables())
    points = pd.DataFrame(
        {"customer_id": ["c1", "c1", "c1"], "as_of": [utc("2025-04-10"), utc("2025-01-01"), utc("2025-03-01")]}
    )
    frame = build_features(world, points)
    assert tuple(frame.columns) == KEYS + FEATURE_NAMES
    assert list(frame["as_of"]) == list(points["as_of"])


def test_unknown_customer_is_named() -> None:
    world = world_from_tables(raw_tables())
    with pytest.raises(KeyError, match="ghost"):
        build_features(world, pd.DataFrame({"customer_id": ["ghost"], "as_of": [utc("2025-01-01")]}))
