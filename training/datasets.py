"""Training sets for both models, split by time, with a fingerprint of the data they came from."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import pandas as pd

from features.commitments import COMMITMENT_LAPSE_DAYS
from features.contracts import CONTRACTS
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


LEFT_OUT = "left_out."  # fingerprint keys: rows training could not use, `left_out.<table>.<why>` -> count


def leave_out_future(world: World, now: pd.Timestamp) -> tuple[World, dict[str, int]]:
    """`world` without the event rows dated after `now` (beyond clock skew), and how many each table lost.

    Such a row cannot have happened yet: a wrong year or unit that still passed the contract's
    1900-2199 bounds, or an ask log written before asks from the future were refused. Kept, one
    row in 2100 would stretch the monthly snapshots over 900 years. Customers are kept: a contract
    that starts later is a customer who is not live yet.
    """
    tables = world.as_dict()
    counts: dict[str, int] = {}
    for name, frame in tables.items():
        if name == "customers":
            continue
        late = CONTRACTS[name].dated_after(frame, now)
        if late.any():
            counts[f"{LEFT_OUT}{name}.dated_in_the_future"] = int(late.sum())
            tables[name] = frame[~late.to_numpy()].reset_index(drop=True)
    return (World(**tables) if counts else world), counts


def describe_left_out(fingerprint: dict[str, Any]) -> list[str]:
    """One line per kind of row training left out, e.g. "asks: 3 rows dated in the future"."""
    lines = []
    for key, count in fingerprint.items():
        if key.startswith(LEFT_OUT):
            table, _, why = key.removeprefix(LEFT_OUT).partition(".")
            lines.append(f"{table}: {count:,} rows {why.replace('_', ' ')}")
    return lines


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
