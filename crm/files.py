"""Import files for teams without API access: HubSpot's import CSV and Salesforce Data Loader's CSV.

One file per kind of record, named for the target (`hubspot-profiles.csv`,
`hubspot-activities.csv`, `salesforce-profiles.csv`, `salesforce-activities.csv`), with a header of
the CRM's field names, so each column maps onto its property or field by name. HubSpot's importer
reads dates as Year-Month-Day and times as `YYYY-MM-DD HH:MM:SS` (UTC); Data Loader reads ISO 8601
(`...T...Z`). Empty cells are empty (Data Loader clears a field from one only with "Insert null
values" set). Every text cell a spreadsheet would run as a formula is defused
(`storage.files.spreadsheet_safe`), and each file appears whole or not at all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from crm.fields import columns, renamed
from storage.files import atomic_path, spreadsheet_safe
from usecases.profiles import FIELD_KINDS


def _hubspot_time(value: Any) -> Any:
    return value.replace("T", " ").removesuffix("Z") if isinstance(value, str) else value


def import_frame(
    target: str, kind: str, records: Sequence[Mapping[str, Any]], names: Mapping[str, str]
) -> pd.DataFrame:
    """The records of one kind as the target's import file holds them (text cells, the CRM's names)."""
    if target == "hubspot":
        times = [f for f, k in FIELD_KINDS.items() if k == "datetime"]
        records = [{f: _hubspot_time(v) if f in times else v for f, v in r.items()} for r in records]
    rows = [renamed(r, names) for r in records]
    return pd.DataFrame(rows, columns=columns(kind, names), dtype="str")


def write_import_files(
    target: str, records: Mapping[str, Sequence[Mapping[str, Any]]], names: Mapping[str, str], out_dir: Path
) -> list[Path]:
    """Write `<target>-<kind>.csv` per kind into `out_dir` (created if missing); the paths written."""
    written = []
    for kind, rows in records.items():
        path = Path(out_dir) / f"{target}-{kind}.csv"
        frame = spreadsheet_safe(import_frame(target, kind, rows, names))
        with atomic_path(path) as tmp:
            frame.to_csv(tmp, index=False)
        written.append(path)
    return written


__all__ = ["import_frame", "write_import_files"]
