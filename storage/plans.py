"""Stored ask plans: one Parquet file of planned asks and one JSON file of what was asked for per
`plan_id`, so that asks recorded with that `plan_id` can later be set against the promise."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pandas as pd

from storage.files import atomic_path, write_frame

_PLAN_ID = re.compile(r"^[0-9a-f]{32}$")


class PlanStore:
    """Plans under `root`: `<plan_id>.parquet` (the asks) and `<plan_id>.json` (request and summary)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _paths(self, plan_id: str) -> tuple[Path, Path]:
        if not _PLAN_ID.match(plan_id):
            raise ValueError(f"plan_id: not a plan id: {plan_id!r}")
        return self.root / f"{plan_id}.parquet", self.root / f"{plan_id}.json"

    def save(self, plan_id: str, asks: pd.DataFrame, meta: dict[str, Any]) -> None:
        """Write both files atomically; the JSON last, so a plan with a JSON file is complete."""
        table, info = self._paths(plan_id)
        self.root.mkdir(parents=True, exist_ok=True)
        write_frame(asks, table)
        with atomic_path(info) as tmp:
            tmp.write_text(json.dumps(meta, indent=1, default=str))

    def load(self, plan_id: str) -> tuple[pd.DataFrame, dict[str, Any]]:
        table, info = self._paths(plan_id)
        if not info.exists():
            raise KeyError(f"no plan {plan_id}")
        return pd.read_parquet(table), json.loads(info.read_text())

    def ids(self) -> list[str]:
        return sorted(p.stem for p in self.root.glob("*.json")) if self.root.exists() else []
