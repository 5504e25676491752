"""Feature snapshots on disk: immutable, versioned folders, and a pointer replaced atomically.

A snapshot is a folder of Parquet tables and a `meta.json` (what they hold is `features.context`'s
business). Each is written to a new folder under the store root and then `CURRENT` (a one-line
file) is replaced atomically, so a reader never sees half a snapshot; all but the newest
`KEEP_SNAPSHOTS` are pruned.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from storage.files import atomic_path

CURRENT = "CURRENT"
KEEP_SNAPSHOTS = 3


class SnapshotRefusedError(ValueError):
    """A new snapshot would empty the served base, or shrink it past the configured share."""


def base_refusal(customers: int, current: int | None, min_share: float) -> str | None:
    """Why a snapshot of `customers` must not replace one of `current` customers (None: it may).

    A snapshot's meta records `customers`, the size of the base it serves. Zero customers serve
    nobody (every /score a 404); fewer than `min_share` of the current base is more often a broken
    export (one region, an empty usage file) than a real loss of customers.
    """
    if customers == 0:
        return "the new feature snapshot holds no active customers: the service would answer 404 for everyone"
    if current and customers < min_share * current:
        return (
            f"the new feature snapshot holds {customers:,} active customers, under {min_share:.0%} of the "
            f"{current:,} served now (ADVOCACY_MIN_SNAPSHOT_SHARE)"
        )
    return None


def check_base(customers: int, root: Path, min_share: float, force: bool = False) -> None:
    """Raise `SnapshotRefusedError` if a snapshot of `customers` must not replace the one at `root`."""
    if force:
        return
    problem = base_refusal(customers, current_customers(root), min_share)
    if problem:
        raise SnapshotRefusedError(
            f"{problem}; the served snapshot stays. Check the input, or publish it anyway with --force-snapshot"
        )


def current_customers(root: Path) -> int | None:
    """`customers` of the snapshot `CURRENT` points at, or None if there is none."""
    try:
        meta = read_meta(current_snapshot_dir(root))
    except (FileNotFoundError, NotADirectoryError):
        return None
    count = meta.get("customers")
    return int(count) if count is not None else None


def read_meta(folder: Path) -> dict[str, Any]:
    """The `meta.json` of one snapshot folder."""
    meta: dict[str, Any] = json.loads((folder / "meta.json").read_text())
    return meta


def write_snapshot(tables: Mapping[str, pd.DataFrame], meta: Mapping[str, Any], root: Path) -> Path:
    """Write a new snapshot folder of `tables` under `root` and point `CURRENT` at it (atomically).

    No base check here: callers that publish what users fed them (`advocacy score`) call `check_base` first.
    """

    def fill(staging: Path) -> Mapping[str, Any]:
        for name, frame in tables.items():
            frame.to_parquet(staging / f"{name}.parquet", index=False)
        return meta

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


def read_snapshot(root: Path) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    """The tables (by name) and the meta of the snapshot `CURRENT` points at."""
    folder = current_snapshot_dir(root)
    tables = {path.stem: pd.read_parquet(path) for path in sorted(folder.glob("*.parquet"))}
    return tables, read_meta(folder)
