"""The DuckDB point-in-time engine gives the same feature table as the pandas engine it replaced.

`tests.reference_pointintime` is that engine, kept as it was. Both are run on generated worlds (the
drifting and the stationary one) at 18 month starts and at each ask's `asked_at` (the acceptance
training rows), on a world with ties (several events of one customer at one instant), where the
order of rows decides which one is "last", and on one with months missing from usage.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.io import World, world_from_tables
from features.pointintime import build_features, count_events, snapshot_points
from features.spec import CATEGORICAL_FEATURES, FEATURE_NAMES
from features.synthetic import DRIFTING, STATIONARY, generate_world
from tests import reference_pointintime as reference


def assert_same_table(new: pd.DataFrame, old: pd.DataFrame) -> None:
    assert list(new.columns) == list(old.columns)
    assert new["customer_id"].tolist() == old["customer_id"].tolist()
    assert (new["as_of"] == old["as_of"]).all()
    for name in FEATURE_NAMES:
        if name in CATEGORICAL_FEATURES:
            assert new[name].tolist() == old[name].tolist(), name
            continue
        a, b = new[name].to_numpy(dtype=float), old[name].to_numpy(dtype=float)
        assert new[name].dtype == old[name].dtype == np.float64, name
        assert (np.isnan(a) == np.isnan(b)).all(), f"{name}: missing in one engine only"
        known = ~np.isnan(a)
        np.testing.assert_allclose(a[known], b[known], rtol=1e-9, atol=1e-9, err_msg=name)


def month_points(world: World, months: int = 18) -> pd.DataFrame:
    dates = pd.date_range("2024-07-01", periods=months, freq="MS", tz="UTC")
    points = snapshot_points(world, dates)
    # Shuffled: the engine must give rows back in the caller's order, not its own.
    return points.sample(frac=1.0, random_state=0).reset_index(drop=True)


@pytest.fixture(scope="module", params=["drifting", "stationary"])
def world(request: pytest.FixtureRequest) -> World:
    drift = DRIFTING if request.param == "drifting" else STATIONARY
    return world_from_tables(generate_world(n_customers=600, months=30, seed=11, drift=drift).tables)


def test_monthly_snapshots_match_the_pandas_engine(world: World) -> None:
    points = month_points(world)
    assert len(points) > 5_000
    assert_same_table(build_features(world, points), reference.build_features(world, points))


def test_features_at_each_ask_match_the_pandas_engine(world: World) -> None:
    """The acceptance rows: as of each ask's own `asked_at`, to the microsecond."""
    asks = world.asks
    points = pd.DataFrame({"customer_id": asks["customer_id"], "as_of": asks["asked_at"]})
    assert_same_table(build_features(world, points), reference.build_features(world, points))


def test_label_counts_match_the_pandas_engine(world: World) -> None:
    points = month_points(world, 6)
    args = (world.activities, "occurred_at", world, points, pd.Timedelta(0), pd.Timedelta(days=90))
    np.testing.assert_array_equal(count_events(*args), reference.count_events(*args))


def test_ties_at_one_instant_pick_the_same_last_row(world: World) -> None:
    """Copies of events at the same instant as an existing one (other scores, other outcomes): the
    'last' row among ties is the later one in the table, in both engines."""
    tables = world.as_dict()
    rng = np.random.default_rng(5)
    nps = tables["nps"]
    twins = nps.sample(200, random_state=1).assign(score=lambda f: rng.integers(0, 11, len(f)))
    tables["nps"] = pd.concat([nps, twins], ignore_index=True)
    asks = tables["asks"]
    answered = asks[asks["outcome"].isin(["accepted", "declined"])].sample(100, random_state=2)
    flipped = answered.assign(
        ask_id=lambda f: "tie-" + f["ask_id"],
        outcome=lambda f: np.where(f["outcome"] == "accepted", "declined", "accepted"),
    )
    tables["asks"] = pd.concat([asks, flipped], ignore_index=True)
    tied = world_from_tables(tables)
    points = month_points(tied, 6)
    assert_same_table(build_features(tied, points), reference.build_features(tied, points))


def test_missing_usage_months_match_the_pandas_engine(world: World) -> None:
    """A month without usage: the 3-month trends of the month after the gap are unknown (NaN), not
    taken from an older row."""
    tables = world.as_dict()
    usage = tables["usage"]
    tables["usage"] = usage.drop(usage.sample(frac=0.15, random_state=3).index).reset_index(drop=True)
    gappy = world_from_tables(tables)
    points = month_points(gappy, 6)
    new = build_features(gappy, points)
    assert_same_table(new, reference.build_features(gappy, points))
    assert new["adoption_trend_3m"].isna().sum() > build_features(world, points)["adoption_trend_3m"].isna().sum()


def test_features_are_the_same_bytes_whatever_the_threads(world: World) -> None:
    """Tables big enough for DuckDB to aggregate in parallel (events x 60): one thread and four give
    identical features, so the batch job's bytes do not depend on how many cores score a chunk."""
    tables = world.as_dict()
    for name, col in (("tickets", "opened_at"), ("social", "mentioned_at"), ("usage", "month")):
        frame = tables[name]
        copies = (
            [frame]
            if name == "usage"
            else [frame.assign(**{col: frame[col] - pd.Timedelta(minutes=k)}) for k in range(60)]
        )
        tables[name] = pd.concat(copies, ignore_index=True)
    big = world_from_tables(tables)
    points = month_points(big, 6)
    assert len(big.tickets) > 300_000
    pd.testing.assert_frame_equal(build_features(big, points, threads=1), build_features(big, points, threads=4))


def test_a_point_without_as_of_is_refused_by_row() -> None:
    world = world_from_tables(generate_world(n_customers=50, months=6, seed=1).tables)
    points = snapshot_points(world, [pd.Timestamp("2026-10-01", tz="UTC")]).head(3)
    points.loc[1, "as_of"] = pd.NaT
    with pytest.raises(ValueError, match=r"as_of is missing for 1 point\(s\): rows 1$"):
        build_features(world, points)
