"""A model trained on a prepared feature table (bring your own features), and its MLflow pyfunc.

Any table works: numeric columns stay numbers, text columns become categories (levels learned at
training time, unseen ones read as missing). The score is a blend in log-odds of a LightGBM booster
and a logistic regression (`tree_weight` 1 is the booster alone, 0 the regression alone), calibrated
once. The regression is stored as plain numbers, since trees cannot extrapolate a covariate that drifts
past its training range and a linear model can. `predict` returns the calibrated probability and the
three strongest reasons (TreeSHAP and the regression's terms, blended with the same weight) as
"feature = value (raises/lowers likelihood)".
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import lightgbm as lgb
import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel

from models.bundle import check_format
from models.calibration import Calibrator
from models.encoding import FeatureEncoder
from models.reasons import top_indices

TABLE_ARTIFACT = "table_model"
# The layout of table_model.json. Loading reads every field as this code saves it and fills nothing
# in, so any change to what is saved bumps this number, and a model of another format is refused with
# a line saying to retrain.
TABLE_FORMAT = 1
MISSING_CODE = -1.0  # a categorical code the encoder left missing (or unseen): a level of its own


@dataclass(frozen=True)
class LinearScore:
    """A logistic regression on the encoder's matrix: log-odds = intercept + one term per column.

    A numeric column's term is `coef * (x - mean) / scale`, a missing value read as the training
    median; a categorical column's term is its level's coefficient (missing reads as `MISSING_CODE`,
    a code never seen in training adds nothing).
    """

    intercept: float
    numeric: tuple[int, ...]  # positions in the encoder's columns
    medians: tuple[float, ...]
    means: tuple[float, ...]
    scales: tuple[float, ...]
    numeric_coef: tuple[float, ...]
    categorical: tuple[int, ...] = ()
    levels: tuple[tuple[float, ...], ...] = ()  # sorted codes seen in training, per categorical column
    level_coef: tuple[tuple[float, ...], ...] = ()

    def contributions(self, x: np.ndarray) -> np.ndarray:
        """Each column's term in the log-odds, shaped like `x` (zero for a column the model does not read)."""
        out = np.zeros(x.shape, dtype=np.float64)
        for j, median, mean, scale, coef in zip(
            self.numeric, self.medians, self.means, self.scales, self.numeric_coef, strict=True
        ):
            column = np.where(np.isnan(x[:, j]), median, x[:, j])
            out[:, j] = coef * (column - mean) / scale
        for j, levels, coefs in zip(self.categorical, self.levels, self.level_coef, strict=True):
            codes = np.nan_to_num(x[:, j], nan=MISSING_CODE)
            known, weights = np.asarray(levels), np.asarray(coefs)
            pos = np.minimum(np.searchsorted(known, codes), len(known) - 1)
            out[:, j] = np.where(known[pos] == codes, weights[pos], 0.0)
        return out

    def raw(self, x: np.ndarray) -> np.ndarray:
        return self.intercept + self.contributions(x).sum(axis=1)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LinearScore:
        return cls(
            float(data["intercept"]),
            tuple(data["numeric"]),
            tuple(data["medians"]),
            tuple(data["means"]),
            tuple(data["scales"]),
            tuple(data["numeric_coef"]),
            tuple(data["categorical"]),
            tuple(tuple(v) for v in data["levels"]),
            tuple(tuple(v) for v in data["level_coef"]),
        )


@dataclass
class TableBundle:
    label: str
    encoder: FeatureEncoder
    booster: lgb.Booster | None  # None when the regression alone was chosen
    calibrator: Calibrator
    metrics: dict[str, float]
    linear: LinearScore | None = None  # None when the booster alone was chosen
    tree_weight: float = 1.0

    def raw_score(self, x: np.ndarray, num_threads: int = 1) -> np.ndarray:
        """The blended log-odds of an encoded matrix, before calibration."""
        raw = np.zeros(len(x))
        if self.booster is not None:
            raw += self.tree_weight * np.asarray(self.booster.predict(x, raw_score=True, num_threads=num_threads))
        if self.linear is not None:
            raw += (1.0 - self.tree_weight) * self.linear.raw(x)
        return raw

    def proba(self, frame: pd.DataFrame, num_threads: int = 1) -> np.ndarray:
        return self.calibrator(self.raw_score(self.encoder.transform(frame), num_threads))

    def explain(self, frame: pd.DataFrame, k: int = 3) -> list[list[str]]:
        x = self.encoder.transform(frame)
        contrib = np.zeros(x.shape)
        if self.booster is not None:
            contrib += self.tree_weight * np.asarray(self.booster.predict(x, pred_contrib=True))[:, :-1]
        if self.linear is not None:
            contrib += (1.0 - self.tree_weight) * self.linear.contributions(x)
        picked = top_indices(contrib, k)
        out = []
        for i, row in enumerate(picked):
            texts = []
            for j in row:
                name = self.encoder.columns[j]
                direction = "raises" if contrib[i, j] > 0 else "lowers"
                texts.append(f"{name} = {frame[name].iloc[i]} ({direction} likelihood)")
            out.append(texts)
        return out

    def save(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        if self.booster is not None:
            (directory / "booster.txt").write_text(self.booster.model_to_string())
        meta = {
            "format": TABLE_FORMAT,
            "label": self.label,
            "encoder": self.encoder.to_dict(),
            "calibrator": self.calibrator.to_dict(),
            "metrics": self.metrics,
            "linear": self.linear.to_dict() if self.linear is not None else None,
            "tree_weight": self.tree_weight,
        }
        (directory / "table_model.json").write_text(json.dumps(meta, indent=1))
        return directory

    @classmethod
    def load(cls, directory: Path | str) -> TableBundle:
        directory = Path(directory)
        meta = json.loads((directory / "table_model.json").read_text())
        check_format(meta.get("format"), TABLE_FORMAT, directory, "advocacy train --table")
        booster_file = directory / "booster.txt"
        linear = meta["linear"]
        return cls(
            meta["label"],
            FeatureEncoder.from_dict(meta["encoder"]),
            lgb.Booster(model_str=booster_file.read_text()) if booster_file.exists() else None,
            Calibrator.from_dict(meta["calibrator"]),
            meta["metrics"],
            LinearScore.from_dict(linear) if linear is not None else None,
            float(meta["tree_weight"]),
        )


class TablePyfunc(PythonModel):
    """`predict(frame)` -> `probability`, `reason_1`..`reason_3`."""

    bundle: TableBundle

    def load_context(self, context: Any) -> None:
        self.bundle = TableBundle.load(context.artifacts[TABLE_ARTIFACT])

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        out = pd.DataFrame({"probability": self.bundle.proba(model_input, num_threads=2)})
        reasons = self.bundle.explain(model_input)
        for r in range(3):
            out[f"reason_{r + 1}"] = [texts[r] if len(texts) > r else None for texts in reasons]
        return out


def load_table_bundle(model_uri: str) -> TableBundle:
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri))
    return TableBundle.load(local / "artifacts" / TABLE_ARTIFACT)
