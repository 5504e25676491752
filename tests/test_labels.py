"""Labels, time splits, and the generated world's truth seen through the product's own labels."""

from __future__ import annotations

import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from features.baseline import score_baseline
from features.io import world_from_tables
from features.labels import (
    HORIZON,
    TimeSplit,
    acceptance_dataset,
    immature_asks,
    monthly_split,
    observed_until,
    propensity_dataset,
    propensity_labels,
    time_split,
)
from tests.worldkit import raw_tables, utc


@pytest.mark.parametrize(
    ("occurred_at", "label"),
    [("2025-05-01", 0), ("2025-05-01T00:00:01", 1), ("2025-07-30", 1), ("2025-07-30T00:00:01", 0)],
    ids=["at-as-of", "just-after", "at-90-days", "after-90-days"],
)
def test_propensity_label_window_is_as_of_exclusive_to_90_days_inclusive(occurred_at: str, label: int) -> None:
    raw = raw_tables()
    raw["activities"] = raw["activities"].assign(occurred_at=[occurred_at])
    world = world_from_tables(raw)
    points = pd.DataFrame({"customer_id": ["c1"], "as_of": [utc("2025-05-01")]})
    assert propensity_labels(world, points)[0] == label


def test_purge_drops_rows_whose_label_reaches_into_the_next_split() -> None:
    split = TimeSplit(utc("2025-06-01"), utc("2025-09-01"))
    times = pd.Series([utc("2025-01-01"), utc("2025-04-01"), utc("2025-06-01"), utc("2025-08-01"), utc("2025-09-01")])
    assert split.assign(times, HORIZON).tolist() == ["train", "purged", "valid", "purged", "test"]


def test_monthly_split_needs_enough_history() -> None:
    months = pd.Series(pd.date_range("2025-01-01", periods=8, freq="MS", tz="UTC"))
    with pytest.raises(ValueError, match="need at least"):
        monthly_split(months)


def test_truth_behaves_and_the_points_rule_scores_below_it() -> None:
    """On the held-out window, the generator's true probability ranks realised labels well (roughly
    0.8-0.9 AUC) and the points rule, from the same point-in-time features, clearly worse."""
    from features.synthetic import generate_world

    synthetic = generate_world(n_customers=3000, months=30, seed=11)
    world = world_from_tables(synthetic.tables)
    frame = propensity_dataset(world)
    split = monthly_split(frame["as_of"])
    test = frame[split.assign(frame["as_of"], HORIZON) == "test"]
    truth = synthetic.truth["propensity"].assign(as_of=lambda t: t["as_of"].astype(test["as_of"].dtype))
    rows = test.merge(truth, on=["customer_id", "as_of"], how="inner", validate="one_to_one")
    assert len(rows) == len(test)
    truth_auc = roc_auc_score(rows["label"], rows["p_true"])
    points_auc = roc_auc_score(rows["label"], score_baseline(rows)["points"])
    assert 0.78 <= truth_auc <= 0.92
    assert points_auc <= truth_auc - 0.06


def test_time_split_survives_many_rows_at_one_moment() -> None:
    # Issue 15, defect 6: 10,000 asks posted together at one asked_at made every later training fail.
    spread = pd.Series(pd.date_range("2024-01-01", periods=5_000, freq="3h", tz="UTC"))
    for at in (spread.iloc[-1], spread.iloc[0]):  # the newest moment, then the oldest
        times = pd.concat([spread, pd.Series([at] * 10_000)], ignore_index=True)
        parts = time_split(times).assign(times)
        counts = parts.value_counts()
        assert {"train", "valid", "test"} <= set(counts.index), counts
        assert parts[times == at].nunique() == 1  # one moment stays on one side of every cut
    # Without ties the cuts are where they always were: the newest 20% test, the 20% before valid.
    cut = time_split(spread)
    assert (cut.valid_start, cut.test_start) == (spread.iloc[3_000], spread.iloc[4_000])
    with pytest.raises(ValueError, match="only 2 distinct time"):
        time_split(pd.Series([spread.iloc[0]] * 50 + [spread.iloc[1]] * 50))


def test_asks_newer_than_the_answer_horizon_are_no_acceptance_labels() -> None:
    # Spec section 3 (issue 17): the newest asks' no_response may only mean "not answered yet".
    raw = raw_tables()
    newer = pd.DataFrame(
        {
            "ask_id": ["a4", "a5", "a6"],
            "customer_id": ["c1", "c1", "c2"],
            "ask_type": ["review", "case_study", "review"],
            "asked_at": ["2025-06-20", "2025-06-15", "2025-05-25"],
            "outcome": ["no_response", "accepted", "no_response"],
            "responded_at": [None, "2025-06-16", None],
        }
    )
    raw["asks"] = pd.concat([raw["asks"], newer], ignore_index=True)
    world = world_from_tables(raw)
    assert observed_until(world) == utc("2025-07-01")  # the end of the last usage month
    labelled = acceptance_dataset(world)
    # a4 and a5 are under 30 days old at the end, answered or not (keeping quick yeses alone would
    # bias the labels); a6, 37 days old and unanswered, is a negative.
    assert labelled["ask_id"].tolist() == ["a1", "a2", "a3", "a6"]
    assert labelled.set_index("ask_id")["label"].to_dict() == {"a1": 0, "a2": 0, "a3": 1, "a6": 0}
    assert immature_asks(world, pd.Timedelta(days=10)).sum() == 0  # a4 is 11 days old
