"""Request time limits: a finished request leaves nothing behind; a slow one still gets 504.

BentoML's TimeoutMiddleware kept every answered request reachable for the whole timeout (its timer
held a copy of the request's context); `serving.patches.install` fixes that. These tests run
BentoML's own middleware class, as the service uses it, on a real event loop.
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import json
import subprocess
import sys
import textwrap
import weakref
from importlib import metadata
from typing import Any

import pytest
import yaml
from bentoml._internal.server.http.instruments import RunnerTrafficMetricsMiddleware
from bentoml._internal.server.http.traffic import TimeoutMiddleware

from serving import patches
from serving.limits import SERVER_ENV, server_environment
from tests.conftest import ROOT


@pytest.fixture(autouse=True)
def _patched() -> None:
    """BentoML as the service runs it (once installed, the patch stays for the session, as in a worker)."""
    patches.install()


REQUEST_STATE: contextvars.ContextVar[Any] = contextvars.ContextVar("request_state")


class _State:
    """Stands for what a request's context holds (BentoML's tracing span and what it references)."""


async def _call(app: Any, timeout: float) -> tuple[list[dict[str, Any]], weakref.ref[_State]]:
    state = _State()
    token = REQUEST_STATE.set(state)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    try:
        await TimeoutMiddleware(app, timeout=timeout)({"type": "http", "path": "/score"}, receive, send)
    finally:
        REQUEST_STATE.reset(token)
    return sent, weakref.ref(state)


async def _ok(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


def test_an_answered_request_is_released_at_once_not_after_the_timeout() -> None:
    async def main() -> tuple[list[dict[str, Any]], bool]:
        sent, state = await _call(_ok, timeout=30)
        gc.collect()
        return sent, state() is None  # still inside the 30 s: only a live timer could hold it

    sent, released = asyncio.run(main())
    assert sent[0]["status"] == 200
    assert released, "the request's context is still reachable after its answer (a timer holds it)"


def test_a_request_over_the_time_limit_still_gets_504() -> None:
    async def slow(scope: Any, receive: Any, send: Any) -> None:
        await asyncio.sleep(5)
        await _ok(scope, receive, send)

    sent, _ = asyncio.run(_call(slow, timeout=0.05))
    assert sent[0]["status"] == 504
    assert "0.05 seconds" in json.loads(sent[1]["body"])["error"]


def test_server_settings_apply_everywhere_the_server_starts() -> None:
    # `advocacy serve` and the tests' servers: the settings unless the caller chose its own.
    assert server_environment({"PATH": "/bin"}) == {"PATH": "/bin", **SERVER_ENV}
    assert server_environment({"MALLOC_ARENA_MAX": "4"})["MALLOC_ARENA_MAX"] == "4"
    # A built Bento (containers) carries the same settings.
    bentofile = yaml.safe_load((ROOT / "bentofile.yaml").read_text())
    envs = {e["name"]: e["value"] for e in bentofile["envs"]}
    assert {k: envs.get(k) for k in SERVER_ENV} == SERVER_ENV


def test_the_patches_were_written_for_the_installed_bentoml() -> None:
    # Fails after a BentoML upgrade: re-read serving/patches.py against the new release first.
    assert patches.BENTOML_VERSION == "1.4.39"
    assert metadata.version("bentoml") == patches.BENTOML_VERSION


def test_install_refuses_another_bentoml(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(patches, "_installed_bentoml", lambda: "1.5.0")
    with pytest.raises(patches.UnsupportedBentoMLError, match=r"bentoml==1\.4\.39.*bentoml==1\.5\.0"):
        patches.install()


def test_install_is_idempotent() -> None:
    patches.install()
    patched = TimeoutMiddleware.__call__, RunnerTrafficMetricsMiddleware.__call__
    patches.install(["/score"])
    assert (TimeoutMiddleware.__call__, RunnerTrafficMetricsMiddleware.__call__) == patched
    assert patched == (patches._timed, patches._labelled)
    assert patches._originals["metrics"].__module__ == "bentoml._internal.server.http.instruments"


def test_metrics_labels_are_declared_routes_only() -> None:
    labels = patches.RouteLabels(["/score", "/", "/static/"])
    assert [labels(p) for p in ("/score", "/", "/static/app.js", "/score/", "/nonexistent-7", "/x\x00")] == [
        "/score",
        "/",
        "/static/*",
        patches.UNDECLARED,
        patches.UNDECLARED,
        patches.UNDECLARED,
    ]


def test_importing_the_modules_patches_nothing_until_install() -> None:
    probe = textwrap.dedent(
        """
        import serving.limits, serving.patches, serving.service
        from bentoml._internal.server.http.instruments import RunnerTrafficMetricsMiddleware as M
        from bentoml._internal.server.http.traffic import TimeoutMiddleware as T
        before = T.__call__.__module__, M.__call__.__module__
        serving.patches.install()
        print(*before, T.__call__.__module__, M.__call__.__module__)
        """
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [
        "bentoml._internal.server.http.traffic",
        "bentoml._internal.server.http.instruments",
        "serving.patches",
        "serving.patches",
    ]
