"""Guardrails: each one blocks, says why and until when, and lifts exactly at its boundary."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.catalog import ANSWERS, ASK_TYPE_NAMES, OUTCOMES
from features.contracts import TIMESTAMP, DataContractError, empty_table, validate_table
from models.guardrails import (
    BLOCK_COLUMNS,
    GUARDRAILS,
    GuardrailConfig,
    binding_blocks,
    blocked_asks,
    empty_blocks,
)
from models.scoring import Blocked
from tests.worldkit import utc

NOW = utc("2026-05-15T12:00:00")  # second quarter: 2026-04-01 .. 2026-07-01
DAY = pd.Timedelta(days=1)


def asks_table(*rows: tuple[str, str, pd.Timestamp, str, pd.Timestamp | None]) -> pd.DataFrame:
    """Canonical asks from (customer_id, ask_type, asked_at, outcome, responded_at) tuples; an answer
    given as None is answered when asked (the contract needs its time)."""
    rows = tuple((c, t, at, o, at if r is None and o in ANSWERS else r) for c, t, at, o, r in rows)
    raw = pd.DataFrame(
        {
            "ask_id": [f"a{i}" for i in range(len(rows))],
            "customer_id": [r[0] for r in rows],
            "ask_type": [r[1] for r in rows],
            "asked_at": [r[2] for r in rows],
            "outcome": [r[3] for r in rows],
            "responded_at": [r[4] for r in rows],
        }
    )
    return validate_table("asks", raw) if rows else empty_table("asks")


def signals(
    ids: tuple[str, ...] = ("c1",),
    health: tuple[float, ...] | None = None,
    urgent: tuple[pd.Timestamp | None, ...] | None = None,
) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": list(ids),
            "health_score": list(health) if health is not None else [80.0] * len(ids),
            "last_urgent_ticket_at": pd.Series(
                pd.to_datetime(list(urgent) if urgent is not None else [None] * len(ids), utc=True)
            ).astype(TIMESTAMP),
        }
    )


def rails(blocks: pd.DataFrame, customer: str = "c1", ask_type: str | None = None) -> set[str]:
    rows = blocks[blocks["customer_id"] == customer]
    if ask_type is not None:
        rows = rows[rows["ask_type"] == ask_type]
    return set(rows["guardrail"])


def only(blocks: pd.DataFrame, guardrail: str) -> pd.DataFrame:
    return blocks[blocks["guardrail"] == guardrail]


# --- ask cooldown -----------------------------------------------------------------------------


def test_asked_29_days_ago_blocks_every_type_until_day_30() -> None:
    asked = NOW - 29 * DAY
    blocks = blocked_asks(asks_table(("c1", "review", asked, "accepted", asked + DAY)), signals(), NOW)
    cooldown = only(blocks, "ask_cooldown")
    assert list(cooldown["ask_type"]) == list(ASK_TYPE_NAMES)
    assert (cooldown["until"] == asked + 30 * DAY).all()
    assert cooldown["reason"].iloc[0] == "Asked 29 days ago; wait 30 days between asks"


def test_asked_30_days_ago_is_not_blocked() -> None:
    asked = NOW - 30 * DAY
    blocks = blocked_asks(asks_table(("c1", "review", asked, "accepted", asked + DAY)), signals(), NOW)
    assert blocks.empty


def test_cooldown_follows_the_last_ask_of_any_type_and_outcome() -> None:
    asks = asks_table(
        ("c1", "review", NOW - 100 * DAY, "accepted", NOW - 99 * DAY),
        ("c1", "speaking", NOW - 3 * DAY, "no_response", None),
    )
    cooldown = only(blocked_asks(asks, signals(), NOW), "ask_cooldown")
    assert (cooldown["until"] == NOW + 27 * DAY).all()
    assert cooldown["reason"].iloc[0].startswith("Asked 3 days ago")


def test_an_ask_at_or_after_now_is_not_known() -> None:
    asks = asks_table(("c1", "review", NOW, "no_response", None), ("c1", "review", NOW + DAY, "no_response", None))
    assert blocked_asks(asks, signals(), NOW).empty


# --- reference calls per quarter --------------------------------------------------------------


def test_reference_call_this_quarter_blocks_only_reference_calls_until_next_quarter() -> None:
    asked = utc("2026-04-01")  # first instant of the quarter: counts
    asks = asks_table(("c1", "reference_call", asked, "accepted", asked + DAY))
    blocks = blocked_asks(asks, signals(), NOW)
    assert list(blocks["ask_type"]) == ["reference_call"]
    assert list(blocks["guardrail"]) == ["reference_call_per_quarter"]
    assert blocks["until"].iloc[0] == utc("2026-07-01")
    assert "this quarter" in blocks["reason"].iloc[0]


def test_reference_call_last_quarter_does_not_block() -> None:
    asked = utc("2026-03-31T23:59:59")
    asks = asks_table(("c1", "reference_call", asked, "accepted", asked + DAY))
    assert blocked_asks(asks, signals(), NOW).empty


def test_reference_call_limit_is_configurable() -> None:
    asks = asks_table(("c1", "reference_call", utc("2026-04-02"), "accepted", None))
    config = GuardrailConfig(reference_calls_per_quarter=2)
    assert blocked_asks(asks, signals(), NOW, config).empty
    asks = asks_table(
        ("c1", "reference_call", utc("2026-04-02"), "accepted", None),
        ("c1", "reference_call", utc("2026-04-03"), "declined", None),
    )
    assert rails(blocked_asks(asks, signals(), NOW, config)) == {"reference_call_per_quarter"}


# --- decline pause ----------------------------------------------------------------------------


def _answers(*outcomes: str, last_response_days_ago: float = 40) -> pd.DataFrame:
    """Asks answered one day apart, the last answered `last_response_days_ago` days before NOW."""
    n = len(outcomes)
    rows = []
    for i, outcome in enumerate(outcomes):
        responded = NOW - (last_response_days_ago + (n - 1 - i)) * DAY
        rows.append(("c1", "review", responded - 0.5 * DAY, outcome, responded))
    return asks_table(*rows)


def test_two_declines_in_a_row_pause_all_asks_for_90_days() -> None:
    blocks = blocked_asks(_answers("declined", "declined"), signals(), NOW)
    pause = only(blocks, "decline_pause")
    assert list(pause["ask_type"]) == list(ASK_TYPE_NAMES)
    assert (pause["until"] == NOW - 40 * DAY + 90 * DAY).all()
    assert pause["reason"].iloc[0] == "Declined the last 2 asks; asks paused for 90 days"


def test_decline_then_accept_is_not_paused() -> None:
    assert blocked_asks(_answers("declined", "accepted"), signals(), NOW).empty


def test_accept_then_two_declines_is_paused() -> None:
    assert rails(blocked_asks(_answers("accepted", "declined", "declined"), signals(), NOW)) == {"decline_pause"}


def test_one_decline_is_not_paused() -> None:
    assert blocked_asks(_answers("declined"), signals(), NOW).empty


def test_pause_expires_after_90_days() -> None:
    assert rails(blocked_asks(_answers("declined", "declined", last_response_days_ago=89), signals(), NOW)) == {
        "decline_pause"
    }
    assert blocked_asks(_answers("declined", "declined", last_response_days_ago=90), signals(), NOW).empty


def test_an_answer_after_now_is_not_known() -> None:
    first = NOW - 50 * DAY
    second = NOW - 40 * DAY
    asks = asks_table(
        ("c1", "review", first, "declined", first + DAY),
        ("c1", "review", second, "declined", NOW + DAY),  # the decline arrives tomorrow
    )
    assert blocked_asks(asks, signals(), NOW).empty
    later = blocked_asks(asks, signals(), NOW + 2 * DAY)
    assert (only(later, "decline_pause")["until"] == NOW + DAY + 90 * DAY).all()


def test_an_answer_without_a_response_date_is_a_contract_error() -> None:
    # Spec section 3 (issue 17): the answer's time is unknown, so using the answer would leak it.
    raw = pd.DataFrame(
        {
            "ask_id": ["a0", "a1", "a2"],
            "customer_id": ["c1"] * 3,
            "ask_type": ["review"] * 3,
            "asked_at": [NOW - 60 * DAY, NOW - 50 * DAY, NOW - 40 * DAY],
            "outcome": ["declined", "no_response", "accepted"],
            "responded_at": [None, None, None],
        }
    )
    rule = r"column 'responded_at': rule 'given when the outcome is accepted or declined' failed for 2 rows"
    with pytest.raises(DataContractError, match=rf"{rule}, e\.g\. row 0 .*, row 2 "):
        validate_table("asks", raw)


def test_a_pending_ask_neither_breaks_nor_extends_a_streak() -> None:
    # Asking again during a pause must not lift it.
    asks = asks_table(
        ("c1", "review", NOW - 60 * DAY, "declined", NOW - 59 * DAY),
        ("c1", "review", NOW - 50 * DAY, "declined", NOW - 49 * DAY),
        ("c1", "review", NOW - 40 * DAY, "no_response", None),
    )
    assert rails(blocked_asks(asks, signals(), NOW)) == {"decline_pause"}


# --- urgent ticket and health -----------------------------------------------------------------

GATED = [t for t in ASK_TYPE_NAMES if t != "review"]  # the health and ticket rules skip public reviews


def test_urgent_ticket_13_days_ago_blocks_until_day_14() -> None:
    opened = NOW - 13 * DAY
    blocks = blocked_asks(empty_table("asks"), signals(urgent=(opened,)), NOW)
    urgent = only(blocks, "urgent_ticket")
    assert list(urgent["ask_type"]) == GATED
    assert (urgent["until"] == opened + 14 * DAY).all()
    assert urgent["reason"].iloc[0].startswith("Urgent ticket opened 13 days ago")


@pytest.mark.parametrize("opened", [NOW - 15 * DAY, NOW - 14 * DAY, NOW + DAY])
def test_urgent_ticket_closed_or_unknown_does_not_block(opened: pd.Timestamp) -> None:
    assert blocked_asks(empty_table("asks"), signals(urgent=(opened,)), NOW).empty


def test_health_below_40_blocks_until_it_recovers() -> None:
    blocks = blocked_asks(empty_table("asks"), signals(health=(39.9,)), NOW)
    health = only(blocks, "low_health")
    assert list(health["ask_type"]) == GATED
    assert health["until"].isna().all()
    assert health["reason"].iloc[0] == "Health score 39.9 is below 40; wait until it recovers"


def test_an_unhappy_customer_may_still_be_invited_to_a_public_review_but_not_to_speak() -> None:
    # Spec 5a: reviews are ungated, so neither low health nor an urgent ticket keeps a customer from
    # the random draw of review invitees; every other type stays blocked.
    unhappy = signals(health=(12.0,), urgent=(NOW - DAY,))
    blocks = blocked_asks(empty_table("asks"), unhappy, NOW)
    assert "review" not in set(blocks["ask_type"])
    assert set(blocks["ask_type"]) == set(GATED)
    gated_everything = blocked_asks(empty_table("asks"), unhappy, NOW, GuardrailConfig(ungated_types=()))
    assert set(gated_everything["ask_type"]) == set(ASK_TYPE_NAMES)


def test_fatigue_still_holds_for_an_ungated_type() -> None:
    asks = asks_table(("c1", "speaking", NOW - 5 * DAY, "no_response", None))
    blocks = blocked_asks(asks, signals(health=(12.0,)), NOW)
    review = blocks[blocks["ask_type"] == "review"]
    assert set(review["guardrail"]) == {"ask_cooldown"}


def test_an_unknown_ungated_type_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="ungated_types: unknown ask type 'reviews'"):
        GuardrailConfig(ungated_types=("reviews",))


@pytest.mark.parametrize("score", [40.0, 95.0, np.nan])
def test_health_40_or_unknown_does_not_block(score: float) -> None:
    assert blocked_asks(empty_table("asks"), signals(health=(score,)), NOW).empty


# --- the frame --------------------------------------------------------------------------------


def test_several_guardrails_give_one_row_each_in_a_fixed_order() -> None:
    asks = asks_table(("c1", "reference_call", NOW - 2 * DAY, "declined", NOW - DAY))
    blocks = blocked_asks(asks, signals(health=(10.0,), urgent=(NOW - DAY,)), NOW)
    assert tuple(blocks.columns) == BLOCK_COLUMNS
    assert rails(blocks, ask_type="reference_call") == {
        "reference_call_per_quarter",
        "ask_cooldown",
        "urgent_ticket",
        "low_health",
    }
    assert list(blocks[blocks["ask_type"] == "reference_call"]["guardrail"]) == [
        g for g in GUARDRAILS if g != "decline_pause"
    ]
    assert blocks.dtypes.equals(empty_blocks().dtypes)


def test_only_customers_in_signals_are_evaluated_with_or_without_asks() -> None:
    asks = asks_table(
        ("other", "review", NOW - DAY, "no_response", None), ("c2", "review", NOW - DAY, "accepted", None)
    )
    blocks = blocked_asks(asks, signals(ids=("c1", "c2", "c3"), health=(10.0, 80.0, 80.0)), NOW)
    assert list(dict.fromkeys(blocks["customer_id"])) == ["c1", "c2"]
    assert rails(blocks, "c1") == {"low_health"}
    assert rails(blocks, "c2") == {"ask_cooldown"}


def test_nothing_blocked_gives_an_empty_typed_frame() -> None:
    blocks = blocked_asks(empty_table("asks"), signals(ids=("c1", "c2")), NOW)
    assert blocks.empty
    assert blocks.dtypes.equals(empty_blocks().dtypes)


def test_duplicate_signals_and_missing_columns_are_rejected() -> None:
    with pytest.raises(ValueError, match="duplicate customer_id c1"):
        blocked_asks(empty_table("asks"), signals(ids=("c1", "c1")), NOW)
    with pytest.raises(ValueError, match="health_score"):
        blocked_asks(empty_table("asks"), signals().drop(columns="health_score"), NOW)


def test_naive_now_is_read_as_utc() -> None:
    asks = asks_table(("c1", "review", NOW - 29 * DAY, "accepted", None))
    naive = blocked_asks(asks, signals(), NOW.tz_localize(None))
    pd.testing.assert_frame_equal(naive, blocked_asks(asks, signals(), NOW))


# --- binding blocks, matrix and state ---------------------------------------------------------


def test_binding_block_is_the_guardrail_that_lifts_last() -> None:
    asks = asks_table(("c1", "reference_call", NOW - 2 * DAY, "accepted", None))
    blocks = blocked_asks(asks, signals(ids=("c1", "c2"), health=(80.0, 10.0), urgent=(NOW - DAY, NOW - DAY)), NOW)
    bound = binding_blocks(blocks)
    assert not bound.duplicated(["customer_id", "ask_type"]).any()
    c1 = bound[bound["customer_id"] == "c1"].set_index("ask_type")
    assert c1.loc["reference_call", "guardrail"] == "reference_call_per_quarter"  # 2026-07-01
    assert c1.loc["review", "guardrail"] == "ask_cooldown"  # 28 days beats the ticket's 13
    assert c1.loc["review", "until"] == NOW + 28 * DAY
    c2 = bound[bound["customer_id"] == "c2"]
    assert set(c2["guardrail"]) == {"low_health"}  # "until health recovers" outlasts any date
    assert list(c1.index) == list(ASK_TYPE_NAMES)


def test_binding_blocks_of_nothing_is_empty() -> None:
    assert binding_blocks(empty_blocks()).empty


def test_scoring_block_matrix_marks_blocked_types() -> None:
    asks = asks_table(("c2", "reference_call", NOW - 40 * DAY, "accepted", None))
    blocks = blocked_asks(asks, signals(ids=("c1", "c2")), NOW)
    matrix = Blocked.from_frame(blocks).matrix(["c2", "c1", "unknown"])
    assert matrix.shape == (3, len(ASK_TYPE_NAMES))
    assert matrix[0].tolist() == [t == "reference_call" for t in ASK_TYPE_NAMES]
    assert not matrix[1:].any()


def test_blocks_follow_the_known_history() -> None:
    asks = asks_table(
        ("c1", "reference_call", utc("2026-04-10"), "declined", utc("2026-04-11")),
        ("c1", "review", utc("2026-04-20"), "declined", utc("2026-04-22")),
        ("c1", "review", NOW + DAY, "declined", None),  # future: unknown
        ("c2", "review", utc("2026-01-10"), "accepted", None),
    )
    blocks = blocked_asks(asks, signals(ids=("c1", "c2")), NOW)
    c1 = blocks[blocks["customer_id"] == "c1"]
    by_rail = c1.drop_duplicates("guardrail").set_index("guardrail")
    assert by_rail.loc["ask_cooldown", "until"] == utc("2026-04-20") + 30 * DAY  # the last known ask
    assert by_rail.loc["reference_call_per_quarter", "until"] == utc("2026-07-01")
    assert by_rail.loc["decline_pause", "until"] == utc("2026-04-22") + 90 * DAY  # from the 2nd decline's reply
    assert by_rail.loc["decline_pause", "reason"].startswith("Declined the last 2 asks")
    assert blocks[blocks["customer_id"] == "c2"].empty  # one accepted ask, long ago


def test_config_rejects_negative_limits() -> None:
    with pytest.raises(ValueError, match="min_days_between_asks"):
        GuardrailConfig(min_days_between_asks=-1)


# --- vectorised == obvious ---------------------------------------------------------------------


def _obvious(asks: pd.DataFrame, sig: pd.DataFrame, now: pd.Timestamp, cfg: GuardrailConfig) -> set[tuple]:
    """A per-customer loop written straight from the rules: the reference for the vectorised code."""
    out: set[tuple] = set()
    quarter = now.tz_convert(None).to_period("Q")
    q_start = quarter.start_time.tz_localize("UTC")
    q_end = (quarter + 1).start_time.tz_localize("UTC")
    for row in sig.itertuples():
        cid = row.customer_id
        mine = asks[(asks["customer_id"] == cid) & (asks["asked_at"] < now)].sort_values("asked_at", kind="stable")
        if (
            (mine["ask_type"] == "reference_call") & (mine["asked_at"] >= q_start)
        ).sum() >= cfg.reference_calls_per_quarter:
            out.add((cid, "reference_call", "reference_call_per_quarter", q_end))
        blocks_all = []
        if len(mine) and mine["asked_at"].max() + cfg.min_days_between_asks * DAY > now:
            blocks_all.append(("ask_cooldown", mine["asked_at"].max() + cfg.min_days_between_asks * DAY))
        known = mine["responded_at"].fillna(mine["asked_at"])
        answers = mine[mine["outcome"].isin(["accepted", "declined"]) & (known < now)]
        last = answers.tail(cfg.declines_in_a_row)
        if len(last) == cfg.declines_in_a_row and (last["outcome"] == "declined").all():
            until = known[last.index].max() + cfg.pause_days_after_declines * DAY
            if until > now:
                blocks_all.append(("decline_pause", until))
        t = row.last_urgent_ticket_at
        if pd.notna(t) and t <= now < t + cfg.urgent_ticket_open_days * DAY:
            blocks_all.append(("urgent_ticket", t + cfg.urgent_ticket_open_days * DAY))
        if row.health_score < cfg.min_health:
            blocks_all.append(("low_health", pd.NaT))
        for rail, until in blocks_all:
            for ask_type in ASK_TYPE_NAMES:
                if rail in ("urgent_ticket", "low_health") and ask_type in cfg.ungated_types:
                    continue
                out.add((cid, ask_type, rail, until))
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vectorised_guardrails_match_a_plain_loop(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_customers, n_asks = 60, 400
    ids = [f"c{i}" for i in range(n_customers)]
    asked = (
        NOW
        - pd.to_timedelta(rng.integers(-10, 200, n_asks), unit="D")
        - pd.to_timedelta(rng.integers(0, 86_400, n_asks), unit="s")
    )
    lag = pd.to_timedelta(rng.integers(0, 20, n_asks), unit="D")
    responded = pd.Series(asked + lag).where(rng.random(n_asks) > 0.2)
    raw = pd.DataFrame(
        {
            "ask_id": [f"a{i}" for i in range(n_asks)],
            "customer_id": rng.choice(ids, n_asks),
            "ask_type": rng.choice(ASK_TYPE_NAMES, n_asks),
            "asked_at": asked,
            "outcome": rng.choice(OUTCOMES, n_asks, p=[0.3, 0.5, 0.2]),
            "responded_at": responded,
        }
    )
    unanswered_time = raw["outcome"].isin(ANSWERS) & raw["responded_at"].isna()
    raw.loc[unanswered_time, "responded_at"] = raw.loc[unanswered_time, "asked_at"]  # answered when asked
    asks = validate_table("asks", raw)
    sig = signals(
        ids=tuple(ids),
        health=tuple(rng.choice([np.nan, 20.0, 39.9, 40.0, 70.0], n_customers)),
        urgent=tuple(NOW - DAY * float(d) if d < 30 else None for d in rng.integers(-3, 60, n_customers)),
    )
    ungated = (("review",), (), ("review", "speaking"))[seed]
    cfg = GuardrailConfig(min_days_between_asks=20, declines_in_a_row=int(rng.integers(1, 4)), ungated_types=ungated)
    blocks = blocked_asks(asks, sig, NOW, cfg)
    got = {(r.customer_id, r.ask_type, r.guardrail, r.until) for r in blocks.itertuples()}
    expected = _obvious(asks, sig, NOW, cfg)
    normalise = {(c, t, g, None if pd.isna(u) else pd.Timestamp(u)) for c, t, g, u in expected}
    assert {(c, t, g, None if pd.isna(u) else pd.Timestamp(u)) for c, t, g, u in got} == normalise
    assert len(blocks) == len(got)
