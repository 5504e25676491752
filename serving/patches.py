"""Every change this service makes to BentoML's internals (and to uvicorn's, which BentoML runs), applied
by one explicit call: `install()`.

`serving.service.Advocacy` calls it when a worker starts (BentoML builds the service instance in the
worker's start-up, before the first request). Importing this module, or any other, patches nothing.
The patches are written against one BentoML release, `BENTOML_VERSION`, and one uvicorn release,
`UVICORN_VERSION`, and `install()` refuses any other: internals change without notice, and a patch
that silently stopped matching would bring back the problem it fixes. After upgrading either,
re-read the patched code against the new release, then move the constant (tests/test_limits.py and
tests/test_service_hardening.py check them against the installed ones).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Iterable
from importlib import metadata
from typing import Any

from pydantic import ValidationError

from serving.answers import invalid_body
from serving.auth import ASGIApp, Message, Receive, Scope, Send

BENTOML_VERSION = "1.4.39"  # the release the patches below were written against (pinned in pyproject.toml)
UVICORN_VERSION = "0.54.0"  # the uvicorn BentoML serves with (pinned in uv.lock), for `_head_deadline`
HEADER_TIMEOUT_S = 10.0  # the default of ADVOCACY_HEADER_TIMEOUT_SECONDS

log = logging.getLogger("bentoml.advocacy")


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


async def _answered(self: Any, name: str, request: Any) -> Any:
    """BentoML's `ServiceAppFactory.api_endpoint`, with a body it cannot validate answered in the
    service's words (`serving.answers.invalid_body`), as `serving.service.ScoreFastPath` answers it.

    BentoML's own answer, "1 validation error for ScoreRequestIODescriptor", named a class of its
    own making, and a different one than the fast path's for the same body sent with a charset; and
    it logged each refusal with a traceback. The status is BentoML's: 400.
    """
    try:
        return await _originals["endpoint"](self, name, request)
    except ValidationError as exc:
        path, count = request.url.path, exc.error_count()
        log.info("%s %s rejected with 400 (%d validation error(s))", request.method, path, count)
        return invalid_body(exc)


_head_timeout = [HEADER_TIMEOUT_S]


def _awaiting_head(protocol: Any) -> bool:
    """Whether a connection waits for a request's head: none yet, or the last one answered."""
    return protocol.cycle is None or protocol.cycle.response_complete


def _arm_head_deadline(protocol: Any) -> None:
    _disarm_head_deadline(protocol)
    if _awaiting_head(protocol) and not protocol.transport.is_closing():
        protocol._advocacy_head_deadline = protocol.loop.call_later(
            _head_timeout[0], _head_overdue, protocol, protocol.cycle
        )


def _disarm_head_deadline(protocol: Any) -> None:
    deadline = getattr(protocol, "_advocacy_head_deadline", None)
    if deadline is not None:
        deadline.cancel()
        protocol._advocacy_head_deadline = None


def _head_overdue(protocol: Any, cycle: Any) -> None:
    protocol._advocacy_head_deadline = None
    if protocol.cycle is cycle and _awaiting_head(protocol) and not protocol.transport.is_closing():
        protocol.transport.close()  # no request began since the deadline was set: let the socket go


def _head_deadline(protocol_class: Any) -> None:
    """uvicorn's HTTP protocol with a deadline for each request's head (request line and headers).

    uvicorn 0.54 sets no timer until a first response is sent, and its keep-alive timer stops at the
    first byte of the next request, so a client that sends a header line every few seconds holds its
    connection, and the worker's memory for it, as long as it likes (30 such sockets were held for the
    whole 80 s a probe ran; none of uvicorn's or BentoML's settings bounds it). The deadline is set when
    the connection opens and again after each response, and is met when the whole head has arrived
    (a new request cycle begins); a connection that misses it is closed.
    """
    originals = _originals.setdefault(f"head:{protocol_class.__name__}", {})
    for method in ("connection_made", "on_response_complete", "connection_lost"):
        originals.setdefault(method, getattr(protocol_class, method))

    def connection_made(self: Any, transport: Any) -> None:
        originals["connection_made"](self, transport)
        _arm_head_deadline(self)

    def on_response_complete(self: Any) -> None:
        originals["on_response_complete"](self)
        _arm_head_deadline(self)  # unless a pipelined request already began

    def connection_lost(self: Any, exc: Exception | None) -> None:
        _disarm_head_deadline(self)
        originals["connection_lost"](self, exc)

    protocol_class.connection_made = connection_made
    protocol_class.on_response_complete = on_response_complete
    protocol_class.connection_lost = connection_lost


def _installed_bentoml() -> str:
    return metadata.version("bentoml")


def _installed_uvicorn() -> str:
    return metadata.version("uvicorn")


def _check_versions() -> None:
    for name, pinned, installed in (
        ("bentoml", BENTOML_VERSION, _installed_bentoml()),
        ("uvicorn", UVICORN_VERSION, _installed_uvicorn()),
    ):
        if installed != pinned:
            raise UnsupportedBentoMLError(
                f"serving/patches.py was written against {name}=={pinned}, but {name}=={installed} is "
                f"installed: install the pinned version (uv sync), or check the patches against this one and "
                f"update {name.upper()}_VERSION"
            )


def install(routes: Iterable[str] = (), header_timeout: float = HEADER_TIMEOUT_S) -> None:
    """Apply every BentoML patch; calling it again changes nothing but the declared `routes` and
    the `header_timeout`.

    `routes` are the paths the service declares (see `RouteLabels`): the only metrics labels.
    `header_timeout`: seconds a connection may take to send a request's head (see `_head_deadline`).

    Raises `UnsupportedBentoMLError` (and patches nothing) if the installed BentoML is not
    `BENTOML_VERSION`, or uvicorn not `UVICORN_VERSION`.
    """
    _check_versions()
    from _bentoml_impl.server.app import ServiceAppFactory
    from bentoml._internal.server.http.instruments import RunnerTrafficMetricsMiddleware
    from bentoml._internal.server.http.traffic import TimeoutMiddleware
    from uvicorn.protocols.http.h11_impl import H11Protocol

    global _labels
    _labels = RouteLabels(routes)
    _originals.setdefault("metrics", RunnerTrafficMetricsMiddleware.__call__)
    # Label traffic metrics by declared route only (see `_labelled`).
    RunnerTrafficMetricsMiddleware.__call__ = _labelled  # type: ignore[method-assign]

    # Let BentoML's request time limit cancel its timer when a request is answered (see `_timed`).
    TimeoutMiddleware.__call__ = _timed  # type: ignore[method-assign]

    # Answer a body BentoML cannot validate in the service's words (see `_answered`).
    _originals.setdefault("endpoint", ServiceAppFactory.api_endpoint)
    ServiceAppFactory.api_endpoint = _answered

    # Close connections that take longer than `header_timeout` to send a request's head (see `_head_deadline`).
    _head_timeout[0] = header_timeout
    _head_deadline(H11Protocol)
    try:  # uvicorn serves with httptools instead of h11 where it is installed
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:
        pass
    else:
        _head_deadline(HttpToolsProtocol)
