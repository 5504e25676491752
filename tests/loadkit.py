"""Sustained mixed load on a real server: the open-loop client, its raw HTTP/1.1 connections, the report.

`run_load` offers `rate` requests per second of mixed traffic (70% `POST /score` with one to five
ids, 20% `POST /explain`, 10% `POST /asks` with new ask ids) open-loop, samples the server's memory,
and returns a `LoadReport`. `tests/test_load.py` runs it for a minute; `benchmarks/load.py` for ten
(its docstring describes the load, the figures and the goals).
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from tests.serverkit import group_cpu_seconds, group_rss

MIX: dict[str, float] = {"/score": 0.7, "/explain": 0.2, "/asks": 0.1}
SCORE_IDS = (1, 1, 1, 2, 3, 5)  # ids per /score request, drawn uniformly: mostly one, sometimes a few
FLAT_GROWTH_FRACTION = 0.05  # of the RSS after warm-up
FLAT_GROWTH_BYTES = 50 * 2**20
WARMUP_S = 30.0
# One second of traffic in flight at 100 req/s: past that the server is failing anyway, and a bigger
# pool of connections costs the client CPU that the server, on the same machine, then lacks.
MAX_OUTSTANDING = 100
REQUEST_TIMEOUT_S = 35.0  # past the service's own traffic timeout (30 s), after which it answers 504
IDLE_S = 2.0  # a kept-alive connection idle longer is dropped (uvicorn closes them after 5 s)
MB = 2**20


@dataclass
class LoadReport:
    """What one run offered, what came back, and how the server's memory moved."""

    rate: float  # offered req/s
    seconds: float  # planned duration
    warmup_s: float  # memory growth is measured from the sample at this time
    scheduled: int = 0  # requests that fell due
    sent: int = 0  # of them, those sent (the rest found the cap of outstanding requests reached)
    elapsed: float = 0.0  # from the first request's due time to the last answer
    send_window: float = 0.0  # from the first request's due time to the last one's
    latencies_ms: dict[str, list[float]] = field(default_factory=dict)  # per route, 2xx answers only
    errors: Counter[str] = field(default_factory=Counter)  # kind ("HTTP 503 /score", "TimeoutError /asks") -> count
    rss: list[tuple[float, int]] = field(default_factory=list)  # (seconds since start, bytes); [] without a server
    acked_asks: list[str] = field(default_factory=list)  # ask_ids the server answered 2xx for
    max_lag_ms: float = 0.0  # worst delay of the client sending a request past its due time
    client_cpu_s: float = 0.0
    server_cpu_s: float = float("nan")  # the server's process tree, during the run (needs its pid)
    connections: int = 0  # opened during the run
    retried: int = 0  # requests re-sent because the server had closed an idle kept-alive connection

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def answered(self) -> int:
        return sum(len(v) for v in self.latencies_ms.values())

    @property
    def achieved_rate(self) -> float:
        """2xx answers per second, from the first request's due time to the last answer."""
        return self.answered / self.elapsed if self.elapsed else 0.0

    @property
    def offered_rate(self) -> float:
        return (self.scheduled - 1) / self.send_window if self.send_window else 0.0

    def pct(self, q: float, route: str | None = None) -> float:
        values = self.latencies_ms.get(route, []) if route else [x for v in self.latencies_ms.values() for x in v]
        return float(np.percentile(values, q)) if values else float("nan")

    @property
    def rss_start(self) -> int:
        return self.rss[0][1]

    @property
    def rss_end(self) -> int:
        return self.rss[-1][1]

    @property
    def rss_warm(self) -> int:
        """RSS at the first sample taken at or after the warm-up (the last sample if the run was shorter)."""
        return next((b for t, b in self.rss if t >= self.warmup_s), self.rss[-1][1])

    @property
    def growth_limit(self) -> float:
        return min(FLAT_GROWTH_FRACTION * self.rss_warm, FLAT_GROWTH_BYTES)

    @property
    def memory_flat(self) -> bool:
        return bool(self.rss) and self.rss_end - self.rss_warm < self.growth_limit

    @property
    def trend_mb_per_min(self) -> float:
        """Least-squares slope of the RSS samples from the warm-up on (shown, not a goal: one noisy sample moves it)."""
        after = [(t, b) for t, b in self.rss if t >= self.warmup_s]
        if len(after) < 3:
            return float("nan")
        t, b = np.array(after, dtype=float).T
        return float(np.polyfit(t / 60, b / MB, 1)[0])

    @property
    def passed(self) -> bool:
        return self.error_count == 0 and self.memory_flat

    def lines(self) -> list[str]:
        """The printed report, ending with one PASS/FAIL line per goal."""
        out = [
            f"requests sent: {self.sent} of {self.scheduled} due in {self.send_window:.1f} s (offered "
            f"{self.offered_rate:.1f} req/s, target {self.rate:.0f}); answered 2xx: {self.answered}; "
            f"errors: {self.error_count}",
        ]
        out += [f"  error {kind}: {n}" for kind, n in sorted(self.errors.items())]
        out.append(f"achieved: {self.achieved_rate:.1f} req/s (2xx answers over {self.elapsed:.1f} s)")
        out.append(f"{'route':<10} {'answered':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
        for route in [None, *sorted(self.latencies_ms)]:
            n = len(self.latencies_ms.get(route, [])) if route else self.answered
            p50, p99, top = (self.pct(q, route) for q in (50, 99, 100))
            out.append(f"{route or 'all':<10} {n:>8} {p50:>8.1f} {p99:>8.1f} {top:>8.1f}")
        cpu_ms = 1000 * self.client_cpu_s / self.sent if self.sent else float("nan")
        out.append(
            f"client: CPU {self.client_cpu_s:.1f} s ({100 * self.client_cpu_s / max(self.elapsed, 1e-9):.0f}% "
            f"of one core, {cpu_ms:.2f} ms/request); worst send delay {self.max_lag_ms:.1f} ms; "
            f"{self.connections} connections opened, {self.retried} requests retried on a closed idle one"
        )
        if self.server_cpu_s == self.server_cpu_s:  # measured (not NaN)
            out.append(
                f"server: CPU {self.server_cpu_s:.1f} s ({100 * self.server_cpu_s / max(self.elapsed, 1e-9):.0f}% of "
                f"one core, {1000 * self.server_cpu_s / max(self.sent, 1):.2f} ms/request sent)"
            )
        if self.rss:
            series = ", ".join(f"{t:.0f}s {b / MB:.0f}" for t, b in self.rss)
            out.append(f"server RSS (MB, whole process tree): {series}")
            growth = self.rss_end - self.rss_warm
            out.append(
                f"server RSS: start {self.rss_start / MB:.1f} MB, after {self.warmup_s:.0f} s warm-up "
                f"{self.rss_warm / MB:.1f} MB, end {self.rss_end / MB:.1f} MB: {growth / MB:+.1f} MB since warm-up "
                f"(trend since warm-up {self.trend_mb_per_min:+.2f} MB/min)"
            )
            out.append(
                f"flat memory means: RSS at end - RSS after warm-up < min({FLAT_GROWTH_FRACTION:.0%} of RSS after "
                f"warm-up, {FLAT_GROWTH_BYTES / MB:.0f} MB) = {self.growth_limit / MB:.1f} MB"
            )
        out.append(f"{'PASS' if self.error_count == 0 else 'FAIL'}: errors {self.error_count} (goal 0)")
        if self.rss:
            growth = self.rss_end - self.rss_warm
            out.append(
                f"{'PASS' if self.memory_flat else 'FAIL'}: memory growth after warm-up {growth / MB:+.1f} MB "
                f"(goal < {self.growth_limit / MB:.1f} MB)"
            )
        else:
            out.append("FAIL: memory not measured (no server process given)")
        return out


def _request(kind: str, rng: random.Random, ids: Sequence[str], run: str, i: int) -> tuple[str, dict[str, Any]]:
    """(route, JSON body) of request i of this kind."""
    if kind == "/score":
        return kind, {"customer_ids": rng.sample(ids, min(len(ids), rng.choice(SCORE_IDS)))}
    if kind == "/explain":
        return kind, {"customer_id": rng.choice(ids)}
    from features.catalog import ASK_TYPE_NAMES

    now = datetime.now(UTC).isoformat()
    outcome = rng.choice(("no_response", "no_response", "accepted", "declined"))
    ask = {
        "ask_id": f"load-{run}-{i}",
        "customer_id": rng.choice(ids),
        "ask_type": rng.choice(ASK_TYPE_NAMES),
        "asked_at": now,
        "outcome": outcome,
        "responded_at": None if outcome == "no_response" else now,
    }
    return kind, {"asks": [ask]}


class Connections:
    """Keep-alive HTTP/1.1 connections to one server, for JSON POSTs.

    About 0.3 ms of client CPU per request where httpx.AsyncClient takes about 3 ms (both measured
    here against /score): at 100 req/s httpx alone would take a third of a core from a server on
    the same 2-core machine. It speaks only what the benchmarks need: GET, and POST with
    Content-Length; responses framed by Content-Length, chunked encoding, or the connection's close.
    """

    def __init__(self, base_url: str, token: str | None) -> None:
        url = urlsplit(base_url)
        if url.scheme != "http" or not url.hostname:
            raise ValueError(f"need an http:// URL, got {base_url!r}")
        self.host, self.port = url.hostname, url.port or 80
        auth = f"Authorization: Bearer {token}\r\n" if token else ""
        self._get_head = f"Host: {url.netloc}\r\n{auth}\r\n"
        self._head = f"Host: {url.netloc}\r\nContent-Type: application/json\r\n{auth}Content-Length: "
        self._idle: list[tuple[float, asyncio.StreamReader, asyncio.StreamWriter]] = []  # (last used, ...)
        self.opened = 0
        self.retried = 0  # requests re-sent once because a kept-alive connection had been closed meanwhile

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        """(status, body) of one POST of JSON."""
        return await self._send(f"POST {path} HTTP/1.1\r\n{self._head}{len(body)}\r\n\r\n".encode() + body)

    async def get(self, path: str) -> tuple[int, bytes]:
        """(status, body) of one GET."""
        return await self._send(f"GET {path} HTTP/1.1\r\n{self._get_head}".encode())

    async def _send(self, request: bytes) -> tuple[int, bytes]:
        """Send on an idle kept-alive connection or a new one; a closed idle one is retried once on a new one."""
        loop = asyncio.get_running_loop()
        while self._idle:
            used, reader, writer = self._idle.pop()
            if loop.time() - used < IDLE_S:
                try:
                    return await self._exchange(reader, writer, request)
                except (asyncio.IncompleteReadError, ConnectionError) as err:
                    if isinstance(err, asyncio.IncompleteReadError) and err.partial:
                        raise  # the server had started answering: a real error, not a stale connection
                    self.retried += 1
                    break
            writer.close()
        reader, writer = await asyncio.open_connection(self.host, self.port)
        self.opened += 1
        return await self._exchange(reader, writer, request)

    async def _exchange(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
    ) -> tuple[int, bytes]:
        try:
            writer.write(request)
            await writer.drain()
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            status = int(head[0].split(" ", 2)[1])
            fields = {k.strip().lower(): v.strip().lower() for k, _, v in (line.partition(":") for line in head[1:])}
            keep = fields.get("connection") != "close"
            if status < 200 or status in (204, 304):  # no body, whatever the headers say
                body = b""
            elif "content-length" in fields:
                body = await reader.readexactly(int(fields["content-length"]))
            elif fields.get("transfer-encoding") == "chunked":
                chunks = []
                while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
                    chunks.append((await reader.readexactly(size + 2))[:-2])
                while await reader.readuntil(b"\r\n") != b"\r\n":  # trailer fields, then a blank line
                    pass
                body = b"".join(chunks)
            else:
                body, keep = await reader.read(), False
        except BaseException:
            writer.close()
            raise
        if keep:
            self._idle.append((asyncio.get_running_loop().time(), reader, writer))
        else:
            writer.close()
        return status, body

    def close(self) -> None:
        for _, _, writer in self._idle:
            writer.close()
        self._idle.clear()


async def _run(
    base_url: str,
    ids: Sequence[str],
    rate: float,
    seconds: float,
    rss: Callable[[], int] | None,
    server_pid: int | None,
    *,
    max_requests: int,
    max_outstanding: int,
    warmup_s: float,
    sample_every: float,
    mix: dict[str, float],
    seed: int,
    token: str | None,
    log: Callable[[str], None] | None,
) -> LoadReport:
    report = LoadReport(rate=rate, seconds=seconds, warmup_s=warmup_s)
    rng = random.Random(seed)
    run = uuid.uuid4().hex[:8]
    kinds, weights = list(mix), list(mix.values())
    pending: set[asyncio.Task[None]] = set()
    loop = asyncio.get_running_loop()
    connections = Connections(base_url, token)

    async def one(route: str, body: dict[str, Any], due: float) -> None:
        try:
            status, _ = await asyncio.wait_for(connections.post(route, json.dumps(body).encode()), REQUEST_TIMEOUT_S)
        except Exception as err:  # refused, reset, timed out: count by kind, never stop the run
            report.errors[f"{type(err).__name__} {route}"] += 1
            return
        if not 200 <= status < 300:
            report.errors[f"HTTP {status} {route}"] += 1
            return
        report.latencies_ms.setdefault(route, []).append(1000 * (loop.time() - due))
        if route == "/asks":
            report.acked_asks.extend(a["ask_id"] for a in body["asks"])

    try:
        # One untimed request per route first: opens a connection and keeps first-call costs out of the figures.
        for kind in kinds:
            route, body = _request(kind, rng, ids, run, -1)
            status, answer = await connections.post(route, json.dumps(body).encode())
            if not 200 <= status < 300:
                raise RuntimeError(f"POST {route} answered {status} before the load began: {answer[:300]!r}")

        cpu0 = time.process_time()
        server_cpu0 = group_cpu_seconds(server_pid) if server_pid is not None else float("nan")
        start = loop.time()
        samples = sorted({*np.arange(0.0, seconds, sample_every).tolist(), warmup_s})

        def sample() -> None:
            if rss is None:
                return
            report.rss.append((loop.time() - start, rss()))
            if log:
                t, b = report.rss[-1]
                log(f"  {t:5.0f} s: sent {report.sent}, errors {report.error_count}, server RSS {b / MB:.1f} MB")

        for i in range(max_requests):
            due = start + i / rate
            if due >= start + seconds:
                break
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            while samples and start + samples[0] <= loop.time():  # between sends, on the same clock
                samples.pop(0)
                sample()
            report.max_lag_ms = max(report.max_lag_ms, 1000 * (loop.time() - due))
            route, body = _request(rng.choices(kinds, weights)[0], rng, ids, run, i)
            report.scheduled += 1
            report.send_window = due - start
            if len(pending) >= max_outstanding:
                report.errors[f"not sent: {max_outstanding} requests outstanding"] += 1
                continue
            report.sent += 1
            task = asyncio.create_task(one(route, body, due))
            pending.add(task)
            task.add_done_callback(pending.discard)
        if pending:
            await asyncio.wait(pending)
        report.elapsed = loop.time() - start
        report.client_cpu_s = time.process_time() - cpu0
        if server_pid is not None:
            report.server_cpu_s = group_cpu_seconds(server_pid) - server_cpu0
        report.connections, report.retried = connections.opened, connections.retried
        sample()
    finally:
        connections.close()
    return report


def run_load(
    base_url: str,
    ids: Sequence[str],
    rate: float = 100.0,
    seconds: float = 600.0,
    server_pid: int | None = None,
    *,
    rss: Callable[[], int] | None = None,
    max_requests: int | None = None,
    max_outstanding: int = MAX_OUTSTANDING,
    warmup_s: float | None = None,
    sample_every: float = 10.0,
    mix: dict[str, float] | None = None,
    seed: int = 0,
    token: str | None = None,
    log: Callable[[str], None] | None = print,
) -> LoadReport:
    """Offer `rate` req/s of mixed traffic to the server at `base_url` for `seconds`; report what came back.

    `ids` are known customer ids. The server's memory is read with `rss` (bytes), or else as the RSS of
    process `server_pid` and its descendants; with neither, no memory is measured (and that goal fails).
    The warm-up defaults to 30 s, or a quarter of a shorter run.
    """
    if rss is None and server_pid is not None:
        pid = server_pid

        def rss() -> int:
            return group_rss(pid)

    return asyncio.run(
        _run(
            base_url,
            list(ids),
            rate,
            seconds,
            rss,
            server_pid,
            max_requests=max_requests if max_requests is not None else math.ceil(rate * seconds),
            max_outstanding=max_outstanding,
            warmup_s=warmup_s if warmup_s is not None else min(WARMUP_S, seconds / 4),
            sample_every=sample_every,
            mix=mix or MIX,
            seed=seed,
            token=token,
            log=log,
        )
    )
