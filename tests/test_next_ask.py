"""Next best ask (highest expected value among unblocked types) and the re-engagement flag.

Tested through the production path: `models.scoring.next_asks` on `Blocked.matrix`, then
`models.scoring.next_best_ask` for the result's `next_best_ask` object.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import pytest

from features.catalog import ASK_TYPE_NAMES, DEFAULT_ASK_VALUES
from features.contracts import TIMESTAMP
from models.asks import re_engage
from models.guardrails import GuardrailConfig, empty_blocks
from models.scoring import Blocked, next_asks, next_best_ask
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


def choose(
    acc: pd.DataFrame,
    blocked: pd.DataFrame,
    values: Mapping[str, float] = DEFAULT_ASK_VALUES,
    ungated: tuple[str, ...] = (),
) -> dict[str, dict[str, Any]]:
    """Per customer, the `next_best_ask` object of its result, built as `models.scoring.score` does.
    Every type gated unless `ungated` says otherwise: most tests here are about values and blocks."""
    ids = [str(c) for c in acc.index]
    probability = acc.loc[:, list(ASK_TYPE_NAMES)].to_numpy(dtype="float64")
    known = Blocked.from_frame(blocked)
    picked = next_asks(probability, known.matrix(ids), values, GuardrailConfig(ungated_types=ungated).ungated())
    return {c: next_best_ask(probability[i], int(picked[i]), known.for_customer(c)) for i, c in enumerate(ids)}


def test_picks_the_highest_expected_value_not_the_highest_probability() -> None:
    # review: 0.6 x 2 = 1.2; case_study: 0.2 x 8 = 1.6
    chosen = choose(acceptance({"c1": {"review": 0.6, "case_study": 0.2}}), empty_blocks())["c1"]
    assert chosen == {"ask_type": "case_study", "probability": pytest.approx(0.2), "blocked": []}


def test_a_public_review_is_never_the_next_best_ask_however_likely() -> None:
    acc = acceptance({"c1": {"review": 0.99, "social_share": 0.05}})
    probability = acc.loc[:, list(ASK_TYPE_NAMES)].to_numpy(dtype="float64")
    no_blocks = np.zeros(probability.shape, dtype=bool)
    assert choose(acc, empty_blocks(), ungated=GuardrailConfig().ungated_types)["c1"]["ask_type"] != "review"
    gated = next_asks(probability, no_blocks, DEFAULT_ASK_VALUES, GuardrailConfig(ungated_types=()).ungated())
    assert ASK_TYPE_NAMES[int(gated[0])] == "review"  # only the ungated policy keeps it out


def test_skips_blocked_types() -> None:
    acc = acceptance({"c1": {"review": 0.6, "case_study": 0.2}})
    blocked = blocks(("c1", "case_study", "ask_cooldown", "Asked 3 days ago", "2026-06-01"))
    chosen = choose(acc, blocked)["c1"]
    assert chosen["ask_type"] == "review"
    assert chosen["blocked"] == [
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
    chosen = choose(acc, blocked)
    assert chosen["c1"]["ask_type"] is None
    assert chosen["c1"]["probability"] is None
    assert [b["ask_type"] for b in chosen["c1"]["blocked"]] == list(ASK_TYPE_NAMES)
    assert all(b["until"] is None for b in chosen["c1"]["blocked"])
    assert chosen["c2"]["ask_type"] == "review"
    json.dumps(chosen)  # JSON-friendly as it is


def test_a_type_blocked_twice_is_listed_once_with_the_guardrail_that_lifts_last() -> None:
    blocked = blocks(
        ("c1", "review", "ask_cooldown", "cooldown", "2026-06-01"),
        ("c1", "review", "decline_pause", "pause", "2026-08-01"),
    )
    listed = choose(acceptance({"c1": {}}), blocked)["c1"]["blocked"]
    assert [(b["ask_type"], b["guardrail"], b["until"]) for b in listed] == [
        ("review", "decline_pause", "2026-08-01T00:00:00Z")
    ]


def test_ties_go_to_the_earlier_type_in_the_catalog() -> None:
    equal = dict.fromkeys(ASK_TYPE_NAMES, 1.0)
    chosen = choose(acceptance({"c1": dict.fromkeys(ASK_TYPE_NAMES, 0.5)}), empty_blocks(), values=equal)
    assert chosen["c1"]["ask_type"] == ASK_TYPE_NAMES[0]


def test_value_weights_are_configurable() -> None:
    acc = acceptance({"c1": {"review": 0.6, "case_study": 0.2}})
    values = {**DEFAULT_ASK_VALUES, "review": 100.0}
    assert choose(acc, empty_blocks(), values)["c1"]["ask_type"] == "review"


def test_unknown_probability_gives_no_ask() -> None:
    # Production's rule: a NaN expected value among the unblocked types wins argmax and is not
    # finite, so no type is chosen (the models never produce NaN acceptance).
    acc = acceptance({"c1": {"speaking": np.nan, "review": 0.5}})
    assert choose(acc, empty_blocks())["c1"]["ask_type"] is None


def test_a_blocked_unknown_probability_is_ignored() -> None:
    acc = acceptance({"c1": {"speaking": np.nan, "review": 0.5}})
    blocked = blocks(("c1", "speaking", "ask_cooldown", "x", "2026-06-01"))
    assert choose(acc, blocked)["c1"]["ask_type"] == "review"


def test_customer_order_is_kept() -> None:
    acc = acceptance({"c2": {"review": 0.9}, "c1": {"referral": 0.9}})
    picked = next_asks(acc.to_numpy(dtype="float64"), np.zeros(acc.shape, dtype=bool), DEFAULT_ASK_VALUES)
    assert [ASK_TYPE_NAMES[k] for k in picked] == ["review", "referral"]


def test_blocks_of_other_customers_are_ignored() -> None:
    blocked = blocks(("zz", "review", "low_health", "x", None))
    chosen = choose(acceptance({"c1": {"review": 0.9}}), blocked)["c1"]
    assert chosen["blocked"] == []
    assert chosen["ask_type"] == "review"


def test_no_customers_gives_nothing() -> None:
    assert choose(acceptance({"c1": {}}).iloc[:0], empty_blocks()) == {}
    picked = next_asks(np.zeros((0, len(ASK_TYPE_NAMES))), np.zeros((0, len(ASK_TYPE_NAMES)), dtype=bool), {})
    assert picked.shape == (0,)


def test_until_is_rounded_up_to_the_second() -> None:
    blocked = blocks(("c1", "review", "ask_cooldown", "x", "2026-06-01T10:00:00.25"))
    listed = choose(acceptance({"c1": {}}), blocked)["c1"]["blocked"]
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
                "responded_at": ["2026-04-11"],
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
    chosen = choose(acc, blocked_asks(asks, signals, now), ungated=("review",))
    assert chosen["c1"]["ask_type"] == "speaking"  # 0.01 x 10 beats the others; reference_call blocked
    assert [b["ask_type"] for b in chosen["c1"]["blocked"]] == ["reference_call"]
    assert chosen["c1"]["blocked"][0]["until"] == "2026-07-01T00:00:00Z"
    # Low health blocks every gated type; a public review is open to them (ungated) but is never the
    # next best ask: that would be choosing reviewers by how likely they are to say yes.
    assert chosen["c2"]["ask_type"] is None
    assert "review" not in [b["ask_type"] for b in chosen["c2"]["blocked"]]
