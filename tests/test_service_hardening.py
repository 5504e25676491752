"""Issue 33, items 7 (the service's side) and 8: faults said as what they are, and the smaller gaps.

A real `bentoml serve` answers the HTTP questions. Where the machine allows a mount namespace
(`unshare`), the server runs in one of its own with a small tmpfs as its state folder (ask log,
plans, the kept report), so that a full disk is a real one, filled by the test and freed after,
and no other process on the machine sees it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import select
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from features.context import Snapshot
from features.contracts import CONTRACTS
from serving import patches
from serving.answers import disk_full
from serving.headers import framing_headers
from serving.limits import server_environment
from storage.asklog import AskLog
from storage.plans import PlanStore, Retention, linked_plans
from storage.reports import ReportStore, UnreadableReportError
from storage.settings import get_settings
from tests.conftest import ROOT, TrainedHome
from tests.serverkit import Server, service_env
from usecases.asks import asks_frame, record_asks
from usecases.sources import Sources

HEADER_TIMEOUT_S = 2.0  # the served ADVOCACY_HEADER_TIMEOUT_SECONDS, short for the test
TMPFS_BYTES = 32 * 1024 * 1024
# An absolute path of two or more parts (a server's file), not a route like "/report" nor a URL's host.
_SERVER_PATH = re.compile(r"(?<![\w.:/])/(?:[^\s/\"'`]+/)+[^\s\"'`]*")


def assert_names_no_server_path(text: str, *paths: Path) -> None:
    for path in paths:
        assert str(path) not in text, text
    assert not _SERVER_PATH.search(text), text


# ---- a server in a mount namespace of its own ----------------------------------------------------------


def _tmpfs_prefix(mount: Path) -> list[str]:
    """A command prefix that runs a program in a mount namespace of its own with a small tmpfs at
    `mount`, or [] where this machine does not allow one (the disk-full test then skips)."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return []
    script = f'mount -t tmpfs -o size={TMPFS_BYTES} advocacy-test "$0" && exec "$@"'
    prefix = [unshare, "--mount", "--map-root-user", "sh", "-c", script, str(mount)]
    probe = subprocess.run([*prefix, "true"], capture_output=True, timeout=30, check=False)
    return prefix if probe.returncode == 0 else []


@dataclass
class NamespacedServer(Server):
    """`bentoml serve` behind `prefix` (see `_tmpfs_prefix`); `host_path` reaches its files from here."""

    prefix: list[str] = field(default_factory=list)

    def launch(self) -> None:
        cmd = [*self.prefix, sys.executable, "-m", "bentoml", "serve", "serving.service:Advocacy"]
        cmd += ["--host", "127.0.0.1", "--port", str(self.port)]
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                cmd,
                cwd=ROOT,
                env=server_environment(self.env),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def host_path(self, path: Path) -> Path:
        """`path` as the server sees it, inside its own mount namespace."""
        if not self.prefix:
            return path
        assert self.proc is not None
        return Path(f"/proc/{self.proc.pid}/root") / path.relative_to("/")


@dataclass
class Served:
    server: NamespacedServer
    state: Path  # its ADVOCACY_HOME/.advocacy: ask log, plans, kept report (a tmpfs if `on_tmpfs`)
    snapshot: Snapshot

    @property
    def on_tmpfs(self) -> bool:
        return bool(self.server.prefix)


@pytest.fixture(scope="module")
def served(
    trained_home: TrainedHome, served_snapshot: Snapshot, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    base = tmp_path_factory.mktemp("hardening")
    home = base / "home"
    state = home / ".advocacy"
    state.mkdir(parents=True)
    env = service_env(
        trained_home,
        base / "serve",
        served_snapshot,
        ADVOCACY_HOME=str(home),
        ADVOCACY_MLFLOW_TRACKING_URI=trained_home.settings.tracking_uri(),
        ADVOCACY_ASK_LOG=str(state / "asks.sqlite"),
        ADVOCACY_HEADER_TIMEOUT_SECONDS=str(HEADER_TIMEOUT_S),
    )
    server = NamespacedServer(env, base / "server.log", prefix=_tmpfs_prefix(state))
    with server.running():
        yield Served(server, state, served_snapshot)


# ---- 7a: a damaged kept report is the server's fault ---------------------------------------------------


def test_a_cut_short_kept_report_is_unreadable_and_the_message_names_no_path(tmp_path: Path) -> None:
    store = ReportStore(tmp_path)
    store.path.write_text('{"written_at": "2026-12-01T00:00:00+00:00", "tables": {"asks_by')
    with pytest.raises(UnreadableReportError) as caught:
        store.load()
    assert "advocacy report" in str(caught.value) and str(tmp_path) not in str(caught.value)
    assert str(store.path) in caught.value.detail  # for the log
    store.path.write_text("[]")
    with pytest.raises(UnreadableReportError):
        store.load()


@pytest.mark.slow
@pytest.mark.server
def test_a_cut_short_kept_report_is_a_500_saying_how_to_remake_it_and_a_refresh_remakes_it(served: Served) -> None:
    kept = served.server.host_path(served.state / "report" / "report.json")
    kept.parent.mkdir(parents=True, exist_ok=True)
    kept.write_text('{"written_at": "2026-12-01T00:00:00+00:00", "tables": {"asks_by')
    response = served.server.post("/report", {})
    assert response.status_code == 500, response.text
    message = response.json()["error"]
    assert "unreadable" in message and "`advocacy report" in message and '{"refresh": true}' in message
    assert_names_no_server_path(response.text, served.state)
    assert "report.json" in served.server.output()  # the path goes to the log instead
    remade = served.server.post("/report", {"refresh": True})
    assert remade.status_code == 200 and remade.json()["available"], remade.text
    assert json.loads(kept.read_text())["tables"]


# ---- 7b: a full disk is a 507, and nothing is stored ----------------------------------------------------


def test_a_full_disk_is_recognised_from_sqlite_and_from_the_file_system(tmp_path: Path) -> None:
    with contextlib.closing(sqlite3.connect(tmp_path / "small.sqlite")) as conn:
        conn.execute("CREATE TABLE t (x TEXT)")
        conn.execute("PRAGMA max_page_count = 3")  # SQLite's own SQLITE_FULL, as on a full disk
        with pytest.raises(sqlite3.OperationalError) as full:
            conn.executemany("INSERT INTO t VALUES (?)", [("x" * 1000,)] * 100)
    assert disk_full(full.value)
    if Path("/dev/full").exists():  # writes to /dev/full fail with ENOSPC
        with pytest.raises(OSError, match="No space left") as nospace, open("/dev/full", "wb", buffering=0) as device:
            device.write(b"x")
        assert nospace.value.errno == errno.ENOSPC and disk_full(nospace.value)
    after = sqlite3.OperationalError("cannot rollback - no transaction is active")
    after.__context__ = full.value  # SQLite rolled back by itself, so the ROLLBACK after it failed
    assert disk_full(after)
    assert not disk_full(ValueError("not JSON")) and not disk_full(FileNotFoundError(2, "gone"))


_SQLITE_ON_A_FULL_DISK = """
import contextlib, sqlite3, sys
from pathlib import Path
from serving.answers import disk_full
from tests.test_service_hardening import _fill
folder = Path(sys.argv[1])
with contextlib.closing(sqlite3.connect(folder / "log.sqlite", isolation_level=None)) as conn:
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (x TEXT)")
_fill(folder / "filler")
try:
    with contextlib.closing(sqlite3.connect(folder / "log.sqlite", isolation_level=None)) as conn:
        conn.execute("INSERT INTO t VALUES ('x')")
except sqlite3.Error as err:
    print(err.sqlite_errorname, disk_full(err, folder))
"""


def test_an_io_error_of_sqlite_on_a_full_file_system_is_a_full_disk(tmp_path: Path) -> None:
    # A connection that opens a log no other has open regrows its shared-memory file first: on a full
    # file system SQLite says only "disk I/O error" (SQLITE_IOERR_SHMSIZE), not SQLITE_FULL.
    mount = tmp_path / "small"
    mount.mkdir()
    prefix = _tmpfs_prefix(mount)
    if not prefix:
        pytest.skip("needs a mount namespace of its own (unshare) for a small file system to fill")
    done = subprocess.run(
        [*prefix, sys.executable, "-c", _SQLITE_ON_A_FULL_DISK, str(mount)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    name, full = done.stdout.split()
    assert name.startswith(("SQLITE_IOERR", "SQLITE_FULL")) and full == "True", done.stdout


def _fill(path: Path) -> None:
    """Write `path` until its file system has no byte left."""
    with open(path, "wb", buffering=0) as out:
        for chunk in (1 << 20, 4096, 512):
            with contextlib.suppress(OSError):
                while True:
                    out.write(b"\0" * chunk)
    assert os.statvfs(path.parent).f_bavail == 0


def _asks(snapshot: Snapshot, n: int) -> list[dict[str, Any]]:
    customers = snapshot.features["customer_id"].astype(str).tolist()
    asked = (datetime.now(UTC) - timedelta(hours=1)).replace(microsecond=0).isoformat()
    tag = uuid.uuid4().hex[:8]
    return [
        {
            "ask_id": f"full-{tag}-{i}",
            "customer_id": customers[i % len(customers)],
            "ask_type": "review",
            "asked_at": asked,
        }
        for i in range(n)
    ]


@pytest.mark.slow
@pytest.mark.server
def test_a_full_disk_is_a_507_that_says_nothing_was_stored(served: Served) -> None:
    if not served.on_tmpfs:
        pytest.skip("needs a mount namespace of its own (unshare) for a small file system to fill")
    state = served.server.host_path(served.state)
    plans = state / "plans"
    plans.mkdir(exist_ok=True)
    before = set(os.listdir(plans))
    asks = _asks(served.snapshot, 3000)
    filler = state / "filler"
    try:
        _fill(filler)
        for route, body in (("/asks", {"asks": asks}), ("/plan", {"need": {"review": 3}})):
            response = served.server.post(route, body)
            assert response.status_code == 507, (route, response.text)
            message = response.json()["error"]
            assert "disk is full" in message and "nothing was stored" in message, message
            assert_names_no_server_path(response.text, served.state)
    finally:
        filler.unlink(missing_ok=True)
    assert set(os.listdir(plans)) == before  # no plan, no half-written file
    logged = AskLog(state / "asks.sqlite", CONTRACTS["asks"]).read()
    assert not set(logged["ask_id"]) & {a["ask_id"] for a in asks}
    again = served.server.post("/asks", {"asks": asks})  # space again: the same request is stored whole
    assert again.status_code == 200 and again.json() == {"stored": len(asks)}, again.text


# ---- 7c: no answer names a path of the server -----------------------------------------------------------


@pytest.mark.slow
@pytest.mark.server
def test_not_ready_is_a_503_that_names_no_path_of_the_server(
    trained_home: TrainedHome, served_snapshot: Snapshot, tmp_path: Path
) -> None:
    missing = tmp_path / "no-such-store"
    env = service_env(
        trained_home,
        tmp_path / "serve",
        served_snapshot,
        ADVOCACY_FEATURE_STORE=str(missing),
        ADVOCACY_HOME=str(tmp_path),
    )
    server = Server(env, tmp_path / "server.log")
    server.launch()
    try:
        server.wait("/livez")
        deadline = time.monotonic() + 60
        while "NOT READY" not in server.output() and time.monotonic() < deadline:
            time.sleep(0.25)
        response = server.post("/score", {"customer_ids": ["C0000001"]})
        assert response.status_code == 503, response.text
        message = response.json()["error"]
        assert "not ready" in message and "advocacy up" in message, message
        assert_names_no_server_path(response.text, missing, tmp_path)
        assert str(missing) in server.output()  # the log says which
    finally:
        server.stop()


# ---- 8a: an ask naming a plan looks that plan up, never lists them all ----------------------------------

_listings: list[list[str]] = []


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if _listings and event in ("os.scandir", "os.listdir"):
        _listings[-1].append(str(args[0]))


@contextlib.contextmanager
def folder_listings() -> Iterator[list[str]]:
    """Every folder this process lists inside the block (Python's audit events, not a stand-in)."""
    if not getattr(sys, "_advocacy_audit", False):
        sys.addaudithook(_audit)  # hooks cannot be removed: this one records only inside the block
        sys._advocacy_audit = True  # type: ignore[attr-defined]
    _listings.append([])
    try:
        yield _listings[-1]
    finally:
        _listings.pop()


PLAN = "0123456789abcdef0123456789abcdef"


def _plan_rows() -> pd.DataFrame:
    return pd.DataFrame({"customer_id": ["C1"], "ask_type": ["review"], "rank": [1]})


def test_asks_naming_a_plan_look_it_up_without_listing_the_plans_folder(tmp_path: Path) -> None:
    store = PlanStore(tmp_path / "plans", Retention(0, set))
    store.save(PLAN, _plan_rows(), {"need": {"review": 1}})
    for i in range(200):  # other plans: the folder grows with every plan ever made
        (tmp_path / "plans" / f"{i:032x}.json").write_text("{}")
    (tmp_path / "plans" / f"{'e' * 32}.parquet").write_bytes(b"")  # a plan cut short: no JSON
    ask = {
        "ask_id": "a-1",
        "customer_id": "C1",
        "ask_type": "review",
        "asked_at": "2026-01-05T10:00:00Z",
        "outcome": "no_response",
    }
    stored: list[int] = []
    with folder_listings() as listed:
        assert record_asks([{**ask, "plan_id": PLAN}], lambda f: stored.append(len(f)) or len(f), store, ()) == 1
        for unknown in ("f" * 32, "e" * 32, "../" + PLAN):
            with pytest.raises(ValueError, match="plan_id: no plan"):
                record_asks([{**ask, "plan_id": unknown}], lambda f: stored.append(len(f)) or len(f), store, ())
    assert listed == [] and stored == [1]  # nothing stored for the refused ones
    assert store.has(PLAN) and not store.has("f" * 32) and not store.has("e" * 32) and not store.has("x")


# ---- 8b: stored plans are pruned, except those asks name -----------------------------------------------


def _age(store: PlanStore, plan_id: str, days: float) -> None:
    then = time.time() - days * 86_400
    for path in store.root.glob(f"{plan_id}.*"):
        os.utime(path, (then, then))


def _prune_case(tmp_path: Path, store_for: Any) -> None:
    log_path = tmp_path / "asks.sqlite"
    old, named, young, new, later = (f"{c * 32}" for c in "abcde")
    setup = PlanStore(tmp_path / "plans", Retention(0, set))  # keeps everything, sweeps nothing
    for plan_id in (old, named, young):
        setup.save(plan_id, _plan_rows(), {})
    _age(setup, old, 400)
    _age(setup, named, 400)
    _age(setup, young, 300)
    ask = {
        "ask_id": "a-1",
        "customer_id": "C1",
        "ask_type": "review",
        "asked_at": "2026-01-05T10:00:00Z",
        "outcome": "no_response",
    }
    AskLog(log_path, CONTRACTS["asks"]).record(asks_frame([{**ask, "plan_id": named}]))
    assert linked_plans(log_path) == {named}

    store = store_for(tmp_path / "plans", log_path)
    store.save(new, _plan_rows(), {})
    assert [store.has(p) for p in (old, named, young, new)] == [False, True, True, True]
    assert not list(store.root.glob(f"{old}.*"))  # its table too
    _age(store, young, 400)
    store.save(later, _plan_rows(), {})  # swept an hour ago: not again yet
    assert store.has(young)


def test_plans_past_their_days_are_pruned_when_a_plan_is_stored_except_those_asks_name(tmp_path: Path) -> None:
    _prune_case(tmp_path, lambda root, log: PlanStore(root, Retention(365, lambda: linked_plans(log))))


def test_the_plan_store_the_cli_builds_prunes_by_the_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # `usecases.sources.Sources.plans` (every command) builds its store from the settings, as
    # `serving.state.load_state` does with `Retention.from_settings`.
    monkeypatch.setenv("ADVOCACY_PLAN_KEEP_DAYS", "365")
    monkeypatch.setenv("ADVOCACY_ASK_LOG", str(tmp_path / "asks.sqlite"))
    get_settings.cache_clear()
    settings = get_settings()
    assert settings.plan_keep_days == 365
    from_settings = Sources.from_settings(settings, tmp_path)
    assert from_settings.plan_keep_days == 365
    _prune_case(tmp_path, lambda root, log: replace(from_settings, plans_path=root, ask_log_path=log).plans())


# ---- 8c: a request's head must arrive within the header timeout -----------------------------------------


def test_the_header_deadline_is_patched_into_the_uvicorn_it_was_written_for(monkeypatch: pytest.MonkeyPatch) -> None:
    from importlib import metadata

    assert metadata.version("uvicorn") == patches.UVICORN_VERSION
    assert get_settings().header_timeout_seconds == patches.HEADER_TIMEOUT_S
    monkeypatch.setattr(patches, "_installed_uvicorn", lambda: "0.99.0")
    with pytest.raises(patches.UnsupportedBentoMLError, match=r"uvicorn==0\.54\.0.*uvicorn==0\.99\.0"):
        patches.install()


def _closed(sock: socket.socket) -> bool:
    try:
        return sock.recv(4096) == b""
    except OSError:
        return True


@pytest.mark.slow
@pytest.mark.server
def test_connections_that_trickle_their_headers_are_closed_while_others_are_answered(served: Served) -> None:
    start = time.monotonic()
    tricklers = [socket.create_connection(("127.0.0.1", served.server.port), timeout=5) for _ in range(10)]
    for sock in tricklers:
        sock.sendall(b"GET /livez HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    silent = socket.create_connection(("127.0.0.1", served.server.port), timeout=5)
    everyone = [*tricklers, silent]
    closed_at: dict[socket.socket, float] = {}
    answered: list[int] = []
    next_line = start + 0.5
    try:
        while len(closed_at) < len(everyone) and time.monotonic() - start < HEADER_TIMEOUT_S * 5:
            waiting = [s for s in everyone if s not in closed_at]
            readable, _, _ = select.select(waiting, [], [], 0.1)
            closed_at.update({s: time.monotonic() - start for s in readable if _closed(s)})
            if time.monotonic() >= next_line:  # a header line every half second, and a normal client
                next_line += 0.5
                for sock in (s for s in tricklers if s not in closed_at):
                    with contextlib.suppress(OSError):
                        sock.sendall(b"X-Slow: 1\r\n")
                answered.append(httpx.get(served.server.url + "/livez", timeout=2).status_code)
    finally:
        for sock in everyone:
            sock.close()
    assert len(closed_at) == len(everyone), f"{len(everyone) - len(closed_at)} still open"
    assert all(HEADER_TIMEOUT_S - 0.5 < t < HEADER_TIMEOUT_S + 2 for t in closed_at.values()), closed_at
    assert answered and set(answered) == {200}


# ---- 8d: no answer may be framed by another site ---------------------------------------------------------


def test_frame_ancestors_joins_a_policy_the_answer_already_has() -> None:
    given = [(b"Content-Security-Policy", b"default-src 'self'; frame-ancestors *"), (b"X-Frame-Options", b"ALLOW")]
    assert framing_headers(given) == [
        (b"Content-Security-Policy", b"default-src 'self'; frame-ancestors 'none'"),
        (b"x-frame-options", b"DENY"),
    ]


@pytest.mark.slow
@pytest.mark.server
def test_the_page_its_files_and_every_answer_forbid_framing(served: Served) -> None:
    url = served.server.url
    answers = [httpx.get(url + path, timeout=30) for path in ("/", "/static/app.js", "/static/style.css", "/livez")]
    answers.append(httpx.post(url + "/search", json={"query": "a"}, timeout=30))
    answers.append(httpx.post(url + "/search", content=b"q", headers={"Content-Type": "text/plain"}, timeout=30))
    assert [a.status_code for a in answers] == [200, 200, 200, 200, 200, 415]
    for answer in answers:
        assert answer.headers.get_list("content-security-policy") == ["frame-ancestors 'none'"], answer.url
        assert answer.headers.get_list("x-frame-options") == ["DENY"], answer.url


# ---- 8e: a bad body is answered in one wording, whatever the charset --------------------------------------

_CLASS_NAME = re.compile(r"[A-Z][a-z]+[A-Z]\w*|Error\b|IODescriptor")


@pytest.mark.slow
@pytest.mark.server
def test_a_body_that_is_not_json_gets_one_message_naming_no_class(served: Served) -> None:
    kinds = ("application/json", "application/json; charset=utf-8", "application/json;charset=UTF8")
    for body, where in [
        (b'{"customer_ids": [', "(line 1, column 18)"),
        (b'{"customer_ids": ["\xff"]}', "(line 1, column 20)"),
        (b'\xef\xbb\xbf{"customer_ids": []}', "(line 1, column 1)"),
    ]:
        messages = set()
        for route in ("/score", "/explain"):
            for kind in kinds:
                response = httpx.post(served.server.url + route, content=body, headers={"Content-Type": kind})
                assert response.status_code == 400, response.text
                messages.add(response.json()["error"])
        assert len(messages) == 1, messages
        message = messages.pop()
        assert message.startswith("the body is not valid UTF-8 JSON: ") and message.endswith(where), message
        assert not _CLASS_NAME.search(message), message
    for kind in kinds:  # a body that is JSON but does not fit: the place, not the model's class
        response = httpx.post(
            served.server.url + "/score", content=b'{"customer_ids": [7]}', headers={"Content-Type": kind}
        )
        message = response.json()["error"]
        assert response.status_code == 400 and message.startswith("invalid body: customer_ids.0: "), message
        assert not _CLASS_NAME.search(message), message
