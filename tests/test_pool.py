"""The batch job's processes: the job's own works beside its pool, and a failure is the one a single
process running the tasks in order would raise."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from functools import partial

import pytest

from batch.pool import JobPool, Task, run_shared


def _pid(i: int, fail: frozenset[int] = frozenset()) -> tuple[int, int]:
    time.sleep(0.05)  # long enough that both processes take some of the tasks
    if i in fail:
        raise ValueError(f"task {i} failed")
    return i, os.getpid()


def _tasks(n: int, fail: frozenset[int] = frozenset()) -> list[Task]:
    return [Task((_pid, (i, fail)), partial(_pid, i, fail)) for i in range(n)]


@pytest.fixture(scope="module")
def pool() -> Iterator[JobPool]:
    with JobPool(1) as p:
        yield p


def test_the_jobs_own_process_works_beside_its_pool(pool: JobPool) -> None:
    done: list[tuple[int, int]] = []
    results = run_shared(pool, _tasks(12), on_done=done.append)
    assert [i for i, _ in results] == list(range(12))  # in the tasks' order, whoever ran them
    assert sorted(done) == results
    pids = {pid for _, pid in results}
    assert os.getpid() in pids and len(pids) == 2


def test_tasks_start_in_the_order_given(pool: JobPool) -> None:
    results = run_shared(pool, _tasks(4), order=[3, 2, 1, 0])
    assert [i for i, _ in results] == [0, 1, 2, 3]


@pytest.mark.parametrize("fail", [frozenset({2}), frozenset({2, 7}), frozenset({5, 9, 2})])
def test_a_failure_is_the_earliest_in_the_tasks_order(pool: JobPool, fail: frozenset[int]) -> None:
    """Wherever each task ran and whenever it failed, the earliest failing task's error is raised."""
    with pytest.raises(ValueError, match="task 2 failed"):
        run_shared(pool, _tasks(10, fail))
    with pytest.raises(ValueError, match="task 2 failed"):
        run_shared(pool, _tasks(10, fail), order=list(range(9, -1, -1)))  # the later ones first


def test_without_a_pool_this_process_runs_everything() -> None:
    results = run_shared(None, _tasks(3))
    assert {pid for _, pid in results} == {os.getpid()}
