"""The model bundle: everything learned at training time, saved and loaded as one directory.

Two LightGBM boosters (propensity, ask acceptance), their input encoders and calibrators, the tier
cut-offs, the feature and rules versions, the ask value weights and guardrail settings, and the
training distribution used for drift checks. The MLflow pyfunc wraps exactly this directory.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np

from features.baseline import RULES_VERSION
from features.catalog import ASK_EFFORT_HOURS, ASK_TYPE_NAMES, DEFAULT_ASK_VALUES
from features.commitments import COMMITMENT_LAPSE_DAYS
from features.spec import FEATURE_NAMES, FEATURE_VERSION
from models.calibration import Calibrator
from models.encoding import FeatureEncoder
from models.tiers import Tiers

# The layout of bundle.json. Loading reads every field as this code saves it and fills nothing in,
# so any change to what is saved bumps this number, and a bundle of another format is refused with
# a line saying to retrain. (Format 1 gained fields without a bump, so it does not say which it has.)
BUNDLE_FORMAT = 2


@dataclass
class TargetModel:
    """One booster with its calibration."""

    booster: lgb.Booster
    calibrator: Calibrator
    group_column: int | None = None  # the input column whose codes pick the calibrator's offsets (ask_type)

    def raw_score(self, matrix: np.ndarray, num_threads: int = 1) -> np.ndarray:
        return np.asarray(self.booster.predict(matrix, raw_score=True, num_threads=num_threads))

    def proba(self, matrix: np.ndarray, num_threads: int = 1) -> np.ndarray:
        groups = None if self.group_column is None else matrix[:, self.group_column]
        return self.calibrator(self.raw_score(matrix, num_threads), groups)

    def contributions(self, matrix: np.ndarray, num_threads: int = 1) -> np.ndarray:
        """TreeSHAP values in log-odds, one column per feature plus the base value last."""
        return np.asarray(self.booster.predict(matrix, pred_contrib=True, num_threads=num_threads))


def acceptance_matrix(customer_matrix: np.ndarray, ask_types: Sequence[str] = ASK_TYPE_NAMES) -> np.ndarray:
    """Rows of the acceptance model's input: each customer row once per ask type (customer-major).

    The acceptance model reads the customer features followed by `ask_type` (its index in the
    catalog, a categorical) and `ask_effort_hours`.
    """
    n, width = customer_matrix.shape
    codes = np.array([ASK_TYPE_NAMES.index(t) for t in ask_types], dtype=np.float64)
    effort = np.array([ASK_EFFORT_HOURS[t] for t in ask_types], dtype=np.float64)
    # Written once, by broadcasting, into the C-ordered array LightGBM reads without a copy.
    out = np.empty((n, len(ask_types), width + 2), dtype=np.float64)
    out[:, :, :width] = customer_matrix[:, None, :]
    out[:, :, width] = codes
    out[:, :, width + 1] = effort
    return out.reshape(n * len(ask_types), width + 2)


def ask_rows_matrix(customer_matrix: np.ndarray, ask_types: Sequence[str]) -> np.ndarray:
    """The acceptance model's input for one given ask per customer row (training, past asks)."""
    codes = np.array([ASK_TYPE_NAMES.index(t) for t in ask_types], dtype=np.float64)
    effort = np.array([ASK_EFFORT_HOURS[t] for t in ask_types], dtype=np.float64)
    return np.column_stack([customer_matrix, codes, effort])


ACCEPTANCE_CATEGORICAL_INDEX = len(FEATURE_NAMES)  # ask_type's column in the acceptance matrix


@dataclass
class Bundle:
    encoder: FeatureEncoder
    propensity: TargetModel
    acceptance: TargetModel
    tiers: Tiers
    ask_values: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_ASK_VALUES))
    guardrails: dict[str, Any] = field(default_factory=dict)
    # How long an accepted ask stays committed pipeline (features.commitments), fixed at training:
    # the features it was trained on were built with it, so scoring builds them the same way.
    lapse_days: int = COMMITMENT_LAPSE_DAYS
    drift_reference: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    feature_version: str = FEATURE_VERSION
    rules_version: str = RULES_VERSION
    trained_at: str = ""
    model_version: str = "unregistered"

    def save(self, directory: Path | str) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        meta: dict[str, Any] = {
            "format": BUNDLE_FORMAT,
            "feature_version": self.feature_version,
            "rules_version": self.rules_version,
            "trained_at": self.trained_at,
            "encoder": self.encoder.to_dict(),
            "tiers": self.tiers.to_dict(),
            "ask_values": self.ask_values,
            "guardrails": self.guardrails,
            "lapse_days": self.lapse_days,
            "drift_reference": self.drift_reference,
            "metrics": self.metrics,
        }
        for name in ("propensity", "acceptance"):
            target: TargetModel = getattr(self, name)
            text = target.booster.model_to_string().encode()
            (directory / f"{name}.txt").write_bytes(text)
            meta[name] = {
                "calibrator": target.calibrator.to_dict(),
                "group_column": target.group_column,
                "sha256": hashlib.sha256(text).hexdigest(),
            }
        (directory / "bundle.json").write_text(json.dumps(meta, indent=1))
        return directory

    @classmethod
    def load(cls, directory: Path | str, model_version: str = "unregistered") -> Bundle:
        directory = Path(directory)
        meta = json.loads((directory / "bundle.json").read_text())
        check_format(meta.get("format"), BUNDLE_FORMAT, directory, "advocacy train")
        if meta["feature_version"] != FEATURE_VERSION:
            raise ValueError(
                f"bundle was trained on feature version {meta['feature_version']}, "
                f"this code computes {FEATURE_VERSION}: retrain"
            )
        targets = {
            name: TargetModel(
                lgb.Booster(model_str=_checked_booster_text(directory, name, meta[name]["sha256"])),
                Calibrator.from_dict(meta[name]["calibrator"]),
                meta[name]["group_column"],
            )
            for name in ("propensity", "acceptance")
        }
        return cls(
            encoder=FeatureEncoder.from_dict(meta["encoder"]),
            propensity=targets["propensity"],
            acceptance=targets["acceptance"],
            tiers=Tiers.from_dict(meta["tiers"]),
            ask_values=meta["ask_values"],
            guardrails=meta["guardrails"],
            lapse_days=int(meta["lapse_days"]),
            drift_reference=meta["drift_reference"],
            metrics=meta["metrics"],
            feature_version=meta["feature_version"],
            rules_version=meta["rules_version"],
            trained_at=meta["trained_at"],
            model_version=model_version,
        )


def check_format(saved: object, current: int, directory: Path, retrain: str) -> None:
    """Refuse a saved model whose format number is not `current`, in one line that says what to do.

    `saved` is None for a model saved before its format was numbered, which is older than any number.
    """
    number = saved if isinstance(saved, int) and not isinstance(saved, bool) else None
    if number == current:
        return
    if number is not None and number > current:
        raise ValueError(
            f"model bundle format {number} in {directory} is newer than this code's {current}: "
            "load it with the code that saved it"
        )
    if number is None and saved is not None:
        raise ValueError(
            f"model bundle format {saved!r} in {directory} is not a format number: retrain with `{retrain}`"
        )
    shown = "(none)" if number is None else number
    raise ValueError(
        f"model bundle format {shown} in {directory} is older than this code's {current}: retrain with `{retrain}`"
    )


def _checked_booster_text(directory: Path, name: str, expected: str) -> str:
    """A booster file's text, refused unless it is byte for byte what was saved.

    LightGBM does not survive every damaged model string (a truncated file can read past its end and
    abort the process), so a file whose checksum differs from the one saved with the model never reaches it.
    """
    data = (directory / f"{name}.txt").read_bytes()
    if hashlib.sha256(data).hexdigest() != expected:
        raise ValueError(f"{directory / name}.txt is damaged: its SHA-256 differs from the one saved with the model")
    return data.decode()
