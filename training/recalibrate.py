"""`advocacy recalibrate`: new calibrators for the champion's own trees, fitted on the newest
answered asks and labelled snapshots (the asks posted to `POST /asks` included), registered as a
new version through the recalibration gate. The trees are not refitted.

A world that drifts moves the probabilities before it moves the ranking: acceptance fades, a
season slumps. Recalibrating is cheap (no boosting) and can run more often than `advocacy train`.

The procedure is judged the way it will be used: calibrators fitted on the validation window are
scored on the newest (test) window beside the champion (`training.gate.decide_recalibration`).
The version registered then carries calibrators fitted on both windows, the newest rows there are.

Campaign answers (spec 5a: asks recorded with a stored plan's `plan_id` that count for it, by the
program report's rule, `Sources.campaign_answers`) were asked because a plan chose them from the
features alone; every other ask was chosen by the company's habits, which no table records and
which lift its acceptance beyond what the features show. So the acceptance calibrators weigh each
campaign answer above an off-plan ask, by type, by what `ADVOCACY_HABIT_BIAS` says that lift costs
the off-plan asks (`models.calibration.campaign_weights`), and the gate judges them with the same
weights. The run logs, and the command shows, the campaign answers used per type and their weight.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import mlflow
import numpy as np

from features.catalog import ASK_TYPE_NAMES
from models.bundle import ACCEPTANCE_CATEGORICAL_INDEX, TargetModel
from models.calibration import campaign_weights
from models.pyfunc import load_bundle
from storage.settings import Settings
from training import registry
from training.datasets import build_training_data
from training.fit import Matrices, calibrate, encode, fit_tiers
from training.gate import HeldOut, decide_recalibration
from training.pipeline import TrainResult, register
from usecases.sources import Sources, describe_left_out

GROUP_COLUMN = {"propensity": None, "acceptance": ACCEPTANCE_CATEGORICAL_INDEX}
SPLITS = ("valid", "test")  # the windows recalibration fits and checks on


@dataclass(frozen=True)
class CampaignEvidence:
    """The campaign answers the acceptance calibrators were fitted on (both windows), per ask type,
    and what each counted for beside an off-plan ask's 1."""

    habit_bias: float
    answers: dict[str, int]
    weight: dict[str, float]

    @property
    def total(self) -> int:
        return sum(self.answers.values())

    def metrics(self) -> dict[str, float]:
        """For MLflow and the bundle: the total, and per type the answers and their weight."""
        out = {"campaign_answers": float(self.total)}
        for name in ASK_TYPE_NAMES:
            out[f"campaign_answers_{name}"] = float(self.answers.get(name, 0))
            out[f"campaign_answer_weight_{name}"] = float(self.weight.get(name, 1.0))
        return out


@dataclass
class RecalibrationResult(TrainResult):
    campaign: CampaignEvidence = field(default_factory=lambda: CampaignEvidence(0.0, {}, {}))


def answer_weights(x: np.ndarray, y: np.ndarray, on_plan: np.ndarray, habit_bias: float) -> np.ndarray | None:
    """Per acceptance row, what it counts for in calibration: a campaign answer its type's
    `campaign_weights`, an off-plan ask 1. None without campaign answers: the unweighted fit, as before."""
    if not on_plan.any():
        return None
    types = x[:, ACCEPTANCE_CATEGORICAL_INDEX].astype(np.int64)
    per_type = campaign_weights(types, on_plan, y, len(ASK_TYPE_NAMES), habit_bias)
    return np.asarray(np.where(on_plan, per_type[types], 1.0))


def campaign_evidence(m: Matrices, on_plan: dict[str, np.ndarray], habit_bias: float) -> CampaignEvidence:
    """Per ask type, the campaign answers among the acceptance rows of both windows and their weight."""
    x = np.vstack([m.x[s] for s in SPLITS])
    flags = np.concatenate([on_plan[s] for s in SPLITS])
    types = x[:, ACCEPTANCE_CATEGORICAL_INDEX].astype(np.int64)
    per_type = campaign_weights(types, flags, np.concatenate([m.y[s] for s in SPLITS]), len(ASK_TYPE_NAMES), habit_bias)
    counts = np.bincount(types[flags], minlength=len(ASK_TYPE_NAMES))
    answers = {name: int(counts[t]) for t, name in enumerate(ASK_TYPE_NAMES) if counts[t]}
    weight = {name: float(per_type[ASK_TYPE_NAMES.index(name)]) for name in answers}
    return CampaignEvidence(habit_bias, answers, weight)


def describe_campaign(evidence: CampaignEvidence) -> str:
    if not evidence.total:
        return "no campaign answers in the windows: every answered ask weighs the same"
    each = ", ".join(f"{name} {n:,} x{evidence.weight[name]:.1f}" for name, n in evidence.answers.items())
    return f"{evidence.total:,} campaign answers weighed as unbiased evidence ({each})"


def recalibrate(
    settings: Settings,
    data_dir: Path | None = None,
    *,
    experiment: str | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> RecalibrationResult:
    """Recalibrate the `@champion` on the newest data and register the result through the gate."""
    data_dir = Path(data_dir or settings.resolved_data_dir())
    registry.configure(settings, experiment)
    current = registry.champion(settings.model_name)
    if current is None:
        raise ValueError(f"no @champion of {settings.model_name} to recalibrate: run `advocacy train` first")
    champion = load_bundle(current.uri, current.version)
    progress(f"recalibrating champion v{current.version} (its trees stay as they are)")
    sources = Sources.from_settings(settings, data_dir)
    loaded = sources.read()
    data = build_training_data(loaded.world, left_out=loaded.left_out, lapse_days=champion.lapse_days)
    for line in describe_left_out(data.fingerprint):
        progress(f"left out: {line}")
    mats = encode(data, champion.encoder)
    campaign = sources.campaign_answers(loaded.world.asks, loaded.plan_links)
    frames = mats["acceptance"].frames
    on_plan = {s: frames[s]["ask_id"].astype("str").isin(campaign).to_numpy() for s in SPLITS}
    evidence = campaign_evidence(mats["acceptance"], on_plan, settings.habit_bias)
    progress(f"acceptance: {describe_campaign(evidence)}")
    held, fitted = [], {}
    for name, group_column in GROUP_COLUMN.items():
        model: TargetModel = getattr(champion, name)
        flags = on_plan if name == "acceptance" else None
        check, fitted[name] = recalibrated(model, mats[name], group_column, flags, settings.habit_bias)
        held.append(replace(check, name=name))
        progress(f"{name}: calibrated on {len(mats[name].y['valid']):,} rows, checked on {len(check.y):,} newest")
    decision, metrics = decide_recalibration(settings, held, current.version)
    metrics |= evidence.metrics()
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
        mlflow.log_params({"habit_bias": settings.habit_bias})
        mlflow.log_metrics(metrics)
        version = register(settings, bundle, decision)
    return RecalibrationResult(run.info.run_id, version, decision.promote, decision, metrics, bundle, campaign=evidence)


def recalibrated(
    model: TargetModel,
    m: Matrices,
    group_column: int | None,
    on_plan: dict[str, np.ndarray] | None = None,
    habit_bias: float = 0.0,
) -> tuple[HeldOut, TargetModel]:
    """The check (calibrated on the validation window, scored on the test window beside the
    current calibrator) and the model to register (calibrated on both windows). With `on_plan`
    (per window, which rows are campaign answers), each fit and the check weigh the rows by
    `answer_weights`, counted within the rows that fit or check."""
    method = model.calibrator.method

    def weigh(x: np.ndarray, y: np.ndarray, flags: np.ndarray | None) -> np.ndarray | None:
        return None if flags is None else answer_weights(x, y, flags, habit_bias)

    flags = {s: None if on_plan is None else on_plan[s] for s in SPLITS}
    raw = {split: model.raw_score(m.x[split], num_threads=2) for split in SPLITS}
    weight = {s: weigh(m.x[s], m.y[s], flags[s]) for s in SPLITS}
    trial_calibrator = calibrate(raw["valid"], m.x["valid"], m.y["valid"], method, group_column, weight["valid"])
    trial = TargetModel(model.booster, trial_calibrator, group_column)
    test, customers = m.x["test"], m.frames["test"]["customer_id"].to_numpy()
    check = HeldOut("", m.y["test"], customers, model.proba(test, 2), trial.proba(test, 2), weight["test"])
    x_all = np.vstack([m.x["valid"], test])
    y_all = np.concatenate([m.y["valid"], m.y["test"]])
    raw_all = np.concatenate([raw["valid"], raw["test"]])
    flags_all = None if on_plan is None else np.concatenate([on_plan[s] for s in SPLITS])
    final = calibrate(raw_all, x_all, y_all, method, group_column, weigh(x_all, y_all, flags_all))
    return check, TargetModel(model.booster, final, group_column)
