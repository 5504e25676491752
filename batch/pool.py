"""The local engine's worker processes: spawned, Ctrl-C left to the parent, and what each one holds.

Spawned, not forked: the parent runs threads (the progress bar, LightGBM's OpenMP pool). Each worker
is sent what it needs once, when it starts (`held`), instead of with every task. One `JobPool`
serves a run's both stages (splitting the tables, scoring the chunks), so each process starts and
imports this package once per run.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import multiprocessing
import signal
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any, TypeVar

import pyarrow as pa

_T = TypeVar("_T")
_held: dict[str, Any] = {}  # in a worker process: what `worker_pool` was sent


def worker_pool(workers: int, **held_values: Any) -> ProcessPoolExecutor:
    """`workers` spawned processes, each holding `held_values` (read back with `held`)."""
    context = multiprocessing.get_context("spawn")
    return ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker, initargs=(held_values,))


class JobPool:
    """A run's worker processes (started at the first task), holding `held_values` and a queue,
    `held("rows")`, on which a task reports raw rows read (the split's progress bar)."""

    def __init__(self, workers: int, **held_values: Any) -> None:
        self.workers = workers
        self.rows = multiprocessing.get_context("spawn").Queue()
        self.executor = worker_pool(workers, rows=self.rows, **held_values)

    def __enter__(self) -> JobPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.executor.shutdown(cancel_futures=True)


def release_memory() -> None:
    """Give the system back what this process has freed: Arrow's allocator, and C's (glibc's
    `malloc_trim`, where there is one), keep freed memory for reuse. A stage that read big tables
    calls this before the next, which needs the room in another process."""
    pa.default_memory_pool().release_unused()
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def released(fn: Callable[..., _T], *args: Any) -> _T:
    """`fn(*args)` in a worker process whose next task may be another stage's: what it freed goes
    back to the system (`release_memory`), however it ends."""
    try:
        return fn(*args)
    finally:
        release_memory()


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None


_LIBC = _libc()


def _init_worker(held_values: dict[str, Any]) -> None:
    # Ctrl-C reaches the whole process group: the parent alone handles it (pending work is
    # cancelled, running chunks finish and are kept for a resumed run), not a traceback per worker.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _held.update(held_values)


def held(name: str) -> Any:
    """In a worker process: the value `worker_pool` was given under `name`."""
    return _held[name]


def cancel(futures: Sequence[Future[Any]]) -> None:
    """Cancel what has not started; what runs finishes (a chunk is written whole or not at all)."""
    for future in futures:
        future.cancel()
