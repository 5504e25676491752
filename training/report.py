"""Plots and the model card logged with every training run."""

from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: runs in CI and on servers
import matplotlib.pyplot as plt
import numpy as np
import shap
from matplotlib.figure import Figure
from sklearn.calibration import calibration_curve

from features.catalog import ASK_TYPE_NAMES
from features.spec import FEATURE_NAMES
from models.bundle import Bundle
from training.evaluate import gain_curve
from usecases.sources import describe_left_out


def shap_beeswarm(bundle: Bundle, x: np.ndarray, max_rows: int = 1000, seed: int = 0) -> Figure:
    rows = np.random.default_rng(seed).choice(len(x), size=min(max_rows, len(x)), replace=False)
    sample = x[np.sort(rows)]
    contrib = bundle.propensity.contributions(sample, num_threads=2)
    explanation = shap.Explanation(
        values=contrib[:, :-1], base_values=contrib[:, -1], data=sample, feature_names=list(FEATURE_NAMES)
    )
    plt.figure(figsize=(9, 8))
    shap.plots.beeswarm(explanation, max_display=15, show=False)
    fig = plt.gcf()
    fig.suptitle("What drives advocacy propensity (SHAP, log-odds)")
    fig.tight_layout()
    return fig


def calibration_plot(curves: dict[str, tuple[np.ndarray, np.ndarray]]) -> Figure:
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], ":", color="grey", label="perfect")
    for name, (y, p) in curves.items():
        observed, predicted = calibration_curve(y, p, n_bins=10, strategy="quantile")
        ax.plot(predicted, observed, "o-", label=name)
    ax.set(xlabel="predicted probability", ylabel="observed rate", title="Calibration on the held-out window")
    ax.legend()
    fig.tight_layout()
    return fig


def gain_plot(y: np.ndarray, scores: dict[str, np.ndarray]) -> Figure:
    fig, ax = plt.subplots(figsize=(6, 4.5))
    ax.plot([0, 1], [0, 1], ":", color="grey", label="random")
    for name, s in scores.items():
        g = gain_curve(y, s)
        ax.plot(np.r_[0, g["share"]], np.r_[0, g["gain"]], label=name)
    ax.set(xlabel="share of customers contacted (best first)", ylabel="share of advocates found", title="Gain")
    ax.legend()
    fig.tight_layout()
    return fig


def per_ask_type_plot(metrics: dict[str, float]) -> Figure:
    names = [t for t in ASK_TYPE_NAMES if f"acceptance_auc_{t}" in metrics]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.barh(names, [metrics[f"acceptance_auc_{t}"] for t in names])
    ax.axvline(0.5, color="grey", linestyle=":")
    ax.set(xlim=(0.4, 1.0), xlabel="ROC AUC (held-out asks)", title="Ask acceptance by ask type")
    fig.tight_layout()
    return fig


def backtest_plot(metrics: dict[str, float]) -> Figure:
    """Held-out AUC of the model and the points rule in each rolling-origin window (oldest on the left)."""
    n = int(metrics.get("backtest_windows", 0))
    numbers = list(range(n, 0, -1))
    fig, ax = plt.subplots(figsize=(7, 4))
    for who, label in (("model", "model"), ("baseline", "points rule")):
        ax.plot(numbers, [metrics[f"backtest_{i}_{who}_roc_auc"] for i in numbers], marker="o", label=label)
    ax.set_xticks(numbers, [f"window {i}" for i in numbers])
    ax.set(ylabel="ROC AUC (held-out window)", title="Rolling-origin backtest (window 1 = newest)")
    ax.legend()
    fig.tight_layout()
    return fig


def _fmt(metrics: dict[str, float], key: str) -> str:
    value = metrics.get(key)
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.3f}"


def _backtest(metrics: dict[str, float]) -> str:
    n = int(metrics.get("backtest_windows", 0))
    cells = [
        f"{metrics[f'backtest_{i}_model_roc_auc']:.3f} vs {metrics[f'backtest_{i}_baseline_roc_auc']:.3f}"
        for i in range(1, n + 1)
    ]
    return "; ".join(cells) or "too short a history for a window"


def _by(metrics: dict[str, float], prefix: str) -> str:
    """`name value` for every metric starting with `prefix` (e.g. each segment's ECE), or "none reported"."""
    parts = [f"{k.removeprefix(prefix)} {v:.3f}" for k, v in sorted(metrics.items()) if k.startswith(prefix)]
    return ", ".join(parts) or "none reported (too few held-out rows)"


def _truth_lines(metrics: dict[str, float]) -> str:
    """The figures against the generator's truth (synthetic data only; empty otherwise)."""
    m = lambda k: _fmt(metrics, k)  # noqa: E731
    truth = (
        f"- Truth (synthetic data only): true-probability AUC {m('truth_propensity_roc_auc')} (propensity), "
        f"{m('truth_acceptance_roc_auc')} (acceptance); the model reaches {m('propensity_auc_vs_truth')} and "
        f"{m('acceptance_auc_vs_truth')} of it.\n"
        if "truth_propensity_roc_auc" in metrics
        else ""
    )
    everyone = (
        f"- Acceptance for every live customer x ask type at each month start of the held-out window (asked or "
        f"not, synthetic data only): expected AUC {m('acceptance_everyone_auc_vs_truth')} of the truth's, ECE "
        f"against the true probabilities {m('acceptance_everyone_ece_vs_truth')} (by type: "
        f"{_by(metrics, 'acceptance_everyone_ece_vs_truth_type_')}). Mean bias for customers never asked before: "
        f"{m('acceptance_everyone_bias_never_asked')}; for customers asked before: "
        f"{m('acceptance_everyone_bias_asked_before')}.\n"
        if "acceptance_everyone_ece_vs_truth" in metrics
        else ""
    )
    return truth + everyone


def _fit_line(params: dict[str, Any]) -> str:
    refit = (
        "- Early stopping on validation chose the number of trees; the final boosters were then fitted again on "
        "training + validation rows with that number, and their calibrators on cross-fitted validation scores "
        "(each half scored by a booster fitted without it).\n"
        if params.get("refit")
        else "- Calibrators (acceptance: one shrunk offset per ask type) were fitted on the validation window, "
        "which their boosters never saw.\n"
    )
    return refit


def model_card(metrics: dict[str, float], fingerprint: dict[str, Any], gate: str, params: dict[str, Any]) -> str:
    m = lambda k: _fmt(metrics, k)  # noqa: E731
    return f"""# Model card: advocacy propensity and ask acceptance

## Intended use
Rank customers by how likely they are to advocate in the next 90 days and by how likely they are to
accept each kind of ask, so that advocacy teams ask the right customers, less often. Scores are
decision support for people, served beside the 100-point rule; they are not a verdict on a customer.

## Data
- Rows: {fingerprint.get("propensity_train_rows", "?")} propensity snapshots for training,
  {fingerprint.get("propensity_valid_rows", "?")} for validation, {fingerprint.get("propensity_test_rows", "?")} held out
  (from {fingerprint.get("propensity_test_start", "?")}); {fingerprint.get("acceptance_train_rows", "?")} /
  {fingerprint.get("acceptance_valid_rows", "?")} / {fingerprint.get("acceptance_test_rows", "?")} past asks.
- Period: {fingerprint.get("data_start", "?")} to {fingerprint.get("data_end", "?")}; data hash `{fingerprint.get("data_hash", "?")}`.
- Splits are by time; training rows whose 90-day label window reaches into validation or test are purged.
- Left out: {"; ".join(describe_left_out(fingerprint)) or "no rows"}.
{_fit_line(params)}
## Held-out results (newest window)
| | model | points rule |
|---|---|---|
| propensity ROC AUC | {m("propensity_roc_auc")} | {m("baseline_roc_auc")} |
| propensity PR AUC | {m("propensity_pr_auc")} | {m("baseline_pr_auc")} |
| precision in champion tier | {m("propensity_champion_precision")} | {m("baseline_champion_precision")} |
| recall in champion tier | {m("propensity_champion_recall")} | {m("baseline_champion_recall")} |
| precision, advocate or better | {m("propensity_advocate_or_better_precision")} | {m("baseline_advocate_or_better_precision")} |
| recall, advocate or better | {m("propensity_advocate_or_better_recall")} | {m("baseline_advocate_or_better_recall")} |
| lift in the top 3% | {m("propensity_lift_top_champion")} | {m("baseline_lift_top_champion")} |

- Calibration error (ECE): propensity {m("propensity_ece")}, acceptance {m("acceptance_ece")}.
- Propensity ECE by segment: {_by(metrics, "ece_segment_")}.
- Acceptance ECE by ask type: {_by(metrics, "acceptance_ece_")}.
- Held-out propensity AUC, 95% interval resampling customers: {m("model_roc_auc_ci_low")} to {m("model_roc_auc_ci_high")}.
- Rolling-origin backtest, model against points rule, newest window first: {_backtest(metrics)} (`backtest.png`).
- Ask acceptance ROC AUC: {m("acceptance_roc_auc")} (per ask type in `per_ask_type_auc.png`).
{_truth_lines(metrics)}
## Promotion gate
{gate}

## Parameters
```
{params}
```

## Limits
- **Selection bias from the asking policy.** Acceptance is learned only from asks that were made, and
  today's asks follow the points rule: customers the rule never favours are rarely asked, so the model
  knows least about exactly the customers it might newly recommend. Treat acceptance for rarely-asked
  profiles with caution, keep some exploration in the asking policy, and compare against the points
  rule on the held-out window (above) rather than trusting in-sample fit. Where whom to ask also
  follows something no table records (rapport), no reweighting of the recorded asks can remove the
  bias: on the generated drifting worlds acceptance is over-estimated by 0.04-0.06 for customers
  never asked, and weighting the asks by 1 / P(asked | features) removed only 15-20% of that at a
  cost of 0.004-0.009 expected AUC, so it is not used (`benchmarks/selection_bias.py`). Plans made
  for customers never asked promise more than they will give by about that much; recalibrate
  (`advocacy recalibrate`) as answers come in.
- Propensity labels count any recorded activity; advocacy that is not recorded is invisible.
- Customers with no usage yet, or in a segment never seen in training, get the points rule instead of
  a model score (cold start).
- Monotone constraints (NPS, adoption, health never lower propensity; recent asks never raise
  acceptance) trade a little fit for behaviour people can trust.
"""
