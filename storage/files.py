"""Files that appear whole or not at all: the one way the product writes an output.

A writer gets a temporary path beside the target (same file system), and the target is replaced by
a rename only once the content is complete and synced, so a reader, a crash or a full disk never
leaves half a file under the target's name.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import pandas as pd


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside `target`; rename it over `target` only on success."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # what a spreadsheet may run as a formula


def spreadsheet_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame with every text cell that a spreadsheet would read as a formula prefixed by `'`
    (OWASP's advice against CSV injection): `=HYPERLINK(...)` becomes `'=HYPERLINK(...)`. Numbers
    stay numbers; only text columns are touched."""
    out = frame
    for column in frame.columns:
        values = frame[column]
        if not (pd.api.types.is_string_dtype(values) or values.dtype == object):
            continue
        risky = values.map(lambda v: isinstance(v, str) and v.startswith(FORMULA_STARTS)).astype(bool)
        if risky.any():
            if out is frame:
                out = frame.copy()
            out[column] = values.where(~risky, "'" + values.astype("str"))
    return out


FRAME_SUFFIXES: tuple[str, ...] = (".parquet", ".csv")


def check_frame_path(target: Path | str) -> Path:
    """`target` if `write_frame` can write there (a .parquet or .csv file, not a folder); a
    `ValueError` naming it otherwise. Commands check their output before doing any work, so a bad
    path never leaves a half-done job (a plan stored, its file not written)."""
    target = Path(target)
    if target.suffix not in FRAME_SUFFIXES:
        raise ValueError(f"output must end in .parquet or .csv, got: {target.name}")
    if target.is_dir():
        raise ValueError(f"output must be a file, not a folder: {target.name}")
    return target


def write_frame(frame: pd.DataFrame, target: Path | str) -> Path:
    """Write a frame as Parquet or CSV (by suffix, CSV made `spreadsheet_safe`), atomically."""
    target = check_frame_path(target)
    writers: dict[str, Callable[[Path], object]] = {
        ".parquet": lambda p: frame.to_parquet(p, index=False),
        ".csv": lambda p: spreadsheet_safe(frame).to_csv(p, index=False),
    }
    with atomic_path(target) as tmp:
        writers[target.suffix](tmp)
    return target


def write_tables(tables: Mapping[str, pd.DataFrame], out_dir: Path | str, fmt: str = "parquet") -> None:
    """Write raw tables as `out_dir/NAME.<fmt>`, each atomically."""
    out_dir = Path(out_dir)
    for name, frame in tables.items():
        write_frame(frame, out_dir / f"{name}.{fmt}")
