"""A module's face is its names without a leading underscore: no module reaches past another's face.

A name that starts with `_` may change or vanish with any edit to its own module, so a module that
imports one from another module breaks without warning. What one module needs from another is made
public in its home module (or moved to where it belongs) instead.

One kind of private import is part of the layout: a package may split its code into private
submodules (`features/synthetic/_params.py`, `_world.py`, ...) that import one another, while code
outside the package sees only what the package's `__init__` exports. So a private submodule may be
imported from inside the package that holds it, never from outside.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("advocacy", "batch", "crm", "features", "models", "serving", "storage", "training", "usecases")

# (importing file, private name) pairs still imported across modules, in files another engineer is
# rewriting now; each home module keeps the private name working until its importer is changed.
# Empty this list as they are fixed (test_allowed_private_imports_still_exist says when an entry is
# no longer needed).


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _package_of(path: Path) -> str:
    """The package a file's relative imports start from (a package's `__init__` is inside itself)."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1])


def _is_module(dotted: str) -> bool:
    base = ROOT.joinpath(*dotted.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def _inside(package: str, importer_package: str) -> bool:
    return importer_package == package or importer_package.startswith(package + ".")


def _resolve(node: ast.ImportFrom, importer_package: str) -> str:
    if not node.level:
        return node.module or ""
    base = importer_package.split(".")
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def private_imports(source: str, path: Path) -> list[tuple[int, str, str]]:
    """(line, private name, module it comes from) for each reach past another module's face in `source`.

    Catches `from m import _x` (at any depth, relative or absolute), `import m._private` and
    `from m._private import x` from outside m, and `m._x` read through a name imported from one of
    our packages. Modules outside our packages are not ours to make public, so they are not looked at.
    """
    own = _module_name(path)
    here = _package_of(path)
    tree = ast.parse(source)
    found: list[tuple[int, str, str]] = []
    imported: dict[str, str] = {}  # local name -> the dotted path it stands for

    def open_to_us(holder: str, name: str) -> bool:
        """Whether this file may use `holder.name`: a public name, or a private submodule of our package."""
        return not _is_private(name) or (_is_module(f"{holder}.{name}") and _inside(holder, here))

    def check_path(line: int, dotted: str) -> None:
        parts = dotted.split(".")
        for i in range(1, len(parts)):
            holder = ".".join(parts[:i])
            if not open_to_us(holder, parts[i]):
                found.append((line, parts[i], holder))
                return

    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            module = _resolve(node, here)
            if module.split(".")[0] not in PACKAGES or module == own:
                continue
            check_path(node.lineno, module)
            for alias in node.names:
                imported[alias.asname or alias.name] = f"{module}.{alias.name}"
                if not open_to_us(module, alias.name):
                    found.append((node.lineno, alias.name, module))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] not in PACKAGES:
                    continue
                check_path(node.lineno, alias.name)
                if alias.asname:
                    imported[alias.asname] = alias.name
                else:  # `import a.b` binds `a`
                    imported[alias.name.split(".")[0]] = alias.name.split(".")[0]
    for node in ast.walk(tree):
        # `a.b._c`, where an import bound `a`: the chain read as a dotted path (a chain with two
        # private steps is reported at its first, once per node that reaches it, then deduplicated).
        if not isinstance(node, ast.Attribute) or not _is_private(node.attr):
            continue
        chain = [node.attr]
        value = node.value
        while isinstance(value, ast.Attribute):
            chain.insert(0, value.attr)
            value = value.value
        if isinstance(value, ast.Name) and value.id in imported:
            check_path(node.lineno, ".".join([imported[value.id], *chain]))
    return sorted(set(found))


def _all_private_imports() -> dict[tuple[str, str], list[str]]:
    """(file, name) -> 'file:line: name from module' for every module of our packages."""
    out: dict[tuple[str, str], list[str]] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            for line, name, module in private_imports(path.read_text(), path):
                out.setdefault((relative, name), []).append(f"{relative}:{line}: {name} from {module}")
    return out


def test_no_module_imports_another_modules_private_names() -> None:
    found = _all_private_imports()
    unexpected = [where for key, wheres in sorted(found.items()) for where in wheres]
    assert not unexpected, (
        "private names imported across modules (make the name public in its home module, or move it "
        "where it belongs):\n" + "\n".join(unexpected)
    )


def _found(source: str, file: str = "serving/state.py") -> list[str]:
    return [name for _, name, _ in private_imports(source, ROOT / file)]


@pytest.mark.parametrize(
    ("source", "names"),
    [
        ("from serving.store import _plain, FeatureStore", ["_plain"]),
        ("from serving.store import (\n    FeatureStore,\n    _plain as plain,\n)", ["_plain"]),
        ("def f():\n    from serving.store import _plain\n", ["_plain"]),
        ("from .store import _plain", ["_plain"]),
        ("import serving.store\nserving.store._plain(1)", ["_plain"]),
        ("from serving import store\nstore._plain(1)", ["_plain"]),
        ("import serving.store as s\ns._plain(1)", ["_plain"]),
        ("from features.synthetic._params import DRIFTING", ["_params"]),
        ("from features.synthetic import _params", ["_params"]),
        ("import features.synthetic._params", ["_params"]),
        ("from __future__ import annotations", []),
        ("from features.contracts import __all__", []),
        ("from bentoml._internal.server import x", []),  # not ours to make public
        ("from serving.store import json_value", []),
    ],
)
def test_the_check_sees_every_spelling(source: str, names: list[str]) -> None:
    assert _found(source) == names


def test_private_submodules_are_open_inside_their_package_only() -> None:
    inside = "features/synthetic/_step.py"
    assert _found("from features.synthetic import _asks", inside) == []
    assert _found("from features.synthetic._params import REF", inside) == []
    assert _found("from features.synthetic._params import REF", "features/synthetic/__init__.py") == []
    assert _found("from features.synthetic import _asks\n_asks._private()", inside) == ["_private"]
    assert _found("from features.synthetic._params import _hidden", inside) == ["_hidden"]
    assert _found("from features.synthetic._params import REF", "features/context.py") == ["_params"]
