"""Turning feature frames (or JSON records) into the float matrix the boosters read.

Category levels are learned once at training time and stored in the bundle: a level never
seen in training, or a missing value, becomes NaN (LightGBM's "missing"), so serving never
depends on pandas categories surviving a round trip.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class FeatureEncoder:
    """Column order and category levels for one model's input matrix."""

    columns: tuple[str, ...]
    levels: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def fit(cls, frame: pd.DataFrame, columns: Sequence[str], categorical: Sequence[str]) -> FeatureEncoder:
        levels = {c: tuple(sorted(frame[c].dropna().astype("str").unique())) for c in categorical}
        return cls(tuple(columns), levels)

    @property
    def categorical_indices(self) -> list[int]:
        return [i for i, c in enumerate(self.columns) if c in self.levels]

    def _codes(self) -> dict[str, dict[str, float]]:
        cached: dict[str, dict[str, float]] | None = self.__dict__.get("_codes_cache")
        if cached is None:
            cached = {c: {v: float(i) for i, v in enumerate(lv)} for c, lv in self.levels.items()}
            object.__setattr__(self, "_codes_cache", cached)
        return cached

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        """A float64 matrix with `columns` in order; unknown or missing categories are NaN."""
        missing = [c for c in self.columns if c not in frame.columns]
        if missing:
            raise KeyError(f"missing feature columns: {', '.join(missing)}")
        out = np.empty((len(frame), len(self.columns)), dtype=np.float64)
        codes = self._codes()
        for i, col in enumerate(self.columns):
            if col in codes:
                out[:, i] = frame[col].map(codes[col]).astype("float64").to_numpy()
            else:
                out[:, i] = pd.to_numeric(frame[col], errors="coerce").astype("float64").to_numpy()
        return out

    def transform_records(self, records: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """The same matrix straight from JSON-like dicts, without building a DataFrame (fast path)."""
        codes = self._codes()
        out = np.full((len(records), len(self.columns)), np.nan, dtype=np.float64)
        for r, record in enumerate(records):
            row = out[r]
            for i, col in enumerate(self.columns):
                value = record.get(col)
                if value is None:
                    continue
                if col in codes:
                    row[i] = codes[col].get(str(value), np.nan)
                else:
                    row[i] = float(value)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"columns": list(self.columns), "levels": {k: list(v) for k, v in self.levels.items()}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeatureEncoder:
        return cls(tuple(data["columns"]), {k: tuple(v) for k, v in data["levels"].items()})
