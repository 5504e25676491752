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
from importlib import metadata
from typing import Any

from serving.auth import Message, Receive, Scope, Send

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


def _installed_bentoml() -> str:
    return metadata.version("bentoml")


def install() -> None:
    """Apply every BentoML patch; calling it again changes nothing.

    Raises `UnsupportedBentoMLError` (and patches nothing) if the installed BentoML is not `BENTOML_VERSION`.
    """
    installed = _installed_bentoml()
    if installed != BENTOML_VERSION:
        raise UnsupportedBentoMLError(
            f"serving/patches.py was written against bentoml=={BENTOML_VERSION}, but bentoml=={installed} is "
            "installed: install the pinned version (uv sync), or check the patches against this one and "
            "update BENTOML_VERSION"
        )
    from bentoml._internal.server.http.traffic import TimeoutMiddleware

    # Let BentoML's request time limit cancel its timer when a request is answered (see `_timed`).
    TimeoutMiddleware.__call__ = _timed  # type: ignore[method-assign]
