"""Sustained mixed load on a real server (issue 7 "Load"): no errors, the rate held, flat memory.

The load is `tests/loadkit.py`'s `run_load`: 4,000 requests offered open-loop at 100 req/s (40 s), 70% /score,
20% /explain, 10% /asks with new ask ids, memory sampled every 5 s and judged after a 15 s warm-up (the
caches fill for about that long: a 7.5 s warm-up failed the flat-memory goal). Bounded by count so the suite stays short
(issue 34); the ten-minute version, which is what shows a slow leak, is `.venv/bin/python benchmarks/load.py`,
on the same load.
The server (two worker processes, `ADVOCACY_WORKERS=2`) gets its own feature store and ask log, so
its asks reach no other test.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from features.context import build_snapshot
from features.contracts import CONTRACTS
from features.io import read_world
from features.labels import observed_until
from storage.asklog import AskLog
from tests.conftest import TrainedHome
from tests.loadkit import LoadReport, run_load
from tests.serverkit import Server, service_env

pytestmark = [pytest.mark.slow, pytest.mark.server, pytest.mark.alone]

RATE = 100.0  # req/s offered
SECONDS = 40.0
WARM_UP = 15.0
REQUESTS = int(RATE * SECONDS)


@pytest.fixture(scope="module")
def loaded(trained_home: TrainedHome, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, LoadReport]]:
    """One server on the session's champion, after the load: (server, what the load saw)."""
    base = tmp_path_factory.mktemp("load")
    world = read_world(trained_home.settings.resolved_data_dir())
    snapshot = build_snapshot(world, observed_until(world))
    # Two workers, one per core: a single Python process tops out near one core, below this mix's needs.
    server = Server(service_env(trained_home, base / "server", snapshot, ADVOCACY_WORKERS="2"), base / "server.log")
    ids = snapshot.features["customer_id"].astype(str).tolist()
    server.launch()
    try:
        server.wait()
        assert server.proc is not None
        report = run_load(
            server.url,
            ids,
            RATE,
            SECONDS,
            server.proc.pid,
            rss=server.rss_bytes,
            max_requests=REQUESTS,
            sample_every=5.0,
        )
        print("\n".join(report.lines()))
        yield server, report
    finally:
        server.stop()


def _figures(report: LoadReport) -> str:
    return "\n" + "\n".join(report.lines())


def test_no_errors_at_100_requests_a_second(loaded: tuple[Server, LoadReport]) -> None:
    _, report = loaded
    assert report.error_count == 0, _figures(report)
    assert report.sent == report.scheduled >= 0.99 * REQUESTS, _figures(report)
    assert set(report.latencies_ms) == {"/score", "/explain", "/asks"}, _figures(report)


def test_the_offered_rate_is_achieved(loaded: tuple[Server, LoadReport]) -> None:
    _, report = loaded
    assert abs(report.offered_rate - RATE) <= 0.01 * RATE, _figures(report)
    assert report.achieved_rate >= 0.95 * RATE, _figures(report)


def test_every_acknowledged_ask_is_in_the_ask_log(loaded: tuple[Server, LoadReport]) -> None:
    server, report = loaded
    assert len(report.acked_asks) >= 0.05 * RATE * SECONDS, _figures(report)  # about 10% of the requests
    stored = set(AskLog(Path(server.env["ADVOCACY_ASK_LOG"]), CONTRACTS["asks"]).read()["ask_id"])
    missing = sorted(set(report.acked_asks) - stored)
    assert not missing, f"{len(missing)} acknowledged asks not stored, e.g. {missing[:5]}"


def test_memory_is_flat_after_warm_up(loaded: tuple[Server, LoadReport]) -> None:
    _, report = loaded
    assert len(report.rss) >= 6, _figures(report)  # start, warm-up, every 5 s
    assert report.memory_flat, _figures(report)
