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


def write_frame(frame: pd.DataFrame, target: Path | str) -> Path:
    """Write a frame as Parquet or CSV (by suffix, CSV made `spreadsheet_safe`), atomically."""
    target = Path(target)
    writers: dict[str, Callable[[Path], object]] = {
        ".parquet": lambda p: frame.to_parquet(p, index=False),
        ".csv": lambda p: spreadsheet_safe(frame).to_csv(p, index=False),
    }
    if target.suffix not in writers:
        raise ValueError(f"output must end in .parquet or .csv, got: {target.name}")
    with atomic_path(target) as tmp:
        writers[target.suffix](tmp)
    return target


def write_tables(tables: Mapping[str, pd.DataFrame], out_dir: Path | str, fmt: str = "parquet") -> None:
    """Write raw tables as `out_dir/NAME.<fmt>`, each atomically."""
    out_dir = Path(out_dir)
    for name, frame in tables.items():
        write_frame(frame, out_dir / f"{name}.{fmt}")
