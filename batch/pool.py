"""The local engine's worker processes: spawned, Ctrl-C left to the parent, and what each one holds.

Spawned, not forked: the parent runs threads (the progress bar, LightGBM's OpenMP pool). Each worker
is sent what it needs once, when it starts (`held`), instead of with every task. One `JobPool`
serves a run's both stages (splitting the tables, scoring the chunks), so each process starts and
imports this package once per run.

The job's own process works too (`run_shared`): on N cores a pool of N - 1 workers and the parent
run N tasks side by side. The parent has imported everything and holds the model anyway, so an
Nth worker would only add a copy of both.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import multiprocessing
import signal
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from functools import partial
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
    """`fn(*args)`, then what it freed goes back to the system (`release_memory`), however it ends:
    the same process's next task may be another stage's, or another process's may need the room."""
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
    _freeze()  # a worker keeps its imports and the model to the end


def _freeze() -> None:
    # Python's full garbage collections walk every tracked object, and the imports and the model
    # are hundreds of thousands of them: each pause is a sizeable share of a chunk's time. What
    # lives as long as the process is moved where collections do not look.
    gc.collect()
    gc.freeze()


@contextlib.contextmanager
def long_lived() -> Iterator[None]:
    """What this process holds now (imports, the model) is left out of garbage collections until
    the block ends (see `_freeze`); the job may run inside a process that goes on afterwards."""
    _freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def held(name: str) -> Any:
    """In a worker process: the value `worker_pool` was given under `name`."""
    return _held[name]


def cancel(futures: Sequence[Future[Any]]) -> None:
    """Cancel what has not started; what runs finishes (a chunk is written whole or not at all)."""
    for future in futures:
        future.cancel()


@dataclass(frozen=True)
class Task:
    """One task of a stage, two ways: `there` (a function and its arguments, picklable) in a pool
    process, reading what it needs with `held`; `here` in the job's own process."""

    there: tuple[Callable[..., Any], tuple[Any, ...]]
    here: Callable[[], Any]

    @classmethod
    def anywhere(cls, fn: Callable[..., Any], *args: Any) -> Task:
        """`fn(*args)` in whichever process, what it freed given back to the system (`released`)."""
        return cls((released, (fn, *args)), partial(released, fn, *args))


# Tasks queued per pool process: the next is there when one finishes, while the parent is busy with its own.
_QUEUED_PER_WORKER = 2


def run_shared(
    pool: JobPool | None,
    tasks: Sequence[Task],
    order: Sequence[int] | None = None,
    on_done: Callable[[Any], None] | None = None,
    poll: Callable[[], None] | None = None,
) -> list[Any]:
    """Each task's result, in the tasks' order. The tasks start in `order` (default: theirs), in
    the pool's processes and in this one, which takes the next task itself whenever it is free;
    `on_done` gets each result as it comes, `poll` is called while waiting (a progress bar).

    A failure raises what one process, running the tasks in order, would have raised: once task j
    fails, no task after j starts, and those before it still run, the earliest failure among them
    taking j's place; whatever runs in a pool process finishes first (a caller may then clean up
    what it writes). Ctrl-C here cancels what has not started."""
    n = len(tasks)
    waiting = deque(order if order is not None else range(n))
    results: dict[int, Any] = {}
    errors: dict[int, Exception] = {}
    running: dict[Future[Any], int] = {}
    room = _QUEUED_PER_WORKER * pool.workers if pool is not None else 0

    def next_task() -> int | None:
        while waiting:
            i = waiting.popleft()
            if i < min(errors, default=n):
                return i
        return None

    def finished(i: int, result: Any) -> None:
        results[i] = result
        if on_done is not None:
            on_done(result)

    def collect(timeout: float) -> None:
        done, _ = wait(running, timeout=timeout, return_when=FIRST_COMPLETED)
        if poll is not None:
            poll()
        for future in done:
            i = running.pop(future)
            error = future.exception()
            if error is not None:
                errors[i] = error if isinstance(error, Exception) else RuntimeError(repr(error))
            else:
                finished(i, future.result())

    try:
        while True:
            while pool is not None and len(running) < room and (i := next_task()) is not None:
                fn, args = tasks[i].there
                running[pool.executor.submit(fn, *args)] = i
            if (i := next_task()) is not None:
                try:
                    result = tasks[i].here()
                except Exception as err:
                    errors[i] = err
                else:
                    finished(i, result)
                if running:
                    collect(0)
            elif running:
                collect(0.2)
            else:
                break
    except BaseException:
        cancel(list(running))
        raise
    if errors:
        raise errors[min(errors)]
    return [results[i] for i in range(n)]
