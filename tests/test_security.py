"""What the service lets out and lets in (issue 7): the token and customer names never reach the log,
request bodies and lists are bounded. One real `advocacy serve` on 127.0.0.1 with a token.

(The CSM page's escaping of every value, e.g. a customer named `<script>`, is checked in a real browser
in tests/test_page.py.)
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pandas as pd
import pytest

from features.context import Snapshot
from features.io import read_world
from tests.conftest import TrainedHome
from tests.serverkit import Server, service_env

pytestmark = [pytest.mark.slow, pytest.mark.server]

TOKEN = "sec-token-7d1e9a0c"
LIMIT = 64 * 1024  # this server's ADVOCACY_MAX_REQUEST_BYTES


@pytest.fixture(scope="module")
def world_names(trained_home: TrainedHome) -> pd.Series:
    return read_world(trained_home.settings.resolved_data_dir()).customers.set_index("customer_id")["name"]


@pytest.fixture(scope="module")
def snapshot(served_snapshot: Snapshot) -> Snapshot:
    return served_snapshot


@pytest.fixture(scope="module")
def server(trained_home: TrainedHome, snapshot: Snapshot, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    base = tmp_path_factory.mktemp("security")
    env = service_env(
        trained_home, base / "serve", snapshot, ADVOCACY_API_TOKEN=TOKEN, ADVOCACY_MAX_REQUEST_BYTES=str(LIMIT)
    )
    # The console command users run, banner included.
    with Server(env, base / "server.log", cli=True).running() as served:
        yield served


def post(server: Server, route: str, body: Any, token: str | None = TOKEN) -> httpx.Response:
    return server.post(route, body, token=token)


def test_neither_the_token_nor_a_wrong_one_is_ever_logged(server: Server, snapshot: Snapshot) -> None:
    customer = str(snapshot.features["customer_id"].iloc[0])
    wrong = "wrong-token-55aa31"
    assert post(server, "/score", {"customer_ids": [customer]}).status_code == 200
    assert post(server, "/score", {"customer_ids": [customer]}, token=wrong).status_code == 401
    assert post(server, "/score", {"customer_ids": [customer]}, token=None).status_code == 401
    assert post(server, "/explain", {"customer_id": "nobody"}).status_code == 404
    assert post(server, "/score", {"customer_ids": []}).status_code == 400
    log = server.output()
    assert "method=POST,path=/score" in log  # the access log is on, so the check below looks at real request lines
    assert TOKEN not in log and wrong not in log


def test_no_customer_name_reaches_the_log(server: Server, snapshot: Snapshot, world_names: pd.Series) -> None:
    ids = snapshot.features["customer_id"].astype(str).head(40).tolist()
    name = str(world_names[ids[0]])
    found = post(server, "/search", {"query": name, "limit": 5})
    assert found.status_code == 200 and any(c["name"] == name for c in found.json()["customers"])
    assert post(server, "/score", {"customer_ids": ids}).status_code == 200
    assert post(server, "/explain", {"customer_id": ids[1]}).status_code == 200
    assert post(server, "/disagreements", {"limit": 20}).status_code == 200
    assert (
        post(server, "/references", {"industry": "software", "segment": "smb", "use_case": "analytics"}).status_code
        == 200
    )
    # Names where ids belong, and in rejected bodies: the answers may echo them, the log must not.
    assert post(server, "/score", {"customer_ids": [name]}).status_code == 404
    assert post(server, "/explain", {"customer_id": name, "extra": name}).status_code == 400
    now = datetime.now(UTC).isoformat()
    ask = {"ask_id": name, "customer_id": name, "ask_type": "review", "asked_at": now}
    assert post(server, "/asks", {"asks": [ask]}).status_code == 404
    log = server.output()
    leaked = [n for n in world_names.unique() if n in log]
    assert not leaked, leaked[:5]


def test_a_body_over_the_limit_is_refused_before_it_is_read(server: Server) -> None:
    ids = [f"X{i:07d}" for i in range(900)]  # a valid length, padded past the byte limit
    body = json.dumps({"customer_ids": ids}).encode() + b" " * LIMIT
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    declared = httpx.post(server.url + "/score", content=body, headers=headers, timeout=30)
    assert declared.status_code == 413
    assert "ADVOCACY_MAX_REQUEST_BYTES" in declared.json()["error"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit is counted as the body arrives
        for start in range(0, len(body), 8192):
            yield body[start : start + 8192]

    streamed = httpx.post(server.url + "/score", content=chunks(), headers=headers, timeout=30)
    assert streamed.status_code == 413
    # Under the limit, streamed or not, the request is served as usual.
    small = json.dumps({"customer_ids": ids[:5]}).encode()
    assert httpx.post(server.url + "/score", content=small, headers=headers, timeout=30).status_code == 404
    assert httpx.post(server.url + "/score", content=iter([small]), headers=headers, timeout=30).status_code == 404


def test_lists_are_bounded_per_request(server: Server) -> None:
    too_many = post(server, "/score", {"customer_ids": [f"C{i}" for i in range(1001)]})
    assert too_many.status_code == 400 and "customer_ids" in too_many.text
    assert post(server, "/search", {"query": "a", "limit": 51}).status_code == 400
    assert post(server, "/disagreements", {"limit": 201}).status_code == 400
    assert (
        post(server, "/references", {"industry": "x", "segment": "smb", "use_case": "y", "k": 1000}).status_code == 400
    )
