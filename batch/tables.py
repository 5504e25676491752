"""Stage 1 of the batch job: read the raw tables in batches, check them, and file each row under its
customer's chunk.

Each raw table is read in batches (never whole), validated with the data contract, and each row is
filed under its customer's chunk (a stable hash of `customer_id`); keys that one batch cannot check
alone (unique ids, events of known customers) are checked across the file, or per chunk, which holds
every row of its customers. Bad input stops here.

The work is cut into parts: a CSV file is one, a Parquet file one per run of row groups of about
`PART_ROWS` rows, so that with more than one worker a big table is split by all of them at once (at
1M customers usage alone is half of the rows). Each part writes its own piece of each chunk; a
chunk's pieces, read in part order, hold its rows in the file's order.

Bad input is reported in one order, with one worker or many: the first bad batch (tables in the
contract's order, each from its first row), then ids repeated across a file, then tables without
rows, then keys across tables (usage months, events of unknown customers), then activities against
the asks they name, the ask log's included (once those are filed: `file_logged_asks`).
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import re
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from rich.progress import Progress

from batch.pool import JobPool, Task, held, released, run_shared
from batch.scratch import SUFFIX, PieceWriter, piece_path, read_chunk, read_piece
from features.catalog import TABLES
from features.contracts import CONTRACTS, DataContractError, empty_table, validate_table
from features.io import World, check_required_rows, unreadable
from features.keys import ACTIVITY_ASK_RULES, activity_ask_failures

READ_BATCH_ROWS = 200_000  # raw rows read and validated at a time (usage at 1M: 582 MB peak, not 793 at 500k)
PART_ROWS = 2_000_000  # raw rows of a Parquet file per part (whole row groups)
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
    hashed = pd.util.hash_array(np.asarray(distinct, dtype=object), categorize=False) % np.uint64(n_chunks)
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


@dataclass(frozen=True)
class Part:
    """Some rows of one raw table, split by one task: `row_groups` of a Parquet file (None: the
    whole file), whose first row is row `offset` of the file."""

    table: str
    path: Path
    index: int  # the part's place in its table
    weight: int  # bytes to decode (uncompressed), to start the heaviest parts first
    row_groups: tuple[int, ...] | None = None
    offset: int = 0


def table_parts(name: str, path: Path) -> list[Part]:
    """The parts of table `name`: whole row groups of about `PART_ROWS` rows, or the whole file."""
    if path.suffix != ".parquet":
        return [Part(name, path, 0, path.stat().st_size)]
    try:
        meta = pq.ParquetFile(path).metadata
    except (OSError, pa.ArrowException) as err:
        raise unreadable(name, path, err) from None
    parts: list[Part] = []
    groups: list[int] = []
    offset = rows = weight = 0
    for group in range(meta.num_row_groups):
        groups.append(group)
        rows += meta.row_group(group).num_rows
        weight += meta.row_group(group).total_byte_size
        if rows >= PART_ROWS or group == meta.num_row_groups - 1:
            parts.append(Part(name, path, len(parts), weight, tuple(groups), offset))
            offset, groups, rows, weight = offset + rows, [], 0, 0
    return parts or [Part(name, path, 0, 0)]


def _raw_batches(part: Part) -> Iterator[pd.DataFrame]:
    """The part's raw rows in batches, read as `features.io.read_world` reads the whole file."""
    name, path = part.table, part.path
    contract = CONTRACTS[name]
    try:
        if path.suffix == ".parquet":
            pf = pq.ParquetFile(path)
            columns = [c for c in contract.columns if c in pf.schema_arrow.names]
            empty = True
            for batch in pf.iter_batches(batch_size=READ_BATCH_ROWS, row_groups=part.row_groups, columns=columns):
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


@dataclass
class PartSplit:
    """What splitting a part found: its rows per chunk, and the hashes of its unique ids (if any)."""

    counts: np.ndarray
    hashes: np.ndarray | None


def split_part(part: Part, parts: Path, n_chunks: int, on_rows: Callable[[int], None]) -> PartSplit:
    """Validate one part batch by batch and write its piece of each chunk (keys: `_check_unique`)."""
    name = part.table
    folder = parts / name
    folder.mkdir(parents=True, exist_ok=True)
    writers: dict[int, PieceWriter] = {}
    counts = np.zeros(n_chunks, dtype=np.int64)
    unique_col = _UNIQUE_IDS.get(name)
    hashes: list[np.ndarray] = []
    offset = part.offset
    try:
        for raw in _raw_batches(part):
            try:
                frame = validate_table(name, raw, keys=False)  # keys: across the file, after
            except DataContractError as err:
                raise _shift_rows(err, offset) from None
            frame[_ROW] = np.arange(offset, offset + len(frame), dtype=np.int64)
            if unique_col:  # 8 bytes per id, not the ids themselves: memory stays small at any size
                hashes.append(pd.util.hash_array(frame[unique_col].to_numpy(dtype=object), categorize=False))
            chunk = chunk_of(frame["customer_id"], n_chunks)
            order = np.argsort(chunk, kind="stable")
            bounds = np.searchsorted(chunk[order], np.arange(n_chunks + 1))
            table = pa.Table.from_pandas(frame, preserve_index=False).take(order)  # Arrow's take: no Python objects
            for k in np.flatnonzero(np.diff(bounds)).tolist():
                piece = table.slice(bounds[k], bounds[k + 1] - bounds[k])
                if k not in writers:
                    writers[k] = PieceWriter(piece_path(folder, k, part.index), piece.schema)
                writers[k].write_table(piece)
                counts[k] += piece.num_rows
            offset += len(frame)
            on_rows(len(frame))
    finally:
        for writer in writers.values():
            writer.close()
    return PartSplit(counts, np.concatenate(hashes) if hashes else None)


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


def _read_chunk(parts: Path, name: str, chunk: int, columns: list[str] | None = None) -> pd.DataFrame | None:
    table = read_chunk(parts / name, chunk, columns)
    return table.to_pandas() if table is not None else None


def _ids(table: pa.Table) -> pa.Array:
    return table.column("customer_id").combine_chunks().cast(pa.string())


_Problems = dict[tuple[str, str, str], list[tuple[int, Any]]]  # (table, column, rule) -> (row, value)


def chunk_key_problems(parts: Path, chunk: int, tables: Sequence[str]) -> _Problems:
    """What only a whole customer's rows can show: one usage row per month, events of known customers."""
    problems: _Problems = {}
    customers = read_chunk(parts / "customers", chunk, ["customer_id"])
    known = _ids(customers) if customers is not None else pa.array([], pa.string())
    usage = _read_chunk(parts, "usage", chunk, ["customer_id", "month", _ROW]) if "usage" in tables else None
    if usage is not None:  # pandas' hash look-up: Arrow's group_by is ten times slower here
        bad = usage[usage.duplicated(["customer_id", "month"], keep=False)]
        if len(bad):
            rows = zip(bad[_ROW], bad["customer_id"], bad["month"], strict=True)
            problems[("usage", "customer_id, month", "unique")] = [(r, f"{c}, {m:%Y-%m-%d}") for r, c, m in rows]
    for name in TABLES[1:]:
        events = read_chunk(parts / name, chunk, ["customer_id", _ROW]) if name in tables else None
        if events is None:
            continue
        # Arrow's hash look-up: pandas' `isin` on Arrow strings loops in Python.
        unknown = events.filter(pc.invert(pc.is_in(_ids(events), value_set=known)))
        if unknown.num_rows:
            problems[(name, "customer_id", "exists in customers")] = list(
                zip(unknown.column(_ROW).to_pylist(), unknown.column("customer_id").to_pylist(), strict=True)
            )
    return problems


def _raise_key_problems(found_per_chunk: Sequence[_Problems]) -> None:
    """The first table (in the contract's order) with any problem fails, naming rows across chunks."""
    problems: _Problems = {}
    for found in found_per_chunk:
        for key, rows in found.items():
            problems.setdefault(key, []).extend(rows)
    for (table, column, rule), rows in sorted(problems.items(), key=lambda kv: TABLES.index(kv[0][0])):
        rows.sort()
        raise _rule_error(table, column, rule, [r for r, _ in rows], [v for _, v in rows])


@dataclass(frozen=True)
class Split:
    """The chunks of a run: how many, and customers per chunk (for progress)."""

    n_chunks: int
    customers: tuple[int, ...]
    tables: tuple[str, ...]


def split_tables(
    files: Mapping[str, Path],
    work: Path,
    chunk_size: int,
    progress: Progress | None = None,
    pool: JobPool | None = None,
) -> Split:
    """Stage 1 (see the module docstring); resumable: done once per work folder. With a `pool`, the
    parts are split, and the chunks' keys checked, side by side in its processes and this one."""
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

    pieces = [part for name, path in files.items() for part in table_parts(name, path)]
    tables = tuple(files)
    # One road with or without a pool: `run_shared` runs every task here when there is none.
    report = _RowsRead(pool, advance) if pool is not None else None
    here = partial(released, split_part)
    tasks = [Task((_split_held_part, (p, parts, n_chunks)), partial(here, p, parts, n_chunks, advance)) for p in pieces]
    try:
        splits = run_shared(pool, tasks, _heaviest_first([p.weight for p in pieces]), poll=report)
        counts = _check_tables(files, pieces, splits, parts)
        checks = [Task.anywhere(chunk_key_problems, parts, k, tables) for k in range(n_chunks)]
        _raise_key_problems(run_shared(pool, checks, poll=report))
    finally:
        if report is not None:
            report()
    if progress is not None and task is not None:
        progress.update(task, completed=total, visible=False)
    customers = counts["customers"]  # a required table: `table_files` has made sure it is there
    split = Split(n_chunks, tuple(int(c) for c in customers), tables)
    tmp = marker.with_suffix(".tmp")
    tmp.write_text(json.dumps({"n_chunks": split.n_chunks, "customers": split.customers, "tables": split.tables}))
    os.replace(tmp, marker)
    return split


def _check_tables(
    files: Mapping[str, Path], pieces: Sequence[Part], splits: Sequence[PartSplit], parts: Path
) -> dict[str, np.ndarray]:
    """Unique ids across each whole file, then the rows every table needs; rows per chunk, per table."""
    counts: dict[str, np.ndarray] = {}
    for name in files:
        mine = [split for part, split in zip(pieces, splits, strict=True) if part.table == name]
        counts[name] = np.sum([split.counts for split in mine], axis=0)
        hashes = [split.hashes for split in mine if split.hashes is not None]
        if name in _UNIQUE_IDS and hashes:
            _check_unique(name, _UNIQUE_IDS[name], np.concatenate(hashes), parts / name)
    for name in files:
        check_required_rows(name, int(counts[name].sum()))
    return counts


def _heaviest_first(sizes: Sequence[int]) -> list[int]:
    """The tasks' positions, the largest `sizes` first (ties in order), so that the processes finish close together."""
    return sorted(range(len(sizes)), key=lambda i: -sizes[i])


class _RowsRead:
    """Called while the split waits: the rows the pool's processes read since, to `advance` (the progress bar)."""

    def __init__(self, pool: JobPool, advance: Callable[[int], None]) -> None:
        self._rows = pool.rows
        self._advance = advance

    def __call__(self) -> None:
        while True:
            try:
                self._advance(self._rows.get_nowait())
            except queue.Empty:
                return


def frame_digest(frame: pd.DataFrame) -> str:
    """A digest of a frame's columns and values (row order included)."""
    digest = hashlib.blake2b(",".join(frame.columns).encode(), digest_size=16)
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()


def _logged_path(work: Path, chunk: int) -> Path:
    return work / "asklog" / f"{chunk:05d}.parquet"


def file_logged_asks(logged: pd.DataFrame, work: Path, n_chunks: int) -> None:
    """The ask log's asks filed by their customer's chunk, as the tables' rows are (once per run);
    then each chunk's activities checked against its final asks (`_check_chunk_activities`), so that
    bad input stops the split, before any chunk is scored."""
    folder = work / "asklog"
    if (folder / _DONE).exists():
        return
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    chunks = chunk_of(logged["customer_id"], n_chunks) if len(logged) else np.zeros(0, dtype=np.int64)
    for chunk in np.unique(chunks).tolist():
        logged[chunks == chunk].reset_index(drop=True).to_parquet(_logged_path(work, chunk))
    _check_chunk_activities(work, n_chunks)
    (folder / _DONE).write_text("")


def _chunk_tables(work: Path, chunk: int, names: Sequence[str]) -> dict[str, pd.DataFrame]:
    """The chunk's rows of the tables `names` (empty tables for the others), `_ROW` kept."""
    frames = {name: _read_chunk(work / "parts", name, chunk) if name in names else None for name in TABLES}
    return {name: empty_table(name) if frame is None else frame for name, frame in frames.items()}


def _with_chunk_log(tables: Mapping[str, pd.DataFrame], work: Path, chunk: int) -> World:
    """A `World` of the chunk's `tables` (`_ROW` left out), the asks recorded through the API merged in
    (`World.with_logged_asks`), as `usecases.sources` would give them."""
    world = World(**{name: frame.drop(columns=[_ROW], errors="ignore") for name, frame in tables.items()})
    logged = _logged_path(work, chunk)
    if logged.exists():
        world, _ = world.with_logged_asks(pd.read_parquet(logged).astype(world.asks.dtypes.to_dict()))
    return world


def load_chunk_world(work: Path, chunk: int) -> World:
    """The validated tables of one chunk's customers, as `usecases.sources` would give them: the
    asks recorded through the API merged into the table's (`World.with_logged_asks`); its activities
    were checked against those asks when the run was split (`file_logged_asks`)."""
    return _with_chunk_log(_chunk_tables(work, chunk, TABLES), work, chunk)


def _check_chunk_activities(work: Path, n_chunks: int) -> None:
    """`features.keys.check_activity_asks` over the whole activities table, chunk by chunk (a
    customer's activities and asks share a chunk), rows named as in the file: the error a reader of
    the whole table (`usecases.sources`) gives."""
    failed: dict[tuple[str, str], list[tuple[int, Any]]] = {}
    for chunk in range(n_chunks):
        tables = _chunk_tables(work, chunk, ("customers", "asks", "activities"))
        activities = tables["activities"]
        if not activities["ask_id"].notna().any():
            continue
        asks = _with_chunk_log(tables, work, chunk).asks
        for column, rule, bad in activity_ask_failures(activities.set_index(_ROW), asks):
            found = zip(bad.index[bad].tolist(), activities.loc[bad.to_numpy(), column].tolist(), strict=True)
            failed.setdefault((column, rule), []).extend(found)
    problems: list[str] = []
    for column, rule in (key for key in ACTIVITY_ASK_RULES if key in failed):
        rows, values = zip(*sorted(failed[(column, rule)], key=lambda pair: pair[0]), strict=True)
        problems.extend(_rule_error("activities", column, rule, rows, values).problems)
    if problems:
        raise DataContractError("activities", problems)


def _split_held_part(part: Part, parts: Path, n_chunks: int) -> PartSplit:
    """`split_part` in a worker process, reporting rows read through the queue it was sent; the
    memory it freed goes back to the system, for the chunks the same process scores next."""
    return released(split_part, part, parts, n_chunks, held("rows").put)
