"""The promotion gate (issue 17): better beyond noise, by a customer-clustered paired bootstrap, and calibrated."""

from __future__ import annotations

import numpy as np
import pytest

from storage.settings import Settings
from training.evaluate import expected_calibration_error
from training.gate import clustered_auc_draws, decide

SETTINGS = Settings(gate_resamples=300)


def _world(seed: int = 0, customers: int = 600, rows_each: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels, true probabilities and customer ids: each customer's rows share its propensity."""
    rng = np.random.default_rng(seed)
    p_customer = rng.beta(1.5, 5, customers)
    groups = np.repeat(np.arange(customers), rows_each)
    p = np.clip(p_customer[groups] + rng.normal(0, 0.02, len(groups)), 0.001, 0.999)
    return (rng.random(len(p)) < p).astype(int), p, groups


def _noisy(p: np.ndarray, sd: float, seed: int) -> np.ndarray:
    return np.clip(p + np.random.default_rng(seed).normal(0, sd, len(p)), 0.001, 0.999)


def test_a_gain_whose_interval_straddles_zero_is_refused() -> None:
    y, p, groups = _world()
    new, champion = _noisy(p, 0.05, 1), _noisy(p, 0.05, 2)  # two fits as good as each other
    points = _noisy(p, 0.4, 3)
    decision, metrics = decide(
        SETTINGS, y, groups, new, expected_calibration_error(y, new), ("the points rule", points), ("3", champion)
    )
    assert not decision.promote, decision.reason
    assert "over champion v3" in decision.reason and "is not above zero" in decision.reason
    assert metrics["gate_gain_over_champion_ci_low"] < 0 < metrics["gate_gain_over_champion_ci_high"]
    # The same new model against a clearly worse champion passes.
    worse = _noisy(p, 0.35, 4)
    promoted, _ = decide(
        SETTINGS, y, groups, new, expected_calibration_error(y, new), ("the points rule", points), ("3", worse)
    )
    assert promoted.promote and "is above zero" in promoted.reason, promoted.reason


def test_a_model_over_the_ece_ceiling_is_refused_however_well_it_ranks() -> None:
    y, p, groups = _world()
    overconfident = np.clip(0.5 + 1.6 * (p - p.mean()), 0.001, 0.999)  # same ranking, wrong probabilities
    ece = expected_calibration_error(y, overconfident)
    assert ece > SETTINGS.gate_max_ece
    decision, _ = decide(SETTINGS, y, groups, overconfident, ece, ("the points rule", _noisy(p, 0.4, 3)), None)
    assert not decision.promote and "ECE" in decision.reason and "ADVOCACY_GATE_MAX_ECE" in decision.reason


def test_the_interval_resamples_customers_not_rows() -> None:
    # With each customer's rows copied ten times, a row bootstrap would shrink the interval by about
    # sqrt(10); resampling customers keeps it what the number of customers says.
    y, p, groups = _world(customers=300, rows_each=1)
    score = _noisy(p, 0.05, 1)
    once = clustered_auc_draws(y, {"s": score}, groups, 300)["s"]
    copied = clustered_auc_draws(np.repeat(y, 10), {"s": np.repeat(score, 10)}, np.repeat(groups, 10), 300)["s"]
    assert 0.7 < copied.std() / once.std() < 1.4
    by_row = clustered_auc_draws(np.repeat(y, 10), {"s": np.repeat(score, 10)}, np.arange(3000), 300)["s"]
    assert by_row.std() < 0.5 * once.std()


def test_the_bootstrap_auc_is_scikit_learns_under_any_weights_and_ties() -> None:
    from sklearn.metrics import roc_auc_score

    from training.gate import RankedAuc

    rng = np.random.default_rng(5)
    y = (rng.random(2000) < 0.3).astype(float)
    score = np.round(rng.random(2000) + 0.4 * y, 2)  # rounded: many ties, as a points rule has
    auc = RankedAuc(y, score)
    for w in (np.ones(2000), rng.multinomial(2000, np.full(2000, 1 / 2000)).astype(float), rng.random(2000)):
        assert auc(w) == pytest.approx(roc_auc_score(y, score, sample_weight=w), abs=1e-12)
