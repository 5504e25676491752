"""Next best ask (highest expected value among unblocked types) and the re-engagement flag."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from features.catalog import ASK_TYPE_NAMES, DEFAULT_ASK_VALUES
from features.contracts import TIMESTAMP
from models.asks import NEXT_ASK_COLUMNS, next_best_asks, re_engage
from models.guardrails import empty_blocks
from tests.worldkit import utc


def acceptance(rows: dict[str, dict[str, float]], default: float = 0.01) -> pd.DataFrame:
    """Acceptance indexed by customer_id; every type `default` unless given."""
    frame = pd.DataFrame(
        [{t: probs.get(t, default) for t in ASK_TYPE_NAMES} for probs in rows.values()],
        index=pd.Index(list(rows), name="customer_id"),
    )
    return frame


def blocks(*rows: tuple[str, str, str, str, str | None]) -> pd.DataFrame:
    """Block rows (customer_id, ask_type, guardrail, reason, until)."""
    if not rows:
        return empty_blocks()
    frame = pd.DataFrame(rows, columns=["customer_id", "ask_type", "guardrail", "reason", "until"])
    frame["until"] = pd.Series(pd.to_datetime(frame["until"], utc=True)).astype(TIMESTAMP)
    return frame


def test_picks_the_highest_expected_value_not_the_highest_probability() -> None:
    # review: 0.6 x 2 = 1.2; case_study: 0.2 x 8 = 1.6
    result = next_best_asks(acceptance({"c1": {"review": 0.6, "case_study": 0.2}}), empty_blocks())
    row = result.loc["c1"]
    assert row["next_best_ask"] == "case_study"
    assert row["next_best_ask_probability"] == pytest.approx(0.2)
    assert row["expected_value"] == pytest.approx(1.6)
    assert row["blocked_asks"] == []
    assert tuple(result.columns) == NEXT_ASK_COLUMNS


def test_skips_blocked_types() -> None:
    acc = acceptance({"c1": {"review": 0.6, "case_study": 0.2}})
    blocked = blocks(("c1", "case_study", "ask_cooldown", "Asked 3 days ago", "2026-06-01"))
    row = next_best_asks(acc, blocked).loc["c1"]
    assert row["next_best_ask"] == "review"
    assert row["blocked_asks"] == [
        {
            "ask_type": "case_study",
            "guardrail": "ask_cooldown",
            "reason": "Asked 3 days ago",
            "until": "2026-06-01T00:00:00Z",
        }
    ]


def test_every_type_blocked_gives_none() -> None:
    acc = acceptance({"c1": {"review": 0.9}, "c2": {"review": 0.9}})
    blocked = blocks(*[("c1", t, "low_health", "Health score 10 is below 40", None) for t in ASK_TYPE_NAMES])
    result = next_best_asks(acc, blocked)
    assert result.loc["c1", "next_best_ask"] is None
    assert np.isnan(result.loc["c1", "next_best_ask_probability"])
    assert np.isnan(result.loc["c1", "expected_value"])
    assert [b["ask_type"] for b in result.loc["c1", "blocked_asks"]] == list(ASK_TYPE_NAMES)
    assert all(b["until"] is None for b in result.loc["c1", "blocked_asks"])
    assert result.loc["c2", "next_best_ask"] == "review"
    json.dumps(result["blocked_asks"].tolist())  # JSON-friendly as it is


def test_a_type_blocked_twice_is_listed_once_with_the_guardrail_that_lifts_last() -> None:
    blocked = blocks(
        ("c1", "review", "ask_cooldown", "cooldown", "2026-06-01"),
        ("c1", "review", "decline_pause", "pause", "2026-08-01"),
    )
    listed = next_best_asks(acceptance({"c1": {}}), blocked).loc["c1", "blocked_asks"]
    assert [(b["ask_type"], b["guardrail"], b["until"]) for b in listed] == [
        ("review", "decline_pause", "2026-08-01T00:00:00Z")
    ]


def test_ties_go_to_the_earlier_type_in_the_catalog() -> None:
    equal = dict.fromkeys(ASK_TYPE_NAMES, 1.0)
    result = next_best_asks(acceptance({"c1": dict.fromkeys(ASK_TYPE_NAMES, 0.5)}), empty_blocks(), values=equal)
    assert result.loc["c1", "next_best_ask"] == ASK_TYPE_NAMES[0]


def test_value_weights_are_configurable_and_checked() -> None:
    acc = acceptance({"c1": {"review": 0.6, "case_study": 0.2}})
    values = {**DEFAULT_ASK_VALUES, "review": 100.0}
    assert next_best_asks(acc, empty_blocks(), values).loc["c1", "next_best_ask"] == "review"
    with pytest.raises(ValueError, match="speaking"):
        next_best_asks(acc, empty_blocks(), {t: 1.0 for t in ASK_TYPE_NAMES if t != "speaking"})
    with pytest.raises(ValueError, match="review"):
        next_best_asks(acc, empty_blocks(), {**DEFAULT_ASK_VALUES, "review": -1.0})


def test_unknown_probability_is_skipped() -> None:
    acc = acceptance({"c1": {"speaking": np.nan, "review": 0.5}})
    assert next_best_asks(acc, empty_blocks()).loc["c1", "next_best_ask"] == "review"


def test_customer_id_column_works_like_the_index_and_order_is_kept() -> None:
    acc = acceptance({"c2": {"review": 0.9}, "c1": {"referral": 0.9}})
    by_index = next_best_asks(acc, empty_blocks())
    by_column = next_best_asks(acc.reset_index(), empty_blocks())
    pd.testing.assert_frame_equal(by_index, by_column)
    assert list(by_index.index) == ["c2", "c1"]


def test_blocks_of_other_customers_are_ignored() -> None:
    blocked = blocks(("zz", "review", "low_health", "x", None))
    result = next_best_asks(acceptance({"c1": {"review": 0.9}}), blocked)
    assert result.loc["c1", "blocked_asks"] == []


def test_bad_acceptance_is_rejected() -> None:
    with pytest.raises(ValueError, match="review"):
        next_best_asks(acceptance({"c1": {}}).drop(columns="review"), empty_blocks())
    twice = pd.concat([acceptance({"c1": {}}), acceptance({"c1": {}})])
    with pytest.raises(ValueError, match="duplicate customer_id c1"):
        next_best_asks(twice, empty_blocks())


def test_no_customers_gives_an_empty_frame() -> None:
    result = next_best_asks(acceptance({"c1": {}}).iloc[:0], empty_blocks())
    assert result.empty
    assert tuple(result.columns) == NEXT_ASK_COLUMNS


def test_until_is_rounded_up_to_the_second() -> None:
    blocked = blocks(("c1", "review", "ask_cooldown", "x", "2026-06-01T10:00:00.25"))
    listed = next_best_asks(acceptance({"c1": {}}), blocked).loc["c1", "blocked_asks"]
    assert listed[0]["until"] == "2026-06-01T10:00:01Z"
    assert pd.Timestamp(listed[0]["until"]) >= utc("2026-06-01T10:00:00.25")


@pytest.mark.parametrize(
    ("total", "days", "expected"),
    [(1, 180, False), (1, 181, True), (5, 180.5, True), (0, 400, False), (2, np.nan, False), (np.nan, 400, False)],
)
def test_re_engage_after_more_than_180_days(total: float, days: float, expected: bool) -> None:
    features = pd.DataFrame({"activities_total": [total], "days_since_last_activity": [days]})
    assert re_engage(features).tolist() == [expected]


def test_re_engage_takes_a_mapping_of_arrays() -> None:
    flags = re_engage({"activities_total": np.array([1.0, 1.0]), "days_since_last_activity": np.array([10.0, 200.0])})
    assert flags.dtype == bool
    assert flags.tolist() == [False, True]


def test_works_on_the_output_of_blocked_asks() -> None:
    from features.contracts import validate_table
    from models.guardrails import blocked_asks

    now = utc("2026-05-15")
    asks = validate_table(
        "asks",
        pd.DataFrame(
            {
                "ask_id": ["a1"],
                "customer_id": ["c1"],
                "ask_type": ["reference_call"],
                "asked_at": ["2026-04-10"],
                "outcome": ["accepted"],
                "responded_at": [None],
            }
        ),
    )
    signals = pd.DataFrame(
        {
            "customer_id": ["c1", "c2"],
            "health_score": [80.0, 20.0],
            "last_urgent_ticket_at": pd.Series([pd.NaT, pd.NaT], dtype=TIMESTAMP),
        }
    )
    acc = acceptance({"c1": {"reference_call": 0.9}, "c2": {"reference_call": 0.9}})
    result = next_best_asks(acc, blocked_asks(asks, signals, now))
    assert result.loc["c1", "next_best_ask"] == "speaking"  # 0.01 x 10 beats the others; reference_call blocked
    assert [b["ask_type"] for b in result.loc["c1", "blocked_asks"]] == ["reference_call"]
    assert result.loc["c1", "blocked_asks"][0]["until"] == "2026-07-01T00:00:00Z"
    assert result.loc["c2", "next_best_ask"] is None
