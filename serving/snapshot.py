"""The feature store the service reads: the latest point-in-time snapshot, written by the batch job.

A snapshot is a directory of Parquet files:
- `features.parquet`: one row per active customer: `customer_id`, `as_of`, every feature of
  `features.spec`, and context the service needs (`name`, `last_urgent_ticket_at`,
  `recent_reference_calls`);
- `asks.parquet`: the asks known at `as_of` (the guardrails' history);
- `history.parquet`: the last 12 months of events per customer for the CSM timeline;
- `meta.json`: as_of, when it was written, row counts, feature version.

Snapshots are immutable and versioned: each is written to a new folder under the store root and
then `CURRENT` (a one-line file) is replaced atomically, so a reader never sees half a snapshot.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.contracts import TIMESTAMP
from features.io import World, atomic_path
from features.pointintime import active_points, build_features
from features.spec import FEATURE_VERSION

CURRENT = "CURRENT"
KEEP_SNAPSHOTS = 3
HISTORY_DAYS = 365
RECENT_REFERENCE_DAYS = 90


@dataclass
class Snapshot:
    features: pd.DataFrame
    asks: pd.DataFrame
    history: pd.DataFrame
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def as_of(self) -> pd.Timestamp:
        return pd.Timestamp(self.meta["as_of"])


def _last_before(events: pd.DataFrame, time_col: str, as_of: pd.Timestamp, ids: pd.Series) -> pd.Series:
    known = events[events[time_col] < as_of]
    last = known.groupby("customer_id")[time_col].max()
    return ids.map(last).astype(TIMESTAMP)


def _count_since(
    events: pd.DataFrame, time_col: str, start: pd.Timestamp, as_of: pd.Timestamp, ids: pd.Series
) -> np.ndarray:
    window = events[(events[time_col] >= start) & (events[time_col] < as_of)]
    return ids.map(window.groupby("customer_id").size()).fillna(0).to_numpy(dtype=float)


def history_table(world: World, as_of: pd.Timestamp, days: int = HISTORY_DAYS) -> pd.DataFrame:
    """Recent events in one long table (`customer_id`, `at`, `kind`, `detail`), newest first."""
    start = as_of - pd.Timedelta(days=days)

    def window(frame: pd.DataFrame, col: str) -> pd.DataFrame:
        return frame[(frame[col] >= start) & (frame[col] < as_of)]

    nps = window(world.nps, "responded_at")
    tickets = window(world.tickets, "opened_at")
    asks = window(world.asks, "asked_at")
    activities = window(world.activities, "occurred_at")
    # An answer given after as_of is not known at as_of.
    outcome = asks["outcome"].where(asks["responded_at"].notna() & (asks["responded_at"] < as_of), "no answer yet")
    parts = [
        pd.DataFrame(
            {
                "customer_id": nps["customer_id"],
                "at": nps["responded_at"],
                "kind": "nps",
                "detail": "NPS " + nps["score"].astype("str"),
            }
        ),
        pd.DataFrame(
            {
                "customer_id": tickets["customer_id"],
                "at": tickets["opened_at"],
                "kind": "ticket",
                "detail": tickets["priority"] + " ticket",
            }
        ),
        pd.DataFrame(
            {
                "customer_id": asks["customer_id"],
                "at": asks["asked_at"],
                "kind": "ask",
                "detail": asks["ask_type"].str.replace("_", " ") + ": " + outcome.str.replace("_", " "),
            }
        ),
        pd.DataFrame(
            {
                "customer_id": activities["customer_id"],
                "at": activities["occurred_at"],
                "kind": "activity",
                "detail": activities["activity_type"].str.replace("_", " ")
                + np.where(activities["ask_id"].isna(), " (unsolicited)", ""),
            }
        ),
    ]
    out = pd.concat(parts, ignore_index=True)
    out["at"] = out["at"].astype(TIMESTAMP)
    return out.sort_values(["customer_id", "at"], ascending=[True, False], kind="stable").reset_index(drop=True)


def build_snapshot(world: World, as_of: pd.Timestamp, features: pd.DataFrame | None = None) -> Snapshot:
    """Features of every active customer as of `as_of`, with the context the service needs."""
    frame = features if features is not None else build_features(world, active_points(world, as_of))
    ids = frame["customer_id"]
    names = world.customers.set_index("customer_id")["name"]
    frame = frame.copy()
    frame["name"] = ids.map(names).astype("str")
    urgent = world.tickets[world.tickets["priority"] == "urgent"]
    frame["last_urgent_ticket_at"] = _last_before(urgent, "opened_at", as_of, ids).to_numpy()
    refs = world.asks[world.asks["ask_type"] == "reference_call"]
    frame["recent_reference_calls"] = _count_since(
        refs, "asked_at", as_of - pd.Timedelta(days=RECENT_REFERENCE_DAYS), as_of, ids
    )
    asks = world.asks[world.asks["asked_at"] < as_of].copy()
    # Answers after as_of are unknown at as_of: they arrive through POST /asks or the next snapshot.
    later = asks["responded_at"].notna() & (asks["responded_at"] >= as_of)
    asks.loc[later, "outcome"] = "no_response"
    asks.loc[later, "responded_at"] = pd.NaT
    meta = {
        "as_of": as_of.isoformat(),
        "written_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "customers": len(frame),
        "asks": len(asks),
        "feature_version": FEATURE_VERSION,
    }
    return Snapshot(frame.reset_index(drop=True), asks.reset_index(drop=True), history_table(world, as_of), meta)


def write_snapshot(snapshot: Snapshot, root: Path) -> Path:
    """Write a new snapshot folder under `root` and point `CURRENT` at it (atomically)."""

    def fill(staging: Path) -> dict[str, Any]:
        snapshot.features.to_parquet(staging / "features.parquet", index=False)
        snapshot.asks.to_parquet(staging / "asks.parquet", index=False)
        snapshot.history.to_parquet(staging / "history.parquet", index=False)
        return snapshot.meta

    return publish_snapshot(root, fill)


def publish_snapshot(root: Path, fill: Callable[[Path], Mapping[str, Any]]) -> Path:
    """The one way a snapshot appears: `fill` writes the tables into a staging folder and returns the
    meta; the folder is fsynced and renamed to `snapshot-<stamp>`, then `CURRENT` is replaced
    atomically and all but the newest `KEEP_SNAPSHOTS` are pruned. A reader sees the old snapshot or
    the new one, never part of one."""
    root.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    staging = root / f".staging-{stamp}"
    final = root / f"snapshot-{stamp}"
    staging.mkdir()
    try:
        meta = fill(staging)
        (staging / "meta.json").write_text(json.dumps(dict(meta), indent=1))
        for path in staging.iterdir():
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())
        os.replace(staging, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    with atomic_path(root / CURRENT) as tmp:
        tmp.write_text(final.name + "\n")
    for old in sorted(root.glob("snapshot-*"))[:-KEEP_SNAPSHOTS]:
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    return final


def current_snapshot_dir(root: Path) -> Path:
    pointer = root / CURRENT
    if not pointer.exists():
        raise FileNotFoundError(f"no feature snapshot in {root}: run `advocacy score` (or `advocacy up`) first")
    return root / pointer.read_text().strip()


def read_snapshot(root: Path) -> Snapshot:
    """The snapshot `CURRENT` points at."""
    folder = current_snapshot_dir(root)
    return Snapshot(
        features=pd.read_parquet(folder / "features.parquet"),
        asks=pd.read_parquet(folder / "asks.parquet"),
        history=pd.read_parquet(folder / "history.parquet"),
        meta=json.loads((folder / "meta.json").read_text()),
    )


def guardrail_signals(features: pd.DataFrame) -> pd.DataFrame:
    """The per-customer inputs of `models.guardrails.blocked_asks`."""
    return features.loc[:, ["customer_id", "health_score", "last_urgent_ticket_at"]]
