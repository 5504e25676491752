"""`advocacy train`: data -> both models -> held-out evaluation -> MLflow run -> registry -> gate."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd

from features.io import World
from models.bundle import Bundle
from models.pyfunc import BUNDLE_ARTIFACT, AdvocacyModel, load_bundle
from models.registry import ChampionRef
from storage.settings import Settings
from training import registry
from training.backtest import WINDOW_MONTHS, WINDOWS, backtest, backtest_metrics
from training.datasets import TrainingData, build_training_data
from training.evaluate import acceptance_everyone_metrics, evaluate_acceptance, evaluate_propensity, truth_metrics
from training.fit import Matrices, TrainConfig, fit_booster, fit_bundle
from training.gate import GateDecision, decide
from training.report import backtest_plot, calibration_plot, gain_plot, model_card, per_ask_type_plot, shap_beeswarm
from usecases.sources import Sources, describe_left_out

Progress = Callable[[str], None]
PIP_REQUIREMENTS = ["lightgbm==4.7.0", "scikit-learn==1.9.1", "pandas==3.1.1", "numpy==2.4.6", "mlflow==3.17.2"]


@dataclass
class TrainResult:
    run_id: str
    version: str
    promoted: bool
    gate: GateDecision
    metrics: dict[str, float] = field(default_factory=dict)
    bundle: Bundle | None = None
    baseline_name: str = "points rule"
    warnings: list[str] = field(default_factory=list)  # drift found in the held-out window, with figures


def gate(
    settings: Settings,
    metrics: dict[str, float],
    mats: dict[str, Matrices],
    prop: dict[str, np.ndarray],
    current: ChampionRef | None,
) -> tuple[GateDecision, dict[str, float]]:
    """`training.gate.decide` on the held-out propensity rows (`prop`: labels, the new model's and the
    points rule's scores), the champion re-scored on the same rows."""
    frame = mats["propensity"].frames["test"]
    champion = None
    if current is not None:
        try:
            champ = load_bundle(current.uri)
            champion = (current.version, champ.propensity.proba(champ.encoder.transform(frame), num_threads=2))
        except (ValueError, KeyError, OSError) as err:
            decision = GateDecision(True, f"promoted: champion v{current.version} cannot score this data ({err})")
            return decision, {}
    groups = frame["customer_id"].to_numpy()
    points = ("the points rule", prop["points"])
    return decide(settings, prop["y"], groups, prop["p"], metrics["propensity_ece"], points, champion)


def evaluate(
    data_dir: Path, world: World, data: TrainingData, bundle: Bundle, mats: dict[str, Matrices]
) -> tuple[dict[str, float], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Held-out metrics of both models (and, on a generated world, against its truth), with the
    propensity and acceptance test rows' labels and scores."""
    prop_metrics, prop = evaluate_propensity(bundle, mats["propensity"])
    acc_metrics, acc = evaluate_acceptance(bundle, mats["acceptance"])
    since = pd.Timestamp(data.fingerprint["acceptance_test_start"])
    metrics = {
        **prop_metrics,
        **acc_metrics,
        **truth_metrics(data_dir, mats["propensity"], prop, mats["acceptance"], acc),
        **acceptance_everyone_metrics(data_dir, world, bundle, since),
    }
    return metrics, prop, acc


def _log_plots(
    bundle: Bundle,
    mats: dict[str, Matrices],
    prop: dict[str, np.ndarray],
    acc: dict[str, np.ndarray],
    metrics: dict[str, float],
) -> None:
    import matplotlib.pyplot as plt

    figures = {
        "shap_beeswarm.png": shap_beeswarm(bundle, mats["propensity"].x["test"]),
        "calibration.png": calibration_plot({"propensity": (prop["y"], prop["p"]), "acceptance": (acc["y"], acc["p"])}),
        "gain.png": gain_plot(prop["y"], {"model": prop["p"], "points rule": prop["points"]}),
        "per_ask_type_auc.png": per_ask_type_plot(metrics),
    }
    if metrics.get("backtest_windows"):
        figures["backtest.png"] = backtest_plot(metrics)
    for name, fig in figures.items():
        mlflow.log_figure(fig, name)
        plt.close(fig)


def train(
    settings: Settings,
    data_dir: Path | None = None,
    *,
    experiment: str | None = None,
    config: TrainConfig | None = None,
    tune_trials: int = 0,
    trainer: Any = None,
    data: TrainingData | None = None,
    progress: Progress = lambda _: None,
) -> TrainResult:
    """Train both models, evaluate on the held-out window, log and register, then apply the gate."""
    data_dir = Path(data_dir or settings.resolved_data_dir())
    progress("reading data")
    loaded = Sources.from_settings(settings, data_dir).read()  # the asks posted to the service count too
    world = loaded.world
    progress("building point-in-time training sets")
    data = data or build_training_data(world, left_out=loaded.left_out, lapse_days=settings.commitment_lapse_days)
    for line in describe_left_out(data.fingerprint):
        progress(f"left out of training: {line}")
    registry.configure(settings, experiment)
    with mlflow.start_run() as run:
        if tune_trials:
            from training.tune import tune

            progress(f"tuning: {tune_trials} Optuna trials")
            config = tune(data, settings, tune_trials, config or TrainConfig())
        config = config or TrainConfig()
        progress("fitting and calibrating both models")
        bundle, mats = fit_bundle(world, data, config, trainer)
        progress("evaluating on the held-out window")
        metrics, prop, acc = evaluate(data_dir, world, data, bundle, mats)
        progress(f"rolling-origin backtest: up to {WINDOWS} windows of {WINDOW_MONTHS} months, each fitted afresh")
        metrics |= backtest_metrics(backtest(data.propensity, config, trainer or fit_booster))
        bundle.metrics = {k: v for k, v in metrics.items() if np.isfinite(v)}
        decision, gate_metrics = gate(settings, metrics, mats, prop, registry.champion(settings.model_name))
        metrics |= gate_metrics
        bundle.metrics |= gate_metrics

        progress("logging to MLflow")
        params = {f"propensity.{k}": v for k, v in asdict(config.propensity).items()}
        params |= {f"acceptance.{k}": v for k, v in asdict(config.acceptance).items()}
        params |= {
            "calibration": config.calibration,
            "refit": config.refit,
            "feature_version": bundle.feature_version,
            "rules_version": bundle.rules_version,
        }
        params |= {
            "propensity_trees": bundle.propensity.booster.num_trees(),
            "acceptance_trees": bundle.acceptance.booster.num_trees(),
        }
        mlflow.log_params(params)
        mlflow.log_params({f"data.{k}": v for k, v in data.fingerprint.items()})
        mlflow.log_metrics(bundle.metrics)
        _log_plots(bundle, mats, prop, acc, metrics)
        mlflow.log_text(model_card(metrics, data.fingerprint, decision.reason, params), "model_card.md")
        version = register(settings, bundle, decision)
        return TrainResult(run.info.run_id, version, decision.promote, decision, metrics, bundle)


def register(settings: Settings, bundle: Bundle, decision: GateDecision) -> str:
    """Log `bundle` as the active run's model, register it as a new version with the gate's reason,
    and move `@champion` to it if the gate promotes; returns the version."""
    with tempfile.TemporaryDirectory() as tmp:
        bundle_dir = bundle.save(Path(tmp) / BUNDLE_ARTIFACT)
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=AdvocacyModel(),
            artifacts={BUNDLE_ARTIFACT: str(bundle_dir)},
            registered_model_name=settings.model_name,
            pip_requirements=PIP_REQUIREMENTS,
        )
    version = str(info.registered_model_version)
    mlflow.set_tags({"gate": decision.reason, "model_version": version})
    mlflow.MlflowClient().set_model_version_tag(settings.model_name, version, "gate", decision.reason)
    if decision.promote:
        registry.promote(settings.model_name, version, decision.reason)
    bundle.model_version = version
    return version


def train_summary(metrics: dict[str, float]) -> pd.DataFrame:
    """The headline figures printed after training."""
    rows = [
        ("propensity ROC AUC", "propensity_roc_auc", "baseline_roc_auc"),
        ("propensity PR AUC", "propensity_pr_auc", "baseline_pr_auc"),
        ("champion tier precision", "propensity_champion_precision", "baseline_champion_precision"),
        ("champion tier recall", "propensity_champion_recall", "baseline_champion_recall"),
        ("advocate+ precision", "propensity_advocate_or_better_precision", "baseline_advocate_or_better_precision"),
        ("advocate+ recall", "propensity_advocate_or_better_recall", "baseline_advocate_or_better_recall"),
        ("lift, top 3%", "propensity_lift_top_champion", "baseline_lift_top_champion"),
        ("propensity ECE", "propensity_ece", None),
        ("acceptance ROC AUC", "acceptance_roc_auc", None),
        ("acceptance ECE", "acceptance_ece", None),
        ("truth AUC (propensity)", "truth_propensity_roc_auc", None),
        ("model AUC / truth AUC (propensity)", "propensity_auc_vs_truth", None),
        ("truth AUC (acceptance)", "truth_acceptance_roc_auc", None),
        ("model AUC / truth AUC (acceptance)", "acceptance_auc_vs_truth", None),
    ]
    return pd.DataFrame(
        [
            {"metric": label, "model": metrics.get(m), "points rule": metrics.get(b) if b else None}
            for label, m, b in rows
            if m in metrics
        ]
    )
