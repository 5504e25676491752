"""Training sets for both models, split by time, with a fingerprint of the data they came from."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import pandas as pd

from features.commitments import COMMITMENT_LAPSE_DAYS
from features.io import World
from features.labels import (
    ANSWER_HORIZON,
    HORIZON,
    acceptance_dataset,
    immature_asks,
    monthly_split,
    observed_until,
    propensity_dataset,
    time_split,
)
from usecases.sources import LEFT_OUT


@dataclass
class TrainingData:
    """Both training frames with a `split` column: train / valid / test (or purged)."""

    propensity: pd.DataFrame
    acceptance: pd.DataFrame
    fingerprint: dict[str, Any]
    lapse_days: int = COMMITMENT_LAPSE_DAYS  # the committed pipeline's lapse the features were built with

    def part(self, target: str, split: str) -> pd.DataFrame:
        frame: pd.DataFrame = getattr(self, target)
        return frame[frame["split"] == split].reset_index(drop=True)


def fingerprint(world: World) -> dict[str, Any]:
    """Row counts, the covered period and a content hash of the raw tables."""
    digest = hashlib.sha256()
    out: dict[str, Any] = {}
    for name, frame in world.as_dict().items():
        out[f"rows_{name}"] = len(frame)
        digest.update(name.encode())
        digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    out["data_hash"] = digest.hexdigest()[:16]
    out["data_start"] = str(world.customers["contract_start"].min())
    out["data_end"] = str(observed_until(world))
    return out


def build_training_data(
    world: World,
    test_months: int = 3,
    valid_months: int = 3,
    left_out: dict[str, int] | None = None,
    lapse_days: int = COMMITMENT_LAPSE_DAYS,
) -> TrainingData:
    """Monthly propensity snapshots and past asks, each split by time (newest window = test).

    `left_out` counts rows the caller could not use (`LEFT_OUT` keys); they go into the fingerprint.
    """
    prop = propensity_dataset(world, lapse_days=lapse_days)
    if prop.empty:
        raise ValueError("no propensity snapshots: the data covers too short a period")
    split = monthly_split(prop["as_of"], test_months, valid_months)
    prop["split"] = split.assign(prop["as_of"], HORIZON).to_numpy()

    acc = acceptance_dataset(world, lapse_days=lapse_days)
    immature = int(immature_asks(world).sum())
    if len(acc) < 50:
        raise ValueError(f"only {len(acc)} past asks: too few to train the ask-acceptance model")
    acc_split = time_split(acc["as_of"])
    acc["split"] = acc_split.assign(acc["as_of"]).to_numpy()

    fp = fingerprint(world) | dict(left_out or {})
    if immature:
        fp[f"{LEFT_OUT}asks.from_the_last_{ANSWER_HORIZON.days}_days_not_yet_answerable"] = immature
    for target, frame in (("propensity", prop), ("acceptance", acc)):
        for part, count in frame["split"].value_counts().items():
            fp[f"{target}_{part}_rows"] = int(count)
        fp[f"{target}_positive_rate"] = float(frame["label"].mean())
    fp["propensity_test_start"] = str(split.test_start)
    fp["acceptance_test_start"] = str(acc_split.test_start)
    fp["commitment_lapse_days"] = lapse_days
    return TrainingData(prop, acc, fp, lapse_days)
