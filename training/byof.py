"""`advocacy train --table FILE --label COLUMN [--time-column COLUMN]`: bring your own features.

Trains an acceptance-style model on a prepared feature table (a warehouse extract) with the same
time split, metrics, MLflow tracking, registry and promotion gate as the built-in models. Without
a time column, row order is taken as time order (the table must be sorted oldest first).
Two candidates are fitted on the oldest 60% (train): early-stopped LightGBM and a regularised
logistic regression. Trees cannot extrapolate a covariate that trends past its training range, so
the next 20% (valid), the newest rows before the test window, choose between them and their blends
by calibrated log loss. The choice is then refitted on train and valid together, time order kept (the
booster with the trees early stopping chose, the regression with its chosen C): under drift the
newest rows before the test window are the ones most like it, and a model that never saw them cannot
follow a base rate that climbs across the slices. Its calibrator is fitted on valid scores it did not
see (`crossfit_raw`: each half of valid scored by the candidate refitted on train and the other half).
The test window (newest 20%) only measures, and what in it lies outside the training range (base
rate, a numeric column) is reported as a warning. The run says which slice each step saw.
The gate's baseline here is the best single-column rule: the model must beat the most predictive
single feature (its AUC on the held-out rows) beyond noise, and the current champion (`training.gate`).
"""

from __future__ import annotations

import math
import re
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss, roc_auc_score
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from models.calibration import Calibrator
from models.encoding import FeatureEncoder
from models.registry import ChampionRef
from models.table_model import MISSING_CODE, TABLE_ARTIFACT, LinearScore, TableBundle, TablePyfunc, load_table_bundle
from storage.settings import Settings
from training import registry
from training.evaluate import expected_calibration_error, ranking_metrics
from training.fit import BoosterParams, FitInputs, fit_booster
from training.gate import GateDecision, decide
from training.pipeline import PIP_REQUIREMENTS, TrainResult

_TRUE = {"1", "true", "yes", "y", "accepted", "t"}
_FALSE = {"0", "false", "no", "n", "declined", "f", "no_response"}

TREE_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)  # the blend's weight on LightGBM: 0 is the regression alone
LOGISTIC_C = (0.01, 0.1, 1.0, 10.0)
BASE_RATE_CHUNKS = 4  # the training part's time chunks whose base rates span "the training range"
TABLE_PARAMS = BoosterParams(num_leaves=15, min_data_in_leaf=50)  # the booster's, unless the caller gives its own
OUTSIDE_SHARE = 0.05  # a numeric column warns when more of the test window's values than this lie outside


# Which rows each step of a run saw, logged with it.
SLICES: dict[str, str | float] = {
    "encoder_and_candidates_fit_on": "train (oldest 60%)",
    "candidate_chosen_on": "valid (next 20%)",
    "final_model_fit_on": "train + valid (oldest 80%)",
    "calibrated_on": "valid, cross-fitted by halves",
    "tested_on": "test (newest 20%)",
}


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


def logistic_pipeline(numeric: Sequence[int], categorical: Sequence[int], c: float) -> Pipeline:
    """Median imputation and scaling for numeric columns, one-hot for categorical codes, then an L2 regression."""
    parts = []
    if numeric:
        numbers = make_pipeline(SimpleImputer(strategy="median", keep_empty_features=True), StandardScaler())
        parts.append(("numeric", numbers, list(numeric)))
    if categorical:
        codes = make_pipeline(
            SimpleImputer(strategy="constant", fill_value=MISSING_CODE, keep_empty_features=True),
            OneHotEncoder(handle_unknown="ignore"),
        )
        parts.append(("categorical", codes, list(categorical)))
    return Pipeline([("columns", ColumnTransformer(parts)), ("model", LogisticRegression(C=c, max_iter=2000))])


def linear_from_pipeline(pipeline: Pipeline, numeric: Sequence[int], categorical: Sequence[int]) -> LinearScore:
    """The fitted `logistic_pipeline` as plain numbers (safe to store as JSON, and to load)."""
    model: LogisticRegression = pipeline["model"]
    coef = model.coef_[0]
    steps = pipeline["columns"].named_transformers_
    medians = means = scales = np.empty(0)
    if numeric:
        imputer, scaler = steps["numeric"][0], steps["numeric"][1]
        medians, means, scales = imputer.statistics_, scaler.mean_, scaler.scale_
    levels: list[tuple[float, ...]] = []
    level_coef: list[tuple[float, ...]] = []
    start = len(numeric)
    for found in steps["categorical"][-1].categories_ if categorical else []:
        levels.append(tuple(map(float, found)))
        level_coef.append(tuple(map(float, coef[start : start + len(found)])))
        start += len(found)
    return LinearScore(
        float(model.intercept_[0]),
        tuple(numeric),
        tuple(map(float, medians)),
        tuple(map(float, means)),
        tuple(map(float, scales)),
        tuple(map(float, coef[: len(numeric)])),
        tuple(categorical),
        tuple(levels),
        tuple(level_coef),
    )


def calibrated_log_loss(raw: np.ndarray, y: np.ndarray) -> float:
    """Log loss once Platt-scaled on the same rows, as the chosen candidate will be: it compares how well
    candidates rank and spread, not which one happens to sit nearer the drifted base rate."""
    return float(log_loss(y, Calibrator.fit(raw, y)(raw), labels=[0, 1]))


def fit_logistic(inputs: FitInputs) -> tuple[LinearScore, float]:
    """The regression with the C (from `LOGISTIC_C`) that does best on the valid slice.

    Chosen on the newest rows before the test window, not by cross-validation, whose random folds
    would mix times and hide drift.
    """
    numeric = [j for j in range(inputs.x_train.shape[1]) if j not in inputs.categorical]
    fits = {
        c: logistic_pipeline(numeric, inputs.categorical, c).fit(inputs.x_train, inputs.y_train) for c in LOGISTIC_C
    }
    losses = {c: calibrated_log_loss(p.decision_function(inputs.x_valid), inputs.y_valid) for c, p in fits.items()}
    best = min(losses, key=lambda c: losses[c])
    return linear_from_pipeline(fits[best], numeric, inputs.categorical), best


@dataclass
class Chosen:
    """The calibrated model chosen on the valid slice, each candidate's figures, and what was chosen."""

    model: TableBundle
    metrics: dict[str, float]
    params: dict[str, str | float]


def choose_model(
    label: str, encoder: FeatureEncoder, x: dict[str, np.ndarray], ys: dict[str, np.ndarray], params: BoosterParams
) -> Chosen:
    """LightGBM, the logistic regression, or a blend of their log-odds, by calibrated log loss on the valid slice."""
    no_monotone = [0] * len(encoder.columns)
    inputs = FitInputs(x["train"], ys["train"], x["valid"], ys["valid"], encoder.categorical_indices, no_monotone)
    booster = fit_booster(inputs, params)
    linear, c = fit_logistic(inputs)
    tree = {k: np.asarray(booster.predict(x[k], raw_score=True)) for k in ("valid", "test")}
    lin = {k: linear.raw(x[k]) for k in ("valid", "test")}
    blended = {w: w * tree["valid"] + (1 - w) * lin["valid"] for w in TREE_WEIGHTS}
    losses = {w: calibrated_log_loss(raw, ys["valid"]) for w, raw in blended.items()}
    weight = min(TREE_WEIGHTS, key=lambda w: losses[w])
    best_blend = min(TREE_WEIGHTS[1:-1], key=lambda w: losses[w])
    metrics: dict[str, float] = {}
    for name, w in (("lightgbm", 1.0), ("logistic", 0.0), ("blend", best_blend)):
        metrics[f"valid_{name}_logloss"] = losses[w]
        metrics[f"valid_{name}_roc_auc"] = float(roc_auc_score(ys["valid"], blended[w]))
    metrics["test_lightgbm_roc_auc"] = float(roc_auc_score(ys["test"], tree["test"]))
    metrics["test_logistic_roc_auc"] = float(roc_auc_score(ys["test"], lin["test"]))
    candidate = {1.0: "lightgbm", 0.0: "logistic"}.get(weight, "blend")
    model = TableBundle(
        label,
        encoder,
        booster if weight > 0 else None,
        Calibrator.fit(blended[weight], ys["valid"]),
        {},
        linear if weight < 1 else None,
        weight,
    )
    return Chosen(model, metrics, {"candidate": candidate, "tree_weight": weight, "logistic_C": c})


def _fit_candidate(chosen: TableBundle, inputs: FitInputs, params: BoosterParams, rounds: int, c: float) -> TableBundle:
    """The chosen candidate (its blend weight, the booster's `rounds` trees, the regression's `c`)
    fitted on `inputs`' train rows alone, uncalibrated."""
    booster = fit_booster(inputs, params, rounds=rounds) if chosen.booster is not None else None
    linear = None
    if chosen.linear is not None:
        numeric = [j for j in range(inputs.x_train.shape[1]) if j not in inputs.categorical]
        pipeline = logistic_pipeline(numeric, inputs.categorical, c).fit(inputs.x_train, inputs.y_train)
        linear = linear_from_pipeline(pipeline, numeric, inputs.categorical)
    return TableBundle(chosen.label, chosen.encoder, booster, chosen.calibrator, {}, linear, chosen.tree_weight)


def crossfit_raw(chosen: TableBundle, inputs: FitInputs, params: BoosterParams, rounds: int, c: float) -> np.ndarray:
    """Raw valid scores for calibrating the candidate refitted on train + valid: each half of the valid
    rows scored by the candidate fitted on train and the other half (as `training.fit.crossfit_scores`)."""
    half = np.arange(len(inputs.y_valid)) < len(inputs.y_valid) // 2
    raw = np.empty(len(inputs.y_valid))
    for held in (half, ~half):
        x = np.vstack([inputs.x_train, inputs.x_valid[~held]])
        y = np.concatenate([inputs.y_train, inputs.y_valid[~held]])
        fold = _fit_candidate(chosen, replace(inputs, x_train=x, y_train=y), params, rounds, c)
        raw[held] = fold.raw_score(inputs.x_valid[held])
    return raw


def refit(chosen: Chosen, x: dict[str, np.ndarray], ys: dict[str, np.ndarray], params: BoosterParams) -> TableBundle:
    """The chosen candidate refitted on train and valid together (time order kept), calibrated on
    cross-fitted valid scores (`crossfit_raw`)."""
    model = chosen.model
    inputs = FitInputs(
        x["train"], ys["train"], x["valid"], ys["valid"], model.encoder.categorical_indices, [0] * x["train"].shape[1]
    )
    rounds = model.booster.current_iteration() if model.booster is not None else 0
    c = float(chosen.params["logistic_C"])
    raw = crossfit_raw(model, inputs, params, rounds, c)
    x_both, y_both = np.vstack([x["train"], x["valid"]]), np.concatenate([ys["train"], ys["valid"]])
    both = replace(inputs, x_train=x_both, y_train=y_both)
    final = _fit_candidate(model, both, params, rounds, c)
    final.calibrator = Calibrator.fit(raw, ys["valid"])
    return final


def drift_warnings(
    encoder: FeatureEncoder, x: dict[str, np.ndarray], ys: dict[str, np.ndarray], label: str
) -> list[str]:
    """What in the test window lies outside what the training part saw, with the figures.

    The base rate, against its range over the training part's time chunks widened by two standard
    errors of the test window's rate (so sampling noise alone does not warn); a numeric column, when
    more than `OUTSIDE_SHARE` of the test window's values lie beyond its training minimum or maximum.
    """
    out = []
    y_train, y_test = ys["train"], ys["test"]
    rates = [float(chunk.mean()) for chunk in np.array_split(y_train, BASE_RATE_CHUNKS)]
    rate, p = float(y_test.mean()), float(y_train.mean())
    margin = 2 * math.sqrt(p * (1 - p) / len(y_test))
    if not min(rates) - margin <= rate <= max(rates) + margin:
        out.append(
            f"base rate of '{label}' is {rate:.3f} in the test window, outside its {min(rates):.3f} to "
            f"{max(rates):.3f} over the training part's {BASE_RATE_CHUNKS} time chunks (margin {margin:.3f})"
        )
    categorical = set(encoder.categorical_indices)
    for j, column in enumerate(encoder.columns):
        if j in categorical:
            continue
        seen, new = x["train"][:, j], x["test"][:, j]
        seen, new = seen[~np.isnan(seen)], new[~np.isnan(new)]
        if not len(seen) or not len(new):
            continue
        low, high = float(seen.min()), float(seen.max())
        below, above = float((new < low).mean()), float((new > high).mean())
        if below + above > OUTSIDE_SHARE:
            out.append(
                f"'{column}': {below + above:.0%} of the test window's values lie outside its training range "
                f"{low:.4g} to {high:.4g} ({above:.0%} above, {below:.0%} below; the test window spans "
                f"{new.min():.4g} to {new.max():.4g})"
            )
    return out


@dataclass(frozen=True)
class ColumnRule:
    """One column as a score, higher values likelier (`sign` +1) or lower (-1); missing values lowest."""

    name: str
    index: int
    sign: float
    roc_auc: float  # on the rows it was chosen on

    def score(self, x: np.ndarray) -> np.ndarray:
        return self.sign * np.nan_to_num(x[:, self.index], nan=-1e9)


def single_column_rule(x: np.ndarray, y: np.ndarray, columns: Sequence[str]) -> ColumnRule:
    """The most predictive single column on these rows, with the direction that ranks them best."""
    filled = np.nan_to_num(x, nan=-1e9)
    raw = [float(roc_auc_score(y, filled[:, j])) for j in range(len(columns))]
    j = int(np.argmax([abs(a - 0.5) for a in raw]))
    return ColumnRule(columns[j], j, 1.0 if raw[j] >= 0.5 else -1.0, abs(raw[j] - 0.5) + 0.5)


@dataclass
class Sliced:
    """A prepared table cut by time: the feature columns (label, time, dropped and id columns out),
    the encoder fitted on the train slice, and per slice its row positions, matrix and labels."""

    features: pd.DataFrame
    encoder: FeatureEncoder
    rows: dict[str, np.ndarray]
    x: dict[str, np.ndarray]
    ys: dict[str, np.ndarray]
    ids: list[str]


def slice_table(frame: pd.DataFrame, label: str, time_column: str | None, drop: Sequence[str], source: str) -> Sliced:
    """`frame`'s oldest 60% (train), next 20% (valid) and newest 20% (test) by time, encoded as the
    train slice alone has seen them; bad column names are errors naming the option and `source`."""
    for name, what in ((label, "--label"), (time_column, "--time-column"), *((d, "--drop") for d in drop)):
        if name is not None and name not in frame.columns:
            raise ValueError(f"{what}: no column {name!r} in {source}")
    y = binary_label(frame[label], label)
    order = _time_order(frame, time_column)
    features = frame.drop(columns=[c for c in (label, time_column, *drop) if c])
    ids = _id_columns(features)
    features = features.drop(columns=ids)
    categorical = [c for c in features.columns if not pd.api.types.is_numeric_dtype(features[c])]
    n = len(frame)
    rows = {"train": order[: int(0.6 * n)], "valid": order[int(0.6 * n) : int(0.8 * n)], "test": order[int(0.8 * n) :]}
    encoder = FeatureEncoder.fit(features.iloc[rows["train"]], list(features.columns), categorical)
    x = {k: encoder.transform(features.iloc[v]) for k, v in rows.items()}
    return Sliced(features, encoder, rows, x, {k: y[v] for k, v in rows.items()}, ids)


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
    sliced = slice_table(read_table(Path(table)), label, time_column, drop, Path(table).name)
    features, encoder, x, ys, ids = sliced.features, sliced.encoder, sliced.x, sliced.ys, sliced.ids
    n, test_idx = len(features), sliced.rows["test"]
    progress(f"fitting on {len(ys['train']):,} rows, validating on {len(ys['valid']):,}, testing on {len(test_idx):,}")
    warnings = drift_warnings(encoder, x, ys, label)
    for warning in warnings:
        progress(f"warning: {warning}")
    params = params or TABLE_PARAMS
    chosen = choose_model(label, encoder, x, ys, params)
    metrics = chosen.metrics
    progress(
        f"chose {chosen.params['candidate']} (LightGBM weight {chosen.model.tree_weight:g}) by valid log loss, "
        "fitted on train (the oldest 60%): "
        + ", ".join(
            f"{c} {metrics[f'valid_{c}_logloss']:.4f} (ROC AUC {metrics[f'valid_{c}_roc_auc']:.3f})"
            for c in ("lightgbm", "logistic", "blend")
        )
    )
    metrics["test_before_refit_roc_auc"] = float(roc_auc_score(ys["test"], chosen.model.proba(features.iloc[test_idx])))
    model = refit(chosen, x, ys, params)
    chosen.params |= SLICES
    progress(f"refitted {chosen.params['candidate']} on train and valid (the oldest 80%), calibrated cross-fitted")
    proba = model.proba(features.iloc[test_idx])
    metrics |= ranking_metrics(ys["test"], proba, "model_")
    metrics["model_ece"] = expected_calibration_error(ys["test"], proba)
    rule = single_column_rule(x["test"], ys["test"], encoder.columns)
    metrics["baseline_roc_auc"] = rule.roc_auc
    best = (rule.name, rule.score(x["test"]))
    metrics["test_rows"] = float(len(test_idx))
    model.metrics = metrics

    name = model_name_for(Path(table))
    registry.configure(settings, experiment or f"{settings.experiment}-tables")
    current = registry.champion(name)
    decision = _gate(settings, model, proba, best, current, features.iloc[test_idx], ys["test"])
    with mlflow.start_run() as run:
        mlflow.log_params({"table": Path(table).name, "label": label, "time_column": time_column or "(row order)"})
        mlflow.log_params({"dropped": ",".join([*drop, *ids]) or "-", "rows": n, "features": len(encoder.columns)})
        mlflow.log_params(chosen.params)
        mlflow.log_metrics(metrics)
        mlflow.set_tag("gate", decision.reason)
        mlflow.set_tag("warnings", str(len(warnings)))
        if warnings:
            mlflow.log_text("\n".join(warnings) + "\n", "warnings.txt")
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
    # The summary speaks the built-in models' names, so the CLI prints both alike.
    summary = {f"propensity_{k}": metrics[f"model_{k}"] for k in ("roc_auc", "pr_auc", "ece")}
    summary["baseline_roc_auc"] = metrics["baseline_roc_auc"]
    baseline_name = f"'{rule.name}' alone"
    return TrainResult(run.info.run_id, version, decision.promote, decision, summary, None, baseline_name, warnings)


def _gate(
    settings: Settings,
    model: TableBundle,
    proba: np.ndarray,
    best: tuple[str, np.ndarray],
    current: ChampionRef | None,
    test_frame: pd.DataFrame,
    y_test: np.ndarray,
) -> GateDecision:
    """`training.gate.decide` on the newest rows; each row is its own group (a table names no customer)."""
    champion = None
    if current is not None:
        try:
            champion = (current.version, load_table_bundle(current.uri).proba(test_frame))
        except (MlflowException, KeyError, ValueError, OSError) as err:
            return GateDecision(True, f"promoted: champion v{current.version} cannot score this table ({err})")
    groups = np.arange(len(y_test))
    decision, gate_metrics = decide(
        settings, y_test, groups, proba, model.metrics["model_ece"], (f"'{best[0]}' alone", best[1]), champion
    )
    model.metrics |= gate_metrics
    return decision
