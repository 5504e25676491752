"""Every change this service makes to BentoML's internals, applied by one explicit call: `install()`.

`serving.service.Advocacy` calls it when a worker starts (BentoML builds the service instance in the
worker's start-up, before the first request). Importing this module, or any other, patches nothing.
The patches are written against one BentoML release, `BENTOML_VERSION`, and `install()` refuses any
other: internals change without notice, and a patch that silently stopped matching would bring back
the memory and p99 problems it fixes. After upgrading BentoML, re-read the patched code against the
new release, then move the constant (tests/test_limits.py checks it against the installed one).
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Iterable
from importlib import metadata
from typing import Any

from serving.auth import ASGIApp, Message, Receive, Scope, Send

BENTOML_VERSION = "1.4.39"  # the release the patches below were written against (pinned in pyproject.toml)


class UnsupportedBentoMLError(RuntimeError):
    """The installed BentoML is not the release these patches were written against."""


async def _timed(self: Any, scope: Scope, receive: Receive, send: Send) -> None:
    """BentoML's `TimeoutMiddleware.__call__` (bentoml 1.4), with a timer that holds nothing of the request.

    The original schedules `call_later(timeout, ...)` for every request and never cancels it, so
    each finished request stays reachable for `timeout` seconds through the timer's copy of the
    request's context (its OpenTelemetry span and everything the span holds): at 100 req/s and a
    30 s timeout, some 3,000 dead requests at any time. They cost memory, and every full garbage
    collection walks them: pauses of 100-300 ms in a worker, which were most of the service's p99.
    """
    from starlette.responses import JSONResponse

    if scope["type"] not in ("http", "websocket"):
        await self.app(scope, receive, send)
        return
    loop = asyncio.get_running_loop()
    waiter = loop.create_future()
    # A context of its own: asyncio keeps cancelled timers (and what they reference) for a while.
    timer = loop.call_later(self.timeout, self._set_timer_out, waiter, context=contextvars.Context())

    async def _send(message: Message) -> None:
        if not waiter.done():
            waiter.set_result(None)
        await send(message)

    fut = asyncio.ensure_future(self.app(scope, receive, _send), loop=loop)
    try:
        await waiter
    except TimeoutError:
        if fut.cancel():
            body = {"error": f"Not able to process the request in {self.timeout} seconds"}
            await JSONResponse(body, status_code=504)(scope, receive, send)
    else:
        await fut
    finally:
        timer.cancel()


UNDECLARED = "/{undeclared}"  # the one metrics label of every path the service does not declare
_REQUESTED_PATH = "advocacy.requested_path"  # scope key: the path as requested, for the app below the metrics


class RouteLabels:
    """The metrics label of a request path: the path itself if the service declares it, else one label.

    `routes` are exact paths, or prefixes ending in "/" for a folder of files (the page's assets),
    labelled `<prefix>*`.
    """

    def __init__(self, routes: Iterable[str]) -> None:
        routes = list(routes)
        self.exact = frozenset(r for r in routes if not r.endswith("/") or r == "/")
        self.prefixes = tuple(r for r in routes if r.endswith("/") and r != "/")

    def __call__(self, path: str) -> str:
        if path in self.exact:
            return path
        for prefix in self.prefixes:
            if path.startswith(prefix):
                return prefix + "*"
        return UNDECLARED


_labels = RouteLabels(())
_originals: dict[str, Any] = {}


def _restoring(app: ASGIApp) -> ASGIApp:
    async def restore(scope: Scope, receive: Receive, send: Send) -> None:
        if _REQUESTED_PATH in scope:
            scope = {**scope, "path": scope[_REQUESTED_PATH]}
            del scope[_REQUESTED_PATH]
        await app(scope, receive, send)

    return restore


async def _labelled(self: Any, scope: Scope, receive: Receive, send: Send) -> None:
    """BentoML's traffic metrics, labelled by declared route instead of by whatever path was asked for.

    The original labels each request with its raw path: every 404, 401 or scanner's probe became a
    new series, so 2,000 requests for made-up paths grew /metrics from 195 KB to 15.9 MB and a worker
    by 100 MB. The metrics now see the route's label; everything below them the path as requested.
    """
    original = _originals["metrics"]
    if scope["type"] != "http" or (label := _labels(scope["path"])) == scope["path"]:
        await original(self, scope, receive, send)
        return
    if not getattr(self, "_advocacy_restoring", False):  # once per middleware instance
        self.app = _restoring(self.app)
        self._advocacy_restoring = True
    await original(self, {**scope, "path": label, _REQUESTED_PATH: scope["path"]}, receive, send)


def _installed_bentoml() -> str:
    return metadata.version("bentoml")


def install(routes: Iterable[str] = ()) -> None:
    """Apply every BentoML patch; calling it again changes nothing but the declared `routes`.

    `routes` are the paths the service declares (see `RouteLabels`): the only metrics labels.

    Raises `UnsupportedBentoMLError` (and patches nothing) if the installed BentoML is not `BENTOML_VERSION`.
    """
    installed = _installed_bentoml()
    if installed != BENTOML_VERSION:
        raise UnsupportedBentoMLError(
            f"serving/patches.py was written against bentoml=={BENTOML_VERSION}, but bentoml=={installed} is "
            "installed: install the pinned version (uv sync), or check the patches against this one and "
            "update BENTOML_VERSION"
        )
    from bentoml._internal.server.http.instruments import RunnerTrafficMetricsMiddleware
    from bentoml._internal.server.http.traffic import TimeoutMiddleware

    global _labels
    _labels = RouteLabels(routes)
    _originals.setdefault("metrics", RunnerTrafficMetricsMiddleware.__call__)
    # Label traffic metrics by declared route only (see `_labelled`).
    RunnerTrafficMetricsMiddleware.__call__ = _labelled  # type: ignore[method-assign]

    # Let BentoML's request time limit cancel its timer when a request is answered (see `_timed`).
    TimeoutMiddleware.__call__ = _timed  # type: ignore[method-assign]
