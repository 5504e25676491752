"""`advocacy train --table` under time drift: a covariate that trends past its training range.

The synthetic campaign table's log-odds are linear in a spend index that rises with time, so the
newest rows hold values training never saw: trees flatten there, a logistic regression extrapolates.
"""

from __future__ import annotations

from pathlib import Path

import lightgbm as lgb
import mlflow
import numpy as np
import pandas as pd
import pytest
from sklearn.compose import make_column_transformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from models.calibration import Calibrator
from models.encoding import FeatureEncoder
from models.table_model import TableBundle, load_table_bundle
from storage.settings import Settings
from training import registry
from training.byof import drift_warnings, linear_from_pipeline, logistic_pipeline, train_table

NUMERIC = ["spend_index", "tenure", "visits"]


def _campaign(n: int = 6000, drift: float = 4.0, seed: int = 0) -> pd.DataFrame:
    """Rows sent over two years, oldest first; `spend_index` rises by `drift` over the period."""
    rng = np.random.default_rng(seed)
    t = np.sort(rng.uniform(0, 1, n))
    spend = drift * t + rng.normal(0, 0.5, n)
    tenure = rng.gamma(2.0, 2.0, n)
    visits = rng.normal(0, 1, n)
    visits[rng.random(n) < 0.1] = np.nan
    channel = rng.choice(["email", "phone", "web"], n)
    channel_effect = np.select([channel == "phone", channel == "web"], [0.6, -0.4], 0.0)
    logit = -2.5 + 0.8 * spend - 0.25 * tenure + 0.7 * np.nan_to_num(visits) + channel_effect + rng.normal(0, 0.5, n)
    responded = rng.random(n) < 1 / (1 + np.exp(-logit))
    return pd.DataFrame(
        {
            "sent_at": pd.Timestamp("2024-01-01", tz="UTC") + pd.to_timedelta(t * 730, unit="D"),
            "spend_index": spend,
            "tenure": tenure,
            "visits": visits,
            "channel": channel,
            "responded": np.where(responded, "yes", "no"),
        }
    )


def _reference_aucs(table: pd.DataFrame, fitted_on: float = 0.6) -> tuple[float, float]:
    """On the newest 20%: the best single column's AUC, and a regression's fitted here on the oldest
    `fitted_on` share of the rows."""
    n = len(table)
    train, test = table.iloc[: int(fitted_on * n)], table.iloc[int(0.8 * n) :]
    y_test = test["responded"] == "yes"
    columns = make_column_transformer(
        (make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), NUMERIC), (OneHotEncoder(), ["channel"])
    )
    regression = make_pipeline(columns, LogisticRegression()).fit(train, train["responded"] == "yes")
    single = max(abs(roc_auc_score(y_test, test[c].fillna(-1e9)) - 0.5) + 0.5 for c in NUMERIC)
    return single, float(roc_auc_score(y_test, regression.predict_proba(test)[:, 1]))


@pytest.mark.slow
def test_table_model_holds_up_where_a_trend_leaves_the_training_range(tmp_path: Path) -> None:
    table = _campaign()
    path = tmp_path / "campaign.parquet"
    table.to_parquet(path)
    lines: list[str] = []
    result = train_table(Settings(home=tmp_path), path, "responded", "sent_at", progress=lines.append)

    single, regression = _reference_aucs(table)
    _, regression_80 = _reference_aucs(table, fitted_on=0.8)
    run = mlflow.get_run(result.run_id).data
    auc = result.metrics["propensity_roc_auc"]
    assert auc >= max(single, regression) - 0.01, (auc, single, regression, run.params["candidate"])
    # Refitted on train and valid, the model follows the trend as far as a regression fitted on the
    # same oldest 80% does, and the run says which slice each step saw.
    assert auc >= regression_80 - 0.005, (auc, regression_80, run.metrics["test_before_refit_roc_auc"])
    assert run.params["final_model_fit_on"] == "train + valid (oldest 80%)"
    assert run.params["candidate_chosen_on"] == "valid (next 20%)"
    assert any(line.startswith("refitted") for line in lines)
    # The choice shows how well each candidate ranked the valid slice, not only its log loss.
    chose = next(line for line in lines if line.startswith("chose"))
    for c in ("lightgbm", "logistic", "blend"):
        assert f"{c} {run.metrics[f'valid_{c}_logloss']:.4f} (ROC AUC {run.metrics[f'valid_{c}_roc_auc']:.3f})" in chose
    # The data is one where extrapolation matters: LightGBM alone falls short of the regression.
    assert run.metrics["test_lightgbm_roc_auc"] < regression - 0.01
    assert run.params["candidate"] in ("logistic", "blend")
    assert {f"valid_{c}_{m}" for c in ("lightgbm", "logistic", "blend") for m in ("roc_auc", "logloss")} <= set(
        run.metrics
    )
    assert "test_logistic_roc_auc" in run.metrics and "baseline_roc_auc" in run.metrics

    # The drift is named, with figures, in the progress lines, the result and the run.
    trend = [w for w in result.warnings if w.startswith("'spend_index'")]
    assert trend and "outside its training range" in trend[0]
    assert any(w.startswith("base rate of 'responded'") for w in result.warnings)
    assert all(f"warning: {w}" in lines for w in result.warnings)
    assert not any(w.startswith(("'tenure'", "'visits'")) for w in result.warnings)
    assert run.tags["warnings"] == str(len(result.warnings))
    assert mlflow.artifacts.load_text(f"runs:/{result.run_id}/warnings.txt").splitlines() == result.warnings

    # The registered version scores the test window exactly as training measured it.
    registry.configure(Settings(home=tmp_path))
    bundle = load_table_bundle(f"models:/advocacy-table-campaign/{result.version}")
    newest = table.iloc[int(0.8 * len(table)) :]
    assert roc_auc_score(newest["responded"] == "yes", bundle.proba(newest)) == pytest.approx(auc, abs=1e-12)
    assert bundle.linear is not None and len(bundle.explain(newest.head(3))[0]) == 3


def test_a_stationary_table_raises_no_drift_warning() -> None:
    table = _campaign(drift=0.0)
    features, y = table[[*NUMERIC, "channel"]], (table["responded"] == "yes").to_numpy().astype(int)
    parts = {"train": slice(0, 3600), "valid": slice(3600, 4800), "test": slice(4800, 6000)}
    encoder = FeatureEncoder.fit(features.iloc[parts["train"]], list(features.columns), ["channel"])
    x = {k: encoder.transform(features.iloc[s]) for k, s in parts.items()}
    assert drift_warnings(encoder, x, {k: y[s] for k, s in parts.items()}, "responded") == []


def test_regression_stored_as_numbers_scores_like_the_fitted_pipeline(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    x = np.column_stack([rng.normal(size=500), rng.normal(size=500), rng.integers(0, 3, 500).astype(float)])
    x[rng.random(500) < 0.2, 1] = np.nan
    x[rng.random(500) < 0.1, 2] = np.nan  # a missing (or unseen) category
    x = np.column_stack([x, np.full(500, np.nan)])  # a numeric column missing throughout training
    y = (x[:, 0] + np.nan_to_num(x[:, 1]) + (x[:, 2] == 1) + rng.normal(size=500) > 0.5).astype(int)
    numeric, categorical = [0, 1, 3], [2]
    pipeline = logistic_pipeline(numeric, categorical, 1.0).fit(x, y)
    linear = linear_from_pipeline(pipeline, numeric, categorical)
    fresh = x.copy()
    fresh[:5, 2], fresh[5:10, 3] = 7.0, 2.0  # a code training never saw; values where training had none
    np.testing.assert_allclose(linear.raw(fresh), pipeline.decision_function(fresh), rtol=1e-10, atol=1e-10)

    encoder = FeatureEncoder(("a", "b", "c", "d"), {})
    booster = lgb.train({"objective": "binary", "verbosity": -1, "num_threads": 1}, lgb.Dataset(x, y), 5)
    frame = pd.DataFrame(fresh, columns=list(encoder.columns))
    for weight in (0.0, 0.5, 1.0):
        bundle = TableBundle(
            "y",
            encoder,
            booster if weight > 0 else None,
            Calibrator("platt", (0.9, -0.1)),
            {},
            linear if weight < 1 else None,
            weight,
        )
        loaded = TableBundle.load(bundle.save(tmp_path / f"w{weight}"))
        np.testing.assert_array_equal(loaded.proba(frame), bundle.proba(frame))
        assert (tmp_path / f"w{weight}" / "booster.txt").exists() == (weight > 0)
