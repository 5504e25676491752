"""Deals (spec section 9): the opportunities table and the asks' opportunity_id are checked like every
table, the generator's deals come from a stream of their own with a confounded choice of which deals
get a reference, and the adjusted estimate finds what the plain difference overstates."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from advocacy.cli import app
from features.catalog import DEALS, TABLES
from features.contracts import DataContractError
from features.deals import deal_frame
from features.io import read_world
from features.synthetic import DEFAULT_END
from features.synthetic._deals import with_deals
from models.deal_effect import MIN_TREATED, estimate_effect
from tests.conftest import SAMPLE

SAMPLE_DEALS = pd.read_parquet(SAMPLE / "opportunities.parquet")
SAMPLE_ASKS = pd.read_parquet(SAMPLE / "asks.parquet")


def _copy_sample(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    shutil.copytree(SAMPLE, data, ignore=shutil.ignore_patterns("truth"))
    return data


def _won_without_close(deals: pd.DataFrame) -> pd.DataFrame:
    won = deals.index[deals["outcome"] == "won"][:3]
    deals.loc[won, "closed_at"] = pd.NaT
    return deals


def _closed_before_created(deals: pd.DataFrame) -> pd.DataFrame:
    closed = deals.index[deals["outcome"] == "lost"][:2]
    deals.loc[closed, "closed_at"] = deals.loc[closed, "created_at"] - pd.Timedelta(days=1)
    return deals


def _open_with_close(deals: pd.DataFrame) -> pd.DataFrame:
    still = deals.index[deals["outcome"] == "open"][:1]
    deals.loc[still, "closed_at"] = deals.loc[still, "created_at"] + pd.Timedelta(days=3)
    return deals


def _negative_amount(deals: pd.DataFrame) -> pd.DataFrame:
    deals.loc[deals.index[:2], "amount"] = -5.0
    return deals


def _unknown_referrer(deals: pd.DataFrame) -> pd.DataFrame:
    deals.loc[deals.index[4], "referred_by"] = "C-nobody"
    return deals


def _duplicate_id(deals: pd.DataFrame) -> pd.DataFrame:
    deals.loc[deals.index[1], "opportunity_id"] = deals.loc[deals.index[0], "opportunity_id"]
    return deals


BAD_DEALS = {
    "won without closed_at": (_won_without_close, "closed_at", "given when the outcome is won or lost"),
    "closed before created": (_closed_before_created, "closed_at", "not before created_at"),
    "open with closed_at": (_open_with_close, "closed_at", "empty while the outcome is open"),
    "negative amount": (_negative_amount, "amount", "greater_than_or_equal_to(0)"),
    "unknown referrer": (_unknown_referrer, "referred_by", "exists in customers"),
    "duplicate id": (_duplicate_id, "opportunity_id", "unique"),
}


@pytest.mark.parametrize("case", list(BAD_DEALS))
def test_a_bad_deal_is_refused_naming_table_column_and_rows_and_nothing_is_written(case: str, tmp_path: Path) -> None:
    breaks, column, rule = BAD_DEALS[case]
    data = _copy_sample(tmp_path)
    breaks(SAMPLE_DEALS.copy()).to_parquet(data / "opportunities.parquet")
    with pytest.raises(DataContractError, match=rf"table '{DEALS}': column '{column}': rule '{re.escape(rule)}") as err:
        read_world(data)
    assert "row" in str(err.value)
    out = tmp_path / "features.parquet"
    result = CliRunner().invoke(app, ["features", "--data", str(data), "--as-of", "2026-06-01", "--out", str(out)])
    assert result.exit_code != 0
    assert column in result.output
    assert not out.exists()


def test_an_ask_naming_an_unknown_deal_is_refused(tmp_path: Path) -> None:
    data = _copy_sample(tmp_path)
    asks = SAMPLE_ASKS.copy()
    asks.loc[asks.index[7], "opportunity_id"] = "O-no-such-deal"
    asks.to_parquet(data / "asks.parquet")
    rule = r"table 'asks': column 'opportunity_id': rule 'exists in opportunities'.*O-no-such-deal"
    with pytest.raises(DataContractError, match=rule):
        read_world(data)


def test_a_csv_deal_table_reads_like_the_parquet_one(tmp_path: Path) -> None:
    data = _copy_sample(tmp_path)
    (data / "opportunities.parquet").unlink()
    deals = SAMPLE_DEALS.copy()
    deals.loc[deals.index[0], "referred_by"] = None
    deals.to_csv(data / "opportunities.csv", index=False)
    read = read_world(data).opportunities
    parquet = read_world(SAMPLE).opportunities
    assert read["opportunity_id"].tolist() == parquet["opportunity_id"].tolist()
    assert read["referred_by"].isna().sum() == parquet["referred_by"].isna().sum() + int(
        pd.notna(SAMPLE_DEALS.loc[0, "referred_by"])
    )
    assert str(read["closed_at"].dtype) == "datetime64[us, UTC]"


def test_no_deal_table_means_no_deals(tmp_path: Path) -> None:
    data = _copy_sample(tmp_path)
    (data / "opportunities.parquet").unlink()
    SAMPLE_ASKS.drop(columns="opportunity_id").to_parquet(data / "asks.parquet")
    world = read_world(data)
    assert world.opportunities.empty
    assert world.deal_links.empty


# ---- the generator -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def base() -> dict[str, pd.DataFrame]:
    tables = {name: pd.read_parquet(SAMPLE / f"{name}.parquet") for name in TABLES}
    tables["asks"] = tables["asks"].drop(columns="opportunity_id")
    return tables


def test_deals_come_from_their_own_stream_and_leave_the_other_tables_as_they_were(
    base: dict[str, pd.DataFrame],
) -> None:
    one, truth_one = with_deals(base, 1, DEFAULT_END)
    again, truth_again = with_deals(base, 1, DEFAULT_END)
    other, _ = with_deals(base, 2, DEFAULT_END)
    pd.testing.assert_frame_equal(one[DEALS], again[DEALS])
    pd.testing.assert_frame_equal(truth_one, truth_again)
    assert not one[DEALS]["amount"].equals(other[DEALS]["amount"])
    for name in TABLES:
        frame = one[name].drop(columns=["opportunity_id"]) if name == "asks" else one[name]
        pd.testing.assert_frame_equal(frame, base[name])
    # A request names an accepted reference ask of the world; each such ask serves one deal at most.
    named = one["asks"].dropna(subset=["opportunity_id"])
    assert set(named["ask_type"]) <= {"reference_call", "case_study"}
    assert (named["outcome"] == "accepted").all()
    assert named["opportunity_id"].is_unique


def test_sales_asks_on_the_deals_it_expects_to_win_so_the_plain_difference_overstates(
    base: dict[str, pd.DataFrame],
) -> None:
    gaps = []
    for seed in range(3):
        tables, truth = with_deals(base, seed, DEFAULT_END)
        world_asks, deals = tables["asks"], tables[DEALS]
        links = world_asks.dropna(subset=["opportunity_id"]).loc[:, ["ask_id", "opportunity_id"]]
        frame = deal_frame(deals, world_asks, tables["activities"], links)
        truth = truth.set_index("opportunity_id").loc[frame["opportunity_id"]]
        closed = frame["closed"].to_numpy(dtype=bool)
        treated = closed & frame["referenced"].to_numpy(dtype=bool)
        # Without a reference, the deals that got one were likelier to win anyway: the selection.
        p0 = truth["p_win_without"].to_numpy()
        assert p0[treated].mean() > p0[closed & ~treated].mean() + 0.05
        won = frame["won"].to_numpy(dtype=float)
        plain = won[treated].mean() - won[closed & ~treated].mean()
        gaps.append(plain - (truth["p_win_with"] - truth["p_win_without"]).to_numpy()[treated].mean())
        # Closing is decided by the cycle without a reference: only the newest deals are open.
        created = frame["created_at"]
        assert created[~closed].min() > created[closed].quantile(0.5)
    assert np.mean(gaps) > 0.05


def test_deal_frame_counts_a_reference_only_when_delivered_before_the_close() -> None:
    world = read_world(SAMPLE)
    frame = deal_frame(world.opportunities, world.asks, world.activities, world.deal_links)
    assert len(frame) == len(world.opportunities)
    by_hand = 0
    activities = world.activities.dropna(subset=["ask_id"])
    for deal in world.opportunities.itertuples():
        asks = world.deal_links.loc[world.deal_links["opportunity_id"] == deal.opportunity_id, "ask_id"]
        delivered = activities.loc[activities["ask_id"].isin(set(asks)), "occurred_at"]
        if delivered.empty:
            continue
        first = delivered.min()
        by_hand += int(deal.outcome == "open" or first < deal.closed_at)
    assert by_hand == int(frame["referenced"].sum())
    assert by_hand > MIN_TREATED
    late = frame["delivered_at"].notna() & ~frame["referenced"]
    assert (frame.loc[late, "delivered_at"] >= frame.loc[late, "closed_at"]).all()
    assert frame.loc[~frame["closed"], "won"].isna().all()


# ---- the estimate ------------------------------------------------------------------------------------


def test_the_adjusted_estimate_covers_the_truth_and_corrects_the_plain_difference_on_the_sample() -> None:
    world = read_world(SAMPLE)
    frame = deal_frame(world.opportunities, world.asks, world.activities, world.deal_links)
    truth = pd.read_parquet(SAMPLE / "truth" / "deals.parquet").set_index("opportunity_id").loc[frame["opportunity_id"]]
    treated = (frame["closed"] & frame["referenced"]).to_numpy(dtype=bool)
    true_effect = (truth["p_win_with"] - truth["p_win_without"]).to_numpy()[treated].mean()
    effect = estimate_effect(frame, resamples=30, refutation_simulations=3)
    assert effect.estimated
    assert effect.effect_on_treated is not None and effect.plain_difference is not None
    assert effect.ci_low is not None and effect.ci_high is not None
    assert effect.ci_low < true_effect < effect.ci_high
    # Sales asked on the deals it expected to win: the adjustment takes the selection out.
    assert effect.plain_difference > true_effect > effect.effect_on_treated - 0.1
    assert effect.effect_on_treated < effect.plain_difference
    assert effect.incremental_won_revenue == pytest.approx(effect.effect_on_treated * effect.treated_amount)
    checks = {check.name: check for check in effect.refutations}
    assert set(checks) == {"placebo treatment", "random common cause"}
    assert abs(checks["placebo treatment"].new_effect) < abs(effect.effect_on_treated)
    # DoWhy's estimate is the same learner on the same treated deals (its own cross-fitting aside).
    assert checks["random common cause"].estimated_effect == pytest.approx(effect.effect_on_treated, abs=0.02)


def test_too_few_deals_is_said_not_estimated() -> None:
    world = read_world(SAMPLE)
    frame = deal_frame(world.opportunities, world.asks, world.activities, world.deal_links)
    treated = frame.index[frame["referenced"].to_numpy(dtype=bool)]
    few = frame.drop(index=treated[MIN_TREATED // 2 :])
    effect = estimate_effect(few, resamples=5, refutation_simulations=0)
    assert not effect.estimated
    assert effect.status.startswith("too few treated deals")
    assert effect.effect_on_treated is None and effect.ci_low is None and effect.incremental_won_revenue is None
    assert effect.plain_difference is not None  # the plain figures are still shown


def test_a_deal_dated_in_the_future_is_left_out_and_counted(tmp_path: Path) -> None:
    from usecases import Sources, describe_left_out

    data = _copy_sample(tmp_path)
    deals = SAMPLE_DEALS.copy()
    referenced = set(SAMPLE_ASKS["opportunity_id"].dropna())
    won = deals.index[(deals["outcome"] == "won") & deals["opportunity_id"].isin(referenced)][0]
    deals.loc[won, "closed_at"] = pd.Timestamp("2150-01-01", tz="UTC")  # a wrong year the contract's bounds allow
    deals.to_parquet(data / "opportunities.parquet")
    read = Sources(data, tmp_path / "asks.sqlite", tmp_path / "plans").read()
    named = int((SAMPLE_ASKS["opportunity_id"] == deals.loc[won, "opportunity_id"]).sum())
    assert read.left_out == {
        "left_out.opportunities.dated_in_the_future": 1,
        "left_out.asks.naming_a_deal_left_out": named,
    }
    assert describe_left_out(read.left_out)[0] == "opportunities: 1 rows dated in the future"
    assert deals.loc[won, "opportunity_id"] not in set(read.world.opportunities["opportunity_id"])
    assert len(read.world.opportunities) == len(deals) - 1
