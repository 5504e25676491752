"""The layout's promises that import-linter cannot state: sizes, and a `features/` that reads no environment."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("advocacy", "batch", "crm", "features", "models", "serving", "storage", "training", "usecases")
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80


def _modules(*packages: str) -> list[Path]:
    return sorted(p for package in packages for p in (ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("path", _modules(*PACKAGES), ids=lambda p: str(p.relative_to(ROOT)))
def test_modules_and_functions_stay_small(path: Path) -> None:
    source = path.read_text()
    assert source.count("\n") <= MAX_MODULE_LINES, f"{path.name} has over {MAX_MODULE_LINES} lines: split it"
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines, line {node.lineno})"
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno is not None
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {', '.join(long)}"


def _environment_reads(tree: ast.AST) -> list[int]:
    """Lines that touch `os.environ`, `os.getenv` or `os.putenv` (however `os` was imported)."""
    names = {"environ", "getenv", "putenv", "unsetenv", "environb"}
    found = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and node.attr in names) or (
            isinstance(node, ast.ImportFrom) and node.module == "os" and any(a.name in names for a in node.names)
        ):
            found.append(node.lineno)
    return found


def test_features_read_no_environment() -> None:
    reads = {
        str(p.relative_to(ROOT)): lines
        for p in _modules("features")
        if (lines := _environment_reads(ast.parse(p.read_text())))
    }
    assert not reads, f"features/ must take its inputs as arguments, not from the environment: {reads}"


def test_the_environment_check_sees_every_spelling() -> None:
    for code in ("import os\nos.environ['X']", "import os\nos.getenv('X')", "from os import environ"):
        assert _environment_reads(ast.parse(code)), code
    assert not _environment_reads(ast.parse("import os\nos.path.join('a', 'b')"))
