"""Real service processes for tests: `bentoml serve` (or `advocacy serve`) on 127.0.0.1, stopped by the test."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from features.context import Snapshot
from serving.limits import server_environment
from storage.snapshots import write_snapshot
from tests.conftest import ROOT, TrainedHome

READY_TIMEOUT_S = 120


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (a graceful shutdown), then SIGKILL for anything left, workers included: BentoML's
    workers run in process groups of their own, so signalling the server's group alone can leave one."""
    import psutil

    if proc.poll() is not None:
        return
    try:
        everyone = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        everyone = []
    os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(30)
    _, alive = psutil.wait_procs(everyone, timeout=10)
    for process in alive:
        process.kill()
    psutil.wait_procs(alive, timeout=10)
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def group_rss(pid: int) -> int:
    """Resident memory of a process and all its descendants (a server's arbiter and workers), in bytes."""
    import psutil

    root = psutil.Process(pid)
    total = 0
    for p in [root, *root.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:  # a worker that exited between listing and reading
            continue
    return total


def group_cpu_seconds(pid: int) -> float:
    """User + system CPU so far of a process and all its descendants (a server's arbiter and workers)."""
    import psutil

    root = psutil.Process(pid)
    total = 0.0
    for p in [root, *root.children(recursive=True)]:
        try:
            times = p.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


@dataclass
class Server:
    """One server process and how to talk to it."""

    env: dict[str, str]
    log: Path
    cli: bool = False
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def launch(self) -> None:
        if self.cli:  # the console command users run
            cmd = [sys.executable, "-m", "advocacy", "serve", "--port", str(self.port)]
        else:
            cmd = [sys.executable, "-m", "bentoml", "serve", "serving.service:Advocacy", "--host", "127.0.0.1"]
            cmd += ["--port", str(self.port)]
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                cmd,
                cwd=ROOT,
                env=server_environment(self.env),  # as `advocacy serve` starts it
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait(self, path: str = "/readyz", in_a_row: int = 8) -> None:
        """Until `path` answers 200 `in_a_row` times on fresh connections (each worker process answers
        for itself, and a new connection may reach any of them)."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        streak = 0
        while time.monotonic() < deadline:
            assert self.proc is not None and self.proc.poll() is None, f"server exited:\n{self.output()[-3000:]}"
            try:
                streak = streak + 1 if httpx.get(self.url + path, timeout=2).status_code == 200 else 0
            except httpx.HTTPError:
                streak = 0
            if streak >= in_a_row:
                return
            time.sleep(0.05 if streak else 0.25)
        raise AssertionError(f"{self.url}{path} not 200 after {READY_TIMEOUT_S} s:\n{self.output()[-3000:]}")

    @contextlib.contextmanager
    def running(self) -> Iterator[Server]:
        """Launched and ready inside the block, stopped (however it ends) after it."""
        self.launch()
        try:
            self.wait()
            yield self
        finally:
            self.stop()

    def stop(self) -> None:
        """Graceful shutdown, then SIGKILL for whatever is left of the server and its workers."""
        if self.proc is not None:
            stop_server(self.proc)

    def post(self, route: str, body: Any, token: str | None = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.post(self.url + route, json=body, headers=headers, timeout=30)

    def output(self) -> str:
        """Everything the server wrote so far (stdout and stderr)."""
        return self.log.read_text(errors="replace")

    def rss_bytes(self) -> int:
        """Resident memory of the server's whole process group (arbiter and workers)."""
        assert self.proc is not None
        return group_rss(self.proc.pid)


def service_env(trained_home: TrainedHome, folder: Path, snapshot: Snapshot, **extra: str) -> dict[str, str]:
    """Environment for a server on the session's champion with its own feature store and ask log in `folder`."""
    store, log = folder / "store", folder / "asks.sqlite"
    write_snapshot(snapshot.tables(), snapshot.meta, store)
    env = trained_home.env(ADVOCACY_FEATURE_STORE=str(store), ADVOCACY_ASK_LOG=str(log))
    env.pop("ADVOCACY_API_TOKEN", None)
    env.update(extra)
    return env
