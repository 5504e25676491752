"""Stage 1 of the batch job: read the raw tables in batches, check them, and file each row under its
customer's chunk.

Each raw table is read in batches (never whole), validated with the data contract, and each row is
filed under its customer's chunk (a stable hash of `customer_id`); keys that one batch cannot check
alone (unique ids, events of known customers) are checked per chunk, which holds every row of its
customers. Bad input stops here. With more than one worker the tables are split side by side.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import queue
import re
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from rich.progress import Progress

from batch.pool import cancel, held, worker_pool
from batch.scratch import SUFFIX, PieceWriter, piece_path, read_piece
from features.catalog import TABLES
from features.contracts import CONTRACTS, DataContractError, empty_table, validate_table
from features.io import World, check_required_rows, unreadable

READ_BATCH_ROWS = 200_000  # raw rows read and validated at a time (usage at 1M: 582 MB peak, not 793 at 500k)
_ROW = "_row"  # a raw row's position in its file, carried so errors name the user's row numbers
_DONE = "DONE"
_UNIQUE_IDS = {"customers": "customer_id", "asks": "ask_id", "activities": "activity_id"}


def data_fingerprint(files: Mapping[str, Path]) -> str:
    """A digest of the tables' names and contents (not their times: a copy scores the same)."""
    digest = hashlib.blake2b(digest_size=16)
    for name, path in files.items():
        digest.update(f"{name}{path.suffix}\0".encode())
        with open(path, "rb") as fh:
            digest.update(hashlib.file_digest(fh, "blake2b").digest())
    return digest.hexdigest()


def chunk_of(customer_ids: pd.Series | np.ndarray | Sequence[str], n_chunks: int) -> np.ndarray:
    """The chunk of each customer: a hash stable across processes, machines and runs.

    Each distinct id is hashed once (an event table repeats its customers' ids many times): the
    same chunks as hashing every row, at a fifth of the cost."""
    codes, distinct = pd.factorize(pd.Series(customer_ids, copy=False))
    if (codes < 0).any():
        raise ValueError("customer_id is missing in some rows")
    hashed = pd.util.hash_array(np.asarray(distinct, dtype=object)) % np.uint64(n_chunks)
    return hashed.astype(np.int64)[codes]


def count_rows(name: str, path: Path) -> int:
    """Rows of table `name` in `path`, for planning and progress (a `DataContractError` if unreadable)."""
    try:
        if path.suffix == ".parquet":
            return int(pq.ParquetFile(path).metadata.num_rows)
        with open(path, "rb") as fh:  # lines, less the header; only needs to be the same every run
            return max(sum(block.count(b"\n") for block in iter(lambda: fh.read(1 << 20), b"")) - 1, 0)
    except (OSError, pa.ArrowException) as err:
        raise unreadable(name, path, err) from None


def _raw_batches(name: str, path: Path) -> Iterator[pd.DataFrame]:
    """The raw table in batches of rows, read as `features.io.read_world` reads the whole file."""
    contract = CONTRACTS[name]
    try:
        if path.suffix == ".parquet":
            pf = pq.ParquetFile(path)
            columns = [c for c in contract.columns if c in pf.schema_arrow.names]
            empty = True
            for batch in pf.iter_batches(batch_size=READ_BATCH_ROWS, columns=columns):
                empty = False
                yield pa.Table.from_batches([batch]).to_pandas()
            if empty:
                yield pf.schema_arrow.empty_table().select(columns).to_pandas()
        else:
            # Ids and text stay text: "007" must not become 7.
            text = {c: "str" for c in contract.strings}
            empty = True
            for frame in pd.read_csv(path, dtype=text, keep_default_na=True, chunksize=READ_BATCH_ROWS):
                empty = False
                yield frame
            if empty:
                yield pd.read_csv(path, dtype=text, keep_default_na=True, nrows=0)
    except (OSError, ValueError, pa.ArrowException) as err:
        if isinstance(err, DataContractError):
            raise
        raise unreadable(name, path, err) from None


def _shift_rows(err: DataContractError, offset: int) -> DataContractError:
    """The error with batch row numbers turned into the file's row numbers."""
    if offset == 0:
        return err
    shifted = [re.sub(r"\brow (\d+)", lambda m: f"row {int(m.group(1)) + offset}", p) for p in err.problems]
    return DataContractError(err.table, shifted)


def _examples(rows: Sequence[int], values: Sequence[Any]) -> str:
    shown = [f"row {r} ({v!r})" for r, v in zip(rows[:5], values[:5], strict=False)]
    return ", ".join(shown) + (f" and {len(rows) - 5} more" if len(rows) > 5 else "")


def _rule_error(table: str, column: str, rule: str, rows: Sequence[int], values: Sequence[Any]) -> DataContractError:
    return DataContractError(
        table, [f"column '{column}': rule '{rule}' failed for {len(rows)} rows, e.g. {_examples(rows, values)}"]
    )


def _split_table(name: str, path: Path, parts: Path, n_chunks: int, on_rows: Callable[[int], None]) -> np.ndarray:
    """Validate one table batch by batch and write each chunk's rows; return rows per chunk."""
    folder = parts / name
    folder.mkdir(parents=True, exist_ok=True)
    writers: dict[int, PieceWriter] = {}
    counts = np.zeros(n_chunks, dtype=np.int64)
    unique_col = _UNIQUE_IDS.get(name)
    hashes: list[np.ndarray] = []
    offset = 0
    try:
        for raw in _raw_batches(name, path):
            try:
                frame = validate_table(name, raw)
            except DataContractError as err:
                raise _shift_rows(err, offset) from None
            frame[_ROW] = np.arange(offset, offset + len(frame), dtype=np.int64)
            if unique_col:  # 8 bytes per id, not the ids themselves: memory stays small at any size
                hashes.append(pd.util.hash_array(frame[unique_col].to_numpy(dtype=object)))
            chunk = chunk_of(frame["customer_id"], n_chunks)
            order = np.argsort(chunk, kind="stable")
            bounds = np.searchsorted(chunk[order], np.arange(n_chunks + 1))
            table = pa.Table.from_pandas(frame.iloc[order], preserve_index=False)
            for k in np.flatnonzero(np.diff(bounds)).tolist():
                piece = table.slice(bounds[k], bounds[k + 1] - bounds[k])
                if k not in writers:
                    writers[k] = PieceWriter(piece_path(folder, k), piece.schema)
                writers[k].write_table(piece)
                counts[k] += piece.num_rows
            offset += len(frame)
            on_rows(len(frame))
    finally:
        for writer in writers.values():
            writer.close()
    if unique_col and hashes:
        _check_unique(name, unique_col, np.concatenate(hashes), folder)
    return counts


def _check_unique(table: str, column: str, hashes: np.ndarray, folder: Path) -> None:
    """Ids unique across the whole file (a batch alone only sees its own): by hash, then, for the few
    rows whose hashes collide, by value (read back from the chunks)."""
    order = np.argsort(hashes, kind="stable")
    ranked = hashes[order]
    same = ranked[1:] == ranked[:-1]
    if not same.any():
        return
    suspects = order[np.r_[same, False] | np.r_[False, same]]
    found = []
    for piece in sorted(folder.glob(f"*{SUFFIX}")):
        rows = read_piece(piece, [column, _ROW])
        rows = rows.filter(pc.is_in(rows.column(_ROW), value_set=pa.array(suspects, pa.int64())))
        found.append(rows.to_pandas())
    values = pd.concat(found).sort_values(_ROW)
    dup = values[values[column].duplicated(keep=False) & values[column].notna()]
    if len(dup):
        raise _rule_error(table, column, "unique", dup[_ROW].tolist(), dup[column].tolist())


def _read_piece(parts: Path, name: str, chunk: int, columns: list[str] | None = None) -> pd.DataFrame | None:
    path = piece_path(parts / name, chunk)
    return read_piece(path, columns).to_pandas() if path.exists() else None


def _ids(table: pa.Table) -> pa.Array:
    return table.column("customer_id").combine_chunks().cast(pa.string())


_Problems = dict[tuple[str, str, str], list[tuple[int, Any]]]  # (table, column, rule) -> (row, value)


def _chunk_key_problems(parts: Path, chunk: int, tables: Sequence[str], problems: _Problems) -> None:
    """What only a whole customer's rows can show: one usage row per month, events of known customers."""
    customers = piece_path(parts / "customers", chunk)
    known = _ids(read_piece(customers, ["customer_id"])) if customers.exists() else pa.array([], pa.string())
    usage = _read_piece(parts, "usage", chunk, ["customer_id", "month", _ROW]) if "usage" in tables else None
    if usage is not None:
        bad = usage[usage.duplicated(["customer_id", "month"], keep=False)]
        problems.setdefault(("usage", "customer_id, month", "unique"), []).extend(
            (row, f"{c}, {m:%Y-%m-%d}") for row, c, m in zip(bad[_ROW], bad["customer_id"], bad["month"], strict=True)
        )
    for name in TABLES[1:]:
        path = piece_path(parts / name, chunk)
        if name not in tables or not path.exists():
            continue
        events = read_piece(path, ["customer_id", _ROW])
        # Arrow's hash look-up: pandas' `isin` on Arrow strings loops in Python.
        unknown = events.filter(pc.invert(pc.is_in(_ids(events), value_set=known)))
        problems.setdefault((name, "customer_id", "exists in customers"), []).extend(
            zip(unknown.column(_ROW).to_pylist(), unknown.column("customer_id").to_pylist(), strict=True)
        )


def _check_keys(parts: Path, n_chunks: int, tables: Sequence[str]) -> None:
    """`_chunk_key_problems` over every chunk; the first table (in the contract's order) with any fails."""
    problems: _Problems = {}
    for chunk in range(n_chunks):
        _chunk_key_problems(parts, chunk, tables, problems)
    for (table, column, rule), found in sorted(problems.items(), key=lambda kv: TABLES.index(kv[0][0])):
        if found:
            found.sort()
            raise _rule_error(table, column, rule, [r for r, _ in found], [v for _, v in found])


@dataclass(frozen=True)
class Split:
    """The chunks of a run: how many, and customers per chunk (for progress)."""

    n_chunks: int
    customers: tuple[int, ...]
    tables: tuple[str, ...]


def split_tables(
    files: Mapping[str, Path], work: Path, chunk_size: int, progress: Progress | None = None, workers: int = 1
) -> Split:
    """Stage 1 (see the module docstring); resumable: done once per work folder. With `workers` > 1
    the tables are split side by side in that many processes."""
    marker = work / "parts" / _DONE
    if marker.exists():
        saved = json.loads(marker.read_text())
        return Split(saved["n_chunks"], tuple(saved["customers"]), tuple(saved["tables"]))
    parts = work / "parts"
    shutil.rmtree(parts, ignore_errors=True)  # a split killed half-way starts again
    parts.mkdir(parents=True)
    sizes = {name: count_rows(name, path) for name, path in files.items()}
    n_chunks = max(1, -(-sizes["customers"] // chunk_size))
    total = sum(sizes.values())
    task = progress.add_task("Reading and checking tables", total=total) if progress else None

    def advance(rows: int) -> None:
        if progress is not None and task is not None:
            progress.advance(task, rows)

    workers = max(1, min(workers, len(files)))
    if workers == 1:
        counts = {name: _split_table(name, path, parts, n_chunks, advance) for name, path in files.items()}
    else:
        counts = _split_in_processes(files, parts, n_chunks, advance, workers, sizes)
    for name in files:
        check_required_rows(name, int(counts[name].sum()))
    customers = counts["customers"]  # a required table: `table_files` has made sure it is there
    _check_keys(parts, n_chunks, tuple(files))
    if progress is not None and task is not None:
        progress.update(task, completed=total, visible=False)
    split = Split(n_chunks, tuple(int(c) for c in customers), tuple(files))
    tmp = marker.with_suffix(".tmp")
    tmp.write_text(json.dumps({"n_chunks": split.n_chunks, "customers": split.customers, "tables": split.tables}))
    os.replace(tmp, marker)
    return split


def _split_in_processes(
    files: Mapping[str, Path],
    parts: Path,
    n_chunks: int,
    advance: Callable[[int], None],
    workers: int,
    sizes: Mapping[str, int],
) -> dict[str, np.ndarray]:
    """`_split_table` of each table in `workers` processes (each table writes its own files)."""
    rows = multiprocessing.get_context("spawn").Queue()  # rows read, for the progress bar

    def report() -> None:
        while True:
            try:
                advance(rows.get_nowait())
            except queue.Empty:
                return

    with worker_pool(workers, rows=rows) as pool:
        # The largest tables first, so that the processes finish close together.
        by_size = sorted(files, key=lambda name: -sizes[name])
        futures = {name: pool.submit(_split_held_table, name, files[name], parts, n_chunks) for name in by_size}
        pending: set[Future[Any]] = set(futures.values())
        try:
            while pending:
                finished, pending = wait(pending, timeout=0.2, return_when=FIRST_EXCEPTION)
                report()
                if any(f.exception() is not None for f in finished):
                    break  # bad input: no need to read the other tables
        except BaseException:
            cancel(list(futures.values()))
            raise
        cancel(list(pending))
    report()
    # Errors in the tables' own order, so the same bad input gets the same message as in one process.
    for name in files:
        future = futures[name]
        error = None if future.cancelled() else future.exception()
        if error is not None:
            raise error
    return {name: futures[name].result() for name in files}


def load_chunk_world(work: Path, chunk: int) -> World:
    """The validated tables of one chunk's customers, as `read_world` would give them."""
    parts = work / "parts"
    tables: dict[str, pd.DataFrame] = {}
    for name in TABLES:
        frame = _read_piece(parts, name, chunk)
        if frame is None:
            tables[name] = empty_table(name)
        else:
            tables[name] = frame.drop(columns=[_ROW]).reset_index(drop=True)
    return World(**tables)


def _split_held_table(name: str, path: Path, parts: Path, n_chunks: int) -> np.ndarray:
    """`_split_table` in a worker process, reporting rows read through the queue it was sent."""
    return _split_table(name, path, parts, n_chunks, held("rows").put)
