"""`advocacy recalibrate`: new calibrators for the champion's own trees, fitted on the newest
answered asks and labelled snapshots (the asks posted to `POST /asks` included), registered as a
new version through the recalibration gate. The trees are not refitted.

A world that drifts moves the probabilities before it moves the ranking: acceptance fades, a
season slumps. Recalibrating is cheap (no boosting) and can run more often than `advocacy train`.

The procedure is judged the way it will be used: calibrators fitted on the validation window are
scored on the newest (test) window beside the champion (`training.gate.decide_recalibration`).
The version registered then carries calibrators fitted on both windows, the newest rows there are.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import mlflow
import numpy as np

from models.bundle import ACCEPTANCE_CATEGORICAL_INDEX, TargetModel
from models.pyfunc import load_bundle
from storage.settings import Settings
from training import registry
from training.datasets import build_training_data
from training.fit import Matrices, calibrate, encode, fit_tiers
from training.gate import HeldOut, decide_recalibration
from training.pipeline import TrainResult, register
from usecases.sources import Sources, describe_left_out

GROUP_COLUMN = {"propensity": None, "acceptance": ACCEPTANCE_CATEGORICAL_INDEX}


def recalibrate(
    settings: Settings,
    data_dir: Path | None = None,
    *,
    experiment: str | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> TrainResult:
    """Recalibrate the `@champion` on the newest data and register the result through the gate."""
    data_dir = Path(data_dir or settings.resolved_data_dir())
    registry.configure(settings, experiment)
    current = registry.champion(settings.model_name)
    if current is None:
        raise ValueError(f"no @champion of {settings.model_name} to recalibrate: run `advocacy train` first")
    champion = load_bundle(current.uri, current.version)
    progress(f"recalibrating champion v{current.version} (its trees stay as they are)")
    loaded = Sources.from_settings(settings, data_dir).read()
    data = build_training_data(loaded.world, left_out=loaded.left_out, lapse_days=champion.lapse_days)
    for line in describe_left_out(data.fingerprint):
        progress(f"left out: {line}")
    mats = encode(data, champion.encoder)
    held, fitted = [], {}
    for name, group_column in GROUP_COLUMN.items():
        model: TargetModel = getattr(champion, name)
        check, fitted[name] = recalibrated(model, mats[name], group_column)
        held.append(replace(check, name=name))
        progress(f"{name}: calibrated on {len(mats[name].y['valid']):,} rows, checked on {len(check.y):,} newest")
    decision, metrics = decide_recalibration(settings, held, current.version)
    bundle = replace(
        champion,
        propensity=fitted["propensity"],
        acceptance=fitted["acceptance"],
        tiers=fit_tiers(loaded.world, champion.encoder, fitted["propensity"], champion.lapse_days),
        metrics={**champion.metrics, **metrics},
        trained_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    with mlflow.start_run(run_name=f"recalibrate v{current.version}") as run:
        mlflow.log_params({"recalibrated_from": current.version, "calibration": champion.propensity.calibrator.method})
        mlflow.log_params({f"data.{k}": v for k, v in data.fingerprint.items()})
        mlflow.log_metrics(metrics)
        version = register(settings, bundle, decision)
    return TrainResult(run.info.run_id, version, decision.promote, decision, metrics, bundle)


def recalibrated(model: TargetModel, m: Matrices, group_column: int | None) -> tuple[HeldOut, TargetModel]:
    """The check (calibrated on the validation window, scored on the test window beside the
    current calibrator) and the model to register (calibrated on both windows)."""
    method = model.calibrator.method
    raw = {split: model.raw_score(m.x[split], num_threads=2) for split in ("valid", "test")}
    trial_calibrator = calibrate(raw["valid"], m.x["valid"], m.y["valid"], method, group_column)
    trial = TargetModel(model.booster, trial_calibrator, group_column)
    test, customers = m.x["test"], m.frames["test"]["customer_id"].to_numpy()
    check = HeldOut("", m.y["test"], customers, model.proba(test, 2), trial.proba(test, 2))
    x_all = np.vstack([m.x["valid"], test])
    y_all = np.concatenate([m.y["valid"], m.y["test"]])
    raw_all = np.concatenate([raw["valid"], raw["test"]])
    return check, TargetModel(model.booster, calibrate(raw_all, x_all, y_all, method, group_column), group_column)
