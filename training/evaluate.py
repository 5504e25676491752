"""Held-out evaluation: the model beside the points baseline and, on synthetic data, the truth.

Only this module reads `truth/`: the generator's true probabilities are for honest evaluation,
never an input of the product.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

from features.baseline import baseline_tier, rule_points
from features.catalog import ASK_TYPE_NAMES, SEGMENTS
from features.io import World
from features.labels import observed_until
from features.pointintime import active_points, build_features
from models.allocation import at_least
from models.bundle import Bundle, acceptance_matrix
from training.fit import Matrices

TOP_SHARES = {"champion": 0.03, "advocate_or_better": 0.15}


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10, weight: np.ndarray | None = None) -> float:
    """Mean |observed rate - mean predicted| over equal-width probability bins, weighted by bin size
    (by the rows' total `weight`, e.g. a bootstrap's counts, when given)."""
    y, p = np.asarray(y, dtype=float), np.asarray(p, dtype=float)
    w = np.ones_like(p) if weight is None else np.asarray(weight, dtype=float)
    idx = np.minimum((p * bins).astype(int), bins - 1)
    gap = np.abs(np.bincount(idx, w * y, bins) - np.bincount(idx, w * p, bins))
    return float(gap.sum() / max(w.sum(), 1e-12))


def _auc(y: np.ndarray, score: np.ndarray) -> float:
    return float(roc_auc_score(y, score)) if len(np.unique(y)) == 2 else float("nan")


def ranking_metrics(y: np.ndarray, score: np.ndarray, prefix: str) -> dict[str, float]:
    return {
        f"{prefix}roc_auc": _auc(y, score),
        f"{prefix}pr_auc": float(average_precision_score(y, score)) if y.sum() else float("nan"),
    }


def tier_metrics(y: np.ndarray, selected: np.ndarray, prefix: str) -> dict[str, float]:
    """Precision and recall of a selected group (a tier) against the label."""
    hits = float((y[selected] == 1).sum())
    return {
        f"{prefix}precision": hits / selected.sum() if selected.sum() else float("nan"),
        f"{prefix}recall": hits / y.sum() if y.sum() else float("nan"),
        f"{prefix}share": float(selected.mean()),
    }


def gain_curve(y: np.ndarray, score: np.ndarray, points: int = 20) -> pd.DataFrame:
    """Share of positives captured in the top x% by score (ties broken by order)."""
    order = np.argsort(-score, kind="stable")
    captured = np.cumsum(y[order]) / max(y.sum(), 1)
    shares = np.linspace(0, 1, points + 1)[1:]
    idx = np.maximum((shares * len(y)).astype(int) - 1, 0)
    return pd.DataFrame({"share": shares, "gain": captured[idx], "lift": captured[idx] / shares})


MIN_CALIBRATION_ROWS = 50  # fewer held-out rows in a segment or ask type give no ECE worth reporting


def evaluate_propensity(bundle: Bundle, m: Matrices) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Test-window metrics of the model and of the points baseline on the same rows."""
    frame, x, y = m.frames["test"], m.x["test"], m.y["test"]
    p = bundle.propensity.proba(x, num_threads=2)
    points = rule_points(frame).sum(axis=1).astype(float)
    metrics = {**ranking_metrics(y, p, "propensity_"), **ranking_metrics(y, points, "baseline_")}
    metrics["propensity_ece"] = expected_calibration_error(y, p)
    metrics["propensity_brier"] = float(brier_score_loss(y, p))
    tiers = bundle.tiers.assign(p)
    base = baseline_tier(points)
    metrics |= tier_metrics(y, tiers == "champion", "propensity_champion_")
    metrics |= tier_metrics(y, np.isin(tiers, ["champion", "advocate"]), "propensity_advocate_or_better_")
    metrics |= tier_metrics(y, base == "champion", "baseline_champion_")
    metrics |= tier_metrics(y, np.isin(base, ["champion", "advocate"]), "baseline_advocate_or_better_")
    for name, share in TOP_SHARES.items():
        k = max(round(share * len(y)), 1)
        metrics[f"propensity_lift_top_{name}"] = float(
            y[np.argsort(-p, kind="stable")[:k]].mean() / max(y.mean(), 1e-9)
        )
        metrics[f"baseline_lift_top_{name}"] = float(
            y[np.argsort(-points, kind="stable")[:k]].mean() / max(y.mean(), 1e-9)
        )
    metrics["propensity_test_rows"] = float(len(y))
    metrics["propensity_test_positive_rate"] = float(y.mean())
    segments = frame["segment"].astype(str).to_numpy()
    for segment in SEGMENTS:  # a probability shown is a promise in every segment, not only on average
        mask = segments == segment
        if mask.sum() >= MIN_CALIBRATION_ROWS:
            metrics[f"ece_segment_{segment}"] = expected_calibration_error(y[mask], p[mask])
    return metrics, {"y": y, "p": p, "points": points}


def evaluate_acceptance(bundle: Bundle, m: Matrices) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    frame, x, y = m.frames["test"], m.x["test"], m.y["test"]
    p = bundle.acceptance.proba(x, num_threads=2)
    metrics = ranking_metrics(y, p, "acceptance_")
    metrics["acceptance_ece"] = expected_calibration_error(y, p)
    metrics["acceptance_test_rows"] = float(len(y))
    types = frame["ask_type"].to_numpy()
    for t in ASK_TYPE_NAMES:
        mask = types == t
        if mask.sum() >= 20:
            metrics[f"acceptance_auc_{t}"] = _auc(y[mask], p[mask])
        if mask.sum() >= MIN_CALIBRATION_ROWS:  # a plan's promise per type is only as good as this
            metrics[f"acceptance_ece_{t}"] = expected_calibration_error(y[mask], p[mask])
    return metrics, {"y": y, "p": p, "ask_type": types}


def truth_metrics(
    data_dir: Path, prop: Matrices, prop_scores: dict[str, np.ndarray], acc: Matrices, acc_scores: dict[str, np.ndarray]
) -> dict[str, float]:
    """AUC of the generator's true probabilities on the same test rows, and the model's share of it."""
    truth_dir = Path(data_dir) / "truth"
    if not truth_dir.is_dir():
        return {}
    out: dict[str, float] = {}
    truth_prop = pd.read_parquet(truth_dir / "propensity.parquet")
    truth_prop["as_of"] = pd.to_datetime(truth_prop["as_of"], utc=True).astype(prop.frames["test"]["as_of"].dtype)
    rows = prop.frames["test"][["customer_id", "as_of"]].merge(truth_prop, on=["customer_id", "as_of"], how="left")
    known = rows["p_true"].notna().to_numpy()
    if known.any():
        y, p, points = (prop_scores[k][known] for k in ("y", "p", "points"))
        out |= propensity_truth_metrics(y, p, points, rows["p_true"].to_numpy()[known])
    truth_acc = pd.read_parquet(truth_dir / "acceptance.parquet")
    rows = acc.frames["test"][["ask_id"]].merge(truth_acc, on="ask_id", how="left")
    known = rows["p_true"].notna().to_numpy()
    if known.any():
        y = acc_scores["y"][known]
        out["truth_acceptance_roc_auc"] = _auc(y, rows["p_true"].to_numpy()[known])
        out["acceptance_auc_vs_truth"] = _auc(y, acc_scores["p"][known]) / out["truth_acceptance_roc_auc"]
    return out


def expected_auc(p_true: np.ndarray, score: np.ndarray) -> float:
    """The ROC AUC of `score` expected over labels drawn from the true probabilities: every row is
    a positive with weight p_true and a negative with weight 1 - p_true."""
    p_true, score = np.asarray(p_true, dtype=float), np.asarray(score, dtype=float)
    y = np.r_[np.ones(p_true.size), np.zeros(p_true.size)]
    return float(roc_auc_score(y, np.r_[score, score], sample_weight=np.r_[p_true, 1.0 - p_true]))


def ece_vs_truth(p: np.ndarray, p_true: np.ndarray, bins: int = 10) -> float:
    """Calibration against the true probabilities: mean |mean predicted - mean true| over
    equal-width bins of the prediction, weighted by bin size (no label noise in it)."""
    p, p_true = np.asarray(p, dtype=float), np.asarray(p_true, dtype=float)
    idx = np.minimum((p * bins).astype(int), bins - 1)
    counts = np.bincount(idx, minlength=bins)
    gap = np.abs(np.bincount(idx, p, bins) - np.bincount(idx, p_true, bins))
    return float(gap.sum() / max(counts.sum(), 1))


def propensity_truth_metrics(y: np.ndarray, p: np.ndarray, points: np.ndarray, p_true: np.ndarray) -> dict[str, float]:
    """The model beside the points rule and the truth on the same held-out rows (realised labels `y`)."""
    truth, model, rule = _auc(y, p_true), _auc(y, p), _auc(y, points)
    return {
        "truth_propensity_roc_auc": truth,
        "truth_propensity_rows": float(y.size),
        "propensity_auc_vs_truth": model / truth,
        "propensity_gap_closed": (model - rule) / (truth - rule) if truth > rule else float("nan"),
        "propensity_ece_vs_truth": ece_vs_truth(p, p_true),
    }


def acceptance_everyone_metrics(data_dir: Path, world: World, bundle: Bundle, since: pd.Timestamp) -> dict[str, float]:
    """Acceptance judged where a plan uses it: every live customer x ask type at each month start
    from `since` (the held-out window), asked then or not, against the generator's truth.

    Expected AUC (over labels drawn from the truth) of the model and of the truth itself, and the
    calibration against the truth overall, per ask type, and for customers never asked before
    (whom the company's choice of whom to ask says least about: the selection bias).
    """
    path = Path(data_dir) / "truth" / "acceptance_by_type.parquet"
    if not path.exists():
        return {}
    truth = pd.read_parquet(path)
    truth["as_of"] = pd.to_datetime(truth["as_of"], utc=True)
    truth = truth[(truth["as_of"] >= since) & (truth["as_of"] < observed_until(world))]
    frames = []
    for t in sorted(truth["as_of"].unique()):
        feats = build_features(world, active_points(world, pd.Timestamp(t)), bundle.lapse_days)
        p = bundle.acceptance.proba(acceptance_matrix(bundle.encoder.transform(feats)), num_threads=2)
        n_types = len(ASK_TYPE_NAMES)
        frames.append(
            pd.DataFrame(
                {
                    "customer_id": np.repeat(feats["customer_id"].to_numpy(), n_types),
                    "as_of": pd.Timestamp(t),
                    "ask_type": np.tile(np.asarray(ASK_TYPE_NAMES), len(feats)),
                    "p": p,
                    "never_asked": np.repeat(feats["asks_total"].fillna(0).to_numpy() == 0, n_types),
                }
            )
        )
    if not frames:
        return {}
    rows = pd.concat(frames).merge(truth.astype({"ask_type": "str"}), on=["customer_id", "as_of", "ask_type"])
    p, p_true = rows["p"].to_numpy(), rows["p_true"].to_numpy(dtype=float)
    out = {
        "acceptance_everyone_rows": float(len(rows)),
        "acceptance_everyone_expected_auc": expected_auc(p_true, p),
        "truth_acceptance_everyone_expected_auc": expected_auc(p_true, p_true),
        "acceptance_everyone_ece_vs_truth": ece_vs_truth(p, p_true),
    }
    out["acceptance_everyone_auc_vs_truth"] = (
        out["acceptance_everyone_expected_auc"] / out["truth_acceptance_everyone_expected_auc"]
    )
    for name, mask in [(f"type_{t}", rows["ask_type"].eq(t)) for t in ASK_TYPE_NAMES] + [
        ("never_asked", rows["never_asked"]),
        ("asked_before", ~rows["never_asked"]),
    ]:
        m = mask.to_numpy()
        if m.sum() >= MIN_CALIBRATION_ROWS:
            out[f"acceptance_everyone_ece_vs_truth_{name}"] = ece_vs_truth(p[m], p_true[m])
            out[f"acceptance_everyone_bias_{name}"] = float(p[m].mean() - p_true[m].mean())
    return out


def truth_chance(p_true: np.ndarray, n: int) -> float:
    """The true chance that asking customers with true acceptance `p_true` gives at least n yeses."""
    p = np.nan_to_num(np.asarray(p_true, dtype=float))
    return float(at_least(p, n)[-1]) if p.size else 0.0
