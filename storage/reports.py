"""The latest program report (`advocacy report`), kept where the service's page can show it.

One JSON file: the report's aggregate tables as records, its charts as base64 PNG, and when and
over what period it was made. Only aggregates are kept: the rows of single asks stay in MLflow and
in `advocacy report --out`.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from storage.files import atomic_path

REPORT_FILE = "report.json"
REMAKE_HINT = 'remake it with `advocacy report --data DIR`, or with POST /report {"refresh": true}'


class ReportUnavailableError(ValueError):
    """The kept report cannot be shown: a fault of the server's own files, never of whoever asked.

    The message is for anyone (it names no path); `detail` is for the log (it may). It is a
    ValueError for the command line, where a damaged file in the project home is bad input (exit 2);
    the service answers it with a 500 (`serving.service`), never with a 4xx.
    """

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail


class UnreadableReportError(ReportUnavailableError):
    """`report.json` is there but is not a whole report (truncated, damaged, not JSON)."""


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    # pandas' own JSON writer turns NaN into null and timestamps into ISO text
    records: list[dict[str, Any]] = json.loads(frame.to_json(orient="records", date_format="iso"))
    return records


class ReportStore:
    """`root/report.json`, replaced whole on every save."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @property
    def path(self) -> Path:
        return self.root / REPORT_FILE

    def save(self, tables: Mapping[str, pd.DataFrame], charts: Mapping[str, bytes], meta: Mapping[str, Any]) -> Path:
        body = {
            "written_at": datetime.now(UTC).isoformat(timespec="seconds"),
            **meta,
            "tables": {name: _records(frame) for name, frame in tables.items()},
            "charts": {name: base64.b64encode(png).decode("ascii") for name, png in charts.items()},
        }
        self.root.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.path) as tmp:
            tmp.write_text(json.dumps(body, default=str))
        return self.path

    def load(self) -> dict[str, Any] | None:
        """The latest report, or None when `advocacy report` has not been run here.

        Raises `UnreadableReportError` when the file is there but is not a whole report.
        """
        try:
            loaded = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as err:  # ValueError: not JSON, or not UTF-8
            raise UnreadableReportError(
                f"the kept program report is unreadable (damaged or cut short): {REMAKE_HINT}",
                f"{self.path}: {err}",
            ) from err
        if not isinstance(loaded, dict) or not isinstance(loaded.get("tables"), dict):
            raise UnreadableReportError(
                f"the kept program report is not a whole report: {REMAKE_HINT}", f"{self.path}: no tables in it"
            )
        return loaded
