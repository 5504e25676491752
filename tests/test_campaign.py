"""Campaigns in waves (spec 5a): what a campaign learns between waves, and its waves through the CLI."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import special, stats
from typer.testing import CliRunner

from advocacy.cli import app
from features.catalog import ASK_TYPE_NAMES
from features.context import Snapshot
from features.contracts import CONTRACTS
from models.campaign import (
    Answers,
    AnswerTimes,
    LevelPosterior,
    Schedule,
    SoFar,
    at_least_mixed,
    outlook,
    wave_target,
)
from models.planner import PLAN_COLUMNS
from storage.asklog import AskLog
from storage.plans import PlanStore
from storage.settings import get_settings
from storage.snapshots import write_snapshot
from tests.conftest import SAMPLE, TrainedHome
from tests.serverkit import Server
from usecases.campaigns import (
    campaign_record,
    campaign_state,
    campaign_wave,
    campaigns_in_progress,
    reserved_elsewhere,
)

T = ASK_TYPE_NAMES.index("review")
NOW = pd.Timestamp("2026-06-01", tz="UTC")


def _times(yes_days: float = 5.0, no_days: float = 10.0, silent: float = 0.2) -> AnswerTimes:
    """Answer times with every yes after `yes_days`, every decline after `no_days`, a share silent."""
    yes = {t: np.full(100, yes_days) for t in range(len(ASK_TYPE_NAMES))}
    no = {t: np.full(100, no_days) for t in range(len(ASK_TYPE_NAMES))}
    return AnswerTimes(yes, no, dict.fromkeys(range(len(ASK_TYPE_NAMES)), silent))


def test_the_chance_over_one_level_is_the_poisson_binomial() -> None:
    p = np.random.default_rng(1).uniform(0.05, 0.9, 40)
    got = at_least_mixed(p[None, :], np.ones(1), 12)
    want = [stats.poisson_binom(p[: i + 1]).sf(11) for i in range(p.size)]
    np.testing.assert_allclose(got, want, atol=1e-12)
    assert at_least_mixed(p[None, :], np.ones(1), 0).tolist() == [1.0] * p.size  # nothing needed: certain


def test_answer_times_are_learnt_per_type_from_settled_asks() -> None:
    asked = NOW - pd.to_timedelta(np.arange(200, 400), unit="D")
    rng = np.random.default_rng(0)
    outcome = rng.choice(["accepted", "declined", "no_response"], 200, p=[0.4, 0.4, 0.2])
    delay = np.where(outcome == "accepted", 3, 12)
    asks = pd.DataFrame(
        {
            "ask_id": [f"a{i}" for i in range(200)],
            "customer_id": "c1",
            "ask_type": "review",
            "asked_at": asked,
            "outcome": outcome,
            "responded_at": pd.Series(asked + pd.to_timedelta(delay, unit="D")).where(outcome != "no_response"),
        }
    )
    times = AnswerTimes.learn(asks, NOW)
    assert times.yes_within(T, 2.0) == 0.0 and times.yes_within(T, 3.0) == 1.0
    assert times.silent_share[T] == pytest.approx((outcome == "no_response").mean())
    assert float(times.no_after(T, 100.0)) == pytest.approx(times.silent_share[T])
    assert float(times.no_after(T, 1.0)) == 1.0  # no decline comes that soon


def test_the_level_posterior_finds_the_shift_the_answers_were_drawn_with() -> None:
    """The model's level is off by +0.6 in log-odds; 800 answered asks put the posterior there."""
    rng = np.random.default_rng(7)
    p = rng.uniform(0.1, 0.6, 800)
    truth = special.expit(special.logit(p) + 0.6)
    yes = rng.random(800) < truth
    answers = Answers(p[yes], p[~yes], np.zeros(0), np.zeros(0))
    posterior = LevelPosterior.prior(0.5).update(_times(), T, answers)
    assert posterior.mean_shift() == pytest.approx(0.6, abs=0.15)
    assert LevelPosterior.prior(0.5).mean_shift() == pytest.approx(0.0, abs=1e-9)


def test_a_ranking_steeper_than_the_models_is_learnt_and_carried_down_the_ranking() -> None:
    """The truth falls off faster than the model's ranking (log-odds slope 1.4 about the asks'
    mean): the posterior's slope moves above 1, and for customers below the answered ones it
    expects fewer yeses than a level shift alone would, closer to the truth."""
    rng = np.random.default_rng(11)
    p = rng.uniform(0.1, 0.7, 1500)
    z = special.logit(p)
    truth = special.expit(z.mean() + 1.4 * (z - z.mean()))
    yes = rng.random(p.size) < truth
    answers = Answers(p[yes], p[~yes], np.zeros(0), np.zeros(0))
    posterior = LevelPosterior.prior(0.5, answers.pivot()).update(_times(), T, answers)
    level_only = LevelPosterior.prior(0.5).update(_times(), T, answers)
    assert posterior.mean_slope() > 1.2 and level_only.mean_slope() == 1.0
    below = np.full(50, 0.05)  # further down than any answered ask
    expected = {
        name: float(post.weights @ post.shifted(below).sum(axis=1))
        for name, post in (("slope", posterior), ("level", level_only))
    }
    true_yeses = float(special.expit(z.mean() + 1.4 * (special.logit(0.05) - z.mean())) * 50)
    assert abs(expected["slope"] - true_yeses) < abs(expected["level"] - true_yeses) / 2


def _answered(shift: float, seed: int, wave: int) -> Answers:
    """300 answers of one wave, asks of model acceptance 0.2-0.6 drawn at the model's log-odds plus `shift`."""
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.2, 0.6, 300)
    yes = rng.random(p.size) < special.expit(special.logit(p) + shift)
    waves = (np.full(int(yes.sum()), wave), np.full(int((~yes).sum()), wave), np.zeros(0, dtype=int))
    return Answers(p[yes], p[~yes], np.zeros(0), np.zeros(0), waves)


def _joined(a: Answers, b: Answers) -> Answers:
    assert a.waves is not None and b.waves is not None
    waves = tuple(np.concatenate([x, y]) for x, y in zip(a.waves, b.waves, strict=True))
    return Answers(np.concatenate([a.yes, b.yes]), np.concatenate([a.no, b.no]), a.pending, a.elapsed, waves)  # type: ignore[arg-type]


def test_a_ranked_type_learns_its_level_from_its_newest_wave_and_steps_on_with_a_margin() -> None:
    """A ranked type's waves reach customers no answer has measured (further down its ranking, or
    left by the other types): the model's error there need not be the error at the top. Wave 2's
    answers came back a full unit of log-odds below wave 1's: the next wave is reckoned from the
    newest answers, and with a margin for the step beyond them. A random draw's waves are alike: all
    its answers count as one, and no step is added."""
    both = _joined(_answered(0.0, 5, 1), _answered(-1.0, 6, 2))
    ranked = outlook(SoFar(20, 0, both, 0.2, ranked=True), _times(), T, 30.0)
    drawn = outlook(SoFar(20, 0, both, 0.2, ranked=False), _times(), T, 30.0)
    assert ranked.posterior.mean_shift() < -0.75 < drawn.posterior.mean_shift()
    assert ranked.posterior.sd_shift() > 2 * drawn.posterior.sd_shift()
    # At wave 2, with wave 1's answers alone: the same level, a wider margin for the ranked type.
    first = _answered(-0.5, 5, 1)
    ranked = outlook(SoFar(20, 0, first, 0.2, ranked=True), _times(), T, 30.0)
    drawn = outlook(SoFar(20, 0, first, 0.2, ranked=False), _times(), T, 30.0)
    assert ranked.posterior.mean_shift() == pytest.approx(drawn.posterior.mean_shift(), abs=0.05)
    below = np.full(400, 0.15)
    assert np.argmax(ranked.chance(below) >= 0.9) > np.argmax(drawn.chance(below) >= 0.9)


def test_asks_long_unanswered_are_evidence_against_a_yes() -> None:
    """Yeses come back within 5 days; an ask still silent at 30 days is likelier a no: a censored
    likelihood moves the level down, where dropping the pending asks would not."""
    p = np.full(200, 0.5)
    pending = Answers(np.zeros(0), np.zeros(0), p, np.full(200, 30.0))
    moved = LevelPosterior.prior(0.5).update(_times(yes_days=5.0), T, pending)
    assert moved.mean_shift() < -0.3
    fresh = Answers(np.zeros(0), np.zeros(0), p, np.full(200, 1.0))  # a day old: nothing to learn yet
    assert LevelPosterior.prior(0.5).update(_times(yes_days=5.0), T, fresh).mean_shift() == pytest.approx(0, abs=1e-6)


def test_the_outlook_counts_yeses_pending_asks_and_time_left() -> None:
    times = _times(yes_days=20.0)
    done = outlook(SoFar(5, 5, Answers.none(), 0.3), times, T, 30.0)
    assert done.chance(np.zeros(0))[0] == 1.0  # the need is met already
    # Yeses take 20 days: with 10 days left a new ask can bring none in time.
    late = outlook(SoFar(2, 0, Answers.none(), 0.0), times, T, 10.0)
    assert late.chance(np.full(50, 0.9))[-1] == 0.0
    # Two asks pending for 5 days, each sure to say yes (in 15 more days): in time with 30 days left.
    sure = Answers(np.zeros(0), np.zeros(0), np.full(2, 1 - 1e-9), np.full(2, 5.0))
    assert outlook(SoFar(2, 0, sure, 0.0), times, T, 30.0).chance(np.zeros(0))[0] == pytest.approx(1.0, abs=1e-6)


def test_waves_aim_lower_early_and_at_the_confidence_last() -> None:
    targets = [wave_target(0.9, w, 3) for w in (1, 2, 3)]
    assert targets[0] < targets[1] < targets[2] == 0.9
    assert wave_target(0.9, 1, 1) == 0.9  # one wave: the one-shot plan's promise


@pytest.mark.parametrize(("waves", "days", "field"), [(0, 14, "waves"), (3, 0, "wave_days"), (True, 14, "waves")])
def test_a_bad_schedule_names_the_field(waves: object, days: object, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        Schedule(waves, days)  # type: ignore[arg-type]


# ---- a whole campaign through the command line -------------------------------------------------------


def _cli(env: dict[str, str], *args: str) -> tuple[int, str]:
    get_settings.cache_clear()
    result = CliRunner().invoke(app, list(args), env=env)
    get_settings.cache_clear()
    return result.exit_code, result.output


def _answer(log: AskLog, wave: pd.DataFrame, asked: pd.Timestamp, seed: int) -> None:
    """`_answers` recorded through the ask log, as `POST /asks` records them."""
    log.record(_answers(wave, asked, seed))


def _append_to_asks_table(data: Path, answers: pd.DataFrame) -> None:
    """The answers appended to the data folder's asks table with their `plan_id` (a CRM export)."""
    table = pd.read_parquet(data / "asks.parquet")
    pd.concat([table, answers], ignore_index=True).to_parquet(data / "asks.parquet", index=False)


def _answers(wave: pd.DataFrame, asked: pd.Timestamp, seed: int) -> pd.DataFrame:
    """Every planned ask made a day after its wave; answered (yes by its acceptance) within 8 days."""
    rng = np.random.default_rng(seed)
    n = len(wave)
    yes = rng.random(n) < wave["acceptance"].to_numpy()
    at = asked + pd.Timedelta(days=1)
    responded = at + pd.to_timedelta(rng.integers(1, 9, n), unit="D")
    now = pd.Timestamp.now(tz="UTC")
    return pd.DataFrame(
        {
            "ask_id": [f"{p[:8]}-{w}-{c}" for p, w, c in wave[["plan_id", "wave", "customer_id"]].itertuples(False)],
            "customer_id": wave["customer_id"].to_numpy(),
            "ask_type": wave["ask_type"].to_numpy(),
            "asked_at": at,
            "outcome": np.where(responded < now, np.where(yes, "accepted", "declined"), "no_response"),
            "responded_at": pd.Series(responded).where(pd.Series(responded) < now),
            "plan_id": wave["plan_id"].to_numpy(),
        }
    )


@pytest.mark.slow
def test_a_campaign_runs_its_waves_through_the_command_line(trained_home: TrainedHome, tmp_path: Path) -> None:
    """Wave 1's answers come back in the asks table with its plan_id (a CRM export), wave 2's
    through the ask log: both count for the campaign, and `--continue` twice plans waves 2 and 3."""
    home, data = tmp_path / "home", tmp_path / "data"
    shutil.copytree(SAMPLE, data, ignore=shutil.ignore_patterns("truth"))
    env = {"ADVOCACY_HOME": str(home), "MLFLOW_TRACKING_URI": trained_home.settings.tracking_uri(), "COLUMNS": "200"}
    need = ["--need", "reference_call=8", "--need", "review=25", "--need", "case_study=3"]
    first = tmp_path / "wave1.csv"
    code, out = _cli(env, "plan", "--data", str(data), *need, "--waves", "3", "--out", str(first))
    assert code == 0, out
    wave1 = pd.read_csv(first)
    plan_id = wave1["plan_id"].iloc[0]
    assert set(wave1["wave"]) == {1} and f"Campaign {plan_id}: wave 1 of 3" in out
    _, record = PlanStore(home / ".advocacy" / "plans").load(plan_id)
    start = pd.Timestamp(record["campaign"]["wave_dates"][0])
    assert pd.Timestamp(record["campaign"]["deadline"]) == start + pd.Timedelta(days=42)
    in_table = _answers(wave1, start, seed=1)
    stray = in_table.iloc[:1].assign(ask_id="stray-1", plan_id="no-such-plan")  # another tool's plan
    _append_to_asks_table(data, pd.concat([in_table.iloc[1:], stray], ignore_index=True))

    second = tmp_path / "wave2.csv"
    code, out = _cli(env, "plan", "--continue", plan_id, "--out", str(second))  # the data folder wave 1 used
    assert code == 0, out
    assert "1 asks rows naming a plan not stored here (counted off plan)" in " ".join(out.split())
    wave2 = pd.read_csv(second)
    summary = PlanStore(home / ".advocacy" / "plans").load(plan_id)[1]["summary"]
    accepted = in_table.iloc[1:]["outcome"].eq("accepted")
    assert sum(s["yeses_so_far"] for s in summary.values()) == int(accepted.sum())
    assert set(wave2["wave"]) <= {2} and not set(wave2["customer_id"]) & set(wave1["customer_id"])
    for name, s in summary.items():  # a type whose yeses reach the need asks no more
        assert not s["met"] or (wave2["ask_type"] != name).all()
    log = AskLog(home / ".advocacy" / "asks.sqlite", CONTRACTS["asks"])
    _answer(log, wave2, start + pd.Timedelta(days=14), seed=2)

    code, out = _cli(env, "plan", "--continue", plan_id, "--out", str(tmp_path / "wave3.csv"))
    assert code == 0, out
    rows, record = PlanStore(home / ".advocacy" / "plans").load(plan_id)
    both = int(accepted.sum()) + int(log.read()["outcome"].eq("accepted").sum())
    assert sum(s["yeses_so_far"] for s in record["summary"].values()) == both
    assert len(record["campaign"]["wave_dates"]) == 3 and rows["customer_id"].is_unique  # never asked twice
    code, out = _cli(env, "plan", "--continue", plan_id)
    assert code == 0 and "Nothing more to ask" in out, out  # after the last wave
    code, out = _cli(env, "plan", "--continue", plan_id, "--need", "review=3")
    assert code == 2 and "come from the stored campaign" in out

    # An ask's plan is fixed: the log may not name another plan for an ask the table gave one.
    moved = in_table.iloc[1:2].assign(plan_id="another-plan")
    log.record(moved)
    code, out = _cli(env, "plan", "--continue", plan_id)
    assert code == 2 and f"ask_id '{moved['ask_id'].iloc[0]}': plan_id is {plan_id}" in " ".join(out.split())


@pytest.mark.slow
@pytest.mark.server
def test_a_campaign_runs_its_waves_through_the_api(
    trained_home: TrainedHome, served_snapshot: Snapshot, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    write_snapshot(served_snapshot.tables(), served_snapshot.meta, store)
    env = trained_home.env(ADVOCACY_FEATURE_STORE=str(store), ADVOCACY_ASK_LOG=str(tmp_path / "asks.sqlite"))
    env["ADVOCACY_HOME"] = str(tmp_path / "home")
    env["MLFLOW_TRACKING_URI"] = trained_home.settings.tracking_uri()
    server = Server(env=env, log=tmp_path / "server.log")
    need = {"reference_call": 5, "review": 15}
    with server.running():
        first = server.post("/plan", {"need": need, "waves": 3, "wave_days": 14})
        assert first.status_code == 200, first.text
        body = first.json()
        plan_id, calendar = body["plan_id"], body["campaign"]
        assert calendar["wave"] == 1 and calendar["waves"] == 3 and {a["wave"] for a in body["asks"]} == {1}
        # Every wave-1 ask made on the wave's date; those the model rates likeliest say yes at once.
        now = pd.Timestamp(calendar["deadline"]) - pd.Timedelta(days=3 * 14)
        rows = [
            {
                "ask_id": f"w1-{a['customer_id']}",
                "customer_id": a["customer_id"],
                "ask_type": a["ask_type"],
                "asked_at": now.isoformat(),
                "outcome": "accepted" if a["acceptance"] >= 0.5 else "declined",
                "responded_at": now.isoformat(),
                "plan_id": plan_id,
            }
            for a in body["asks"]
        ]
        assert server.post("/asks", {"asks": rows}).status_code == 200
        again = server.post("/plan", {"plan_id": plan_id, "need": need})
        assert again.status_code == 400 and "plan_id" in again.json()["error"]
        second = server.post("/plan", {"plan_id": plan_id})
        assert second.status_code == 200, second.text
        wave2 = second.json()
    assert wave2["plan_id"] == plan_id and wave2["campaign"]["wave"] == 2
    yeses = {}
    for r in rows:
        yeses[r["ask_type"]] = yeses.get(r["ask_type"], 0) + (r["outcome"] == "accepted")
    for name in need:
        assert wave2["summary"][name]["yeses_so_far"] == yeses.get(name, 0)
    assert not {a["customer_id"] for a in wave2["asks"]} & {a["customer_id"] for a in body["asks"]}


@pytest.mark.slow
def test_a_customer_held_by_an_open_campaign_is_not_planned_by_another(
    trained_home: TrainedHome, tmp_path: Path
) -> None:
    """Two campaigns over the same base: the second plans none of the first's customers until they
    answer there; once answered (with the first's plan_id), they may be planned again."""
    home = tmp_path / "home"
    env = {"ADVOCACY_HOME": str(home), "MLFLOW_TRACKING_URI": trained_home.settings.tracking_uri(), "COLUMNS": "200"}
    need = ["--need", "reference_call=8", "--need", "review=25"]
    outs = [tmp_path / f"campaign{i}.csv" for i in range(3)]
    code, out = _cli(env, "plan", "--data", str(SAMPLE), *need, "--waves", "3", "--out", str(outs[0]))
    assert code == 0, out
    first = pd.read_csv(outs[0])
    code, out = _cli(env, "plan", "--data", str(SAMPLE), *need, "--waves", "3", "--out", str(outs[1]))
    assert code == 0, out
    second = pd.read_csv(outs[1])
    assert len(second) and not set(second["customer_id"]) & set(first["customer_id"])
    # The first campaign's customers answer there: it holds them no longer; the second still does.
    plans = PlanStore(home / ".advocacy" / "plans")
    start = pd.Timestamp(plans.load(first["plan_id"].iloc[0])[1]["campaign"]["wave_dates"][0])
    log = AskLog(home / ".advocacy" / "asks.sqlite", CONTRACTS["asks"])
    _answer(log, first, start, seed=3)
    later = start + pd.Timedelta(days=12)
    held = reserved_elsewhere(plans, log.plan_links(), log.read(), later)
    answered = set(log.read().loc[lambda a: a["responded_at"] < later, "customer_id"])
    assert answered and not held & answered
    assert set(second["customer_id"]) <= held


# ---- campaigns in progress (the page's worklist) -----------------------------------------------------


def _store_campaign(
    plans: PlanStore, need: dict[str, int], start: pd.Timestamp, waves: list[list[tuple[str, str]]], n_waves: int = 3
) -> str:
    """A stored campaign of `n_waves` 14 days apart from `start`, with the waves planned so far:
    per wave its (customer, ask type) rows."""
    plan_id = uuid.uuid4().hex
    calendar = campaign_record(Schedule(n_waves, 14), start, None)
    calendar["wave_dates"] = [(start + pd.Timedelta(days=14 * w)).isoformat() for w in range(len(waves))]
    record = {"need": need, "confidence": 0.9, "filters": {}, "summary": {}, "model_version": "1", "campaign": calendar}
    planned = [(w, i + 1, c, t) for w, wave in enumerate(waves, start=1) for i, (c, t) in enumerate(wave)]
    rows = pd.DataFrame(planned, columns=["wave", "rank", "customer_id", "ask_type"]).assign(
        plan_id=plan_id, name="A customer", acceptance=0.4, expected_yes=0.4, p_at_least_needed=0.5
    )
    rows = rows.reindex(columns=list(PLAN_COLUMNS)).astype({"last_asked_at": "datetime64[us, UTC]"})
    plans.save(plan_id, rows, record)
    return plan_id


def _asks(plan_id: str | None, *rows: tuple[str, str, pd.Timestamp, str, pd.Timestamp | None]) -> pd.DataFrame:
    """Asks (customer, type, asked, outcome, responded) recorded with `plan_id`."""
    frame = pd.DataFrame(rows, columns=["customer_id", "ask_type", "asked_at", "outcome", "responded_at"])
    frame.insert(0, "ask_id", [f"{plan_id}-{i}" for i in range(len(frame))])
    frame["responded_at"] = pd.to_datetime(frame["responded_at"], utc=True)
    return frame.assign(plan_id=plan_id)


def test_campaigns_in_progress_count_each_types_yeses_and_pending_asks_by_the_campaigns_rules(
    tmp_path: Path,
) -> None:
    plans = PlanStore(tmp_path / "plans")
    day = lambda n: NOW + pd.Timedelta(days=n)  # noqa: E731
    wave1 = [("c1", "review"), ("c2", "review"), ("c3", "review"), ("c4", "review"), ("c5", "review")]
    wave1 += [("c6", "reference_call"), ("c7", "reference_call")]
    wave2 = [("c8", "review"), ("c9", "review")]
    running = _store_campaign(plans, {"review": 4, "reference_call": 1}, NOW, [wave1, wave2])
    at = day(20)  # wave 2 went out on day 14
    mine = _asks(
        running,
        ("c1", "review", day(1), "accepted", day(3)),  # a yes
        ("c2", "review", day(1), "declined", day(2)),  # a no
        ("c3", "review", day(1), "no_response", None),  # pending
        ("c4", "review", day(1), "accepted", day(25)),  # the yes comes after `at`: pending at `at`
        ("c6", "reference_call", day(-1), "accepted", day(0)),  # asked before its wave: off plan
        ("c7", "review", day(1), "accepted", day(2)),  # a type the campaign did not plan for c7: off plan
        ("c8", "review", day(15), "accepted", day(16)),  # wave 2's yes
        ("c9", "review", day(13), "accepted", day(14)),  # asked before wave 2 went out: off plan
        ("c10", "review", day(1), "accepted", day(2)),  # a customer it never planned: off plan
    )
    elsewhere = _asks(None, ("c5", "review", day(1), "accepted", day(2)))  # no plan_id: off plan
    # Campaigns not in progress at `at`: one past its deadline, one whose every need is met, a one-shot plan.
    past = _store_campaign(plans, {"review": 2}, day(-60), [[("c1", "review")]])
    met = _store_campaign(plans, {"review": 1}, day(-5), [[("d1", "review"), ("d2", "review")]])
    met_asks = _asks(met, ("d1", "review", day(-4), "accepted", day(-3)))
    plans.save(uuid.uuid4().hex, pd.DataFrame({"plan_id": [], "wave": []}), {"need": {"review": 3}})
    # One planned ahead: wave 1 goes out after `at`, so nothing can count yet.
    ahead = _store_campaign(plans, {"case_study": 2}, day(30), [[("e1", "case_study")]], n_waves=2)
    asks = pd.concat([mine, elsewhere, met_asks], ignore_index=True)
    links = asks.loc[asks["plan_id"].notna(), ["ask_id", "plan_id"]]

    found = campaigns_in_progress(plans, asks.drop(columns="plan_id"), links, at)

    assert [c.plan_id for c in found] == [running, ahead]  # the nearest deadline first
    assert past not in {c.plan_id for c in found} and met not in {c.plan_id for c in found}
    progress = found[0]
    review, reference = progress.types["review"], progress.types["reference_call"]
    assert (review.need, review.yeses_so_far, review.pending, review.met) == (4, 2, 2, False)
    assert (reference.need, reference.yeses_so_far, reference.pending) == (1, 0, 0)
    assert progress.asks_per_wave == (7, 2) and progress.wave_dates == (NOW, day(14))
    assert (progress.next_wave, progress.next_wave_at, progress.deadline) == (3, day(28), day(42))
    # The same count as the next wave would make (`campaign_state`, which `next_wave` plans from).
    rows, record = plans.load(running)
    state = campaign_state(running, rows, record, asks.drop(columns="plan_id"), links, at)
    t = ASK_TYPE_NAMES.index("review")
    assert state.yeses[t] == review.yeses_so_far and state.answers[t].pending.size == review.pending
    later = found[1]
    assert later.types["case_study"].yeses_so_far == 0 and (later.next_wave, later.next_wave_at) == (2, day(44))


def test_a_campaign_with_every_wave_planned_has_none_left_and_a_wave_exports_its_rows(tmp_path: Path) -> None:
    plans = PlanStore(tmp_path / "plans")
    waves = [[("c1", "review"), ("c2", "review")], [("c3", "review")]]
    plan_id = _store_campaign(plans, {"review": 5}, NOW, waves, n_waves=2)
    empty = pd.DataFrame({"ask_id": [], "plan_id": []}, dtype="str")
    (progress,) = campaigns_in_progress(plans, _asks(plan_id, ("c1", "review", NOW, "no_response", None)), empty, NOW)
    assert progress.next_wave is None and progress.next_wave_at is None and progress.asks_per_wave == (2, 1)
    wave2 = campaign_wave(plans, plan_id, 2)
    assert list(wave2.columns) == list(PLAN_COLUMNS) and wave2["customer_id"].tolist() == ["c3"]
    with pytest.raises(ValueError, match="wave"):
        campaign_wave(plans, plan_id, 3)
    one_shot = uuid.uuid4().hex
    plans.save(one_shot, pd.DataFrame({"plan_id": [], "wave": []}), {"need": {"review": 3}})
    with pytest.raises(ValueError, match="one-shot"):
        campaign_wave(plans, one_shot, 1)
    with pytest.raises(ValueError, match="plan_id"):
        campaign_wave(plans, uuid.uuid4().hex, 1)


@pytest.mark.slow
@pytest.mark.server
def test_the_command_line_and_the_api_plan_the_same_next_wave_from_the_tables_answers(
    trained_home: TrainedHome, tmp_path: Path
) -> None:
    """Wave 1's answers in the asks table (a CRM export): `advocacy plan --continue` on the data
    folder and `POST /plan {"plan_id"}` on the snapshot `advocacy score` made of it count the same
    yeses and plan the same wave 2, from two copies of the same plan store."""
    data, home, store = tmp_path / "data", tmp_path / "home", tmp_path / "store"
    shutil.copytree(SAMPLE, data, ignore=shutil.ignore_patterns("truth"))
    env = {
        "ADVOCACY_HOME": str(home),
        "MLFLOW_TRACKING_URI": trained_home.settings.tracking_uri(),
        "ADVOCACY_FEATURE_STORE": str(store),
        "ADVOCACY_ASK_LOG": str(tmp_path / "asks.sqlite"),
        "COLUMNS": "200",
    }
    # Fixed dates in the past: the service starts after wave 2's date. A sample customer's pause
    # after two declines (C0000512's) lifts on 2026-12-07, between the two: the service's guardrails,
    # made at the present, must be worked out afresh at wave 2's date, as the command line's are.
    start = pd.Timestamp("2026-11-17T13:00:00Z")
    later = start + pd.Timedelta(days=14)  # wave 2's date: wave 1's answers are all back by then
    need = ["--need", "reference_call=8", "--need", "review=25", "--need", "case_study=3"]
    first = tmp_path / "wave1.csv"
    code, out = _cli(
        env, "plan", "--data", str(data), *need, "--waves", "3", "--as-of", start.isoformat(), "--out", str(first)
    )
    assert code == 0, out
    wave1 = pd.read_csv(first)
    plan_id = str(wave1["plan_id"].iloc[0])
    answers = _answers(wave1, start, seed=3)
    _append_to_asks_table(data, answers)
    code, out = _cli(
        env, "score", "--data", str(data), "--out", str(tmp_path / "scores.parquet"), "--as-of", later.isoformat()
    )
    assert code == 0, out
    shutil.copytree(home, tmp_path / "home-api")  # the service continues its own copy of the campaign

    second = tmp_path / "wave2.csv"
    code, out = _cli(
        env, "plan", "--continue", plan_id, "--data", str(data), "--as-of", later.isoformat(), "--out", str(second)
    )
    assert code == 0, out
    cli_wave = pd.read_csv(second)
    cli_summary = PlanStore(home / ".advocacy" / "plans").load(plan_id)[1]["summary"]

    server_env = trained_home.env(**{**env, "ADVOCACY_HOME": str(tmp_path / "home-api")})
    server = Server(env=server_env, log=tmp_path / "server.log")
    with server.running():
        reply = server.post("/plan", {"plan_id": plan_id, "as_of": later.isoformat()})
    assert reply.status_code == 200, reply.text
    api = reply.json()

    yeses = answers.groupby("ask_type")["outcome"].apply(lambda s: int((s == "accepted").sum())).to_dict()
    assert sum(yeses.values()) > 0
    for name in ("reference_call", "review", "case_study"):
        assert cli_summary[name]["yeses_so_far"] == api["summary"][name]["yeses_so_far"] == yeses.get(name, 0)
    api_wave = pd.DataFrame(api["asks"], columns=["ask_type", "customer_id"])
    columns = ["ask_type", "customer_id"]
    assert api["campaign"]["wave"] == 2 and set(cli_wave["wave"]) == {2} and len(cli_wave) > 0
    assert sorted(map(tuple, api_wave[columns].to_numpy())) == sorted(map(tuple, cli_wave[columns].to_numpy()))
