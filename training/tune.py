"""`advocacy train --tune N`: an Optuna study (TPE, pruning) over the propensity booster's settings.

The study lives in SQLite under the project's state directory and is named after the data, so an
interrupted study resumes where it stopped. Each trial is logged to MLflow as a child run of the
training run; the final model is trained on the best settings found.
"""

from __future__ import annotations

from dataclasses import replace

import mlflow
import numpy as np
import optuna
from optuna_integration import LightGBMPruningCallback
from sklearn.metrics import log_loss, roc_auc_score

from storage.settings import Settings
from training.datasets import TrainingData
from training.fit import FitInputs, TrainConfig, encode, fit_booster, fit_encoder, propensity_monotone


def study_storage(settings: Settings) -> str:
    settings.state_dir().mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(settings.state_dir() / 'optuna.db').resolve()}"


def tune(data: TrainingData, settings: Settings, n_trials: int, base: TrainConfig, seed: int = 0) -> TrainConfig:
    """Run (or resume) the study until it holds `n_trials` finished trials; return the best config."""
    encoder = fit_encoder(data)
    m = encode(data, encoder)["propensity"]
    categorical = encoder.categorical_indices
    monotone = propensity_monotone()

    def objective(trial: optuna.Trial) -> float:
        params = replace(
            base.propensity,
            learning_rate=trial.suggest_float("learning_rate", 0.02, 0.2, log=True),
            num_leaves=trial.suggest_int("num_leaves", 7, 63, log=True),
            min_data_in_leaf=trial.suggest_int("min_data_in_leaf", 20, 400, log=True),
            feature_fraction=trial.suggest_float("feature_fraction", 0.5, 1.0),
            lambda_l2=trial.suggest_float("lambda_l2", 1e-3, 30.0, log=True),
        )
        pruning = LightGBMPruningCallback(trial, "binary_logloss", valid_name="valid")
        inputs = FitInputs(m.x["train"], m.y["train"], m.x["valid"], m.y["valid"], categorical, monotone)
        booster = fit_booster(inputs, params, [pruning])
        p = np.asarray(booster.predict(m.x["valid"]))
        loss = float(log_loss(m.y["valid"], p, labels=[0, 1]))
        with mlflow.start_run(run_name=f"trial-{trial.number}", nested=True):
            mlflow.log_params(trial.params)
            mlflow.log_metrics(
                {
                    "valid_log_loss": loss,
                    "valid_roc_auc": float(roc_auc_score(m.y["valid"], p)),
                    "trees": booster.num_trees(),
                }
            )
        # Log loss, the metric the pruner watches, so pruning and selection pull the same way.
        return loss

    study = optuna.create_study(
        study_name=f"propensity-{data.fingerprint['data_hash']}",
        storage=study_storage(settings),
        direction="minimize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_warmup_steps=20),
        load_if_exists=True,
    )
    finished = [
        t for t in study.trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    ]
    remaining = max(n_trials - len(finished), 0)
    if remaining:
        study.optimize(objective, n_trials=remaining, gc_after_trial=True)
    best = study.best_trial.params
    mlflow.log_params({f"tuned.{k}": v for k, v in best.items()} | {"tuned.trials": len(study.trials)})
    mlflow.log_metric("tuned_valid_log_loss", study.best_value)
    return replace(base, propensity=replace(base.propensity, **best))
