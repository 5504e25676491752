"""The command line's one error path (`advocacy.app.clear_errors`): every command has it, an error
is one line and an exit code, and the traceback shows only with `--debug`."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from advocacy import app as application
from advocacy import cli


def test_every_command_reports_errors_through_the_one_path() -> None:
    commands = get_command(cli.app).commands  # type: ignore[attr-defined]
    assert len(commands) >= 10
    missing = [name for name, command in commands.items() if not getattr(command.callback, "clear_errors", False)]
    assert missing == []


def test_a_fault_of_ours_is_one_line_and_the_traceback_needs_debug(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_: object, **__: object) -> None:
        raise TypeError("Cannot cast DatetimeArray to dtype float64")

    monkeypatch.setattr("features.baseline.score_baseline", broken)
    monkeypatch.setattr(application, "_debug", False)  # restored after the --debug run below
    args = ["baseline", "--data", str(Path(__file__).parents[1] / "data" / "sample"), "--as-of", "2026-06-01"]
    plain = CliRunner().invoke(cli.app, args, env={"ADVOCACY_HOME": str(tmp_path), "COLUMNS": "300"})
    assert plain.exit_code == 1 and isinstance(plain.exception, SystemExit)
    line = " ".join(plain.stderr.split())
    assert line.startswith("error: unexpected TypeError: Cannot cast DatetimeArray") and "--debug" in line
    assert "Traceback" not in plain.output and len(plain.stderr.strip().splitlines()) <= 3

    debug = CliRunner().invoke(cli.app, ["--debug", *args], env={"ADVOCACY_HOME": str(tmp_path)})
    assert isinstance(debug.exception, TypeError)  # let through: typer prints its traceback
