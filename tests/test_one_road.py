"""One road per job (issue 29): an ask recorded through the API counts wherever an ask of the table
counts, every door gives one customer the same answer, and the log never moves the end of the data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from advocacy.cli import app
from features.catalog import ASK_TYPE_NAMES
from features.commitments import COMMITMENT_COLUMNS
from features.context import Snapshot
from features.contracts import CONTRACTS, DataContractError
from features.io import read_world
from features.labels import observed_until
from features.pointintime import ASK_HISTORY_FEATURES, build_features, restate_ask_history
from features.spec import CATEGORICAL_FEATURES, FEATURE_NAMES
from models.registry import load_champion
from serving.state import load_state
from storage.asklog import AskLog
from storage.settings import Settings, get_settings
from storage.snapshots import write_snapshot
from tests.conftest import SAMPLE, TrainedHome
from tests.serverkit import Server
from training.datasets import build_training_data
from usecases import PlanRequest, Sources, keep_for_the_page, make_report, score_world

# Active customers with long ask histories in the sample's asks table.
BUSY, QUIET = "C0000350", "C0000886"
NEED = {"review": 20, "reference_call": 5}


def _logged_asks(world_asks: pd.DataFrame, as_of: pd.Timestamp) -> pd.DataFrame:
    """Asks for the log: one of BUSY's table asks sent again (one ask, in both), a decline of BUSY's
    five days ago (which blocks every ask for a while), and an old acceptance of QUIET's that only
    the log knows (delivered long ago: an acceptance feature, not a commitment)."""
    again = world_asks[world_asks["customer_id"] == BUSY].tail(1)
    fresh = pd.DataFrame(
        {
            "ask_id": ["log-busy-1", "log-quiet-1"],
            "customer_id": [BUSY, QUIET],
            "ask_type": ["review", "case_study"],
            "asked_at": [as_of - pd.Timedelta(days=5), as_of - pd.Timedelta(days=200)],
            "outcome": ["declined", "declined"],
            "responded_at": [as_of - pd.Timedelta(days=4), as_of - pd.Timedelta(days=199)],
        }
    )
    return pd.concat([again.loc[:, list(fresh.columns)], fresh], ignore_index=True)


def _cli(env: dict[str, str], *args: str) -> str:
    get_settings.cache_clear()
    result = CliRunner().invoke(app, list(args), env={**env, "COLUMNS": "300"})
    get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    return result.stdout


def _blocked_from_text(text: str | None) -> list[tuple[str, str]]:
    """(ask type, guardrail) of the batch column `blocked_asks` ("type: guardrail until time; ...")."""
    pieces = [p for p in (text or "").split("; ") if p]
    return [(p.split(": ", 1)[0], p.split(": ", 1)[1].split(" until ")[0]) for p in pieces]


@pytest.mark.slow
@pytest.mark.server
def test_every_door_gives_one_customer_the_same_answer(trained_home: TrainedHome, tmp_path: Path) -> None:
    as_of = pd.Timestamp.now(tz="UTC").floor("s") - pd.Timedelta(seconds=5)
    store, log_path = tmp_path / "store", tmp_path / "asks.sqlite"
    env = {
        "ADVOCACY_HOME": str(trained_home.settings.home),
        "MLFLOW_TRACKING_URI": trained_home.settings.tracking_uri(),
        "ADVOCACY_FEATURE_STORE": str(store),
        "ADVOCACY_ASK_LOG": str(log_path),
    }
    table = read_world(SAMPLE).asks
    AskLog(log_path, CONTRACTS["asks"]).record(_logged_asks(table, as_of))
    when = as_of.isoformat()

    # The batch job (which also writes the snapshot the service serves), explain, and the plan.
    out = tmp_path / "scores.parquet"
    _cli(env, "score", "--data", str(SAMPLE), "--out", str(out), "--as-of", when)
    batch = pd.read_parquet(out).set_index("customer_id")
    explained = {
        c: json.loads(_cli(env, "explain", c, "--data", str(SAMPLE), "--as-of", when, "--json")) for c in (BUSY, QUIET)
    }
    plan_file = tmp_path / "plan.csv"
    needs = [arg for name, n in NEED.items() for arg in ("--need", f"{name}={n}")]
    _cli(env, "plan", "--data", str(SAMPLE), *needs, "--as-of", when, "--out", str(plan_file))
    cli_plan = pd.read_csv(plan_file)

    server = Server(
        env=trained_home.env(**{k: v for k, v in env.items() if k != "MLFLOW_TRACKING_URI"}),
        log=tmp_path / "server.log",
    )
    with server.running():
        scored = server.post("/score", {"customer_ids": [BUSY, QUIET]})
        planned = server.post("/plan", {"need": NEED, "store": False})
    assert scored.status_code == 200, scored.text
    assert planned.status_code == 200, planned.text
    served = {r["customer_id"]: r for r in scored.json()["results"]}

    for customer in (BUSY, QUIET):
        api, cli, row = served[customer], explained[customer], batch.loc[customer]
        for ask_type in ASK_TYPE_NAMES:
            p = api["acceptance"][ask_type]
            assert cli["acceptance"][ask_type] == pytest.approx(p, abs=1e-9), (customer, ask_type)
            assert row[f"acceptance_{ask_type}"] == pytest.approx(p, abs=1e-9), (customer, ask_type)
        nba = api["next_best_ask"]
        assert cli["next_best_ask"] == nba
        assert (None if pd.isna(row["next_best_ask"]) else row["next_best_ask"]) == nba["ask_type"]
        blocked = [(b["ask_type"], b["guardrail"]) for b in nba["blocked"]]
        assert sorted(_blocked_from_text(row["blocked_asks"])) == sorted(blocked)
        assert api["committed"] == cli["committed"]
        assert (api["committed"] is None) == (not row["committed"])
    # The decline logged five days ago holds every ask of BUSY back, at every door.
    assert {b["ask_type"] for b in served[BUSY]["next_best_ask"]["blocked"]} == set(ASK_TYPE_NAMES)

    api_plan = pd.DataFrame(planned.json()["asks"])
    columns = ["ask_type", "rank", "customer_id"]
    assert len(api_plan) == len(cli_plan) > 0
    assert api_plan[columns].to_dict("records") == cli_plan[columns].to_dict("records")
    assert np.allclose(api_plan["acceptance"], cli_plan["acceptance"])
    assert BUSY not in set(api_plan["customer_id"])  # blocked by the logged decline


def test_an_ask_logged_now_moves_no_window_label_or_default_as_of(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, data_dir=SAMPLE)
    before = Sources.from_settings(settings).read()
    end = observed_until(read_world(SAMPLE))
    now = pd.Timestamp.now(tz="UTC").floor("s")
    posted = pd.DataFrame(
        {
            "ask_id": ["posted-now"],
            "customer_id": [BUSY],
            "ask_type": ["review"],
            "asked_at": [now],
            "outcome": ["no_response"],
            "responded_at": [pd.NaT],
        }
    )
    AskLog(settings.ask_log_path(), CONTRACTS["asks"]).record(posted)
    after = Sources.from_settings(settings).read()
    assert "posted-now" in set(after.world.asks["ask_id"])  # it counts ...
    assert before.data_end == after.data_end == end < now  # ... and the data still ends where it did

    first, second = build_training_data(before.world), build_training_data(after.world)
    for target in ("propensity", "acceptance"):
        old, new = getattr(first, target), getattr(second, target)
        assert old[["as_of", "split", "label"]].equals(new[["as_of", "split", "label"]]), target
    assert first.fingerprint["data_end"] == second.fingerprint["data_end"]


def test_an_ask_in_the_table_and_the_log_is_one_ask_whose_later_answer_wins(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, data_dir=SAMPLE)
    table = read_world(SAMPLE).asks
    unanswered = table[table["outcome"] == "no_response"].iloc[0]
    answered = table[table["outcome"] == "declined"].iloc[0]
    log = AskLog(settings.ask_log_path(), CONTRACTS["asks"])
    later = answered["responded_at"] - pd.Timedelta(days=1)  # an older answer than the table's
    log.record(
        pd.DataFrame(
            [
                {
                    **unanswered.to_dict(),
                    "outcome": "accepted",
                    "responded_at": unanswered["asked_at"] + pd.Timedelta(days=2),
                },
                {**answered.to_dict(), "outcome": "accepted", "responded_at": later},
            ]
        )
    )
    asks = Sources.from_settings(settings).read().world.asks.set_index("ask_id")
    assert len(asks) == len(table)  # one ask each, never two
    assert asks.loc[unanswered["ask_id"], "outcome"] == "accepted"  # the log's answer is the later one
    assert asks.loc[answered["ask_id"], "outcome"] == "declined"  # the table's answer is the later one

    # The log refuses to move an ask it holds (`ConflictingAskError`); one only the table holds, it
    # cannot know: that is caught where both are read.
    other = table[table["outcome"] == "declined"].iloc[1]
    moved = {**other.to_dict(), "customer_id": QUIET if other["customer_id"] != QUIET else BUSY}
    log.record(pd.DataFrame([moved]))
    with pytest.raises(DataContractError, match=f"ask_id '{other['ask_id']}': customer_id is"):
        Sources.from_settings(settings).read()


@pytest.mark.slow
def test_the_service_remakes_the_report_when_the_ask_log_moves(
    trained_home: TrainedHome, served_snapshot: Snapshot, tmp_path: Path
) -> None:
    """The page's report tab is never older than the reload interval: a recorded ask remakes it, from
    the data the kept report was made from (not the service's own default, here a folder not there)."""
    elsewhere = tmp_path / "not-the-data"
    settings = Settings(home=tmp_path, data_dir=elsewhere, mlflow_tracking_uri=trained_home.settings.tracking_uri())
    write_snapshot(served_snapshot.tables(), served_snapshot.meta, settings.feature_store_path())
    state = load_state(settings, *load_champion(settings))
    try:
        assert not state.refresh_report(force=False) and not state.report()["available"]  # never unasked
        assert state.reports is not None
        keep_for_the_page(make_report(Sources.from_settings(settings, SAMPLE)), state.reports)  # `advocacy report`
        assert state.refresh_report(force=False)  # kept without saying what it was made from
        first = state.report()
        assert first["data_dir"] == str(SAMPLE) and not state.refresh_report(force=False)  # nothing moved since
        asked = served_snapshot.as_of - pd.Timedelta(days=3)
        row = {"ask_id": "posted-1", "customer_id": BUSY, "ask_type": "review", "asked_at": asked.isoformat()}
        assert state.record_asks([{**row, "outcome": "no_response", "responded_at": None}]) == 1
        assert state.refresh_report(force=False)
        assert state.report()["metrics"]["asks"] == first["metrics"]["asks"] + 1
    finally:
        state.close()


@pytest.mark.slow
def test_an_ask_recorded_after_the_snapshot_counts_in_the_services_features_at_once(
    trained_home: TrainedHome, served_snapshot: Snapshot, tmp_path: Path
) -> None:
    """The red team's case: an accepted case study recorded through the API (asked 45 days before the
    snapshot, accepted 40) makes the customer committed pipeline on the next request, with the
    acceptance and features that `advocacy score` would now write, and takes them off the plan."""
    settings = Settings(home=tmp_path, data_dir=SAMPLE, mlflow_tracking_uri=trained_home.settings.tracking_uri())
    write_snapshot(served_snapshot.tables(), served_snapshot.meta, settings.feature_store_path())
    state = load_state(settings, *load_champion(settings))
    as_of = served_snapshot.as_of
    need = PlanRequest({"reference_call": 5})
    try:
        first = state.plan(need, keep_it=False)["asks"][0]["customer_id"]  # the likeliest speaker
        before = json.loads(state.score_ids_json([first]))["results"][0]
        assert before["committed"] is None
        accepted = {
            "ask_id": "posted-case-study",
            "customer_id": first,
            "ask_type": "case_study",
            "asked_at": (as_of - pd.Timedelta(days=45)).isoformat(),
            "outcome": "accepted",
            "responded_at": (as_of - pd.Timedelta(days=40)).isoformat(),
        }
        assert state.record_asks([accepted]) == 1
        after = json.loads(state.score_ids_json([first]))["results"][0]
        planned = {a["customer_id"] for a in state.plan(need, keep_it=False)["asks"]}
        due = {d["customer_id"]: d for d in state.worklist(limit=10_000)["deliveries_due"]}
        row = state.store.rows([first])
        served = {name: state.store.columns[name][row][0] for name in FEATURE_NAMES}
    finally:
        state.close()

    # What a fresh snapshot would hold for them now: the recipe over the tables plus the ask log.
    fresh = score_world(state.bundle, Sources.from_settings(settings).read().world, as_of, [first])
    expected = fresh.features.iloc[0]
    for name in FEATURE_NAMES:
        assert (
            served[name] == pytest.approx(expected[name], nan_ok=True)
            if name not in CATEGORICAL_FEATURES
            else (str(served[name]) == str(expected[name]))
        ), name
    assert after["committed"]["ask_id"] == "posted-case-study" == fresh.scores.commitment(0)["ask_id"]
    for k, ask_type in enumerate(ASK_TYPE_NAMES):
        assert after["acceptance"][ask_type] == pytest.approx(fresh.scores.acceptance[0, k], abs=1e-9), ask_type
    assert after["tier"] == "committed"
    assert first not in planned  # committed pipeline is never asked again until it delivers
    assert due[first]["ask_id"] == "posted-case-study"


def test_restating_a_customers_ask_history_gives_the_features_of_the_whole_recipe() -> None:
    """`restate_ask_history` (what the service recomputes when an ask is recorded) is the whole
    recipe's ask history, and an ask at or after as_of changes none of it."""
    world = read_world(SAMPLE)
    as_of = observed_until(world) - pd.Timedelta(days=30)
    ids = world.asks["customer_id"].drop_duplicates().head(40).tolist()
    points = pd.DataFrame({"customer_id": pd.Series(ids, dtype="str"), "as_of": as_of})
    whole = build_features(world, points, commitments=True)
    restated = restate_ask_history(world.asks, world.activities, points)
    assert list(restated.columns) == [*ASK_HISTORY_FEATURES, *COMMITMENT_COLUMNS]
    pd.testing.assert_frame_equal(restated, whole.loc[:, list(restated.columns)], check_dtype=False)

    late = (
        world.asks[world.asks["customer_id"].isin(ids)]
        .head(40)
        .assign(
            ask_id=lambda f: "late-" + f["ask_id"].astype("str"), asked_at=as_of, outcome="accepted", responded_at=as_of
        )
    )
    later = restate_ask_history(pd.concat([world.asks, late], ignore_index=True), world.activities, points)
    pd.testing.assert_frame_equal(later, restated)
