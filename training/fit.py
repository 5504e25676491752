"""Fitting both LightGBM models, calibrating them on validation, and assembling the bundle."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from features.catalog import ASK_TYPE_NAMES
from features.io import World
from features.labels import observed_until
from features.pointintime import active_points, build_features
from features.spec import CATEGORICAL_FEATURES, FEATURE_NAMES, FEATURES
from models.bundle import ACCEPTANCE_CATEGORICAL_INDEX, Bundle, TargetModel, ask_rows_matrix
from models.calibration import Calibrator, Method
from models.drift import reference_profile
from models.encoding import FeatureEncoder
from models.tiers import Tiers, is_committed
from training.datasets import TrainingData

# Domain knowledge as constraints: more of these can only make accepting an ask more (+1) or less (-1) likely.
ACCEPTANCE_MONOTONE: dict[str, int] = {
    "days_since_last_ask": 1,
    "asks_90d": -1,
    "decline_streak": -1,
    "nps_last": 1,
    "adoption": 1,
}


# "advanced" constrains less but can break its own constraints (LightGBM issues #5358 and #6155,
# open): on the sample, an early-stopped booster's propensity fell as adoption rose.
MONOTONE_METHOD = "intermediate"


@dataclass(frozen=True)
class BoosterParams:
    """LightGBM settings shared by both models (Optuna tunes a subset)."""

    learning_rate: float = 0.05
    num_leaves: int = 15
    min_data_in_leaf: int = 100
    feature_fraction: float = 0.8
    bagging_fraction: float = 0.8
    bagging_freq: int = 1
    lambda_l2: float = 1.0
    cat_smooth: float = 10.0
    max_rounds: int = 2000
    early_stopping_rounds: int = 100
    seed: int = 0
    num_threads: int = 2

    def lightgbm(self) -> dict[str, Any]:
        params = asdict(self)
        for key in ("max_rounds", "early_stopping_rounds"):
            params.pop(key)
        return {
            **params,
            "objective": "binary",
            "metric": "binary_logloss",
            "verbosity": -1,
            "deterministic": True,
            "force_row_wise": True,
        }


@dataclass(frozen=True)
class TrainConfig:
    # Shallow trees: on the generated worlds (10k customers) they beat deeper ones on the held-out window.
    propensity: BoosterParams = field(default_factory=lambda: BoosterParams(num_leaves=7))
    acceptance: BoosterParams = field(default_factory=lambda: BoosterParams(num_leaves=4, learning_rate=0.03))
    calibration: Method = "platt"
    # After early stopping picks the number of trees, fit again on train + validation: more rows, and
    # the newest before the held-out window (+0.002 held-out AUC for propensity and acceptance on
    # 10k generated worlds). Calibrators are fitted on rows their booster did not see: the refit
    # booster's on cross-fitted validation scores (`crossfit_scores`), since calibrating it with the
    # first fit's calibrator left acceptance ECE 0.027-0.037 against 0.021-0.025 without the refit.
    refit: bool = True


def propensity_monotone() -> list[int]:
    return [f.monotone for f in FEATURES]


def acceptance_monotone() -> list[int]:
    return [ACCEPTANCE_MONOTONE.get(name, 0) for name in FEATURE_NAMES] + [0, -1]  # ask_type, effort


@dataclass(frozen=True)
class FitInputs:
    """What one booster is fitted on: encoded rows and labels to train and validate on, and the
    columns' roles (categorical positions, monotone directions)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_valid: np.ndarray
    y_valid: np.ndarray
    categorical: list[int]
    monotone: list[int]


def fit_booster(
    data: FitInputs, params: BoosterParams, callbacks: list[Any] | None = None, rounds: int | None = None
) -> lgb.Booster:
    """Train with early stopping on the validation window; keep the best iteration only.

    With `rounds`, fit exactly that many trees and ignore the validation rows (the refit).
    """
    lgb_params = {
        **params.lightgbm(),
        "monotone_constraints": data.monotone,
        "monotone_constraints_method": MONOTONE_METHOD,
    }
    train = lgb.Dataset(data.x_train, data.y_train, categorical_feature=data.categorical, free_raw_data=False)
    if rounds is not None:
        return lgb.train(lgb_params, train, num_boost_round=rounds, callbacks=callbacks)
    valid = lgb.Dataset(data.x_valid, data.y_valid, categorical_feature=data.categorical, reference=train)
    booster = lgb.train(
        lgb_params,
        train,
        num_boost_round=params.max_rounds,
        valid_sets=[valid],
        valid_names=["valid"],
        callbacks=[lgb.early_stopping(params.early_stopping_rounds, verbose=False), *(callbacks or [])],
    )
    best = booster.best_iteration or booster.current_iteration()
    return lgb.Booster(model_str=booster.model_to_string(num_iteration=best))


def fit_calibrated(
    inputs: FitInputs,
    params: BoosterParams,
    method: Method = "platt",
    trainer: Callable[..., lgb.Booster] = fit_booster,
    group_column: int | None = None,
) -> tuple[lgb.Booster, Calibrator]:
    """A booster early-stopped on the validation rows, and the calibrator of its raw scores there
    (with one shrunk offset per code of `group_column`, e.g. per ask type)."""
    booster = trainer(inputs, params)
    raw_valid = np.asarray(booster.predict(inputs.x_valid, raw_score=True))
    return booster, calibrate(raw_valid, inputs.x_valid, inputs.y_valid, method, group_column)


def calibrate(
    raw: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    method: Method = "platt",
    group_column: int | None = None,
    weight: np.ndarray | None = None,
) -> Calibrator:
    """The calibrator of raw scores `raw` of rows `x` against `y`; per ask type when `group_column` is
    given; each row counting `weight` times when given (`models.calibration.campaign_weights`)."""
    if group_column is None:
        return Calibrator.fit(raw, y, method, weight=weight)
    groups = x[:, group_column].astype(np.int64)
    return Calibrator.fit(raw, y, method, groups, len(ASK_TYPE_NAMES), weight=weight)


def crossfit_scores(
    inputs: FitInputs, params: BoosterParams, rounds: int, trainer: Callable[..., lgb.Booster] = fit_booster
) -> np.ndarray:
    """Raw validation scores for calibrating a booster refitted on train + validation: each half
    of the validation rows scored by a booster (of `rounds` trees) fitted on train and the other half."""
    half = np.arange(len(inputs.y_valid)) < len(inputs.y_valid) // 2
    raw = np.empty(len(inputs.y_valid))
    for held in (half, ~half):
        x = np.vstack([inputs.x_train, inputs.x_valid[~held]])
        y = np.concatenate([inputs.y_train, inputs.y_valid[~held]])
        fold = trainer(replace(inputs, x_train=x, y_train=y), params, rounds=rounds)
        raw[held] = np.asarray(fold.predict(inputs.x_valid[held], raw_score=True))
    return raw


@dataclass
class Matrices:
    """Encoded inputs and labels of one target, by split."""

    x: dict[str, np.ndarray]
    y: dict[str, np.ndarray]
    frames: dict[str, pd.DataFrame]


def encode(data: TrainingData, encoder: FeatureEncoder) -> dict[str, Matrices]:
    out: dict[str, Matrices] = {}
    for target in ("propensity", "acceptance"):
        frames = {s: data.part(target, s) for s in ("train", "valid", "test")}
        xs: dict[str, np.ndarray] = {}
        for split, frame in frames.items():
            x = encoder.transform(frame)
            xs[split] = ask_rows_matrix(x, list(frame["ask_type"])) if target == "acceptance" else x
        out[target] = Matrices(xs, {s: f["label"].to_numpy() for s, f in frames.items()}, frames)
    return out


def fit_encoder(data: TrainingData) -> FeatureEncoder:
    both = pd.concat(
        [data.part("propensity", "train")[list(FEATURE_NAMES)], data.part("acceptance", "train")[list(FEATURE_NAMES)]]
    )
    return FeatureEncoder.fit(both, FEATURE_NAMES, CATEGORICAL_FEATURES)


def fit_tiers(world: World, encoder: FeatureEncoder, propensity: TargetModel, lapse_days: int) -> Tiers:
    """Tier cut-offs on the population the product will tier: every active customer now who is not
    committed pipeline (spec section 5: committed customers get the tier `committed` instead)."""
    current = build_features(world, active_points(world, observed_until(world)), lapse_days)
    uncommitted = current[~is_committed(current["accepted_not_delivered"])]
    return Tiers.fit(propensity.proba(encoder.transform(uncommitted), num_threads=2))


def fit_bundle(
    world: World, data: TrainingData, config: TrainConfig, engine: Any = None
) -> tuple[Bundle, dict[str, Matrices]]:
    """Fit, calibrate and assemble the bundle; `engine` (a callable like `fit_booster`) swaps the trainer."""
    trainer = engine or fit_booster
    encoder = fit_encoder(data)
    mats = encode(data, encoder)
    cat_prop = encoder.categorical_indices
    cat_acc = [*cat_prop, ACCEPTANCE_CATEGORICAL_INDEX]
    targets: dict[str, TargetModel] = {}
    for target, categorical, monotone, params in (
        ("propensity", cat_prop, propensity_monotone(), config.propensity),
        ("acceptance", cat_acc, acceptance_monotone(), config.acceptance),
    ):
        m = mats[target]
        inputs = FitInputs(m.x["train"], m.y["train"], m.x["valid"], m.y["valid"], categorical, monotone)
        group_column = ACCEPTANCE_CATEGORICAL_INDEX if target == "acceptance" else None
        booster, calibrator = fit_calibrated(inputs, params, config.calibration, trainer, group_column)
        if config.refit:
            rounds = booster.current_iteration()
            raw = crossfit_scores(inputs, params, rounds, trainer)
            calibrator = calibrate(raw, inputs.x_valid, inputs.y_valid, config.calibration, group_column)
            x_all = np.vstack([m.x["train"], m.x["valid"]])
            y_all = np.concatenate([m.y["train"], m.y["valid"]])
            booster = trainer(replace(inputs, x_train=x_all, y_train=y_all), params, rounds=rounds)
        targets[target] = TargetModel(booster, calibrator, group_column)

    train_scores = targets["propensity"].proba(mats["propensity"].x["train"], num_threads=2)
    bundle = Bundle(
        encoder=encoder,
        propensity=targets["propensity"],
        acceptance=targets["acceptance"],
        tiers=fit_tiers(world, encoder, targets["propensity"], data.lapse_days),
        lapse_days=data.lapse_days,
        drift_reference=reference_profile(mats["propensity"].frames["train"], train_scores),
        trained_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    return bundle, mats
