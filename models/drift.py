"""Population stability of features and scores against the training data kept in the bundle.

PSI (population stability index) over ten quantile bins of the training distribution (levels for
categoricals); the usual reading: < 0.1 stable, 0.1-0.25 watch, > 0.25 shifted.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from features.spec import CATEGORICAL_FEATURES, NUMERIC_FEATURES

PSI_ALERT = 0.25
_EPS = 1e-4
_BINS = 10


def _numeric_profile(values: np.ndarray) -> dict[str, Any]:
    finite = values[np.isfinite(values)]
    edges = np.unique(np.quantile(finite, np.linspace(0, 1, _BINS + 1)[1:-1])) if len(finite) else np.array([])
    return {"kind": "numeric", "edges": edges.tolist(), "shares": _numeric_shares(values, edges).tolist()}


def _numeric_counts(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Rows per bin of `edges`; the last bin holds missing values."""
    missing = ~np.isfinite(values)
    bins = np.searchsorted(edges, values[~missing], side="right")
    return np.append(np.bincount(bins, minlength=len(edges) + 1).astype(float), missing.sum())


def _categorical_counts(values: pd.Series, levels: list[str]) -> np.ndarray:
    """Rows per level; the last bin holds every other value."""
    counts = values.astype("str").value_counts()
    known = np.array([counts.get(lv, 0) for lv in levels], dtype=float)
    return np.append(known, len(values) - known.sum())


def _numeric_shares(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    return _numeric_counts(values, edges) / max(len(values), 1)


def _categorical_shares(values: pd.Series, levels: list[str]) -> np.ndarray:
    return _categorical_counts(values, levels) / max(len(values), 1)


def reference_profile(frame: pd.DataFrame, scores: np.ndarray) -> dict[str, Any]:
    """Bin edges and shares of each feature and of the score on the training rows."""
    profile: dict[str, Any] = {name: _numeric_profile(frame[name].to_numpy(dtype=float)) for name in NUMERIC_FEATURES}
    for name in CATEGORICAL_FEATURES:
        levels = sorted(frame[name].dropna().astype("str").unique().tolist())
        profile[name] = {
            "kind": "categorical",
            "levels": levels,
            "shares": _categorical_shares(frame[name], levels).tolist(),
        }
    profile["score"] = _numeric_profile(np.asarray(scores, dtype=float))
    return profile


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    e = np.clip(np.asarray(expected, dtype=float), _EPS, None)
    a = np.clip(np.asarray(actual, dtype=float), _EPS, None)
    return float(np.sum((a - e) * np.log(a / e)))


def drift_counts(reference: Mapping[str, Any], frame: pd.DataFrame, scores: np.ndarray) -> dict[str, list[float]]:
    """Per feature (and `score`), row counts in the reference's bins: the counts of chunks add up."""
    out: dict[str, list[float]] = {}
    for name, ref in reference.items():
        if name == "score" or ref["kind"] == "numeric":
            values = np.asarray(scores if name == "score" else frame[name].to_numpy(dtype=float), dtype=float)
            counts = _numeric_counts(values, np.asarray(ref["edges"], dtype=float))
        else:
            counts = _categorical_counts(frame[name], ref["levels"])
        out[name] = counts.tolist()
    return out


def drift_from_counts(reference: Mapping[str, Any], counts: Mapping[str, Any], rows: int) -> pd.DataFrame:
    """PSI per feature and for the score from summed bin counts, flagged above `PSI_ALERT`, worst first."""
    report = []
    for name, ref in reference.items():
        shares = np.asarray(counts.get(name, np.zeros(len(ref["shares"]))), dtype=float) / max(rows, 1)
        value = psi(np.asarray(ref["shares"]), shares)
        report.append({"name": name, "psi": value, "drifted": value > PSI_ALERT})
    frame = pd.DataFrame(report, columns=["name", "psi", "drifted"])
    return frame.sort_values("psi", ascending=False, kind="stable").reset_index(drop=True)
