"""`advocacy train --table FILE --label COLUMN [--time-column COLUMN]`: bring your own features.

Trains an acceptance-style model on a prepared feature table (a warehouse extract) with the same
time split, metrics, MLflow tracking, registry and promotion gate as the built-in models. Without
a time column, row order is taken as time order (the table must be sorted oldest first).
The gate's baseline here is the best single-column rule: the model must beat the most predictive
single feature (its AUC on the held-out rows) by the configured margin, and the current champion.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from sklearn.metrics import roc_auc_score

from models.encoding import FeatureEncoder
from models.table_model import TABLE_ARTIFACT, TableBundle, TablePyfunc, load_table_bundle
from storage.settings import Settings
from training import registry
from training.evaluate import expected_calibration_error, ranking_metrics
from training.fit import BoosterParams, FitInputs, fit_calibrated
from training.gate import GateDecision, decide
from training.pipeline import PIP_REQUIREMENTS, TrainResult

_TRUE = {"1", "true", "yes", "y", "accepted", "t"}
_FALSE = {"0", "false", "no", "n", "declined", "f", "no_response"}


def read_table(path: Path) -> pd.DataFrame:
    if not path.exists():
        raise FileNotFoundError(f"table not found: {path}")
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    if path.suffix in (".csv", ".txt"):
        # Warehouse extracts come with ',' or ';': let the reader sniff the separator.
        return pd.read_csv(path, sep=None, engine="python")
    raise ValueError(f"--table must be a .parquet or .csv file, got {path.name}")


def binary_label(values: pd.Series, column: str) -> np.ndarray:
    """0/1 from 0/1, booleans or yes/no-like text; anything else is an error naming the values."""
    text = values.astype("str").str.strip().str.lower()
    bad = ~text.isin(_TRUE | _FALSE)
    if bad.any():
        examples = ", ".join(map(repr, text[bad].unique()[:5]))
        raise ValueError(f"--label {column}: not a binary label (values like {examples})")
    y = text.isin(_TRUE).to_numpy().astype(np.int8)
    if y.min() == y.max():
        raise ValueError(f"--label {column}: only one class present")
    return y


def model_name_for(table: Path) -> str:
    return "advocacy-table-" + re.sub(r"[^a-z0-9]+", "-", table.stem.lower()).strip("-")


def _time_order(frame: pd.DataFrame, time_column: str | None) -> np.ndarray:
    """Row positions oldest first (the file's order without a time column)."""
    if not time_column:
        return np.arange(len(frame))
    times = pd.to_datetime(frame[time_column], utc=True, errors="coerce")
    if times.isna().any():
        raise ValueError(f"--time-column {time_column}: {int(times.isna().sum())} rows are not timestamps")
    return np.argsort(times.to_numpy(), kind="stable")


def _id_columns(features: pd.DataFrame) -> list[str]:
    """Identifiers (text unique per row): they carry no signal and would only memorise rows."""
    text = [c for c in features.columns if features[c].dtype == object or str(features[c].dtype) == "str"]
    return [c for c in text if features[c].nunique() > 0.9 * len(features)]


def train_table(
    settings: Settings,
    table: Path,
    label: str,
    time_column: str | None = None,
    *,
    drop: Sequence[str] = (),
    experiment: str | None = None,
    params: BoosterParams | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> TrainResult:
    frame = read_table(Path(table))
    for name, what in ((label, "--label"), (time_column, "--time-column"), *((d, "--drop") for d in drop)):
        if name is not None and name not in frame.columns:
            raise ValueError(f"{what}: no column {name!r} in {Path(table).name}")
    y = binary_label(frame[label], label)
    order = _time_order(frame, time_column)
    features = frame.drop(columns=[c for c in (label, time_column, *drop) if c])
    ids = _id_columns(features)
    features = features.drop(columns=ids)
    categorical = [c for c in features.columns if not pd.api.types.is_numeric_dtype(features[c])]
    n = len(frame)
    train_idx, valid_idx, test_idx = order[: int(0.6 * n)], order[int(0.6 * n) : int(0.8 * n)], order[int(0.8 * n) :]
    parts = {"train": train_idx, "valid": valid_idx, "test": test_idx}
    encoder = FeatureEncoder.fit(features.iloc[train_idx], list(features.columns), categorical)
    x = {k: encoder.transform(features.iloc[v]) for k, v in parts.items()}
    ys = {k: y[v] for k, v in parts.items()}
    progress(f"fitting on {len(train_idx):,} rows, validating on {len(valid_idx):,}, testing on {len(test_idx):,}")
    p = params or BoosterParams(num_leaves=15, min_data_in_leaf=50)
    no_monotone = [0] * len(encoder.columns)
    inputs = FitInputs(x["train"], ys["train"], x["valid"], ys["valid"], encoder.categorical_indices, no_monotone)
    booster, calibrator = fit_calibrated(inputs, p)
    model = TableBundle(label, encoder, booster, calibrator, {})
    proba = calibrator(np.asarray(booster.predict(x["test"], raw_score=True)))
    metrics = ranking_metrics(ys["test"], proba, "model_")
    metrics["model_ece"] = expected_calibration_error(ys["test"], proba)
    single = {
        c: abs(roc_auc_score(ys["test"], np.nan_to_num(x["test"][:, j], nan=-1e9)) - 0.5) + 0.5
        for j, c in enumerate(encoder.columns)
    }
    best_col = max(single, key=lambda c: single[c])
    metrics["baseline_roc_auc"] = single[best_col]
    column = np.nan_to_num(x["test"][:, list(encoder.columns).index(best_col)], nan=-1e9)
    raw_auc = roc_auc_score(ys["test"], column)
    best = (best_col, column if raw_auc >= 0.5 else -column)  # the column, or its reverse, as a score
    metrics["test_rows"] = float(len(test_idx))
    model.metrics = metrics

    name = model_name_for(Path(table))
    registry.configure(settings, experiment or f"{settings.experiment}-tables")
    current = registry.champion(name)
    decision = _gate(settings, model, proba, best, current, features.iloc[test_idx], ys["test"])
    with mlflow.start_run() as run:
        mlflow.log_params({"table": Path(table).name, "label": label, "time_column": time_column or "(row order)"})
        mlflow.log_params({"dropped": ",".join([*drop, *ids]) or "-", "rows": n, "features": len(encoder.columns)})
        mlflow.log_metrics(metrics)
        mlflow.set_tag("gate", decision.reason)
        with tempfile.TemporaryDirectory() as tmp:
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=TablePyfunc(),
                artifacts={TABLE_ARTIFACT: str(model.save(Path(tmp) / TABLE_ARTIFACT))},
                registered_model_name=name,
                pip_requirements=PIP_REQUIREMENTS,
            )
        version = str(info.registered_model_version)
        if decision.promote:
            registry.promote(name, version, decision.reason)
    summary = {
        "propensity_roc_auc": metrics["model_roc_auc"],
        "propensity_pr_auc": metrics["model_pr_auc"],
        "baseline_roc_auc": metrics["baseline_roc_auc"],
        "propensity_ece": metrics["model_ece"],
    }
    return TrainResult(
        run.info.run_id, version, decision.promote, decision, summary, baseline_name=f"'{best_col}' alone"
    )


def _gate(
    settings: Settings,
    model: TableBundle,
    proba: np.ndarray,
    best: tuple[str, np.ndarray],
    current: registry.Champion | None,
    test_frame: pd.DataFrame,
    y_test: np.ndarray,
) -> GateDecision:
    """`training.gate.decide` on the newest rows; each row is its own group (a table names no customer)."""
    champion = None
    if current is not None:
        try:
            champion = (current.version, load_table_bundle(current.source).proba(test_frame))
        except (MlflowException, KeyError, ValueError, OSError) as err:
            return GateDecision(True, f"promoted: champion v{current.version} cannot score this table ({err})")
    groups = np.arange(len(y_test))
    decision, gate_metrics = decide(
        settings, y_test, groups, proba, model.metrics["model_ece"], (f"'{best[0]}' alone", best[1]), champion
    )
    model.metrics |= gate_metrics
    return decision
