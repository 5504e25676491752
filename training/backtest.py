"""Rolling-origin backtest of the propensity model: several held-out windows, not one.

The newest `WINDOW_MONTHS` of monthly snapshots are window 1, the three before them window 2, and
so on. For each window the model is fitted from scratch on what came before it: the snapshots up to
the window are split as training itself splits them (`features.labels.monthly_split`: validation
just before the window, training before that, rows whose 90-day label reaches into a later part
purged), early-stopped and calibrated on validation, and scored on the window beside the points
rule on the same rows. A model that only wins on one lucky window shows it here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from features.baseline import rule_points
from features.labels import HORIZON, monthly_split
from features.spec import CATEGORICAL_FEATURES, FEATURE_NAMES
from models.encoding import FeatureEncoder
from training.fit import FitInputs, TrainConfig, fit_booster, fit_calibrated, propensity_monotone

WINDOW_MONTHS = 3
WINDOWS = 4


@dataclass(frozen=True)
class Window:
    number: int  # 1 = the newest
    test_start: pd.Timestamp
    rows: int
    model_auc: float
    baseline_auc: float


def _auc(y: np.ndarray, s: np.ndarray) -> float:
    return float(roc_auc_score(y, s)) if len(np.unique(y)) == 2 else float("nan")


def _window(
    frame: pd.DataFrame, number: int, config: TrainConfig, trainer: Callable[..., lgb.Booster]
) -> Window | None:
    """Fit on the snapshots before window `number` and score it; None if the history is too short."""
    months = pd.DatetimeIndex(sorted(frame["as_of"].unique()))
    end = len(months) - WINDOW_MONTHS * (number - 1)
    upto = frame[frame["as_of"] < months[end]] if end < len(months) else frame
    try:
        split = monthly_split(upto["as_of"], WINDOW_MONTHS, WINDOW_MONTHS)
    except ValueError:
        return None
    parts = split.assign(upto["as_of"], HORIZON).to_numpy()
    train, valid, test = (upto[parts == name] for name in ("train", "valid", "test"))
    if min(len(train), len(valid), len(test)) == 0 or train["label"].nunique() < 2 or valid["label"].nunique() < 2:
        return None
    encoder = FeatureEncoder.fit(train[list(FEATURE_NAMES)], FEATURE_NAMES, CATEGORICAL_FEATURES)
    x = {name: encoder.transform(part) for name, part in (("train", train), ("valid", valid), ("test", test))}
    inputs = FitInputs(
        x["train"],
        train["label"].to_numpy(),
        x["valid"],
        valid["label"].to_numpy(),
        encoder.categorical_indices,
        propensity_monotone(),
    )
    booster, calibrator = fit_calibrated(inputs, config.propensity, config.calibration, trainer)
    p = calibrator(np.asarray(booster.predict(x["test"], raw_score=True)))
    y = test["label"].to_numpy()
    points = np.asarray(rule_points(test).sum(axis=1), dtype=float)
    return Window(number, pd.Timestamp(split.test_start), len(test), _auc(y, p), _auc(y, points))


def backtest(
    propensity: pd.DataFrame,
    config: TrainConfig,
    trainer: Callable[..., lgb.Booster] = fit_booster,
    windows: int = WINDOWS,
) -> list[Window]:
    """Up to `windows` rolling-origin windows of `propensity` (the monthly snapshots with labels), newest first."""
    done = []
    for number in range(1, windows + 1):
        window = _window(propensity, number, config, trainer)
        if window is None:
            break
        done.append(window)
    return done


def backtest_metrics(windows: list[Window]) -> dict[str, float]:
    """The metrics every run logs: `backtest_windows`, `backtest_<i>_model_roc_auc`, `backtest_<i>_baseline_roc_auc`."""
    out: dict[str, float] = {"backtest_windows": float(len(windows))}
    for w in windows:
        out[f"backtest_{w.number}_model_roc_auc"] = w.model_auc
        out[f"backtest_{w.number}_baseline_roc_auc"] = w.baseline_auc
    return out
