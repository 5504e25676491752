"""Stored ask plans: one Parquet file of planned asks and one JSON file of what was asked for per
`plan_id`, so that asks recorded with that `plan_id` can later be set against the promise.

Plans are not kept for ever (`ADVOCACY_PLAN_KEEP_DAYS`, `Retention`): whenever a plan is stored,
those last written more than that many days ago are deleted, except the plans that asks in the ask
log name, which the program report still sets against their promise. The sweep runs at most once
an hour per folder (a marker file remembers when), so storing a plan never lists a large folder
more often than that.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from storage.asklog import AskLog
from storage.files import atomic_path, write_frame
from storage.settings import Settings

_PLAN_ID = re.compile(r"^[0-9a-f]{32}$")
_PLAN_FILE = re.compile(r"^(?P<plan_id>[0-9a-f]{32})\.(?:json|parquet)$")
_SWEPT = ".swept"  # its modification time: the last sweep of the folder
SWEEP_EVERY_S = 3600.0
DAY_S = 86_400.0

log = logging.getLogger(__name__)


class _LinksOnly:
    """The ask log is opened here only to read which plans its asks name: nothing is validated or
    returned as asks, so it needs no data contract (`features.contracts`, a layer above storage)."""

    def validate(self, frame: pd.DataFrame, received_at: pd.Timestamp | None = None) -> pd.DataFrame:
        raise TypeError("the ask log is opened read-only for its plan links")

    def empty(self) -> pd.DataFrame:
        return pd.DataFrame()


def linked_plans(ask_log: Path) -> set[str]:
    """The plan ids that asks in the ask log at `ask_log` name (none when there is no log)."""
    if not ask_log.exists():
        return set()
    return set(AskLog(ask_log, _LinksOnly()).plan_links()["plan_id"])


@dataclass(frozen=True)
class Retention:
    """Which stored plans are kept: those written within `keep_days` (0: every plan), and those that
    `in_use` names (called only when some plan is older than that)."""

    keep_days: int
    in_use: Callable[[], Iterable[str]]

    @classmethod
    def from_settings(cls, settings: Settings) -> Retention:
        """`ADVOCACY_PLAN_KEEP_DAYS`, and the plans that the asks of `ADVOCACY_ASK_LOG` name."""
        ask_log = settings.ask_log_path()
        return cls(settings.plan_keep_days, lambda: linked_plans(ask_log))


class PlanStore:
    """Plans under `root`: `<plan_id>.parquet` (the asks) and `<plan_id>.json` (request and summary).

    `retention` says which plans a save sweeps away; without one, none is (every door builds its
    store with the settings', `Retention.from_settings`).
    """

    def __init__(self, root: Path, retention: Retention | None = None) -> None:
        self.root = Path(root)
        self.retention = retention
        # Per plan: its table file's (inode, mtime, size) when read, and the customers it plans.
        self._customers: dict[str, tuple[tuple[int, int, int], frozenset[str]]] = {}

    def _paths(self, plan_id: str) -> tuple[Path, Path]:
        if not _PLAN_ID.match(plan_id):
            raise ValueError(f"plan_id: not a plan id: {plan_id!r}")
        return self.root / f"{plan_id}.parquet", self.root / f"{plan_id}.json"

    def save(self, plan_id: str, asks: pd.DataFrame, meta: dict[str, Any]) -> None:
        """Write both files atomically; the JSON last, so a plan with a JSON file is complete. Then
        sweep away the plans past their retention (at most hourly; a failed sweep fails no save)."""
        table, info = self._paths(plan_id)
        self.root.mkdir(parents=True, exist_ok=True)
        write_frame(asks, table)
        with atomic_path(info) as tmp:
            tmp.write_text(json.dumps(meta, indent=1, default=str))
        try:
            self._sweep_if_due()
        except (OSError, sqlite3.Error) as err:
            log.warning("could not sweep old plans from %s: %s", self.root, err)

    def load(self, plan_id: str) -> tuple[pd.DataFrame, dict[str, Any]]:
        table, info = self._paths(plan_id)
        if not info.exists():
            raise KeyError(f"no plan {plan_id}")
        return pd.read_parquet(table), json.loads(info.read_text())

    def record(self, plan_id: str) -> dict[str, Any]:
        """What was asked for, without the asks: listing campaigns need not read every plan's table."""
        _, info = self._paths(plan_id)
        if not info.exists():
            raise KeyError(f"no plan {plan_id}")
        return dict(json.loads(info.read_text()))

    def customers(self, plan_id: str) -> frozenset[str]:
        """The customers a stored plan asks (its table's `customer_id` column alone), read again only
        when the table's file changes: every campaign wave reads those of every open campaign, and a
        campaign's table is rewritten only when a wave is added to it."""
        table, info = self._paths(plan_id)
        if not info.exists():
            raise KeyError(f"no plan {plan_id}")
        # Looked at before reading: a table replaced meanwhile differs from this stamp, so is read again.
        stat = table.stat()
        stamp = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        kept = self._customers.get(plan_id)
        if kept is not None and kept[0] == stamp:
            return kept[1]
        planned = frozenset(pd.read_parquet(table, columns=["customer_id"])["customer_id"].astype("str"))
        self._customers[plan_id] = (stamp, planned)
        return planned

    def has(self, plan_id: str) -> bool:
        """Whether a complete plan `plan_id` is stored (one look-up, whatever the number of plans)."""
        return bool(_PLAN_ID.match(plan_id)) and (self.root / f"{plan_id}.json").is_file()

    def ids(self) -> list[str]:
        return sorted(p.stem for p in self.root.glob("*.json")) if self.root.exists() else []

    def _sweep_if_due(self) -> None:
        if self.retention is None or self.retention.keep_days <= 0:
            return
        marker = self.root / _SWEPT
        try:
            if time.time() - marker.stat().st_mtime < SWEEP_EVERY_S:
                return
        except FileNotFoundError:
            pass
        self.prune()
        marker.touch()

    def prune(self, now: float | None = None) -> list[str]:
        """Delete the plans last written more than the retention's days before `now` (seconds since
        the epoch; the clock by default) that no ask names; return their ids."""
        retention = self.retention
        if retention is None or retention.keep_days <= 0 or not self.root.exists():
            return []
        cutoff = (time.time() if now is None else now) - retention.keep_days * DAY_S
        old: dict[str, list[Path]] = {}
        young: set[str] = set()
        with os.scandir(self.root) as entries:
            for entry in entries:
                found = _PLAN_FILE.match(entry.name)
                if found is None:
                    continue
                if entry.stat().st_mtime < cutoff:
                    old.setdefault(found["plan_id"], []).append(Path(entry.path))
                else:
                    young.add(found["plan_id"])
        expired = set(old) - young
        if expired:
            expired -= set(retention.in_use())
        for plan_id in sorted(expired):
            self._customers.pop(plan_id, None)
            # The JSON first: without it the plan is no longer complete, whatever happens next.
            for path in sorted(old[plan_id], key=lambda p: p.suffix != ".json"):
                path.unlink(missing_ok=True)
        return sorted(expired)
