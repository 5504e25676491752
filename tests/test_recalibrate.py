"""`advocacy recalibrate`: new calibrators on the champion's own trees, through the gate (issue 17)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from scipy.special import expit, logit
from typer.testing import CliRunner

from advocacy.cli import app
from features.contracts import CONTRACTS
from features.io import read_world
from features.pointintime import acceptance_features
from models.bundle import ACCEPTANCE_CATEGORICAL_INDEX, Bundle, ask_rows_matrix
from models.pyfunc import load_bundle
from storage.asklog import AskLog
from storage.files import write_tables
from storage.plans import PlanStore
from storage.settings import Settings
from tests.conftest import SAMPLE, TrainedHome
from training import registry
from training.datasets import build_training_data
from training.fit import encode
from training.gate import GateDecision
from training.pipeline import register, train
from training.recalibrate import recalibrated
from usecases.sources import Sources

pytestmark = pytest.mark.slow


def _faded(out: Path) -> Path:
    """The sample with willingness fading: in the newest 45% of asks, half the yeses became noes."""
    world = read_world(SAMPLE)
    tables = world.as_dict()
    asks = tables["asks"].copy()
    newest = asks["asked_at"] >= asks["asked_at"].quantile(0.55)
    rng = np.random.default_rng(0)
    flip = newest & asks["outcome"].eq("accepted") & (rng.random(len(asks)) < 0.5)
    asks.loc[flip, "outcome"] = "declined"
    tables["asks"] = asks
    # A declined ask leaves no delivered activity behind.
    acts = tables["activities"]
    tables["activities"] = acts[~acts["ask_id"].isin(set(asks.loc[flip, "ask_id"]))].reset_index(drop=True)
    write_tables(tables, out)
    return out


def test_recalibration_fixes_faded_acceptance_without_touching_the_trees(tmp_path: Path) -> None:
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    home = tmp_path / "home"
    settings = Settings(home=home, data_dir=SAMPLE)
    env = {"ADVOCACY_HOME": str(home), "COLUMNS": "300", "MLFLOW_TRACKING_URI": settings.tracking_uri()}

    missing = CliRunner().invoke(app, ["recalibrate", "--data", str(SAMPLE)], env=env)
    assert missing.exit_code != 0 and "no @champion" in " ".join(missing.stderr.split())

    first = train(settings)
    assert first.promoted
    faded = _faded(tmp_path / "faded")
    result = CliRunner().invoke(app, ["recalibrate", "--data", str(faded)], env=env)
    assert result.exit_code == 0, result.output
    assert "promoted: recalibrated" in " ".join(result.output.split())

    registry.configure(settings)
    champion = registry.champion(settings.model_name)
    assert champion is not None and champion.version != first.version
    old, new = load_bundle(f"models:/{settings.model_name}/{first.version}"), load_bundle(champion.uri)
    for target in ("propensity", "acceptance"):  # the same trees, new calibrators
        assert getattr(new, target).booster.model_to_string() == getattr(old, target).booster.model_to_string()
    assert new.acceptance.calibrator != old.acceptance.calibrator
    assert len(new.acceptance.calibrator.offsets) == 9  # one per ask type

    # On the newest answered asks, the recalibrated promise is near what happened; the old one is not.
    from training.datasets import build_training_data
    from training.fit import encode

    data = build_training_data(read_world(faded))
    m = encode(data, new.encoder)["acceptance"]
    observed = m.y["test"].mean()
    assert abs(new.acceptance.proba(m.x["test"]).mean() - observed) < 0.03
    assert old.acceptance.proba(m.x["test"]).mean() - observed > 0.05

    # Recalibrating a model that is already calibrated on these rows gains nothing: refused, it stays.
    again = CliRunner().invoke(app, ["recalibrate", "--data", str(faded)], env=env)
    assert again.exit_code == 0, again.output
    assert "refused" in again.output and "stays" in " ".join(again.output.split())
    after = registry.champion(settings.model_name)
    assert after is not None and after.version == champion.version
    frame = pd.DataFrame(new.metrics, index=[0])
    assert {"gate_acceptance_ece_drop_ci_low", "gate_propensity_auc_change_ci_high"} <= set(frame.columns)


# ---- campaign answers weigh as the unbiased evidence they are (spec 5a) -------------------------------

CAMPAIGN_TYPES = ("review", "social_share", "referral")
CAMPAIGN_DATES = ("2026-01-12", "2026-03-02", "2026-05-18", "2026-07-06", "2026-08-17")
PER_TYPE = 25  # customers each campaign asks per type: 125 answers per type in all
HABIT_LIFT = 1.0  # log-odds by which the asks the champion learnt from were lifted by habits


def _run_campaigns(champion: Bundle, settings: Settings) -> None:
    """Five one-shot campaigns in the sample's newest windows, stored as plans and answered through
    the ask log with their plan_id. The champion learnt acceptance from asks the company chose
    itself, lifted by habits no feature records; a campaign asks whom its plan picked (here: at
    random among customers live then), so its answers come without that lift: each is a yes with
    the champion's promise less `HABIT_LIFT` log-odds."""
    world = read_world(SAMPLE)
    customers = world.customers
    rng = np.random.default_rng(0)
    plans = PlanStore(settings.plans_path())
    log = AskLog(settings.ask_log_path(), CONTRACTS["asks"])
    for day in CAMPAIGN_DATES:
        at = pd.Timestamp(day, tz="UTC")
        live = customers[
            (customers["contract_start"] < at - pd.Timedelta(days=90))
            & (customers["churned_at"].isna() | (customers["churned_at"] > at + pd.Timedelta(days=30)))
        ]
        picked = rng.choice(live["customer_id"].to_numpy(), PER_TYPE * len(CAMPAIGN_TYPES), replace=False)
        asks = pd.DataFrame(
            {
                "customer_id": picked,
                "ask_type": np.repeat(CAMPAIGN_TYPES, PER_TYPE),
                "asked_at": at + pd.Timedelta(days=1),
            }
        )
        matrix = ask_rows_matrix(champion.encoder.transform(acceptance_features(world, asks)), list(asks["ask_type"]))
        promised = champion.acceptance.proba(matrix)
        yes = rng.random(len(asks)) < expit(logit(promised) - HABIT_LIFT)
        plan_id = uuid.uuid4().hex
        rank = asks.groupby("ask_type").cumcount() + 1
        rows = asks.assign(plan_id=plan_id, wave=1, rank=rank, acceptance=promised)
        need = dict.fromkeys(CAMPAIGN_TYPES, 5)
        record = {"as_of": at.isoformat(), "need": need, "confidence": 0.9, "filters": {}, "summary": {}}
        plans.save(plan_id, rows, record)
        log.record(
            asks.assign(
                ask_id=[f"{plan_id[:8]}-{i}" for i in range(len(asks))],
                outcome=np.where(yes, "accepted", "declined"),
                responded_at=asks["asked_at"] + pd.Timedelta(days=3),
                plan_id=plan_id,
            )
        )


def test_recalibration_weighs_campaign_answers_as_unbiased_evidence(trained_home: TrainedHome, tmp_path: Path) -> None:
    """Measured on the 375 campaign answers of the windows recalibration fits on: the champion
    promised them 0.32, they said yes 0.14 of the time. Weighed as every other ask, the new
    calibrators move a quarter of the way (0.28) and the gate refuses them; weighed as unbiased
    evidence (each about 5 to 7 off-plan asks), they move two thirds of the way (0.20) and the gate,
    weighing them alike, promotes them. The command says how many campaign answers of each type it
    used, and the run logs them."""
    registry.configure(trained_home.settings)
    champion = load_bundle(f"models:/{trained_home.settings.model_name}/{trained_home.version}")
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    home = tmp_path / "home"
    settings = Settings(home=home, data_dir=SAMPLE, mlflow_tracking_uri=None)
    registry.configure(settings)  # the session's champion, copied: this test moves its own @champion only
    with mlflow.start_run(run_name="the session's champion"):
        register(settings, champion, GateDecision(True, "copied for this test"))
    _run_campaigns(champion, settings)

    env = {"ADVOCACY_HOME": str(home), "COLUMNS": "300", "MLFLOW_TRACKING_URI": settings.tracking_uri()}
    result = CliRunner().invoke(app, ["recalibrate", "--data", str(SAMPLE)], env=env)
    assert result.exit_code == 0, result.output
    out = " ".join(result.output.split())
    assert "Campaign answers weighed as unbiased evidence (ADVOCACY_HABIT_BIAS=0.25)" in out
    for name in CAMPAIGN_TYPES:
        assert f"│ {name} │ 125 │" in out
    assert "promoted: recalibrated" in out

    registry.configure(settings)
    weighed = registry.champion(settings.model_name)
    assert weighed is not None
    run = MlflowClient().get_run(MlflowClient().get_model_version(settings.model_name, weighed.version).run_id)
    assert run.data.params["habit_bias"] == "0.25"
    assert run.data.metrics["campaign_answers"] == 375
    assert run.data.metrics["campaign_answers_review"] == 125 and run.data.metrics["campaign_answers_speaking"] == 0
    assert 4 < run.data.metrics["campaign_answer_weight_review"] < 10

    # The same windows, every ask weighed alike (what recalibration did before).
    sources = Sources.from_settings(settings)
    read = sources.read()
    m = encode(build_training_data(read.world), champion.encoder)["acceptance"]
    _, alike = recalibrated(champion.acceptance, m, ACCEPTANCE_CATEGORICAL_INDEX)
    campaign = sources.campaign_answers(read.world.asks, read.plan_links)
    x = np.vstack([m.x["valid"], m.x["test"]])
    on = np.concatenate([m.frames[s]["ask_id"].astype("str").isin(campaign).to_numpy() for s in ("valid", "test")])
    assert on.sum() == 375
    said_yes = np.concatenate([m.y["valid"], m.y["test"]])[on].mean()
    promised = champion.acceptance.proba(x[on]).mean()
    moved = {
        "alike": (promised - alike.proba(x[on]).mean()) / (promised - said_yes),
        "weighed": (promised - load_bundle(weighed.uri).acceptance.proba(x[on]).mean()) / (promised - said_yes),
    }
    assert promised - said_yes > 0.1, (promised, said_yes)
    assert moved["weighed"] > 0.5 and moved["alike"] < 0.35, moved
