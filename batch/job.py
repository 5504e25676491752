"""The batch job behind `advocacy score`: the whole customer base, in bounded memory (spec sections 5-8).

`run_batch` is a short pipeline over a work folder beside the output, named by a hash of what
decides the output (the data's content, `as_of`, the model version, `explain`, the chunk size):

1. split (`batch.tables`): the raw tables, read in batches and checked, filed by customer chunk,
   with the asks recorded through the API (`usecases.sources`), which count as the table's do;
   bad input stops here and the work folder is removed;
2. score (`batch.chunk`, run by an engine of `batch.engines`): each chunk as the API would score it,
   written whole or not at all, so a killed run resumes from the chunks it finished;
3. assemble (`batch.assemble`): the output in chunk order, the drift report, the feature snapshot
   the service reads; then an MLflow run and a summary (`batch.report`);
4. clean up: the output appears (renamed into place) and the work folder goes.

Output rows are ordered by chunk, then by the customers table's order: the same on every run, so
an interrupted and resumed run writes the same bytes as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console
from rich.progress import Progress
from rich.text import Text

from batch.assemble import Totals, assemble_output, drift_path, write_snapshot_from_chunks
from batch.chunk import Scorer
from batch.engines import ENGINES, default_workers, run_dask, run_local
from batch.pool import JobPool, long_lived, release_memory
from batch.report import log_to_mlflow, make_progress, print_summary
from batch.tables import Split, count_rows, data_fingerprint, file_logged_asks, frame_digest, split_tables
from features.catalog import DEALS, TABLES
from features.context import DEAL_LINKS, PLAN_LINKS
from features.contracts import DataContractError, as_utc
from features.io import read_ask_links, read_deals, table_files
from features.plan_links import merge_links
from features.spec import FEATURE_VERSION
from models.drift import drift_from_counts
from models.explain_fast import ExplainStats
from models.registry import load_champion
from storage.files import check_frame_path, write_frame
from storage.settings import Settings
from storage.snapshots import check_base
from usecases.sources import Sources

# Customers per chunk. A smaller chunk lowers the job's peak memory only a little (most of a
# process is its imports and the model) and adds a fixed cost per chunk: `benchmarks/batch.py`
# measures both (`--chunk-size` lets a small machine trade time for memory).
DEFAULT_CHUNK_SIZE = 15_000
_FORMAT = 5  # bump when the work folder's layout or the output's bytes change (5: LZ4-compressed pieces)


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
    # Wall seconds per stage, in order: start (settings, champion), split, chunks, output, snapshot.
    stages: dict[str, float] = field(default_factory=dict)

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float("nan")


class Stages:
    """Wall seconds per named stage, from one clock (the process's start-up is not in them)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = self.seconds.get(name, 0.0) + now - self._last
        self._last = now


def check_output(out: Path) -> None:
    """A `ValueError` unless the output is a file type the job writes (`storage.files.write_frame`'s)."""
    check_frame_path(out)


@dataclass(frozen=True)
class RunKey:
    """Everything that decides the output's bytes; its digest names the work folder."""

    data: str
    asks_logged: str  # a digest of the ask log's asks: they count as the asks table's do
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


@dataclass
class _Run:
    """One run's inputs, fixed before any work is done."""

    settings: Settings
    data_dir: Path
    out: Path
    files: dict[str, Path]
    logged: pd.DataFrame  # the asks recorded through the API, read once at the start
    key: RunKey
    as_of: pd.Timestamp
    model_version: str
    scorer: Scorer
    engine: str
    workers: int
    # The snapshot's small tables (`features.context.WHOLE_TABLES`), read whole: the asks table's
    # links to plans and deals (few columns; the split keeps the contract's only), which the service
    # needs to count campaign answers and to hold an ask's plan and deal fixed, and the deals.
    whole: dict[str, pd.DataFrame] = field(default_factory=dict)

    @property
    def work(self) -> Path:
        return work_dir(self.out, self.key)


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
    force_snapshot: bool = False,
    track: bool = True,
    console: Console | None = None,
) -> BatchResult:
    """Score every customer active at `as_of` (default: now, or the `as_of` of an interrupted run of
    the same job) with the `@champion` model into `out`; see the module docstring."""
    started = time.perf_counter()
    clock = Stages()
    console = console or Console(stderr=True, markup=False, emoji=False)  # names are data, never markup
    run = _plan_run(settings, Path(data_dir), Path(out), as_of, explain, engine, chunk_size, workers, console)
    # The start reads whole columns of the asks and customers (the deals' keys): what they freed
    # goes back to the system for the worker processes, as does what checking the split frees.
    release_memory()
    clock.lap("start")
    with long_lived(), make_progress(console) as progress, _job_pool(run) as pool:
        split = _split(run, progress, pool)
        release_memory()
        clock.lap("split")
        finished, totals = _score_chunks(run, split, progress, console, client, scheduler, pool)
        clock.lap("chunks")
    store = settings.feature_store_path()
    if snapshot:  # before anything is written: a refused run leaves its chunks, to resume with --force-snapshot
        check_base(totals.rows, store, settings.min_snapshot_share, force_snapshot)
    tmp_out = assemble_output(run.work, split.n_chunks, run.out)
    drift = drift_from_counts(run.scorer.bundle.drift_reference, totals.drift, totals.rows)
    write_frame(drift, drift_path(run.out))
    clock.lap("output")
    snapshot_dir = (
        write_snapshot_from_chunks(run.work, split.n_chunks, store, run.as_of, force_snapshot, run.whole)
        if snapshot
        else None
    )
    clock.lap("snapshot")
    result = BatchResult(
        out=run.out,
        rows=totals.rows,
        customers=totals.customers,
        seconds=time.perf_counter() - started,
        as_of=run.as_of,
        model_version=run.model_version,
        drift=drift,
        drift_path=drift_path(run.out),
        snapshot_dir=snapshot_dir,
        chunks=split.n_chunks,
        resumed_chunks=len(finished),
        tiers=totals.crosstab(),
        top_disagreements=totals.top_disagreements(),
        explain=totals.explain,
        stages=clock.seconds,
    )
    if track:
        _track(run, result, console)
    os.replace(tmp_out, run.out)  # the output appears complete, and only now
    shutil.rmtree(run.work, ignore_errors=True)
    result.seconds = time.perf_counter() - started
    print_summary(result, console)
    return result


def _check_arguments(out: Path, engine: str, chunk_size: int, workers: int | None) -> None:
    check_output(out)
    if engine not in ENGINES:
        raise ValueError(f"--engine must be local or dask, got {engine!r}")
    if chunk_size < 1:
        raise ValueError(f"--chunk-size must be at least 1, got {chunk_size}")
    if workers is not None and workers < 1:
        raise ValueError(f"--workers must be at least 1, got {workers}")


def _plan_run(
    settings: Settings,
    data_dir: Path,
    out: Path,
    as_of: pd.Timestamp | None,
    explain: bool,
    engine: str,
    chunk_size: int,
    workers: int | None,
    console: Console,
) -> _Run:
    """Check the arguments, find the tables and the champion, and fix `as_of` (resuming if asked)."""
    _check_arguments(out, engine, chunk_size, workers)
    files = table_files(data_dir, (*TABLES, DEALS))
    deals, deal_links = read_deals(files)
    files.pop(DEALS, None)  # read whole above; the split files the customer tables only
    champion, bundle = load_champion(settings)
    sources = Sources.from_settings(settings, data_dir)
    logged = sources.logged_asks()
    plan_links = read_ask_links(files.get("asks"), "plan_id")
    # An ask's plan and deal are fixed: the table and the log disagreeing is refused before any work.
    merge_links(plan_links, sources.logged_plan_links(), "plan_id")
    merge_links(deal_links, sources.logged_deal_links(), "opportunity_id")
    whole = {PLAN_LINKS: plan_links, DEALS: deals, DEAL_LINKS: deal_links}
    key = RunKey(
        data=data_fingerprint(files),
        asks_logged=frame_digest(logged),
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
    as_of = as_utc(as_of)
    key = RunKey(**{**key.__dict__, "as_of": as_of.isoformat()})
    console.print(
        f"Scoring {data_dir} as of {as_of.isoformat()} with {champion.name} v{champion.version} "
        f"({engine} engine, reasons {'on' if explain else 'off'})"
    )
    scorer = Scorer.for_bundle(bundle, explain)
    n_workers = workers or default_workers(count_rows("customers", files["customers"]))
    return _Run(settings, data_dir, out, files, logged, key, as_of, champion.version, scorer, engine, n_workers, whole)


def _job_pool(run: _Run) -> contextlib.AbstractContextManager[JobPool | None]:
    """The local engine's processes for both stages beside this one (each started once), or None:
    one process, or Dask."""
    if run.engine != "local" or run.workers <= 1:
        return contextlib.nullcontext()
    return JobPool(run.workers - 1, scorer=run.scorer)


def _split(run: _Run, progress: Progress, pool: JobPool | None) -> Split:
    """Stage 1 in the run's work folder; rejected input of a fresh run leaves nothing behind."""
    work = run.work
    fresh = not work.exists()
    new_parent = not run.out.parent.exists()
    work.mkdir(parents=True, exist_ok=True)
    (work / "key.json").write_text(json.dumps(run.key.__dict__, sort_keys=True))
    try:
        split = split_tables(run.files, work, run.key.chunk_size, progress, pool)
        file_logged_asks(run.logged, work, split.n_chunks)
        return split
    except DataContractError:
        if fresh:
            shutil.rmtree(work, ignore_errors=True)
            if new_parent and not any(run.out.parent.iterdir()):
                run.out.parent.rmdir()
        raise


def _score_chunks(
    run: _Run,
    split: Split,
    progress: Progress,
    console: Console,
    client: Any,
    scheduler: str | None,
    pool: JobPool | None,
) -> tuple[list[int], Totals]:
    """Stage 2: the chunks not yet scored, by the run's engine; the finished ones and the totals."""
    chunks = run.work / "chunks"
    finished = [k for k in range(split.n_chunks) if (chunks / f"{k:05d}" / "stats.json").exists()]
    todo = [k for k in range(split.n_chunks) if k not in set(finished)]
    if finished:
        console.print(f"Resuming: {len(finished)} of {split.n_chunks} chunks already scored")
    totals = Totals()
    for k in finished:
        totals.add(json.loads((chunks / f"{k:05d}" / "stats.json").read_text()))
    task = progress.add_task(
        "Scoring customers", total=sum(split.customers[k] for k in todo) or 1, completed=0 if todo else 1
    )

    def chunk_done(stats: dict[str, Any]) -> None:
        totals.add(stats)
        progress.advance(task, int(stats["customers"]))

    if run.engine == "local":
        run_local(run.work, todo, run.scorer, run.as_of, chunk_done, run.workers, pool)
    else:
        run_dask(run.work, todo, run.scorer, run.as_of, chunk_done, client=client, scheduler=scheduler)
    return finished, totals


def _track(run: _Run, result: BatchResult, console: Console) -> None:
    from mlflow.exceptions import MlflowException

    try:
        result.mlflow_run_id = log_to_mlflow(run.settings, result, run.key, run.data_dir, run.engine)
    except (MlflowException, OSError) as err:  # the scores are good: a tracking hiccup must not lose them
        console.print(Text.assemble(("warning:", "yellow"), f" could not log the run to MLflow: {err}"))
