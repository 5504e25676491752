"""What the page's search, disagreement list and worklist show of every stored customer, computed
once per state (vectorised, in slices) and rescored row by row when a recorded ask restates a row."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from models.bundle import Bundle
from models.scoring import score
from serving.store import FeatureStore


@dataclass
class Overview:
    """Per stored customer (store row order): what the page's search and disagreement list show."""

    name: list[str | None]
    segment: list[str | None]
    id_folded: pd.Series
    name_folded: pd.Series
    segment_folded: np.ndarray
    tier: np.ndarray
    baseline_tier: np.ndarray
    baseline_points: np.ndarray
    propensity: np.ndarray
    gap: np.ndarray  # model tier rank - points tier rank (`Scores.tier_gaps`: 0 on cold start, committed)
    re_engage: np.ndarray  # a past advocate with no activity in 180 days

    def update(self, bundle: Bundle, store: FeatureStore, rows: np.ndarray) -> None:
        """Rescore the rows whose features were restated."""
        made = score(bundle, store.values(rows), matrix=store.matrix[rows], explain=False)
        self.tier[rows], self.gap[rows], self.propensity[rows] = made.tier, made.tier_gaps, made.propensity
        self.baseline_tier[rows], self.baseline_points[rows] = made.baseline_tier, made.baseline_points
        self.re_engage[rows] = made.re_engage

    @classmethod
    def build(cls, bundle: Bundle, store: FeatureStore, chunk: int = 100_000) -> Overview:
        n = len(store)
        parts = [
            score(bundle, store.values(rows), matrix=store.matrix[rows], explain=False)
            for rows in np.array_split(np.arange(n, dtype=np.int64), max(1, n // chunk))
        ]
        tier = np.concatenate([p.tier for p in parts]) if parts else np.array([], dtype=object)
        gap = np.concatenate([p.tier_gaps for p in parts]) if parts else np.zeros(0, dtype=np.int64)
        base = np.concatenate([p.baseline_tier for p in parts]) if parts else np.array([], dtype=object)
        names = store.customers["name"].astype("object").where(store.customers["name"].notna(), None)
        segments = store.customers["segment"].astype("object").where(store.customers["segment"].notna(), None)
        return cls(
            name=[None if v is None else str(v) for v in names.tolist()],
            segment=[None if v is None else str(v) for v in segments.tolist()],
            id_folded=pd.Series(store.ids, dtype="str").str.casefold(),
            name_folded=store.customers["name"].fillna("").astype("str").str.casefold().reset_index(drop=True),
            segment_folded=store.customers["segment"].astype("str").str.casefold().to_numpy(dtype=object),
            tier=tier,
            baseline_tier=base,
            baseline_points=np.concatenate([p.baseline_points for p in parts]) if parts else np.zeros(0),
            propensity=np.concatenate([p.propensity for p in parts]) if parts else np.zeros(0),
            gap=gap,
            re_engage=np.concatenate([p.re_engage for p in parts]) if parts else np.zeros(0, dtype=bool),
        )
