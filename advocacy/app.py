"""The `advocacy` application: the Typer app, its consoles, the one error path and shared options.

Commands live in `advocacy.cli` (data, scoring, serving) and `advocacy.model_commands` (training
and the registry); both register on `app` here. Every command turns bad input into a one-line
error and a non-zero exit.
"""

from __future__ import annotations

import errno
import functools
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import click
import typer
from rich.text import Text

from advocacy.present import PlainConsole, plain, styled

app = typer.Typer(
    help="Advocacy propensity: features, models, batch scoring and the scoring service.", no_args_is_help=True
)


_debug = False  # --debug: let every error through with its traceback


@app.callback()
def _before_any_command(
    debug: Annotated[bool, typer.Option("--debug", help="Show the full traceback of any error.")] = False,
) -> None:
    # LightGBM's OpenMP threads spin while idle by default, which starves a busy 2-core machine
    # (the service, other workers); waiting passively costs nothing measurable when it is idle.
    # OpenMP reads this once, when LightGBM loads it: this module imports LightGBM (and everything
    # that brings it in) only inside the commands, which run after this callback, and the processes
    # they start (`advocacy serve`'s server) inherit it.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    global _debug
    _debug = debug


console = PlainConsole()
err_console = PlainConsole(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])

DataDir = Annotated[Path, typer.Option("--data", help="Directory of raw tables (spec section 2).")]


# Disk full, file too large, quota, read-only or forbidden: the machine's problem, reported in one line.
_STORAGE_ERRORS = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})
_SQLITE_STORAGE_ERRORS = frozenset({sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_READONLY})


def _fail(message: object, code: int) -> typer.Exit:
    err_console.print(Text.assemble(styled("error:", "bold red"), " ", plain(message)), soft_wrap=True)
    return typer.Exit(code)


def _storage_problem(err: Exception) -> str | None:
    """What the machine refused, if `err` is a full disk, a file-size limit or a forbidden path (as
    an OSError, or as SQLite's full-disk and I/O errors when it writes the ask log or a copy of it)."""
    if isinstance(err, OSError) and err.errno in _STORAGE_ERRORS:
        return (f" ({err.filename})" if err.filename else "") + f": {err.strerror}"
    if isinstance(err, sqlite3.Error) and getattr(err, "sqlite_errorcode", 0) & 0xFF in _SQLITE_STORAGE_ERRORS:
        return f": SQLite says {err} (the disk is full, a file-size limit was reached, or the file system refused)"
    return None


def clear_errors(fn: F) -> F:
    """The one error path of every command: an error is one line on stderr and a non-zero exit.

    Bad input (the data contract, a missing file, a bad option value) exits 2 with the message that
    names table, column, rule and rows; a full disk or a forbidden path exits 1 saying so; anything
    else is a fault of ours, reported in one line that says how to see more. With `--debug` every
    error keeps its traceback.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from features.contracts import DataContractError

        try:
            return fn(*args, **kwargs)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except Exception as err:
            if _debug:
                raise
            if isinstance(err, DataContractError | FileNotFoundError | ValueError | KeyError):
                raise _fail(err.args[0] if isinstance(err, KeyError) and err.args else err, 2) from None
            storage = _storage_problem(err)
            if storage is not None:
                raise _fail(
                    f"could not write{storage}. Nothing was written at the output path; free some "
                    "space (or fix the permission) and run the same command again to resume.",
                    1,
                ) from None
            raise _fail(
                f"unexpected {type(err).__name__}: {err}. This is a fault of the tool, not of your input: run "
                "the command again with `advocacy --debug ...` for the traceback, and report it",
                1,
            ) from None

    wrapper.clear_errors = True  # type: ignore[attr-defined]  # tests check every command has it
    return wrapper  # type: ignore[return-value]


def parse_time(value: str | None, name: str = "--as-of") -> Any:
    """A UTC timestamp from the command line (naive means UTC)."""
    import pandas as pd

    if value is None:
        return None
    try:
        ts = pd.Timestamp(value)
    except ValueError:
        raise ValueError(f"{name}: not a date or timestamp: {value!r}") from None
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def current_settings() -> Any:
    from storage.settings import get_settings

    return get_settings()
