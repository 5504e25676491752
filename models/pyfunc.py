"""The MLflow pyfunc wrapper of the bundle: `predict` returns what the service returns.

Input: a frame of feature rows (`customer_id`, `as_of` and every feature of `features.spec`).
Output: the flattened result columns of spec section 7 (the batch job's columns), computed by
`models.scoring.score`, the same function the API and the batch job call.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow.pyfunc
import pandas as pd
from mlflow.pyfunc import PythonModel

from models.bundle import Bundle
from models.scoring import score

BUNDLE_ARTIFACT = "bundle"


class AdvocacyModel(PythonModel):
    """Both boosters, calibration, tiers, reasons and the points rule behind one `predict`."""

    bundle: Bundle

    def load_context(self, context: Any) -> None:
        self.bundle = Bundle.load(context.artifacts[BUNDLE_ARTIFACT])

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        explain = bool((params or {}).get("explain", True))
        version = (params or {}).get("model_version")
        if version:
            self.bundle.model_version = str(version)
        return score(self.bundle, model_input, explain=explain, num_threads=2).columns()


def load_bundle(model_uri: str, model_version: str | None = None) -> Bundle:
    """The bundle behind a logged or registered model (e.g. `models:/advocacy-propensity@champion`)."""
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri))
    return Bundle.load(local / "artifacts" / BUNDLE_ARTIFACT, model_version=model_version or "unregistered")
