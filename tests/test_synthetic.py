"""Behaviour of the synthetic world generator (features/synthetic/)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import features.synthetic
from features.catalog import ASK_TYPE_NAMES, DEALS, TABLES
from features.contracts import CONTRACTS
from features.synthetic import DEFAULT_END, STATIONARY, SyntheticWorld, generate_world

END = DEFAULT_END
EVENT_TIME = {
    "usage": "month",
    "nps": "responded_at",
    "tickets": "opened_at",
    "social": "mentioned_at",
    "asks": "asked_at",
    "activities": "occurred_at",
}
UTC = "datetime64[us, UTC]"


@pytest.fixture(scope="module")
def world() -> SyntheticWorld:
    return generate_world(n_customers=400, months=18, seed=7)


@pytest.fixture(scope="module")
def mid_world() -> SyntheticWorld:
    # Big enough for rate comparisons, still about a second.
    return generate_world(n_customers=2500, months=24, seed=11)


def _is_text(s: pd.Series) -> bool:
    return (s.dtype == object or pd.api.types.is_string_dtype(s.dtype)) and bool(s.dropna().map(type).eq(str).all())


def test_public_names_stay_as_declared() -> None:
    assert features.synthetic.__all__ == [
        "DEFAULT_END",
        "DRIFTING",
        "STATIONARY",
        "Drift",
        "SyntheticWorld",
        "generate_world",
    ]


def test_same_seed_same_world_other_seed_differs() -> None:
    a = generate_world(n_customers=150, months=10, seed=3)
    b = generate_world(n_customers=150, months=10, seed=3)
    c = generate_world(n_customers=150, months=10, seed=4)
    for name in TABLES:
        pd.testing.assert_frame_equal(a.tables[name], b.tables[name])
    for name in ("acceptance", "propensity"):
        pd.testing.assert_frame_equal(a.truth[name], b.truth[name])
    assert not a.tables["usage"].equals(c.tables["usage"])
    assert not a.tables["customers"]["name"].equals(c.tables["customers"]["name"])


def test_tables_have_contract_columns_and_types(world: SyntheticWorld) -> None:
    assert tuple(world.tables) == (*TABLES, DEALS)
    optional = {"asks": ("opportunity_id",), DEALS: ("referred_by",)}  # the contract's optional columns
    for name in (*TABLES, DEALS):
        frame = world.tables[name]
        assert tuple(frame.columns) == (*CONTRACTS[name].columns, *optional.get(name, ())), name
        assert len(frame) > 0, name
    t = world.tables
    for name, col in [*EVENT_TIME.items(), ("customers", "contract_start"), ("customers", "churned_at")]:
        assert str(t[name][col].dtype) == UTC, (name, col)
    assert str(t["asks"]["responded_at"].dtype) == UTC
    for name, cols in {
        "customers": ["customer_id", "name", "industry", "segment", "region", "use_case", "plan"],
        "tickets": ["customer_id", "priority"],
        "social": ["customer_id", "channel"],
        "asks": ["ask_id", "customer_id", "ask_type", "outcome"],
        "activities": ["activity_id", "customer_id", "activity_type", "ask_id"],
    }.items():
        for col in cols:
            assert _is_text(t[name][col]), (name, col)
    for name, col in [("usage", "licensed_seats"), ("usage", "active_users"), ("usage", "logins"), ("nps", "score")]:
        assert t[name][col].dtype == np.int64, (name, col)
    assert t["tickets"]["csat"].dtype == "Int64"
    assert t["customers"]["arr"].dtype == np.float64


def test_values_follow_the_rules(world: SyntheticWorld) -> None:
    t = world.tables
    cu, us = t["customers"], t["usage"]
    assert set(cu["segment"]) == {"smb", "mid_market", "enterprise"}
    assert 5 <= cu["industry"].nunique() <= 10
    assert cu["region"].nunique() == 4
    assert cu["use_case"].nunique() == 6
    assert cu["plan"].nunique() == 3
    assert (cu["arr"] >= 0).all()
    assert cu["name"].str.len().gt(0).all()
    assert (cu["contract_start"] == cu["contract_start"].dt.normalize()).all()
    churned = cu["churned_at"].dropna()
    assert len(churned) > 0
    assert (churned == churned.dt.normalize()).all()
    assert (churned > cu.loc[churned.index, "contract_start"]).all()
    assert us["feature_adoption"].between(0, 1).all()
    assert us["health_score"].between(0, 100).all()
    for col in ("licensed_seats", "active_users", "logins"):
        assert (us[col] >= 0).all()
    assert (us["active_users"] <= us["licensed_seats"]).all()
    assert (us["month"].dt.day == 1).all()
    assert (us["month"] == us["month"].dt.normalize()).all()
    assert t["nps"]["score"].between(0, 10).all()
    tk = t["tickets"]
    assert set(tk["priority"]) == {"low", "normal", "high", "urgent"}
    assert tk["sentiment"].between(-1, 1).all()
    assert tk["csat"].dropna().between(1, 5).all()
    assert tk["csat"].isna().any()
    assert t["social"]["sentiment"].between(-1, 1).all()
    asks, acts = t["asks"], t["activities"]
    assert set(asks["ask_type"]) <= set(ASK_TYPE_NAMES)
    assert set(acts["activity_type"]) <= set(ASK_TYPE_NAMES)
    assert set(asks["outcome"]) == {"accepted", "declined", "no_response"}


def test_ids_are_unique_formatted_and_referenced(world: SyntheticWorld) -> None:
    t = world.tables
    for name, col, pattern in [
        ("customers", "customer_id", r"C\d{7}"),
        ("asks", "ask_id", r"A\d{8}"),
        ("activities", "activity_id", r"V\d{8}"),
    ]:
        ids = t[name][col]
        assert ids.is_unique, name
        assert ids.str.fullmatch(pattern).all(), name
    known = set(t["customers"]["customer_id"])
    for name in EVENT_TIME:
        assert set(t[name]["customer_id"]) <= known, name
    assert not t["usage"].duplicated(["customer_id", "month"]).any()


def test_no_event_outside_customer_life_or_at_end(world: SyntheticWorld) -> None:
    t = world.tables
    life = t["customers"].set_index("customer_id")[["contract_start", "churned_at"]]
    for name, col in EVENT_TIME.items():
        ev = t[name].join(life, on="customer_id")
        assert (ev[col] >= ev["contract_start"]).all(), name
        assert (ev["churned_at"].isna() | (ev[col] <= ev["churned_at"])).all(), name
        assert (ev[col] < END).all(), name
    asks = t["asks"].join(life, on="customer_id")
    answered = asks.dropna(subset=["responded_at"])
    assert (answered["responded_at"] < END).all()
    assert (answered["churned_at"].isna() | (answered["responded_at"] <= answered["churned_at"])).all()


def test_responded_at_null_iff_no_response(world: SyntheticWorld) -> None:
    asks = world.tables["asks"]
    assert (asks["responded_at"].isna() == (asks["outcome"] == "no_response")).all()
    answered = asks.dropna(subset=["responded_at"])
    assert (answered["responded_at"] >= answered["asked_at"]).all()


def test_solicited_activities_follow_their_accepted_ask(world: SyntheticWorld) -> None:
    asks, acts = world.tables["asks"], world.tables["activities"]
    solicited = acts.dropna(subset=["ask_id"])
    assert 0 < len(solicited) < len(acts)  # both solicited and unsolicited advocacy exist
    assert solicited["ask_id"].is_unique
    m = solicited.merge(asks, on="ask_id", suffixes=("", "_ask"))
    assert len(m) == len(solicited)
    assert (m["outcome"] == "accepted").all()
    assert (m["customer_id"] == m["customer_id_ask"]).all()
    assert (m["activity_type"] == m["ask_type"]).all()
    assert (m["occurred_at"] > m["responded_at"]).all()
    assert (m["occurred_at"] - m["responded_at"]).max() < pd.Timedelta(days=75)


def test_activity_days_make_the_90_day_window_three_months(world: SyntheticWorld) -> None:
    # An activity in month m lies in (t, t + 90 days] for exactly t = starts of m-2, m-1 and m,
    # so the truth (which simulates three monthly steps) and the realised label agree.
    occurred = world.tables["activities"]["occurred_at"]
    month = occurred.dt.tz_localize(None).dt.to_period("M").dt.start_time.dt.tz_localize("UTC")
    ninety = pd.Timedelta(days=90)
    assert (occurred > month).all()
    assert (occurred <= month - pd.DateOffset(months=2) + ninety).all()
    assert (occurred > month - pd.DateOffset(months=3) + ninety).all()


def test_rows_sorted_by_customer_then_time(world: SyntheticWorld) -> None:
    for name, col in EVENT_TIME.items():
        frame = world.tables[name]
        expected = frame.sort_values(["customer_id", col], kind="stable")
        assert frame.index.equals(expected.index), name
    assert world.tables["customers"]["customer_id"].is_monotonic_increasing
    prop = world.truth["propensity"]
    assert prop.index.equals(prop.sort_values(["customer_id", "as_of"], kind="stable").index)


def test_acceptance_truth_covers_every_ask(world: SyntheticWorld) -> None:
    acc = world.truth["acceptance"]
    assert list(acc.columns) == ["ask_id", "p_true"]
    assert acc["ask_id"].tolist() == world.tables["asks"]["ask_id"].tolist()
    assert acc["p_true"].between(0, 1).all()
    assert acc["p_true"].notna().all()


def test_propensity_truth_covers_expected_snapshots(world: SyntheticWorld) -> None:
    prop = world.truth["propensity"]
    assert list(prop.columns) == ["customer_id", "as_of", "p_true"]
    assert str(prop["as_of"].dtype) == UTC
    months = pd.date_range(END - pd.DateOffset(months=18), END, freq="MS", tz="UTC")
    snapshots = [t for t in months[1:] if t + pd.Timedelta(days=90) <= END]
    assert sorted(prop["as_of"].unique()) == snapshots
    cu = world.tables["customers"]
    expected = set()
    for t in snapshots:
        ok = (cu["contract_start"] < t) & (cu["churned_at"].isna() | (cu["churned_at"] >= t))
        expected |= {(c, t) for c in cu.loc[ok, "customer_id"]}
    assert set(zip(prop["customer_id"], prop["as_of"], strict=True)) == expected
    assert len(prop) == len(expected)
    assert prop["p_true"].between(0, 1).all()
    assert prop["p_true"].notna().all()


def _labels(world: SyntheticWorld) -> pd.Series:
    """Realised 90-day label of each propensity truth row, from the activities table."""
    prop, acts = world.truth["propensity"], world.tables["activities"]
    m = prop.reset_index().merge(acts[["customer_id", "occurred_at"]], on="customer_id", how="left")
    hit = (m["occurred_at"] > m["as_of"]) & (m["occurred_at"] <= m["as_of"] + pd.Timedelta(days=90))
    return hit.groupby(m["index"]).any().reindex(prop.index, fill_value=False)


def test_truth_is_consistent_with_realised_outcomes(mid_world: SyntheticWorld) -> None:
    prop = mid_world.truth["propensity"]
    label = _labels(mid_world)
    assert 0.08 < label.mean() < 0.35
    # The realised path is a draw from the truth: calibrated overall and in the top/bottom halves.
    assert abs(prop["p_true"].mean() - label.mean()) < 0.02
    high = prop["p_true"] > prop["p_true"].median()
    assert abs(prop.loc[high, "p_true"].mean() - label[high].mean()) < 0.03
    assert abs(prop.loc[~high, "p_true"].mean() - label[~high].mean()) < 0.02
    asks = mid_world.tables["asks"]
    accepted = asks["outcome"].eq("accepted")
    assert 0.2 < accepted.mean() < 0.45
    assert abs(mid_world.truth["acceptance"]["p_true"].mean() - accepted.mean()) < 0.03


def test_high_effort_asks_are_accepted_less(mid_world: SyntheticWorld) -> None:
    asks = mid_world.tables["asks"]
    rate = asks["outcome"].eq("accepted").groupby(asks["ask_type"]).mean()
    low = asks["ask_type"].isin(["social_share", "review"])
    high = asks["ask_type"].isin(["speaking", "case_study"])
    assert high.sum() > 100
    assert low.sum() > 300
    low_rate = asks.loc[low, "outcome"].eq("accepted").mean()
    high_rate = asks.loc[high, "outcome"].eq("accepted").mean()
    assert high_rate < low_rate - 0.15
    assert rate["speaking"] < rate["social_share"]


def test_end_is_read_as_utc_and_arguments_are_checked() -> None:
    w = generate_world(n_customers=60, months=6, seed=1, end=pd.Timestamp("2025-03-01"))
    assert w.tables["usage"]["month"].max() == pd.Timestamp("2025-02-01", tz="UTC")
    with pytest.raises(ValueError, match="n_customers"):
        generate_world(n_customers=0)
    with pytest.raises(ValueError, match="months"):
        generate_world(n_customers=10, months=0)


# --- the drifting world (the default) and the stationary one behind a flag -----------------------


@pytest.fixture(scope="module")
def stationary_world() -> SyntheticWorld:
    return generate_world(n_customers=2500, months=24, seed=11, drift=STATIONARY)


def _asks_with_truth(w: SyntheticWorld) -> pd.DataFrame:
    return w.tables["asks"].merge(w.truth["acceptance"], on="ask_id")


def test_willingness_fades_and_december_slumps_in_the_drifting_world_only(
    mid_world: SyntheticWorld, stationary_world: SyntheticWorld
) -> None:
    by_type = mid_world.truth["acceptance_by_type"]
    first, last = by_type["as_of"].min(), by_type["as_of"].max()
    mean = by_type.groupby("as_of")["p_true"].mean()
    assert mean[last] < mean[first] - 0.01  # willingness fades over two years (while the base matures)
    month = mean.index.month
    december = mean[month == 12].mean()
    assert december < mean[(month >= 9) & (month <= 11)].mean() - 0.03  # the end-of-year slump
    # The realised answers follow the truth month by month: the drift is in the data, not only the truth.
    asks = _asks_with_truth(mid_world)
    second_year = asks["asked_at"] >= END - pd.DateOffset(months=12)
    rate = asks["outcome"].eq("accepted").groupby(second_year).mean()
    assert rate[True] < rate[False] - 0.03
    still = _asks_with_truth(stationary_world)
    still_rate = still.groupby(still["asked_at"].dt.month)["p_true"].mean()
    assert still_rate[12] > still_rate.drop(12).min() - 0.02  # no slump when the world stands still


def test_answers_take_weeks_and_some_accepted_asks_are_never_delivered(
    mid_world: SyntheticWorld, stationary_world: SyntheticWorld
) -> None:
    for w, slow in ((mid_world, True), (stationary_world, False)):
        asks, acts = w.tables["asks"], w.tables["activities"]
        delay = (asks["responded_at"] - asks["asked_at"]).dropna()
        assert bool(delay.quantile(0.95) > pd.Timedelta(days=10)) is slow
        assert delay.max() <= pd.Timedelta(days=28.1)
        # Accepted asks answered before the last two months: delivered, unless the world drifts.
        old = asks[(asks["outcome"] == "accepted") & (asks["responded_at"] < END - pd.DateOffset(months=2))]
        delivered = old["ask_id"].isin(set(acts["ask_id"].dropna())).mean()
        assert bool(delivered < 0.95) is slow
        assert delivered > 0.8


def test_answers_after_the_end_or_after_churn_are_not_yet_known(mid_world: SyntheticWorld) -> None:
    asks = mid_world.tables["asks"].merge(mid_world.tables["customers"][["customer_id", "churned_at"]])
    answered = asks.dropna(subset=["responded_at"])
    assert (answered["responded_at"] < END).all()
    assert (answered["churned_at"].isna() | (answered["responded_at"] <= answered["churned_at"])).all()
    recent = asks[asks["asked_at"] >= END - pd.Timedelta(days=31)]
    assert recent["outcome"].eq("no_response").mean() > asks["outcome"].eq("no_response").mean() + 0.05
    assert mid_world.truth["acceptance"]["p_true"].notna().all()  # the truth of an unheard answer stays


def test_asking_follows_a_rapport_the_tables_never_record(
    mid_world: SyntheticWorld, stationary_world: SyntheticWorld
) -> None:
    # Customers the company chose to ask accept more than the same customers' month-start truth
    # for the type says of everyone: a selection that no column explains.
    def asked_vs_all(w: SyntheticWorld) -> float:
        by_type = w.truth["acceptance_by_type"]
        asks = w.tables["asks"].assign(
            as_of=lambda a: a["asked_at"].dt.to_period("M").dt.start_time.dt.tz_localize("UTC")
        )
        key = ["customer_id", "as_of", "ask_type"]
        asked = asks[key].astype({"ask_type": by_type["ask_type"].dtype}).merge(by_type, on=key)
        everyone = by_type.merge(asked[["as_of", "ask_type"]].drop_duplicates(), on=["as_of", "ask_type"])
        return float(asked["p_true"].mean() - everyone.groupby("ask_type", observed=True)["p_true"].mean().mean())

    assert asked_vs_all(mid_world) > asked_vs_all(stationary_world) + 0.01


def test_acceptance_truth_covers_every_live_customer_and_ask_type(world: SyntheticWorld) -> None:
    by_type = world.truth["acceptance_by_type"]
    assert list(by_type.columns) == ["customer_id", "as_of", "ask_type", "p_true"]
    assert list(by_type["ask_type"].cat.categories) == list(ASK_TYPE_NAMES)
    assert by_type["p_true"].between(0, 1).all()
    assert not by_type.duplicated(["customer_id", "as_of", "ask_type"]).any()
    cu = world.tables["customers"]
    months = pd.date_range(END - pd.DateOffset(months=17), END - pd.DateOffset(months=1), freq="MS", tz="UTC")
    assert sorted(by_type["as_of"].unique()) == list(months)
    for t in months[::5]:
        live = (cu["contract_start"] < t) & (cu["churned_at"].isna() | (cu["churned_at"] >= t))
        rows = by_type[by_type["as_of"] == t]
        assert set(rows["customer_id"]) == set(cu.loc[live, "customer_id"])
        assert len(rows) == live.sum() * len(ASK_TYPE_NAMES)
    # Effort lowers acceptance for everyone, asked or not.
    mean = by_type.groupby("ask_type", observed=True)["p_true"].mean()
    assert mean["speaking"] < mean["review"] < mean["social_share"] + 0.05
    assert "acceptance_by_type" not in generate_world(n_customers=50, months=6, seed=1, acceptance_truth=False).truth
