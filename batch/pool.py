"""The local engine's worker processes: spawned, Ctrl-C left to the parent, and what each one holds.

Spawned, not forked: the parent runs threads (the progress bar, LightGBM's OpenMP pool). Each worker
is sent what it needs once, when it starts (`held`), instead of with every task.
"""

from __future__ import annotations

import multiprocessing
import signal
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

_held: dict[str, Any] = {}  # in a worker process: what `worker_pool` was sent


def worker_pool(workers: int, **held_values: Any) -> ProcessPoolExecutor:
    """`workers` spawned processes, each holding `held_values` (read back with `held`)."""
    context = multiprocessing.get_context("spawn")
    return ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker, initargs=(held_values,))


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
