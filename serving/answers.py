"""The words of the service's error answers: one wording per kind of fault, whatever the door.

`serving.service.Advocacy._answer` maps errors to HTTP answers; this module says what those answers
say, so that a caller reads the same thing on every path and never reads the server's internals:

- A body that is not JSON, or that the route's model refuses (`invalid_body`): a 400 that names
  the place in the body, never a Python class (BentoML's wording named the request model, a class
  that differed between `application/json` and `application/json; charset=utf-8`).
- A full disk (`disk_full`): a 507 saying that nothing was stored.
- Not ready yet (`not_ready`): a 503 saying what the service waits for and what makes it ready,
  never the error's own text: that names files and stores of the server, which go to its log.
"""

from __future__ import annotations

import errno
import os
import re
import sqlite3
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from starlette.responses import JSONResponse

from features.contracts import DataContractError
from models.registry import ChampionUnavailableError
from serving.store import IncompatibleStateError
from storage.snapshots import SnapshotRefusedError

_INVALID_JSON = re.compile(r"^Invalid JSON: (?P<why>.*?)(?: at line (?P<line>\d+) column (?P<column>\d+))?$")
_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})
NEARLY_FULL_BYTES = 1 << 20  # below this much free space, an I/O error of SQLite is a full disk

DISK_FULL = (
    "the server's disk is full: nothing was stored. Ask whoever runs the service to free space on it, "
    "then send the same request again"
)
LOADING = "still loading the champion model and the feature snapshot"


class MissingFieldError(ValueError):
    """A field the body must hold when another is absent (`need` without a campaign's `plan_id`):
    a 400 whose `detail` names it as pydantic names a missing field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field

    def detail(self) -> list[dict[str, Any]]:
        return [{"type": "missing", "loc": [self.field], "msg": str(self)}]


def error(status: int, message: str, **extra: Any) -> JSONResponse:
    """The one shape of every error answer: `{"error": message, ...}`."""
    return JSONResponse({"error": message, **extra}, status_code=status)


def _place(loc: tuple[int | str, ...] | list[int | str]) -> str:
    return ".".join(str(step) for step in loc) or "the body"


def invalid_body(exc: ValidationError) -> JSONResponse:
    """400 for a request body that is not valid JSON or does not fit the route: the message says
    where, `detail` lists every problem as pydantic reports it (`loc`, `msg`, `type`)."""
    detail = exc.errors(include_context=False, include_input=False)
    bad_json = next((d for d in detail if d["type"] == "json_invalid"), None)
    if bad_json is not None:
        found = _INVALID_JSON.match(str(bad_json["msg"]))
        why = found["why"] if found else "it cannot be read"
        at = f" (line {found['line']}, column {found['column']})" if found and found["line"] else ""
        message = f"the body is not valid UTF-8 JSON: {why}{at}"
    else:
        first = detail[0]
        more = f" (and {len(detail) - 1} more, each in `detail`)" if len(detail) > 1 else ""
        message = f"invalid body: {_place(first['loc'])}: {first['msg']}{more}"
    return error(400, message, detail=detail)


def _nearly_no_space(folder: Path) -> bool:
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        stats = os.statvfs(folder)
    except OSError:
        return False
    return stats.f_bavail * stats.f_frsize < NEARLY_FULL_BYTES


def disk_full(err: BaseException | None, sqlite_folder: Path | None = None) -> bool:
    """Whether `err`, or an error it was raised from or while handling, is a full disk or quota.

    An OSError says so itself (ENOSPC, EDQUOT), and so does SQLite's SQLITE_FULL ("database or disk
    is full"). But SQLite reports some writes that found no space only as an I/O error: a connection
    that opens a log no other connection has open regrows its shared-memory file first, which fails
    as SQLITE_IOERR_SHMSIZE ("disk I/O error"). Such an error counts as a full disk when the file
    system of `sqlite_folder` has less than `NEARLY_FULL_BYTES` left. SQLite also rolls a transaction
    back by itself on these errors, so the error that surfaces may be the failed ROLLBACK after it.
    """
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in _FULL:
            return True
        if isinstance(err, sqlite3.Error):
            code = getattr(err, "sqlite_errorcode", None) or 0
            if code & 0xFF == sqlite3.SQLITE_FULL:
                return True
            if code & 0xFF == sqlite3.SQLITE_IOERR and sqlite_folder is not None and _nearly_no_space(sqlite_folder):
                return True
        err = err.__cause__ or err.__context__
    return False


def not_ready(err: BaseException | None) -> str:
    """Why the service is not ready, for a 503: what it waits for and what would help, never a path."""
    if err is None:
        return LOADING
    if isinstance(err, ChampionUnavailableError):
        return (
            "no champion model could be loaded (train one with `advocacy train`, or check the MLflow registry); "
            "it keeps trying, and the server log says why"
        )
    if isinstance(err, SnapshotRefusedError):
        return "the feature snapshot was refused as too small; it keeps trying, and the server log says why"
    if isinstance(err, FileNotFoundError):
        return (
            "a store it reads is missing (the MLflow store or the feature snapshot: `advocacy up` makes both); "
            "it keeps trying, and the server log names it"
        )
    if isinstance(err, IncompatibleStateError | DataContractError):
        return (
            "the feature snapshot does not fit the champion model (rescore with `advocacy score`); it keeps "
            "trying, and the server log says why"
        )
    return (
        "the champion model or the feature snapshot could not be loaded; it keeps trying, and the server log says why"
    )
