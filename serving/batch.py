"""The batch job behind `advocacy score`: the whole customer base, in bounded memory (spec sections 5-8).

Everything happens in a work folder beside the output, named by a hash of what decides the output
(the data's content, `as_of`, the model version, `explain`, the chunk size), in four stages:

1. split: each raw table is read in batches (never whole), validated with the data contract, and
   each row is filed under its customer's chunk (a stable hash of `customer_id`); keys that one
   batch cannot check alone (unique ids, events of known customers) are checked per chunk, which
   holds every row of its customers. Bad input stops here, and the work folder is removed.
2. score: per chunk, the point-in-time features, the feature-store rows, the guardrails and
   `models.scoring.score` (the function the API calls), with reasons from `PatternTreeShap`. A chunk
   is written to a temporary folder and renamed: it is complete or absent, so a killed run resumes
   from the chunks it finished. `--engine dask` maps the same function over the chunks on a cluster.
3. assemble: the output in chunk order (a temporary file renamed at the very end, so the output
   path never holds a partial file), the drift report beside it, the feature snapshot the service
   reads, an MLflow run, and a summary.
4. clean up: the work folder goes.

Output rows are ordered by chunk, then by the customers table's order: the same on every run, so
an interrupted and resumed run writes the same bytes as an uninterrupted one.

From 200,000 customers on (`default_workers`; `--workers` to choose) the local engine runs stages 1
and 2 in one process per core: the tables are split side by side, then the chunks are scored side by
side. Either way the output's bytes are the same.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import queue
import re
import shutil
import signal
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ProcessPoolExecutor, as_completed, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from features.catalog import REQUIRED_TABLES, TABLES
from features.contracts import CONTRACTS, DataContractError, empty_table, validate_table
from features.io import World, write_frame
from features.pointintime import active_points, build_features
from features.settings import Settings
from features.spec import CATEGORICAL_FEATURES, FEATURE_NAMES, FEATURE_VERSION
from models.bundle import Bundle
from models.drift import PSI_ALERT, psi
from models.guardrails import GuardrailConfig, blocked_asks
from models.scoring import Blocked, score
from models.tiers import TIER_ORDER
from serving.explain_fast import ExplainStats, PatternTreeShap
from serving.registry import load_champion
from serving.snapshot import build_snapshot, guardrail_signals, publish_snapshot

DEFAULT_CHUNK_SIZE = 20_000  # customers per chunk: about 100 MB of working memory
READ_BATCH_ROWS = 500_000  # raw rows read and validated at a time
EXPERIMENT = "advocacy-batch"
OUTPUT_SUFFIXES = (".parquet", ".csv")
ENGINES = ("local", "dask")
TOP_DISAGREEMENTS = 10
PARALLEL_MIN_CUSTOMERS = 200_000  # scored in one process below this many (see `default_workers`)
_FORMAT = 1  # bump when the work folder's layout or the output's bytes change
_ROW = "_row"  # a raw row's position in its file, carried so errors name the user's row numbers
_DONE = "DONE"
_UNIQUE_IDS = {"customers": "customer_id", "asks": "ask_id", "activities": "activity_id"}


# ---------------------------------------------------------------------------------------------
# What a run is
# ---------------------------------------------------------------------------------------------


@dataclass
class BatchResult:
    """What `run_batch` did."""

    out: Path
    rows: int
    customers: int
    seconds: float
    as_of: pd.Timestamp
    model_version: str
    drift: pd.DataFrame
    drift_path: Path
    snapshot_dir: Path | None
    chunks: int
    resumed_chunks: int
    tiers: pd.DataFrame  # model tier x baseline tier counts
    top_disagreements: pd.DataFrame
    explain: ExplainStats = field(default_factory=ExplainStats)
    mlflow_run_id: str | None = None

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float("nan")


def check_output(out: Path) -> None:
    """A `ValueError` unless the output is a file type the job writes."""
    if out.suffix not in OUTPUT_SUFFIXES:
        raise ValueError(f"--out must end in .parquet or .csv, got: {out.name}")


def table_files(data_dir: Path) -> dict[str, Path]:
    """The file of each table present (`NAME.parquet` before `NAME.csv`, as `read_world` picks)."""
    if not data_dir.is_dir():
        raise FileNotFoundError(f"data directory not found: {data_dir}")
    found: dict[str, Path] = {}
    for name in TABLES:
        for suffix in (".parquet", ".csv"):
            path = data_dir / f"{name}{suffix}"
            if path.exists():
                found[name] = path
                break
    for name in REQUIRED_TABLES:
        if name not in found:
            raise DataContractError(name, ["required table is missing"])
    return found


def data_fingerprint(files: Mapping[str, Path]) -> str:
    """A digest of the tables' names and contents (not their times: a copy scores the same)."""
    digest = hashlib.blake2b(digest_size=16)
    for name, path in files.items():
        digest.update(f"{name}{path.suffix}\0".encode())
        with open(path, "rb") as fh:
            digest.update(hashlib.file_digest(fh, "blake2b").digest())
    return digest.hexdigest()


def guardrail_config(bundle: Bundle) -> GuardrailConfig:
    """The guardrail limits saved with the model (defaults where it saved none), as the service reads them."""
    return GuardrailConfig.from_saved(bundle.guardrails)


@dataclass(frozen=True)
class RunKey:
    """Everything that decides the output's bytes; its digest names the work folder."""

    data: str
    as_of: str
    model_name: str
    model_version: str
    trained_at: str
    explain: bool
    chunk_size: int
    feature_version: str = FEATURE_VERSION
    format: int = _FORMAT

    def digest(self) -> str:
        text = json.dumps(self.__dict__, sort_keys=True)
        return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def work_dir(out: Path, key: RunKey) -> Path:
    """Beside the output (same file system, so the final rename is atomic), hidden."""
    return out.parent / f".{out.name}.work-{key.digest()}"


def _unfinished_as_of(out: Path, key: RunKey) -> pd.Timestamp | None:
    """The `as_of` of an interrupted run of the same job (all but `as_of` equal), to resume it."""
    for folder in sorted(out.parent.glob(f".{out.name}.work-*")):
        try:
            saved = json.loads((folder / "key.json").read_text())
        except (OSError, ValueError):
            continue
        if {**saved, "as_of": key.as_of} == key.__dict__:
            return pd.Timestamp(saved["as_of"])
    return None


# ---------------------------------------------------------------------------------------------
# Stage 1: split the raw tables into chunks by customer, validating as we go
# ---------------------------------------------------------------------------------------------


def chunk_of(customer_ids: pd.Series | np.ndarray, n_chunks: int) -> np.ndarray:
    """The chunk of each customer: a hash stable across processes, machines and runs."""
    ids = np.asarray(customer_ids, dtype=object)
    return (pd.util.hash_array(ids) % np.uint64(n_chunks)).astype(np.int64)


def _count_rows(path: Path) -> int:
    if path.suffix == ".parquet":
        return int(pq.ParquetFile(path).metadata.num_rows)
    with open(path, "rb") as fh:  # lines, less the header; only needs to be the same every run
        return max(sum(block.count(b"\n") for block in iter(lambda: fh.read(1 << 20), b"")) - 1, 0)


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
        raise DataContractError(name, [f"cannot read {path.name}: {err}"]) from None


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
    writers: dict[int, pq.ParquetWriter] = {}
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
                    writers[k] = pq.ParquetWriter(folder / f"{k:05d}.parquet", piece.schema)
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
    for piece in sorted(folder.glob("*.parquet")):
        rows = pq.read_table(piece, columns=[column, _ROW])
        rows = rows.filter(pc.is_in(rows.column(_ROW), value_set=pa.array(suspects, pa.int64())))
        found.append(rows.to_pandas())
    values = pd.concat(found).sort_values(_ROW)
    dup = values[values[column].duplicated(keep=False) & values[column].notna()]
    if len(dup):
        raise _rule_error(table, column, "unique", dup[_ROW].tolist(), dup[column].tolist())


def _read_piece(parts: Path, name: str, chunk: int, columns: list[str] | None = None) -> pd.DataFrame | None:
    path = parts / name / f"{chunk:05d}.parquet"
    return pd.read_parquet(path, columns=columns) if path.exists() else None


def _ids(table: pa.Table) -> pa.Array:
    return table.column("customer_id").combine_chunks().cast(pa.string())


_Problems = dict[tuple[str, str, str], list[tuple[int, Any]]]  # (table, column, rule) -> (row, value)


def _chunk_key_problems(parts: Path, chunk: int, tables: Sequence[str], problems: _Problems) -> None:
    """What only a whole customer's rows can show: one usage row per month, events of known customers."""
    customers = parts / "customers" / f"{chunk:05d}.parquet"
    known = _ids(pq.read_table(customers, columns=["customer_id"])) if customers.exists() else pa.array([], pa.string())
    usage = _read_piece(parts, "usage", chunk, ["customer_id", "month", _ROW]) if "usage" in tables else None
    if usage is not None:
        bad = usage[usage.duplicated(["customer_id", "month"], keep=False)]
        problems.setdefault(("usage", "customer_id, month", "unique"), []).extend(
            (row, f"{c}, {m:%Y-%m-%d}") for row, c, m in zip(bad[_ROW], bad["customer_id"], bad["month"], strict=True)
        )
    for name in TABLES[1:]:
        path = parts / name / f"{chunk:05d}.parquet"
        if name not in tables or not path.exists():
            continue
        events = pq.read_table(path, columns=["customer_id", _ROW])
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
    n_chunks = max(1, -(-_count_rows(files["customers"]) // chunk_size))
    sizes = {name: _count_rows(path) for name, path in files.items()}
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

    with _worker_pool(workers, rows=rows) as pool:
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
            _cancel(list(futures.values()))
            raise
        _cancel(list(pending))
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


# ---------------------------------------------------------------------------------------------
# Stage 2: score one chunk
# ---------------------------------------------------------------------------------------------


@dataclass
class Scorer:
    """What every chunk needs from the model; sent to each Dask worker once."""

    bundle: Bundle
    guardrails: GuardrailConfig
    explainer: PatternTreeShap | None

    @classmethod
    def for_bundle(cls, bundle: Bundle, explain: bool) -> Scorer:
        return cls(bundle, guardrail_config(bundle), PatternTreeShap(bundle.propensity.booster) if explain else None)


_STRING = pa.string()
_FLOAT = pa.float64()
_RESULT_TYPES: dict[str, pa.DataType] = {
    "propensity": _FLOAT,
    "percentile": _FLOAT,
    "next_best_ask_probability": _FLOAT,
    "re_engage": pa.bool_(),
    "baseline_points": pa.int64(),
    "baseline_qualified": pa.bool_(),
    "cold_start": pa.bool_(),
    "features_as_of": pa.timestamp("us", tz="UTC"),
}


def result_table(frame: pd.DataFrame) -> pa.Table:
    """The output columns with fixed types, so that every chunk has the same schema."""
    types = [_RESULT_TYPES.get(c, _FLOAT if c.startswith("acceptance_") else _STRING) for c in frame.columns]
    schema = pa.schema([pa.field(c, t) for c, t in zip(frame.columns, types, strict=True)])
    return pa.Table.from_pandas(frame, schema=schema, preserve_index=False).replace_schema_metadata(None)


def _values(features: pd.DataFrame) -> dict[str, Any]:
    """Feature rows as `score` reads them: the API's types, as lists (the reasons index them per row)."""
    values: dict[str, Any] = {"customer_id": features["customer_id"].to_numpy(dtype=object)}
    values["as_of"] = features["as_of"].to_numpy()
    for name in FEATURE_NAMES:
        column = features[name]
        values[name] = (
            column.to_numpy(dtype=object) if name in CATEGORICAL_FEATURES else column.to_numpy(float)
        ).tolist()
    return values


def drift_counts(reference: Mapping[str, Any], frame: pd.DataFrame, scores: np.ndarray) -> dict[str, list[float]]:
    """Per feature (and `score`), row counts in the reference's bins: chunks add up to `drift_report`."""
    out: dict[str, list[float]] = {}
    for name, ref in reference.items():
        if name == "score" or ref["kind"] == "numeric":
            values = np.asarray(scores if name == "score" else frame[name].to_numpy(dtype=float), dtype=float)
            edges = np.asarray(ref["edges"], dtype=float)
            missing = ~np.isfinite(values)
            bins = np.searchsorted(edges, values[~missing], side="right")
            counts = np.append(np.bincount(bins, minlength=len(edges) + 1).astype(float), missing.sum())
        else:
            found = frame[name].astype("str").value_counts()
            known = np.array([found.get(level, 0) for level in ref["levels"]], dtype=float)
            counts = np.append(known, len(frame) - known.sum())
        out[name] = counts.tolist()
    return out


def drift_from_counts(reference: Mapping[str, Any], counts: Mapping[str, Any], rows: int) -> pd.DataFrame:
    """`models.drift.drift_report` from summed bin counts."""
    report = []
    for name, ref in reference.items():
        shares = np.asarray(counts.get(name, np.zeros(len(ref["shares"]))), dtype=float) / max(rows, 1)
        value = psi(np.asarray(ref["shares"]), shares)
        report.append({"name": name, "psi": value, "drifted": value > PSI_ALERT})
    frame = pd.DataFrame(report, columns=["name", "psi", "drifted"])
    return frame.sort_values("psi", ascending=False, kind="stable").reset_index(drop=True)


def _top_disagreements(result: pd.DataFrame, k: int = TOP_DISAGREEMENTS) -> pd.DataFrame:
    rank = {t: i for i, t in enumerate(TIER_ORDER)}
    gap = result["tier"].map(rank) - result["baseline_tier"].map(rank)
    frame = result.assign(gap=gap)[(gap != 0) & ~result["cold_start"]]
    frame = frame.assign(size=frame["gap"].abs())
    frame = frame.sort_values(["size", "propensity", "customer_id"], ascending=[False, False, True], kind="stable")
    columns = ["customer_id", "tier", "propensity", "baseline_tier", "baseline_points", "gap", "reason_1"]
    return frame.head(k).loc[:, columns].reset_index(drop=True)


def score_chunk(work: Path, chunk: int, scorer: Scorer, as_of: pd.Timestamp, num_threads: int) -> dict[str, Any]:
    """Stage 2 for one chunk: write `chunks/NNNNN/` (complete, or not at all); return its stats."""
    done = work / "chunks" / f"{chunk:05d}"
    if (done / "stats.json").exists():
        stats: dict[str, Any] = json.loads((done / "stats.json").read_text())
        return stats
    started = time.perf_counter()
    bundle = scorer.bundle
    world = load_chunk_world(work, chunk)
    features = build_features(world, active_points(world, as_of))
    snapshot = build_snapshot(world, as_of, features)
    blocks = blocked_asks(snapshot.asks, guardrail_signals(snapshot.features), as_of, scorer.guardrails)
    matrix = bundle.encoder.transform(features)
    blocked = Blocked.from_frame(blocks)
    # The reasons come from the fast explainer (exact for the top 3), not from `score`'s own TreeSHAP.
    scores = score(bundle, _values(features), matrix=matrix, blocked=blocked, explain=False, num_threads=num_threads)
    explain = ExplainStats()
    if scorer.explainer is not None:
        scores.contributions, explain = scorer.explainer.contributions(matrix)
    result = scores.columns()
    crosstab = pd.crosstab(result["tier"], result["baseline_tier"]) if len(result) else pd.DataFrame()
    stats = {
        "chunk": chunk,
        "rows": len(result),
        "customers": len(world.customers),
        "cold_start": int(result["cold_start"].sum()),
        "tiers": [[str(m), str(b), int(crosstab.loc[m, b])] for m in crosstab.index for b in crosstab.columns],
        "drift": drift_counts(bundle.drift_reference, features, scores.model_propensity),
        "top": _top_disagreements(result).to_dict(orient="records"),
        "explain": explain.__dict__,
        "asks": len(snapshot.asks),
        "seconds": time.perf_counter() - started,
    }
    staging = work / "chunks" / f".{chunk:05d}-{uuid.uuid4().hex}"
    staging.mkdir(parents=True)
    try:
        pq.write_table(result_table(result), staging / "result.parquet")
        for part in ("features", "asks", "history"):
            frame = getattr(snapshot, part)
            pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), staging / f"{part}.parquet")
        (staging / "stats.json").write_text(json.dumps(stats, default=_json_default))
        try:
            os.replace(staging, done)
        except OSError:
            if not (done / "stats.json").exists():  # someone else finished it meanwhile: theirs is the same
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return stats


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if value is pd.NaT or value is None:
        return None
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


# ---------------------------------------------------------------------------------------------
# Engines
# ---------------------------------------------------------------------------------------------


class _RateColumn(ProgressColumn):
    """Rows per second."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:,.0f} rows/s", style="progress.data.speed")


def make_progress(console: Console) -> Progress:
    """A Rich progress bar with rows/s and ETA."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _RateColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


ChunkDone = Callable[[dict[str, Any]], None]


def _run_local(
    work: Path, chunks: Sequence[int], scorer: Scorer, as_of: pd.Timestamp, done: ChunkDone, workers: int
) -> None:
    """The chunks in this process, or side by side in `workers` processes.

    Most of a chunk's time is single-threaded Python and pandas (point-in-time features, guardrails,
    reason text); only the predictions use LightGBM's threads. So on N cores N chunks at a time,
    each with a share of the cores for LightGBM, finish sooner than one chunk at a time with all of
    them. Each process holds its own copy of the model and one chunk's working memory.
    """
    cores = os.cpu_count() or 1
    workers = max(1, min(workers, len(chunks)))
    if workers == 1:
        for chunk in chunks:
            done(score_chunk(work, chunk, scorer, as_of, cores))
        return
    threads = max(1, cores // workers)
    with _worker_pool(workers, scorer=scorer) as pool:
        futures = [pool.submit(_score_held_chunk, work, chunk, as_of, threads) for chunk in chunks]
        try:
            for future in as_completed(futures):
                done(future.result())
        except BaseException:
            _cancel(futures)
            raise


def default_workers(customers: int) -> int:
    """One process per core when the job is big enough to pay for starting them (about 6 s of CPU
    each to import this package; at 100,000 customers, 5 chunks, two processes were no faster),
    else everything in this process."""
    return (os.cpu_count() or 1) if customers >= PARALLEL_MIN_CUSTOMERS else 1


def _worker_pool(workers: int, scorer: Scorer | None = None, rows: Any = None) -> ProcessPoolExecutor:
    # Spawned, not forked: this process runs threads (the progress bar, LightGBM's OpenMP pool).
    context = multiprocessing.get_context("spawn")
    return ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker, initargs=(scorer, rows))


_held: dict[str, Any] = {}  # in a worker process of the local engine: what `_init_worker` was sent


def _init_worker(scorer: Scorer | None, rows: Any) -> None:
    # Ctrl-C reaches the whole process group: the parent alone handles it (pending work is
    # cancelled, running chunks finish and are kept for a resumed run), not a traceback per worker.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _held.update(scorer=scorer, rows=rows)


def _score_held_chunk(work: Path, chunk: int, as_of: pd.Timestamp, threads: int) -> dict[str, Any]:
    return score_chunk(work, chunk, _held["scorer"], as_of, threads)


def _split_held_table(name: str, path: Path, parts: Path, n_chunks: int) -> np.ndarray:
    return _split_table(name, path, parts, n_chunks, _held["rows"].put)


def _cancel(futures: Sequence[Future[Any]]) -> None:
    """Cancel what has not started; what runs finishes (a chunk is written whole or not at all)."""
    for future in futures:
        future.cancel()


def _run_dask(
    work: Path,
    chunks: Sequence[int],
    scorer: Scorer,
    as_of: pd.Timestamp,
    done: ChunkDone,
    client: Any = None,
    scheduler: str | None = None,
) -> None:
    """The same chunks on a Dask cluster: the scorer is scattered once, `score_chunk` mapped over chunks.

    Workers read and write the work folder, so on a multi-machine cluster it must be on shared storage.
    """
    from distributed import Client, LocalCluster, as_completed

    own: list[Any] = []
    if client is None:
        if scheduler:
            client = Client(scheduler)
        else:
            cluster = LocalCluster(
                n_workers=os.cpu_count() or 1, threads_per_worker=1, processes=True, dashboard_address=None
            )
            own.append(cluster)
            client = Client(cluster)
        own.insert(0, client)
    try:
        [remote] = client.scatter([scorer], broadcast=True, hash=False)
        futures = client.map(
            score_chunk,
            [work] * len(chunks),
            list(chunks),
            [remote] * len(chunks),
            [as_of] * len(chunks),
            [1] * len(chunks),
            pure=False,
        )
        try:
            for future in as_completed(futures):
                done(future.result())
        except BaseException:
            client.cancel(futures)
            raise
    finally:
        for thing in own:
            thing.close()


# ---------------------------------------------------------------------------------------------
# Stage 3: assemble
# ---------------------------------------------------------------------------------------------


def _assemble_output(work: Path, n_chunks: int, out: Path) -> Path:
    """The output, in chunk order, in a temporary file inside the work folder (renamed later)."""
    tmp = work / f"output{out.suffix}"
    tmp.unlink(missing_ok=True)
    paths = [work / "chunks" / f"{k:05d}" / "result.parquet" for k in range(n_chunks)]
    try:
        if out.suffix == ".parquet":
            schema = pq.read_schema(paths[0])
            with pq.ParquetWriter(tmp, schema) as writer:
                for path in paths:
                    writer.write_table(pq.read_table(path, schema=schema))
        else:
            with open(tmp, "w", newline="") as fh:
                for k, path in enumerate(paths):
                    pd.read_parquet(path).to_csv(fh, header=k == 0, index=False)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)  # e.g. the disk filled up: give the space back, keep the finished chunks
        raise
    return tmp


def _stream_parts(paths: Sequence[Path], target: Path) -> int:
    """Concatenate Parquet pieces with one schema (the first non-empty piece's); return the rows."""
    tables = [pq.ParquetFile(p) for p in paths]
    sized = [t for t in tables if t.metadata.num_rows] or tables
    schema = sized[0].schema_arrow
    rows = 0
    with pq.ParquetWriter(target, schema) as writer:
        for piece in tables:
            table = piece.read()
            if table.num_rows:
                writer.write_table(table.cast(schema))
                rows += table.num_rows
    return rows


def write_snapshot_from_chunks(work: Path, n_chunks: int, root: Path, as_of: pd.Timestamp) -> Path:
    """The feature snapshot the service reads, streamed from the chunks (`serving.snapshot` layout).

    Published like `serving.snapshot.write_snapshot` (`publish_snapshot`), without holding the
    whole base in memory.
    """

    def fill(staging: Path) -> dict[str, Any]:
        counts = {}
        for part in ("features", "asks", "history"):
            paths = [work / "chunks" / f"{k:05d}" / f"{part}.parquet" for k in range(n_chunks)]
            counts[part] = _stream_parts(paths, staging / f"{part}.parquet")
        return {
            "as_of": as_of.isoformat(),
            "written_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "customers": counts["features"],
            "asks": counts["asks"],
            "feature_version": FEATURE_VERSION,
        }

    return publish_snapshot(root, fill)


def drift_path(out: Path) -> Path:
    """`scores.parquet` -> `scores.drift.csv`."""
    return out.with_name(f"{out.stem}.drift.csv")


@dataclass
class _Totals:
    rows: int = 0
    customers: int = 0
    cold_start: int = 0
    tiers: dict[tuple[str, str], int] = field(default_factory=dict)
    drift: dict[str, np.ndarray] = field(default_factory=dict)
    top: list[dict[str, Any]] = field(default_factory=list)
    explain: ExplainStats = field(default_factory=ExplainStats)

    def add(self, stats: Mapping[str, Any]) -> None:
        self.rows += int(stats["rows"])
        self.customers += int(stats["customers"])
        self.cold_start += int(stats["cold_start"])
        for model_tier, rule_tier, n in stats["tiers"]:
            self.tiers[(model_tier, rule_tier)] = self.tiers.get((model_tier, rule_tier), 0) + int(n)
        for name, counts in stats["drift"].items():
            values = np.asarray(counts, dtype=float)
            self.drift[name] = self.drift[name] + values if name in self.drift else values
        self.top.extend(stats["top"])
        self.explain.add(ExplainStats(**stats["explain"]))

    def crosstab(self) -> pd.DataFrame:
        table = pd.DataFrame(0, index=list(TIER_ORDER[::-1]), columns=list(TIER_ORDER[::-1]), dtype=np.int64)
        for (model_tier, rule_tier), n in self.tiers.items():
            table.loc[model_tier, rule_tier] = n
        table.index.name, table.columns.name = "model tier", "baseline tier"
        return table

    def top_disagreements(self) -> pd.DataFrame:
        frame = pd.DataFrame(self.top)
        if frame.empty:
            return pd.DataFrame(columns=["customer_id", "tier", "propensity", "baseline_tier", "baseline_points"])
        frame = frame.assign(size=frame["gap"].abs())
        frame = frame.sort_values(["size", "propensity", "customer_id"], ascending=[False, False, True], kind="stable")
        return frame.head(TOP_DISAGREEMENTS).drop(columns=["size"]).reset_index(drop=True)


def _log_to_mlflow(settings: Settings, result: BatchResult, key: RunKey, data_dir: Path, engine: str) -> str | None:
    """One run per batch job in the `advocacy-batch` experiment (params, metrics, drift report)."""
    import mlflow

    uri = settings.tracking_uri()
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        location = settings.artifact_root().resolve().as_uri() if uri.startswith("sqlite:") else None
        experiment_id = mlflow.create_experiment(EXPERIMENT, artifact_location=location)
    else:
        experiment_id = experiment.experiment_id
    tiers = result.tiers
    rows = max(result.rows, 1)
    metrics = {
        "rows": float(result.rows),
        "seconds": result.seconds,
        "rows_per_second": result.rows_per_second,
        "agreement": float(np.trace(tiers.to_numpy())) / rows,
        "drifted_features": float(result.drift["drifted"].sum()),
        "max_psi": float(result.drift["psi"].max()) if len(result.drift) else 0.0,
    }
    score_psi = result.drift.loc[result.drift["name"] == "score", "psi"]
    if len(score_psi):
        metrics["score_psi"] = float(score_psi.iloc[0])
    for tier in TIER_ORDER:
        metrics[f"share_model_{tier}"] = float(tiers.loc[tier].sum()) / rows
        metrics[f"share_baseline_{tier}"] = float(tiers[tier].sum()) / rows
    with mlflow.start_run(experiment_id=experiment_id) as run:
        mlflow.log_params(
            {
                "data_dir": str(data_dir),
                "data_fingerprint": key.data,
                "as_of": key.as_of,
                "model_name": key.model_name,
                "model_version": key.model_version,
                "explain": key.explain,
                "engine": engine,
                "chunk_size": key.chunk_size,
            }
        )
        mlflow.log_metrics(metrics)
        mlflow.set_tag("model_version", key.model_version)
        mlflow.log_artifact(str(result.drift_path))
        return str(run.info.run_id)


# ---------------------------------------------------------------------------------------------
# The job
# ---------------------------------------------------------------------------------------------


def run_batch(
    settings: Settings,
    data_dir: Path,
    out: Path,
    *,
    as_of: pd.Timestamp | None = None,
    explain: bool = True,
    engine: str = "local",
    scheduler: str | None = None,
    client: Any = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    workers: int | None = None,
    snapshot: bool = True,
    track: bool = True,
    console: Console | None = None,
) -> BatchResult:
    """Score every customer active at `as_of` (default: now, or the `as_of` of an interrupted run of
    the same job) with the `@champion` model into `out`; see the module docstring."""
    started = time.perf_counter()
    console = console or Console(stderr=True)
    out = Path(out)
    check_output(out)
    if engine not in ENGINES:
        raise ValueError(f"--engine must be local or dask, got {engine!r}")
    if chunk_size < 1:
        raise ValueError(f"--chunk-size must be at least 1, got {chunk_size}")
    if workers is not None and workers < 1:
        raise ValueError(f"--workers must be at least 1, got {workers}")
    files = table_files(Path(data_dir))
    champion, bundle = load_champion(settings)
    key = RunKey(
        data=data_fingerprint(files),
        as_of="",
        model_name=champion.name,
        model_version=champion.version,
        trained_at=bundle.trained_at,
        explain=explain,
        chunk_size=chunk_size,
    )
    if as_of is None:
        as_of = _unfinished_as_of(out, key)
        if as_of is not None:
            console.print(f"Resuming the interrupted run as of {as_of.isoformat()} (pass --as-of to start afresh)")
        else:
            as_of = pd.Timestamp.now(tz="UTC")
    as_of = pd.Timestamp(as_of)
    as_of = as_of.tz_localize("UTC") if as_of.tzinfo is None else as_of.tz_convert("UTC")
    key = RunKey(**{**key.__dict__, "as_of": as_of.isoformat()})
    workers = workers or default_workers(_count_rows(files["customers"]))
    work = work_dir(out, key)
    fresh = not work.exists()
    new_parent = not out.parent.exists()
    work.mkdir(parents=True, exist_ok=True)
    (work / "key.json").write_text(json.dumps(key.__dict__, sort_keys=True))
    console.print(
        f"Scoring {Path(data_dir)} as of {as_of.isoformat()} with {champion.name} v{champion.version} "
        f"({engine} engine, reasons {'on' if explain else 'off'})"
    )
    with make_progress(console) as progress:
        try:
            split = split_tables(files, work, chunk_size, progress, workers if engine == "local" else 1)
        except DataContractError:
            if fresh:  # rejected input leaves nothing behind
                shutil.rmtree(work, ignore_errors=True)
                if new_parent and not any(out.parent.iterdir()):
                    out.parent.rmdir()
            raise
        finished = [k for k in range(split.n_chunks) if (work / "chunks" / f"{k:05d}" / "stats.json").exists()]
        todo = [k for k in range(split.n_chunks) if k not in set(finished)]
        if finished:
            console.print(f"Resuming: {len(finished)} of {split.n_chunks} chunks already scored")
        totals = _Totals()
        for k in finished:
            totals.add(json.loads((work / "chunks" / f"{k:05d}" / "stats.json").read_text()))
        task = progress.add_task(
            "Scoring customers", total=sum(split.customers[k] for k in todo) or 1, completed=0 if todo else 1
        )

        def chunk_done(stats: dict[str, Any]) -> None:
            totals.add(stats)
            progress.advance(task, int(stats["customers"]))

        scorer = Scorer.for_bundle(bundle, explain)
        if engine == "local":
            _run_local(work, todo, scorer, as_of, chunk_done, workers)
        else:
            _run_dask(work, todo, scorer, as_of, chunk_done, client=client, scheduler=scheduler)

    tmp_out = _assemble_output(work, split.n_chunks, out)
    drift = drift_from_counts(bundle.drift_reference, totals.drift, totals.rows)
    write_frame(drift, drift_path(out))
    snapshot_dir = (
        write_snapshot_from_chunks(work, split.n_chunks, settings.feature_store_path(), as_of) if snapshot else None
    )
    result = BatchResult(
        out=out,
        rows=totals.rows,
        customers=totals.customers,
        seconds=time.perf_counter() - started,
        as_of=as_of,
        model_version=champion.version,
        drift=drift,
        drift_path=drift_path(out),
        snapshot_dir=snapshot_dir,
        chunks=split.n_chunks,
        resumed_chunks=len(finished),
        tiers=totals.crosstab(),
        top_disagreements=totals.top_disagreements(),
        explain=totals.explain,
    )
    if track:
        from mlflow.exceptions import MlflowException

        try:
            result.mlflow_run_id = _log_to_mlflow(settings, result, key, Path(data_dir), engine)
        except (MlflowException, OSError) as err:  # the scores are good: a tracking hiccup must not lose them
            console.print(f"[yellow]warning:[/] could not log the run to MLflow: {err}")
    os.replace(tmp_out, out)  # the output appears complete, and only now
    shutil.rmtree(work, ignore_errors=True)
    result.seconds = time.perf_counter() - started
    print_summary(result, console)
    return result


def print_summary(result: BatchResult, console: Console) -> None:
    """Tier counts for the model and the points rule, their agreement, drift, and the largest disagreements."""
    tiers = result.tiers
    rows = max(result.rows, 1)
    table = Table(title=f"{result.rows:,} customers scored as of {result.as_of:%Y-%m-%d %H:%M} UTC")
    table.add_column("tier")
    table.add_column("model", justify="right")
    table.add_column("points rule", justify="right")
    for tier in TIER_ORDER[::-1]:
        model_n, rule_n = int(tiers.loc[tier].sum()), int(tiers[tier].sum())
        table.add_row(tier, f"{model_n:,} ({model_n / rows:.1%})", f"{rule_n:,} ({rule_n / rows:.1%})")
    console.print(table)
    agree = int(np.trace(tiers.to_numpy()))
    console.print(f"Model and points rule agree on the tier of {agree:,} customers ({agree / rows:.1%}).")
    drifted = result.drift[result.drift["drifted"]]
    if len(drifted):
        shown = ", ".join(f"{n} (PSI {p:.2f})" for n, p in zip(drifted["name"], drifted["psi"], strict=True))
        console.print(f"[yellow]Drift against the training data:[/] {shown}")
    else:
        console.print("No feature or score drifted against the training data (PSI <= 0.25).")
    ex = result.explain
    if ex.rows:
        console.print(
            f"Reasons: TreeSHAP of {ex.patterns:,} tree patterns ({ex.computed:,} computed, the rest cached); "
            f"{ex.exact_rows:,} rows recomputed exactly at near-ties."
        )
    top = result.top_disagreements
    if len(top):
        t = Table(title="Largest disagreements (customer ids only)")
        for col in ("customer", "model", "propensity", "points rule", "points", "top reason"):
            t.add_column(col, justify="right" if col in ("propensity", "points") else "left")
        for row in top.itertuples(index=False):
            t.add_row(
                str(row.customer_id),
                str(row.tier),
                f"{row.propensity:.3f}",
                str(row.baseline_tier),
                str(row.baseline_points),
                str(row.reason_1 or ""),
            )
        console.print(t)
    console.print(
        f"Wrote {result.out} ({result.rows:,} rows, {result.seconds:,.1f} s, {result.rows_per_second:,.0f} rows/s), "
        f"drift report {result.drift_path}"
        + (f", feature snapshot {result.snapshot_dir}" if result.snapshot_dir else "")
    )


__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "BatchResult",
    "Scorer",
    "check_output",
    "chunk_of",
    "data_fingerprint",
    "drift_counts",
    "drift_from_counts",
    "drift_path",
    "load_chunk_world",
    "run_batch",
    "score_chunk",
    "split_tables",
    "table_files",
    "write_snapshot_from_chunks",
]
