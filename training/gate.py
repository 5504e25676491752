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

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from storage.settings import Settings


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


def clustered_auc_draws(
    y: np.ndarray, scores: dict[str, np.ndarray], groups: np.ndarray, resamples: int, seed: int = 0
) -> dict[str, np.ndarray]:
    """ROC AUC of each score on `resamples` bootstrap samples of the groups (customers), the same
    samples for every score so that differences are paired."""
    codes, uniques = pd.factorize(pd.Series(groups))
    n_groups = len(uniques)
    rng = np.random.default_rng(seed)
    draws = {name: np.empty(resamples) for name in scores}
    for b in range(resamples):
        weight = rng.multinomial(n_groups, np.full(n_groups, 1.0 / n_groups))[codes].astype(float)
        kept = weight > 0
        if len(np.unique(y[kept])) < 2:  # a sample with one class has no AUC: draw it as the estimate
            for name, s in scores.items():
                draws[name][b] = roc_auc_score(y, s)
            continue
        for name, s in scores.items():
            draws[name][b] = roc_auc_score(y[kept], s[kept], sample_weight=weight[kept])
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
