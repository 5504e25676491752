"""Probability calibration fitted on the validation window only, stored as plain numbers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

Method = Literal["platt", "isotonic"]


@dataclass(frozen=True)
class Calibrator:
    """Maps a booster's raw score (log-odds) to a calibrated probability; monotone non-decreasing."""

    method: Method
    params: tuple[float, ...]  # platt: (a, b); isotonic: x knots then y knots

    @classmethod
    def fit(cls, raw_score: np.ndarray, y: np.ndarray, method: Method = "platt") -> Calibrator:
        raw_score = np.asarray(raw_score, dtype=float)
        if method == "platt":
            lr = LogisticRegression(C=1e6, max_iter=1000).fit(raw_score.reshape(-1, 1), y)
            return cls("platt", (float(lr.coef_[0, 0]), float(lr.intercept_[0])))
        iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(raw_score, y)
        x, v = iso.X_thresholds_, iso.y_thresholds_
        return cls("isotonic", tuple(np.concatenate([x, v]).tolist()))

    def __call__(self, raw_score: np.ndarray) -> np.ndarray:
        raw_score = np.asarray(raw_score, dtype=float)
        if self.method == "platt":
            a, b = self.params
            # A negative slope would invert the ranking: never let calibration do that.
            return np.asarray(1.0 / (1.0 + np.exp(-(max(a, 1e-6) * raw_score + b))))
        half = len(self.params) // 2
        x, v = np.asarray(self.params[:half]), np.asarray(self.params[half:])
        return np.interp(raw_score, x, v)

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "params": list(self.params)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibrator:
        return cls(data["method"], tuple(data["params"]))
