"""Faults against real `bentoml serve` processes on 127.0.0.1 (issue 7): a corrupt champion or an
unreachable registry is never served, a promotion is picked up while serving without dropping a
request, and a kill in the middle of `POST /asks` loses no acknowledged ask and duplicates none.

Each server runs on a copy of the session's MLflow store, so registering and promoting versions
here changes nothing for other modules.
"""

from __future__ import annotations

import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psutil
import pytest
from mlflow.tracking import MlflowClient

from features.catalog import ASK_TYPE_NAMES
from features.context import Snapshot
from features.contracts import CONTRACTS
from storage.asklog import AskLog
from storage.snapshots import write_snapshot
from tests.conftest import TrainedHome
from tests.serverkit import Server, free_port, service_env

pytestmark = [pytest.mark.slow, pytest.mark.server]

MODEL = "advocacy-propensity"


@pytest.fixture(scope="module")
def snapshot(served_snapshot: Snapshot) -> Snapshot:
    return served_snapshot


@dataclass
class Registry:
    """A private copy of the session's MLflow store, to register and promote versions in."""

    home: Path
    client: MlflowClient = field(init=False)

    def __post_init__(self) -> None:
        uri = f"sqlite:///{self.home / '.advocacy' / 'mlflow.db'}"
        self.client = MlflowClient(tracking_uri=uri, registry_uri=uri)

    def register_copy(self, of: str, corrupt: bool = False) -> str:
        """A new version holding a copy of version `of`'s files (its booster cut in half if `corrupt`)."""
        original = self.client.get_model_version(MODEL, of)
        source = self.client.get_model_version_download_uri(MODEL, of).removeprefix("file://")
        copy = self.home / "copies" / uuid.uuid4().hex[:8]
        shutil.copytree(source, copy)
        if corrupt:
            booster = copy / "artifacts" / "bundle" / "propensity.txt"
            text = booster.read_text()
            booster.write_text(text[: len(text) // 2])
        return str(self.client.create_model_version(MODEL, source=str(copy), run_id=original.run_id).version)

    def promote(self, version: str) -> None:
        self.client.set_registered_model_alias(MODEL, "champion", version)


@pytest.fixture
def registry(trained_home: TrainedHome, tmp_path: Path) -> Registry:
    home = tmp_path / "home"
    (home / ".advocacy").mkdir(parents=True)
    shutil.copy2(trained_home.settings.state_dir() / "mlflow.db", home / ".advocacy" / "mlflow.db")
    return Registry(home)


@pytest.fixture
def launched(tmp_path: Path) -> Iterator[list[Server]]:
    """Servers a test starts; all stopped at its end."""
    started: list[Server] = []
    yield started
    for server in started:
        server.stop()


def start(launched: list[Server], env: dict[str, str], log: Path, wait: str = "/readyz") -> Server:
    server = Server(env, log)
    launched.append(server)
    server.launch()
    server.wait(wait)
    return server


def wait_for(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.25)
    raise AssertionError(f"not within {seconds:.0f} s: {what}")


def score(server: Server, customer_id: str) -> httpx.Response:
    return server.post("/score", {"customer_ids": [customer_id]})


# ---- the model -------------------------------------------------------------------------------------------


def test_a_corrupt_champion_is_never_served_and_promotions_are_picked_up_without_a_dropped_request(
    registry: Registry,
    trained_home: TrainedHome,
    snapshot: Snapshot,
    launched: list[Server],
    tmp_path: Path,
) -> None:
    customer = str(snapshot.features["customer_id"].iloc[0])
    broken = registry.register_copy(trained_home.version, corrupt=True)
    registry.promote(broken)
    env = service_env(
        trained_home, tmp_path / "serve", snapshot, ADVOCACY_HOME=str(registry.home), ADVOCACY_RELOAD_SECONDS="1"
    )
    server = start(launched, env, tmp_path / "server.log", wait="/livez")

    # Alive, never ready, and says why; data routes refuse rather than answer from a broken model.
    wait_for(lambda: "NOT READY" in server.output(), 60, "a NOT READY line in the log")
    log = server.output()
    assert f"version {broken} could not be loaded" in log, log[-3000:]
    for _ in range(8):
        assert httpx.get(server.url + "/readyz").status_code == 503
        refused = score(server, customer)
        assert refused.status_code == 503 and "not ready" in refused.json()["error"]
        time.sleep(0.25)

    # A good champion is promoted: the same process becomes ready with it, no restart.
    good = registry.register_copy(trained_home.version)
    registry.promote(good)
    wait_for(lambda: httpx.get(server.url + "/readyz").status_code == 200, 90, "ready after a good promotion")
    assert score(server, customer).json()["results"][0]["model_version"] == good

    # Promoted again while callers keep asking: every request answered, versions switch once, no mix.
    seen: list[tuple[int, str | None]] = []
    stop = threading.Event()

    def keep_asking() -> None:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            while not stop.is_set():
                r = http.post("/score", json={"customer_ids": [customer]})
                seen.append((r.status_code, r.json()["results"][0]["model_version"] if r.status_code == 200 else None))

    callers = [threading.Thread(target=keep_asking) for _ in range(3)]
    for t in callers:
        t.start()
    try:
        time.sleep(1.0)
        newer = registry.register_copy(trained_home.version)
        registry.promote(newer)
        wait_for(lambda: any(v == newer for _, v in seen[-20:]), 60, f"version {newer} served")
        time.sleep(1.0)
    finally:
        stop.set()
        for t in callers:
            t.join(30)
    assert len(seen) > 50
    assert all(status == 200 for status, _ in seen), {s for s, _ in seen}
    versions = [v for _, v in seen]
    switch = versions.index(newer)
    assert set(versions[:switch]) == {good} and set(versions[switch + 30 :]) == {newer}
    assert f"reloaded: model {MODEL} version {newer}" in server.output()


def test_an_unreachable_registry_keeps_it_not_ready_with_the_reason(
    trained_home: TrainedHome, snapshot: Snapshot, launched: list[Server], tmp_path: Path
) -> None:
    nobody = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    env = service_env(
        trained_home,
        tmp_path / "serve",
        snapshot,
        MLFLOW_TRACKING_URI=nobody,
        MLFLOW_HTTP_REQUEST_MAX_RETRIES="0",
        MLFLOW_HTTP_REQUEST_TIMEOUT="5",
    )
    server = start(launched, env, tmp_path / "server.log", wait="/livez")
    wait_for(lambda: "NOT READY" in server.output(), 90, "a NOT READY line in the log")
    line = next(x for x in server.output().splitlines() if "NOT READY" in x)
    assert "unreachable" in line and nobody in line, line
    assert httpx.get(server.url + "/readyz").status_code == 503
    assert score(server, "C0000001").status_code == 503


def test_a_snapshot_that_would_empty_the_base_is_never_swapped_in(
    trained_home: TrainedHome, snapshot: Snapshot, launched: list[Server], tmp_path: Path
) -> None:
    """Issue 15, defect 7, on the service's side: whoever publishes a snapshot of no customers (or,
    unforced, under ADVOCACY_MIN_SNAPSHOT_SHARE of the served base), the service keeps what it serves."""
    env = service_env(trained_home, tmp_path / "serve", snapshot, ADVOCACY_RELOAD_SECONDS="1")
    server = start(launched, env, tmp_path / "server.log")
    store = Path(env["ADVOCACY_FEATURE_STORE"])
    known = str(snapshot.features["customer_id"].iloc[0])
    assert score(server, known).status_code == 200
    few = snapshot.features["customer_id"].iloc[1:11]  # 10 customers, without `known`
    empty = Snapshot.from_tables(
        {name: frame.iloc[:0] for name, frame in snapshot.tables().items()}, {**snapshot.meta, "customers": 0}
    )
    shrunk = Snapshot.from_tables(
        {**snapshot.tables(), "features": snapshot.features[snapshot.features["customer_id"].isin(few)]},
        {**snapshot.meta, "customers": len(few)},
    )
    for bad in (empty, shrunk):
        folder = write_snapshot(bad.tables(), bad.meta, store)
        wait_for(lambda f=folder: f"not serving snapshot {f.name}" in server.output(), 30, "the refusal in the log")
        assert score(server, known).status_code == 200
        assert httpx.get(server.url + "/readyz").status_code == 200
    # Forced (`advocacy score --force-snapshot`), a smaller base is served; an empty one still never is.
    forced = write_snapshot(shrunk.tables(), {**shrunk.meta, "forced": True}, store)
    wait_for(
        lambda: f"snapshot {forced.name}" in server.output() and score(server, known).status_code == 404,
        30,
        "the forced snapshot",
    )
    assert score(server, str(few.iloc[0])).status_code == 200


# ---- the ask log -----------------------------------------------------------------------------------------


def test_a_kill_during_posted_asks_loses_no_acknowledged_ask_and_duplicates_none(
    trained_home: TrainedHome, snapshot: Snapshot, launched: list[Server], tmp_path: Path
) -> None:
    env = service_env(trained_home, tmp_path / "serve", snapshot)
    server = start(launched, env, tmp_path / "server.log")
    customers = snapshot.features["customer_id"].astype(str).tolist()
    now = datetime.now(UTC).replace(microsecond=0)
    sent: dict[str, dict[str, str]] = {}  # every ask a request carried, acknowledged or not
    acknowledged: set[str] = set()
    lock = threading.Lock()
    stop = threading.Event()

    def post_asks(worker: int) -> None:
        with httpx.Client(base_url=server.url, timeout=10) as http:
            n = 0
            while not stop.is_set():
                batch = []
                for _ in range(3):
                    n += 1
                    batch.append(
                        {
                            "ask_id": f"kill-{worker}-{n}",
                            "customer_id": customers[(worker * 7919 + n) % len(customers)],
                            "ask_type": ASK_TYPE_NAMES[n % len(ASK_TYPE_NAMES)],
                            "asked_at": (now - timedelta(minutes=n)).isoformat(),
                        }
                    )
                with lock:
                    sent.update({a["ask_id"]: a for a in batch})
                try:
                    r = http.post("/asks", json={"asks": batch})
                except httpx.HTTPError:
                    return  # the server is gone
                if r.status_code == 200:
                    with lock:
                        acknowledged.update(a["ask_id"] for a in batch)

    writers = [threading.Thread(target=post_asks, args=(w,)) for w in range(3)]
    for t in writers:
        t.start()
    wait_for(lambda: len(acknowledged) >= 60, 60, "60 acknowledged asks")
    assert server.proc is not None
    # No shutdown hook, no flush: SIGKILL to the server and every worker (they run in process groups
    # of their own, so killing the server's group alone would leave a worker answering).
    root = psutil.Process(server.proc.pid)
    everyone = [root, *root.children(recursive=True)]
    assert len(everyone) >= 2, "expected the server and at least one worker process"
    for process in everyone:
        process.kill()
    _, alive = psutil.wait_procs(everyone, timeout=30)
    assert not alive, alive
    server.proc.wait(30)
    stop.set()
    for t in writers:
        t.join(30)

    stored = AskLog(Path(env["ADVOCACY_ASK_LOG"]), CONTRACTS["asks"]).read()["ask_id"].tolist()
    assert acknowledged <= set(stored), sorted(acknowledged - set(stored))[:5]
    assert len(stored) == len(set(stored))
    assert set(stored) <= set(sent)

    # The callers retry everything they sent (acknowledged or not) on a restarted service: once each.
    restarted = start(launched, env, tmp_path / "restarted.log")
    rows = list(sent.values())
    for i in range(0, len(rows), 500):
        r = restarted.post("/asks", {"asks": rows[i : i + 500]})
        assert r.status_code == 200, r.text
    stored = AskLog(Path(env["ADVOCACY_ASK_LOG"]), CONTRACTS["asks"]).read()["ask_id"].tolist()
    assert sorted(stored) == sorted(sent)
