"""Model tiers (spec section 5): cut-offs on calibrated propensity fixed at training time.

champion = top 3% of the reference population (the newest snapshot of the training data),
advocate = next 12%, supporter = next 35%, else none. The cut-offs and a quantile grid of the
reference scores (for percentiles) travel in the bundle, so API and batch give the same tier.

A committed customer (an accepted ask not yet delivered, `features.commitments`) is certain to look
like an advocate and tells a CSM nothing new: their tier is `committed`, and the cut-offs are
fixed on the uncommitted base alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

TIER_SHARES: tuple[tuple[str, float], ...] = (("champion", 0.03), ("advocate", 0.12), ("supporter", 0.35))
NO_TIER = "none"
TIER_ORDER: tuple[str, ...] = (NO_TIER, "supporter", "advocate", "champion")
COMMITTED = "committed"
TIERS_SHOWN: tuple[str, ...] = (COMMITTED, *TIER_ORDER[::-1])  # as reports list them, best first
_GRID = np.linspace(0.0, 1.0, 1001)


def tier_rank(tiers: np.ndarray | list[str]) -> np.ndarray:
    """0 for none ... 3 for champion. Committed is no model tier and has no rank (a KeyError):
    comparisons of tiers leave committed rows out first."""
    rank = {name: i for i, name in enumerate(TIER_ORDER)}
    return np.array([rank[t] for t in tiers], dtype=np.int64)


def is_committed(accepted_not_delivered: np.ndarray | pd.Series | list[float]) -> np.ndarray:
    """Committed pipeline: at least one accepted ask open (the feature `accepted_not_delivered`)."""
    return np.nan_to_num(np.asarray(accepted_not_delivered, dtype=float)) >= 1


@dataclass(frozen=True)
class Tiers:
    cutoffs: tuple[float, ...]  # minimum calibrated propensity of champion, advocate, supporter
    reference_quantiles: tuple[float, ...]

    @classmethod
    def fit(cls, reference_scores: np.ndarray) -> Tiers:
        scores = np.asarray(reference_scores, dtype=float)
        if len(scores) == 0:
            raise ValueError("cannot fix tier cut-offs on an empty reference population")
        cumulative = np.cumsum([share for _, share in TIER_SHARES])
        cutoffs = tuple(float(np.quantile(scores, 1.0 - c)) for c in cumulative)
        return cls(cutoffs, tuple(np.quantile(scores, _GRID).tolist()))

    def assign(self, propensity: np.ndarray) -> np.ndarray:
        p = np.asarray(propensity, dtype=float)
        out = np.full(p.shape, NO_TIER, dtype=object)
        for (name, _), cut in reversed(list(zip(TIER_SHARES, self.cutoffs, strict=True))):
            out[p >= cut] = name
        return out

    def percentile(self, propensity: np.ndarray) -> np.ndarray:
        """Share of the reference population scoring at or below, in percent (0..100)."""
        q = np.asarray(self.reference_quantiles)
        p = np.asarray(propensity, dtype=float)
        # interpolate the inverse of the quantile function; flat runs resolve to their upper end
        right = np.searchsorted(q, p, side="right")
        return np.round(100.0 * np.clip(right - 1, 0, len(q) - 1) / (len(q) - 1), 1)

    def to_dict(self) -> dict[str, Any]:
        return {"cutoffs": list(self.cutoffs), "reference_quantiles": list(self.reference_quantiles)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Tiers:
        return cls(tuple(data["cutoffs"]), tuple(data["reference_quantiles"]))
