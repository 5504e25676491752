"""The promotion gate: a new version replaces the champion only if it is better beyond noise and calibrated.

Better beyond noise: the held-out AUC gain over the points rule, and over the champion re-scored on
the same rows, each with a paired bootstrap interval that resamples customers (a customer's monthly
rows are not independent of each other); the lower end must be above zero. A fixed margin cannot
do this: on data/sample the spread between LightGBM seeds alone (0.0018 AUC) was the size of the
old champion margin (0.002), and the AUC's standard error about five times that.
Calibrated: the held-out ECE under `ADVOCACY_GATE_MAX_ECE`, since the probabilities are shown and
planned with. A refusal says which rule refused.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from storage.settings import Settings
from training.evaluate import expected_calibration_error


@dataclass
class GateDecision:
    promote: bool
    reason: str
    champion_version: str | None = None
    champion_auc: float | None = None


@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"{self.estimate:+.4f} [{self.low:+.4f}, {self.high:+.4f}]"


Metric = Callable[[np.ndarray, np.ndarray, np.ndarray], float]  # (labels, scores, row weights) -> figure


def _auc(y: np.ndarray, s: np.ndarray, w: np.ndarray) -> float:
    return float(roc_auc_score(y, s, sample_weight=w))


def _ece(y: np.ndarray, p: np.ndarray, w: np.ndarray) -> float:
    return expected_calibration_error(y, p, weight=w)


class RankedAuc:
    """ROC AUC of one fixed score under many row weightings (a bootstrap's draws), equal to
    `roc_auc_score(y, s, sample_weight=w)` with ties counted half, in linear time per weighting: the
    scores are ranked once, and each weighting only sums weights per distinct score. scikit-learn's
    function sorts and validates again on every call, which made the gate's hundreds of draws a third
    of a training run."""

    def __init__(self, y: np.ndarray, s: np.ndarray) -> None:
        self._levels, self._at = np.unique(np.asarray(s, dtype=float), return_inverse=True)
        self._pos = np.asarray(y, dtype=float)

    def __call__(self, w: np.ndarray) -> float:
        n = len(self._levels)
        pos = np.bincount(self._at, weights=w * self._pos, minlength=n)
        neg = np.bincount(self._at, weights=w * (1.0 - self._pos), minlength=n)
        below = np.cumsum(neg) - neg
        return float(np.dot(pos, below + 0.5 * neg) / (pos.sum() * neg.sum()))


def clustered_draws(
    y: np.ndarray,
    scores: dict[str, np.ndarray],
    groups: np.ndarray,
    resamples: int,
    metric: Metric,
    seed: int = 0,
    weight: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """`metric` of each score on `resamples` bootstrap samples of the groups (customers), the same
    samples for every score so that differences are paired; rows count `weight` times (one each
    without it) on top of the draw."""
    codes, uniques = pd.factorize(pd.Series(groups))
    n_groups = len(uniques)
    rng = np.random.default_rng(seed)
    draws = {name: np.empty(resamples) for name in scores}
    every = np.ones(len(y)) if weight is None else np.asarray(weight, dtype=float)
    for b in range(resamples):
        drawn = rng.multinomial(n_groups, np.full(n_groups, 1.0 / n_groups))[codes].astype(float)
        kept = drawn > 0
        one_class = len(np.unique(y[kept])) < 2  # no AUC on such a sample: draw it as the estimate
        for name, s in scores.items():
            draws[name][b] = metric(y, s, every) if one_class else metric(y[kept], s[kept], (drawn * every)[kept])
    return draws


def clustered_auc_draws(
    y: np.ndarray,
    scores: dict[str, np.ndarray],
    groups: np.ndarray,
    resamples: int,
    seed: int = 0,
    weight: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """ROC AUC of each score on paired bootstrap samples of the customers (`clustered_draws`, the same
    draws), each by `RankedAuc`."""
    codes, uniques = pd.factorize(pd.Series(groups))
    rng = np.random.default_rng(seed)
    ranked = {name: RankedAuc(y, s) for name, s in scores.items()}
    draws = {name: np.empty(resamples) for name in scores}
    every = np.ones(len(y)) if weight is None else np.asarray(weight, dtype=float)
    for b in range(resamples):
        drawn = rng.multinomial(len(uniques), np.full(len(uniques), 1.0 / len(uniques)))[codes].astype(float)
        one_class = len(np.unique(y[drawn > 0])) < 2  # no AUC on such a sample: draw it as the estimate
        for name, auc in ranked.items():
            draws[name][b] = auc(every if one_class else drawn * every)
    return draws


def interval(estimate: float, draws: np.ndarray, confidence: float) -> Interval:
    tail = (1 - confidence) / 2
    low, high = np.quantile(draws, [tail, 1 - tail])
    return Interval(estimate, float(low), float(high))


def decide(
    settings: Settings,
    y: np.ndarray,
    groups: np.ndarray,
    new: np.ndarray,
    new_ece: float,
    baseline: tuple[str, np.ndarray],
    champion: tuple[str, np.ndarray] | None,
) -> tuple[GateDecision, dict[str, float]]:
    """The gate's decision on the held-out rows, and the intervals it used as metrics.

    `baseline` and `champion` are (name, scores on the same rows); `champion` is None when there is
    none to beat (or it cannot score these rows).
    """
    base_name, base = baseline
    scores = {"new": new, "baseline": base} | ({"champion": champion[1]} if champion else {})
    draws = clustered_auc_draws(y, scores, groups, settings.gate_resamples)
    auc = {name: float(roc_auc_score(y, s)) for name, s in scores.items()}
    level = settings.gate_confidence
    model = interval(auc["new"], draws["new"], level)
    over_base = interval(auc["new"] - auc["baseline"], draws["new"] - draws["baseline"], level)
    metrics = {
        "model_roc_auc_ci_low": model.low,
        "model_roc_auc_ci_high": model.high,
        "gate_gain_over_baseline_ci_low": over_base.low,
        "gate_gain_over_baseline_ci_high": over_base.high,
    }
    pct = f"{level:.0%}"
    if not new_ece <= settings.gate_max_ece:
        reason = (
            f"refused: held-out ECE {new_ece:.4f} is over the ceiling {settings.gate_max_ece} (ADVOCACY_GATE_MAX_ECE)"
        )
        return GateDecision(False, reason), metrics
    if not over_base.low > 0:
        reason = f"refused: AUC gain over {base_name} {over_base} ({pct} interval, by customer) is not above zero"
        return GateDecision(False, reason), metrics
    if champion is None:
        return GateDecision(
            True, f"promoted: first champion; AUC {model.estimate:.4f}, gain over {base_name} {over_base}"
        ), metrics
    version = champion[0]
    over_champ = interval(auc["new"] - auc["champion"], draws["new"] - draws["champion"], level)
    metrics |= {"gate_gain_over_champion_ci_low": over_champ.low, "gate_gain_over_champion_ci_high": over_champ.high}
    if over_champ.low > 0:
        reason = f"promoted: AUC gain over champion v{version} {over_champ} ({pct} interval, by customer) is above zero"
        return GateDecision(True, reason, version, auc["champion"]), metrics
    reason = (
        f"refused: AUC gain over champion v{version} {over_champ} ({pct} interval, by customer) is not above zero; "
        "champion stays"
    )
    return GateDecision(False, reason, version, auc["champion"]), metrics


@dataclass(frozen=True)
class HeldOut:
    """One model's newest held-out rows: labels, customers, and the champion's and the candidate's
    probabilities; `weight`, what each row counts for (one each without it), as the candidate's
    calibrators were fitted (`models.calibration.campaign_weights`)."""

    name: str
    y: np.ndarray
    groups: np.ndarray
    champion: np.ndarray
    new: np.ndarray
    weight: np.ndarray | None = None


def decide_recalibration(
    settings: Settings, targets: list[HeldOut], version: str
) -> tuple[GateDecision, dict[str, float]]:
    """The gate for new calibrators on the champion's own trees (`advocacy recalibrate`).

    Ranking cannot improve by calibration, so the rules are: every model's held-out ECE under the
    ceiling; no model's ECE worse than the champion's beyond noise, nor its AUC lower by more than
    `gate_max_auc_loss` beyond noise (per-type offsets can reorder asks across types: on the faded
    sample of the tests, -0.003 AUC for an acceptance ECE of 0.028 instead of 0.158); and at least
    one model's ECE lower beyond noise. Noise is a paired bootstrap interval resampling customers,
    as in `decide`. Each held-out row counts as it did in the fit (`HeldOut.weight`): calibrators
    fitted to trust campaign answers over the asks the company chose itself are judged by the same
    evidence, or the gate would hold them to the very bias they correct.
    """
    level, pct = settings.gate_confidence, f"{settings.gate_confidence:.0%}"
    metrics: dict[str, float] = {}
    better: list[str] = []
    for t in targets:
        scores = {"new": t.new, "champion": t.champion}
        ece = {k: expected_calibration_error(t.y, s, weight=t.weight) for k, s in scores.items()}
        metrics |= {f"{t.name}_ece": ece["new"], f"{t.name}_champion_ece": ece["champion"]}
        if not ece["new"] <= settings.gate_max_ece:
            reason = f"refused: {t.name} ECE {ece['new']:.4f} is over the ceiling {settings.gate_max_ece}"
            return GateDecision(False, reason, version), metrics
        e_draws = clustered_draws(t.y, scores, t.groups, settings.gate_resamples, _ece, weight=t.weight)
        drop = interval(ece["champion"] - ece["new"], e_draws["champion"] - e_draws["new"], level)
        a_draws = clustered_auc_draws(t.y, scores, t.groups, settings.gate_resamples, weight=t.weight)
        auc = {k: float(roc_auc_score(t.y, s, sample_weight=t.weight)) for k, s in scores.items()}
        change = interval(auc["new"] - auc["champion"], a_draws["new"] - a_draws["champion"], level)
        metrics |= {f"gate_{t.name}_ece_drop_ci_low": drop.low, f"gate_{t.name}_ece_drop_ci_high": drop.high}
        metrics |= {f"gate_{t.name}_auc_change_ci_high": change.high}
        if drop.high < 0:
            reason = f"refused: {t.name} ECE drop {drop} ({pct} interval, by customer) is below zero"
            return GateDecision(False, f"{reason}; champion v{version} stays", version), metrics
        if change.high < -settings.gate_max_auc_loss:
            reason = f"refused: {t.name} AUC change {change} ({pct} interval) is below -{settings.gate_max_auc_loss}"
            return GateDecision(False, f"{reason}; champion v{version} stays", version), metrics
        if drop.low > 0:
            better.append(f"{t.name} ECE {ece['champion']:.4f} -> {ece['new']:.4f} (drop {drop})")
    if not better:
        reason = f"refused: no model's ECE is lower than champion v{version}'s beyond noise ({pct} interval); it stays"
        return GateDecision(False, reason, version), metrics
    return GateDecision(True, "promoted: recalibrated, " + "; ".join(better), version), metrics
