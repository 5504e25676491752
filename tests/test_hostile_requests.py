"""Hostile and careless requests (issue 15, defects 1 to 5): the request gate, the metrics labels and
asks from the future, against a real `bentoml serve` on 127.0.0.1 with no token (the default on
loopback, where cross-origin writes matter most).

Each hostile request is sent as the attacker sent it: with httpx where HTTP allows it, on a raw
socket where httpx would refuse to send it (a header byte that is not ASCII).
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from features.context import Snapshot
from features.contracts import CONTRACTS
from serving.gate import RequestGate, host_name, json_media_type
from storage.asklog import AskLog
from tests.conftest import TrainedHome
from tests.serverkit import Server, service_env

DATA_ROUTES = [
    "/score",
    "/score_features",
    "/explain",
    "/references",
    "/search",
    "/disagreements",
    "/asks",
    "/plan",
    "/worklist",
    "/report",
]


# The gate on its own, in process: the rules, with no server.


def _refused(gate: RequestGate, method: str, headers: dict[str, str]) -> int | None:
    raw = [(k.lower().encode(), v.encode("latin-1")) for k, v in headers.items()]
    scope: dict[str, Any] = {"type": "http", "method": method, "path": "/asks", "headers": raw}
    refusal = gate.refusal(scope)
    return None if refusal is None else refusal[0]


def test_only_json_bodies_from_this_machine_and_its_own_page_pass() -> None:
    gate = RequestGate(app=lambda *_: None, hosts_from=lambda: frozenset({"advocacy.internal"}))  # type: ignore[arg-type]
    ok = {"Host": "127.0.0.1:3000", "Content-Type": "application/json"}
    assert _refused(gate, "POST", ok) is None
    assert _refused(gate, "POST", {**ok, "Origin": "http://127.0.0.1:3000"}) is None
    assert _refused(gate, "POST", {**ok, "Host": "advocacy.internal"}) is None
    assert _refused(gate, "POST", {**ok, "Host": "[::1]:3000"}) is None
    assert _refused(gate, "POST", {**ok, "Content-Type": "application/json; charset=UTF-8"}) is None
    assert _refused(gate, "GET", {"Host": "localhost:3000"}) is None
    # Another site's page, a rebinding name, another local port, a sandboxed frame.
    assert _refused(gate, "POST", {**ok, "Origin": "http://evil.example"}) == 403
    assert _refused(gate, "POST", {**ok, "Origin": "http://127.0.0.1:8080"}) == 403
    assert _refused(gate, "POST", {**ok, "Origin": "null"}) == 403
    assert _refused(gate, "POST", {**ok, "Host": "attacker.example:3000"}) == 400
    assert _refused(gate, "GET", {"Host": "attacker.example"}) == 400
    for kind in ("text/plain", "multipart/form-data", "application/x-www-form-urlencoded", "application/json\xff"):
        assert _refused(gate, "POST", {**ok, "Content-Type": kind}) == 415, kind
    assert _refused(gate, "POST", {"Host": "127.0.0.1:3000"}) == 415  # no type: what a fetch of raw bytes sends
    assert _refused(gate, "POST", {**ok, "Content-Type": "application/json; charset=latin-1"}) == 415
    anywhere = RequestGate(app=lambda *_: None, hosts_from=lambda: frozenset({"*"}))  # type: ignore[arg-type]
    assert _refused(anywhere, "POST", {**ok, "Host": "attacker.example"}) is None


def test_probes_pass_the_gate_whatever_the_host() -> None:
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["path"])

    gate = RequestGate(app)
    scope = {"type": "http", "method": "GET", "path": "/readyz", "headers": [(b"host", b"10.0.0.7:3000")]}
    asyncio.run(gate(scope, None, None))  # type: ignore[arg-type]
    assert seen == ["/readyz"]


def test_host_names_and_media_types_are_read_as_http_writes_them() -> None:
    assert host_name("LocalHost:3000") == "localhost"
    assert host_name("[::1]:3000") == "::1" and host_name("::1") == "::1"
    assert host_name("advocacy.internal") == "advocacy.internal"
    assert json_media_type('Application/JSON ; charset="utf-8"')
    assert not json_media_type(None) and not json_media_type("application/jsonx")


# A real server with no token.


@pytest.fixture(scope="module")
def server(
    trained_home: TrainedHome, served_snapshot: Snapshot, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    base = tmp_path_factory.mktemp("gate")
    env = service_env(trained_home, base / "serve", served_snapshot)
    with Server(env, base / "server.log").running() as served:
        yield served


def _stored_asks(server: Server) -> Any:
    return AskLog(Path(server.env["ADVOCACY_ASK_LOG"]), CONTRACTS["asks"]).read()


def _ask(snapshot: Snapshot) -> dict[str, Any]:
    return {
        "ask_id": f"csrf-{uuid.uuid4().hex[:8]}",
        "customer_id": str(snapshot.features["customer_id"].iloc[0]),
        "ask_type": "review",
        "asked_at": datetime.now(UTC).replace(microsecond=0).isoformat(),
        "outcome": "no_response",
    }


def _raw(server: Server, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send `request` as bytes on a fresh socket; the status, headers and the whole body read back."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


@pytest.mark.slow
@pytest.mark.server
def test_multipart_bodies_are_a_415_on_every_route_never_a_500(server: Server) -> None:
    # Defect 1: BentoML's multipart parser answered 500 (KeyError: b'boundary', MultipartParseError).
    for route in DATA_ROUTES:
        for kind in ("multipart/form-data", "multipart/form-data; boundary=xyz"):
            for body in (b"{}", b"garbage"):
                response = httpx.post(server.url + route, content=body, headers={"Content-Type": kind}, timeout=30)
                assert response.status_code == 415, (route, kind, body, response.text)
                assert "application/json" in response.json()["error"]
    assert "Traceback" not in server.output()


@pytest.mark.slow
@pytest.mark.server
def test_a_content_type_that_is_not_ascii_gets_its_whole_answer(server: Server) -> None:
    # Defect 2: the access log raised UnicodeDecodeError after the status was sent: a 200 with no body.
    body = b'{"customer_ids": ["C0000001"]}'
    for route in ("/score", "/search"):
        request = (
            f"POST {route} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nConnection: close\r\n".encode()
            + b"Content-Type: application/json\xff\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        status, headers, answer = _raw(server, request)
        assert status == 415, answer
        assert int(headers["content-length"]) == len(answer) > 0
        assert "application/json" in answer.decode()
    assert "UnicodeDecodeError" not in server.output()


@pytest.mark.slow
@pytest.mark.server
def test_made_up_paths_add_no_metrics_series_and_declared_routes_still_answer(server: Server) -> None:
    # Defect 3: every requested path, 404s included, became a metrics label: hundreds of new series.
    # A few may appear on their own meanwhile (a background task's first run), so series are
    # counted, not bytes.
    def series() -> set[str]:
        text = httpx.get(server.url + "/metrics", timeout=30).text
        return {line.rsplit(" ", 1)[0] for line in text.splitlines() if line and not line.startswith("#")}

    for i in range(50):  # every series the routes below can make exists before the baseline
        httpx.get(f"{server.url}/warm-{i}", timeout=30)
        httpx.post(f"{server.url}/warm-{i}", json={}, timeout=30)
    before = series()
    with httpx.Client(timeout=30) as client:
        for i in range(400):
            assert client.get(f"{server.url}/nonexistent-{i}").status_code == 404
            assert client.post(f"{server.url}/nonexistent-{i}", json={}).status_code in (404, 405)
    metrics = httpx.get(server.url + "/metrics", timeout=30).text
    assert "nonexistent" not in metrics and "warm-" not in metrics
    assert "/{undeclared}" in metrics
    grown = sorted(series() - before)
    assert len(grown) < 100, f"made-up paths still grow /metrics: {len(grown)} new series, e.g. {grown[:5]}"
    # The labels change nothing of what the routes answer: the path below the metrics is the one asked for.
    for path in ("/", "/static/app.js", "/static/style.css", "/docs.json", "/schema.json", "/readyz"):
        assert httpx.get(server.url + path, timeout=30).status_code == 200, path
    assert httpx.get(server.url + "/static/no-such.js", timeout=30).status_code == 404
    assert re.search(r'endpoint="/static/\*"', httpx.get(server.url + "/metrics", timeout=30).text)


@pytest.mark.slow
@pytest.mark.server
def test_a_page_on_another_origin_cannot_write_asks(server: Server, served_snapshot: Snapshot) -> None:
    # Defect 4: what `fetch(url, {method: "POST", mode: "no-cors", headers: {"Content-Type":
    # "text/plain"}, body})` sends from another site: a simple request, so no preflight.
    before = len(_stored_asks(server))
    ask = _ask(served_snapshot)
    body = {"asks": [ask]}
    evil = {"Origin": "http://evil.example"}
    raw = json.dumps(body).encode()
    answers = [
        httpx.post(server.url + "/asks", content=raw, headers={**evil, "Content-Type": "text/plain"}, timeout=30),
        httpx.post(server.url + "/asks", content=raw, headers=evil, timeout=30),  # a fetch of raw bytes: no type
        httpx.post(server.url + "/asks", json=body, headers=evil, timeout=30),  # JSON would need a preflight
        # Without an Origin (a browser that sends none): the body type alone keeps it out.
        httpx.post(server.url + "/asks", content=raw, headers={"Content-Type": "text/plain"}, timeout=30),
        httpx.post(server.url + "/asks", content=raw, timeout=30),
        # DNS rebinding: the attacker's name resolves to 127.0.0.1, so the browser calls it same-origin.
        httpx.post(server.url + "/asks", json=body, headers={"Host": f"attacker.example:{server.port}"}, timeout=30),
    ]
    assert [a.status_code for a in answers] == [403, 403, 403, 415, 415, 400], [a.text for a in answers]
    assert len(_stored_asks(server)) == before
    # The service's own page (same origin), and other systems (no Origin), still write.
    own = {"Origin": server.url}
    assert httpx.post(server.url + "/asks", json=body, headers=own, timeout=30).json() == {"stored": 1}
    stored = _stored_asks(server)
    assert len(stored) == before + 1 and ask["ask_id"] in set(stored["ask_id"])


@pytest.mark.slow
@pytest.mark.server
def test_asks_from_the_future_are_a_400_naming_the_column(server: Server, served_snapshot: Snapshot) -> None:
    # Defect 5: asks in 2100 were stored, shown in "the last 12 months", and broke the next training.
    before = len(_stored_asks(server))
    for when in ("2100-01-01T00:00:00Z", "2199-12-31T23:00:00-12:00"):
        for column in ("asked_at", "responded_at"):
            ask = _ask(served_snapshot) | {
                column: when,
                "outcome": "accepted" if column == "responded_at" else "no_response",
            }
            response = httpx.post(server.url + "/asks", json={"asks": [ask]}, timeout=30)
            assert response.status_code == 400, response.text
            # 2199-12-31T23:00-12:00 is 2200 in UTC: past the contract's years before it is in the future.
            assert f"column '{column}'" in response.text
            assert "not in the future" in response.text or "year 1900 to 2199" in response.text
    # A few seconds ahead (another machine's clock) is still an ask made now.
    ahead = (datetime.now(UTC) + timedelta(seconds=90)).isoformat()
    assert (
        httpx.post(server.url + "/asks", json={"asks": [_ask(served_snapshot) | {"asked_at": ahead}]}).status_code
        == 200
    )
    assert len(_stored_asks(server)) == before + 1
