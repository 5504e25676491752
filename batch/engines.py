"""Where the chunks are scored: in this process, in one process per core, or on a Dask cluster.

Every engine runs the same `score_chunk` over the same chunks, so they write the same bytes.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd

from batch.chunk import Scorer, score_chunk
from batch.pool import JobPool, Task, held, released, run_shared

ENGINES = ("local", "dask")
PARALLEL_MIN_CUSTOMERS = 200_000  # scored in one process below this many (see `default_workers`)


ChunkDone = Callable[[dict[str, Any]], None]


def run_local(
    work: Path,
    chunks: Sequence[int],
    scorer: Scorer,
    as_of: pd.Timestamp,
    done: ChunkDone,
    workers: int,
    pool: JobPool | None = None,
) -> None:
    """The chunks in this process, or side by side in `workers` processes: this one and a pool of
    the others (`pool`'s, holding `scorer`, if given; else one of its own).

    Much of a chunk's time is single-threaded Python and pandas (the feature-store rows, guardrails,
    reason text); only the features (DuckDB) and the predictions (LightGBM) use threads. So on N
    cores N chunks at a time, each with a share of the cores for both, finish sooner than one chunk
    at a time with all of them. Each process holds its own copy of the model and one chunk's working memory.
    """
    cores = os.cpu_count() or 1
    workers = max(1, min(workers, len(chunks)))
    if workers == 1:
        for chunk in chunks:
            done(score_chunk(work, chunk, scorer, as_of, cores))
        return
    with contextlib.ExitStack() as stack:
        if pool is None:
            pool = stack.enter_context(JobPool(workers - 1, scorer=scorer))
        threads = max(1, cores // (pool.workers + 1))
        tasks = [
            Task(
                (_score_held_chunk, (work, chunk, as_of, threads)),
                partial(released, score_chunk, work, chunk, scorer, as_of, threads),
            )
            for chunk in chunks
        ]
        run_shared(pool, tasks, on_done=done)


def default_workers(customers: int) -> int:
    """One process per core when the job is big enough to pay for starting them (about 6 s of CPU
    each to import this package; at 100,000 customers, 5 chunks, two processes were no faster),
    else everything in this process."""
    return (os.cpu_count() or 1) if customers >= PARALLEL_MIN_CUSTOMERS else 1


def _score_held_chunk(work: Path, chunk: int, as_of: pd.Timestamp, threads: int) -> dict[str, Any]:
    # Each chunk starts from the process's own size, not the last chunk's peak.
    return released(score_chunk, work, chunk, held("scorer"), as_of, threads)


def run_dask(
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
