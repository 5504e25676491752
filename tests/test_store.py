"""The service's guardrail book: cached blocks are exactly what `blocked_asks` says at any moment.

Fast, in-process: a stand-in for the feature store (ids and guardrail signals only) and real ask logs.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.catalog import ASK_TYPE_NAMES
from features.context import build_snapshot
from features.contracts import CONTRACTS, TIMESTAMP, empty_table, validate_table
from features.io import World
from features.labels import observed_until
from models.guardrails import GuardrailConfig, blocked_asks
from models.scoring import Blocked
from serving.guardrail_book import GuardrailBook
from serving.store import FeatureStore, UnknownCustomersError
from storage.asklog import AskLog, ConflictingAskError
from storage.settings import Settings

NOW = pd.Timestamp("2026-05-15T12:00:00", tz="UTC")
DAY = pd.Timedelta(days=1)


@dataclass
class Store:
    """What `GuardrailBook` reads of a `FeatureStore`."""

    ids: np.ndarray
    health: np.ndarray
    last_urgent_us: np.ndarray
    recent_reference_calls: np.ndarray

    def __post_init__(self) -> None:
        self.index = {c: i for i, c in enumerate(self.ids.tolist())}

    def __len__(self) -> int:
        return len(self.ids)

    signals = FeatureStore.signals  # the real one: it reads only the fields above


def store(*ids: str, health: float = 80.0) -> Store:
    n = len(ids)
    nat = np.full(n, np.iinfo(np.int64).min, dtype=np.int64)
    return Store(np.array(ids, dtype=object), np.full(n, health), nat, np.zeros(n))


def ask(
    ask_id: str, customer: str, when: pd.Timestamp, outcome: str = "no_response", answered: pd.Timestamp | None = None
):
    return {
        "ask_id": ask_id,
        "customer_id": customer,
        "ask_type": "review",
        "asked_at": when,
        "outcome": outcome,
        "responded_at": answered,
    }


def asks(*rows: dict) -> pd.DataFrame:
    return validate_table("asks", pd.DataFrame(rows)) if rows else empty_table("asks")


def book(
    tmp_path: Path, s: Store, snapshot_asks: pd.DataFrame, now: pd.Timestamp = NOW, links: pd.DataFrame | None = None
) -> GuardrailBook:
    if "delivered_at" not in snapshot_asks.columns:  # as a snapshot keeps them: none delivered here
        snapshot_asks = snapshot_asks.assign(delivered_at=pd.Series(pd.NaT, index=snapshot_asks.index, dtype=TIMESTAMP))
    log = AskLog(tmp_path / "asks.sqlite", CONTRACTS["asks"])
    return GuardrailBook(s, snapshot_asks, log, GuardrailConfig(), now, links)


def rails(b: GuardrailBook, customer: str, now: pd.Timestamp) -> dict[str, tuple[str, str | None]]:
    rows = np.array([b._store.index[customer]])
    return {t: (g, until) for t, (g, _, until) in b.blocked(rows, now).for_customer(customer).items()}


def test_an_ask_recorded_by_another_process_blocks_at_once(tmp_path: Path) -> None:
    b = book(tmp_path, store("c1", "c2"), asks())
    assert rails(b, "c1", NOW) == {}
    # A second AskLog on the same file stands for another worker process.
    AskLog(tmp_path / "asks.sqlite", CONTRACTS["asks"]).record(pd.DataFrame([ask("a1", "c1", NOW - DAY)]))
    blocked = rails(b, "c1", NOW)
    assert {g for g, _ in blocked.values()} == {"ask_cooldown"}
    assert {u for _, u in blocked.values()} == {"2026-06-13T12:00:00Z"}
    assert rails(b, "c2", NOW) == {}


def test_cached_blocks_lift_exactly_when_the_guardrail_says(tmp_path: Path) -> None:
    b = book(tmp_path, store("c1"), asks(ask("s1", "c1", NOW - DAY)))
    assert rails(b, "c1", NOW)
    lifts = NOW - DAY + 30 * DAY
    assert rails(b, "c1", lifts - pd.Timedelta(microseconds=1))
    assert rails(b, "c1", lifts) == {}


def test_a_question_about_an_earlier_moment_is_answered_for_that_moment(tmp_path: Path) -> None:
    """A book made now is asked about a past date (a campaign's wave dated then): a decline pause
    that has lifted by now still blocks then, and an ask made since does not count yet."""
    declines = asks(
        ask("s1", "c1", NOW - 120 * DAY, "declined", NOW - 119 * DAY),
        ask("s2", "c1", NOW - 100 * DAY, "declined", NOW - 95 * DAY),
        ask("s3", "c2", NOW - 2 * DAY),
    )
    b = book(tmp_path, store("c1", "c2"), declines)
    assert rails(b, "c1", NOW) == {}  # the 90-day pause lifted 5 days ago
    assert {g for g, _ in rails(b, "c2", NOW).values()} == {"ask_cooldown"}
    then = NOW - 10 * DAY
    assert {g for g, _ in rails(b, "c1", then).values()} == {"decline_pause"}
    assert rails(b, "c2", then) == {}  # asked two days ago: not yet then
    rows = np.array([b._store.index["c1"], b._store.index["c2"]])
    assert b.blocked_matrix(rows, then).any(axis=1).tolist() == [True, False]
    assert b.blocked_matrix(rows, NOW).any(axis=1).tolist() == [False, True]


def test_an_ask_dated_in_the_future_blocks_from_its_date(tmp_path: Path) -> None:
    b = book(tmp_path, store("c1"), asks())
    b.record(pd.DataFrame([ask("f1", "c1", NOW + 2 * DAY)]))
    assert rails(b, "c1", NOW) == {}
    assert rails(b, "c1", NOW + 3 * DAY)


def test_the_snapshots_later_answer_beats_the_logs_older_one(tmp_path: Path) -> None:
    """One ask in both: the later answer counts (`features.io.merge_asks`' rule, as in every job)."""
    declines = asks(
        ask("s1", "c1", NOW - 80 * DAY, "declined", NOW - 79 * DAY),
        ask("s2", "c1", NOW - 40 * DAY, "declined", NOW - 38 * DAY),
    )
    b = book(tmp_path, store("c1"), declines)
    assert {g for g, _ in rails(b, "c1", NOW).values()} == {"decline_pause"}
    b.record(pd.DataFrame([ask("s2", "c1", NOW - 40 * DAY, "accepted", NOW - 39 * DAY)]))  # an older answer
    assert {g for g, _ in rails(b, "c1", NOW).values()} == {"decline_pause"}
    b.record(pd.DataFrame([ask("s2", "c1", NOW - 40 * DAY, "accepted", NOW - 37 * DAY)]))  # a later one
    assert rails(b, "c1", NOW) == {}


def test_the_logs_later_answer_to_a_snapshot_ask_wins(tmp_path: Path) -> None:
    snapshot = asks(ask("s1", "c1", NOW - 80 * DAY, "declined", NOW - 79 * DAY), ask("s2", "c1", NOW - 40 * DAY))
    b = book(tmp_path, store("c1"), snapshot)
    assert rails(b, "c1", NOW) == {}  # one decline, no recent ask
    b.record(pd.DataFrame([ask("s2", "c1", NOW - 40 * DAY, "declined", NOW - 2 * DAY)]))
    assert {g for g, _ in rails(b, "c1", NOW).values()} == {"decline_pause"}
    assert len(AskLog(tmp_path / "asks.sqlite", CONTRACTS["asks"])) == 1


def test_the_asks_tables_plans_and_the_logs_are_one_set_of_links_and_a_plan_is_fixed(tmp_path: Path) -> None:
    """Spec 5a: a campaign's answers come back in the asks table's `plan_id` (kept by the snapshot)
    or through POST /asks; the service counts both, and an ask's plan cannot be changed by re-sending it."""
    snapshot = asks(ask("s1", "c1", NOW - 20 * DAY, "accepted", NOW - 19 * DAY), ask("s2", "c1", NOW - 80 * DAY))
    links = pd.DataFrame({"ask_id": ["s1"], "plan_id": ["p1"]})
    b = book(tmp_path, store("c1"), snapshot, links=links)
    b.record(pd.DataFrame([{**ask("n1", "c1", NOW - DAY), "plan_id": "p2"}]))
    got = b.plan_links().sort_values("ask_id").reset_index(drop=True)
    assert got.to_dict(orient="records") == [{"ask_id": "n1", "plan_id": "p2"}, {"ask_id": "s1", "plan_id": "p1"}]
    for ask_id, plan in (("s1", "p9"), ("s2", "p1")):  # another plan; a plan for an ask the table made without one
        with pytest.raises(ConflictingAskError, match="plan_id"):
            b.record(pd.DataFrame([{**ask(ask_id, "c1", NOW - (20 if ask_id == "s1" else 80) * DAY), "plan_id": plan}]))
    assert b.record(pd.DataFrame([ask("s1", "c1", NOW - 20 * DAY, "accepted", NOW - 19 * DAY)])) == 1  # no plan: kept
    assert len(AskLog(tmp_path / "asks.sqlite", CONTRACTS["asks"]).plan_links()) == 1


def test_the_deal_the_asks_table_gave_an_ask_is_fixed(tmp_path: Path) -> None:
    """Spec 7: an ask's opportunity_id is fixed like its plan: the snapshot's (the asks table's) deal
    cannot be changed, nor one given to an ask the table made without a deal; re-sent without one, it keeps it."""
    s1, s2 = ask("s1", "c1", NOW - 20 * DAY, "accepted", NOW - 19 * DAY), ask("s2", "c1", NOW - 80 * DAY)
    deals = pd.DataFrame({"ask_id": ["s1"], "opportunity_id": ["O1"]})
    log = AskLog(tmp_path / "asks.sqlite", CONTRACTS["asks"])
    snapshot = asks(s1, s2).assign(delivered_at=pd.Series(pd.NaT, index=[0, 1], dtype=TIMESTAMP))
    b = GuardrailBook(store("c1"), snapshot, log, GuardrailConfig(), NOW, deal_links=deals)
    for row, deal in ((s1, "O2"), (s2, "O1")):
        with pytest.raises(ConflictingAskError, match="opportunity_id") as caught:
            b.record(pd.DataFrame([{**row, "opportunity_id": deal}]))
        assert caught.value.field == "opportunity_id"
    assert len(log) == 0
    assert b.record(pd.DataFrame([{**s1, "opportunity_id": "O1"}, s2])) == 2  # the same deal, or none: kept


def test_unknown_customers_are_refused_and_nothing_is_stored(tmp_path: Path) -> None:
    b = book(tmp_path, store("c1"), asks(ask("s1", "gone", NOW - 400 * DAY)))
    with pytest.raises(UnknownCustomersError, match="nobody"):
        b.record(pd.DataFrame([ask("n1", "c1", NOW), ask("n2", "nobody", NOW)]))
    assert len(AskLog(tmp_path / "asks.sqlite", CONTRACTS["asks"])) == 0
    assert b.record(pd.DataFrame([ask("n3", "gone", NOW)])) == 1  # known from the snapshot's asks


def test_the_book_equals_blocked_asks_on_a_generated_world(tmp_path: Path, generated_world: World) -> None:
    as_of = observed_until(generated_world)
    snap = build_snapshot(generated_world, as_of)
    f = snap.features
    s = Store(
        f["customer_id"].astype(str).to_numpy(dtype=object),
        f["health_score"].to_numpy(float),
        pd.DatetimeIndex(f["last_urgent_ticket_at"]).as_unit("us").asi8,
        f["recent_reference_calls"].to_numpy(float),
    )
    b = book(tmp_path, s, snap.asks, as_of)
    rng = np.random.default_rng(3)
    ids = f["customer_id"].astype(str)
    posted = [
        # Dated before the data's end: the ask log refuses asks from after the wall clock.
        ask(f"p{i}", ids.iloc[int(r)], as_of - (i + 2) * DAY, "declined", as_of - (i + 1) * DAY)
        for i, r in enumerate(rng.integers(0, len(ids), 40))
    ]
    b.record(pd.DataFrame(posted))
    everything = pd.concat([snap.asks, asks(*posted)], ignore_index=True)
    signals = f.loc[:, ["customer_id", "health_score", "last_urgent_ticket_at"]]
    reference = ASK_TYPE_NAMES.index("reference_call")
    for days in (0, 3, 15, 20, 45, 100):
        now = as_of + days * DAY
        fresh = Blocked.from_frame(blocked_asks(everything, signals, now))
        expected = fresh.by_customer
        rows = np.arange(len(s))
        some = np.sort(rng.choice(len(s), len(s) // 5, replace=False))
        # A plan reads only which asks are blocked (no reasons made); /score reads the reasons later:
        # whichever comes first as the clock moves, each gives what the guardrails give afresh.
        for step in rng.permutation(3):
            if step == 0:
                assert (b.blocked_matrix(some, now) == fresh.matrix(list(s.ids[some]))).all(), days
            elif step == 1:
                assert (b.reference_blocked(now) == fresh.matrix(list(s.ids))[:, reference]).all(), days
            else:
                assert (b.blocked_matrix(rows, now) == fresh.matrix(list(s.ids))).all(), days
        got = b.blocked(rows, now).by_customer
        assert {k: dict(v) for k, v in got.items()} == {k: dict(v) for k, v in expected.items()}


def test_a_snapshot_of_customers_without_tickets_has_no_urgent_ticket(generated_world: World) -> None:
    # Found by tests/test_mutations.py: a world (or a batch chunk) with no ticket before as_of made
    # build_snapshot fail with "TypeError: Cannot cast DatetimeArray to dtype float64".
    as_of = observed_until(generated_world)
    without = World(**{**generated_world.as_dict(), "tickets": empty_table("tickets")})
    snap = build_snapshot(without, as_of)
    assert len(snap.features) and snap.features["last_urgent_ticket_at"].isna().all()
    assert str(snap.features["last_urgent_ticket_at"].dtype) == "datetime64[us, UTC]"
    kept = build_snapshot(generated_world, as_of).features["last_urgent_ticket_at"]
    assert kept.notna().any()  # the same code still finds the urgent tickets that are there


def test_no_registry_is_a_clear_reason_not_a_crash(tmp_path: Path) -> None:
    from models.registry import ChampionUnavailableError, resolve_champion

    with pytest.raises(ChampionUnavailableError, match=r"no MLflow store at .*advocacy train"):
        resolve_champion(Settings(home=tmp_path))
    assert not (tmp_path / ".advocacy" / "mlflow.db").exists()  # and it creates none


def test_an_unreachable_registry_is_a_clear_reason_without_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from models.registry import ChampionUnavailableError, resolve_champion

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = Settings(home=tmp_path, mlflow_tracking_uri=f"http://advocacy:s3cret-pw@127.0.0.1:{port}")
    with pytest.raises(ChampionUnavailableError, match=r"is unreachable") as caught:
        resolve_champion(settings)
    assert f"http://***@127.0.0.1:{port}" in str(caught.value)
    assert "s3cret-pw" not in str(caught.value)  # the message goes to the log
