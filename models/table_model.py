"""A model trained on a prepared feature table (bring your own features), and its MLflow pyfunc.

Any table works: numeric columns stay numbers, text columns become categories (levels learned at
training time, unseen ones read as missing). `predict` returns the calibrated probability and the
three strongest reasons (TreeSHAP) as "feature = value (raises/lowers likelihood)".
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightgbm as lgb
import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel

from models.calibration import Calibrator
from models.encoding import FeatureEncoder
from models.reasons import top_indices

TABLE_ARTIFACT = "table_model"


@dataclass
class TableBundle:
    label: str
    encoder: FeatureEncoder
    booster: lgb.Booster
    calibrator: Calibrator
    metrics: dict[str, float]

    def proba(self, frame: pd.DataFrame, num_threads: int = 1) -> np.ndarray:
        raw = self.booster.predict(self.encoder.transform(frame), raw_score=True, num_threads=num_threads)
        return self.calibrator(np.asarray(raw))

    def explain(self, frame: pd.DataFrame, k: int = 3) -> list[list[str]]:
        x = self.encoder.transform(frame)
        contrib = np.asarray(self.booster.predict(x, pred_contrib=True))[:, :-1]
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
        (directory / "booster.txt").write_text(self.booster.model_to_string())
        meta = {
            "label": self.label,
            "encoder": self.encoder.to_dict(),
            "calibrator": self.calibrator.to_dict(),
            "metrics": self.metrics,
        }
        (directory / "table_model.json").write_text(json.dumps(meta, indent=1))
        return directory

    @classmethod
    def load(cls, directory: Path | str) -> TableBundle:
        directory = Path(directory)
        meta = json.loads((directory / "table_model.json").read_text())
        return cls(
            meta["label"],
            FeatureEncoder.from_dict(meta["encoder"]),
            lgb.Booster(model_str=(directory / "booster.txt").read_text()),
            Calibrator.from_dict(meta["calibrator"]),
            meta["metrics"],
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
