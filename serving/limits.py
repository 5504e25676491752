"""Limits on requests: a ceiling on bodies (the fix to BentoML's time limit is in `serving.patches`).

A ceiling on request bodies: bigger ones get 413 before any of it reaches JSON parsing.

The per-route list limits (1,000 ids, 1,000 feature records, 10,000 asks) bound the work a valid
request asks for; this bounds the bytes anyone can make the service hold, whatever the body says.
A declared `Content-Length` over the limit is refused without reading; a body sent without one
(chunked) is read up to the limit and refused as soon as it passes it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from serving.auth import ASGIApp, Message, Receive, Scope, Send, send_json

# The server processes' environment, where the caller's does not choose its own: no usage tracking,
# and the memory allocators. Under load that keeps posting asks, glibc's per-thread malloc arenas and
# Arrow's mimalloc pool kept freed memory in steps (+57 MB over 10 minutes at 100 req/s with 2 workers,
# benchmarks/load.py); with one malloc arena and Arrow on the system allocator the same run starts
# about 74 MB smaller and grows only by what the stored asks take (about 1.4 kB per ask per worker).
SERVER_ENV: dict[str, str] = {
    "BENTOML_DO_NOT_TRACK": "true",
    "MALLOC_ARENA_MAX": "1",
    "ARROW_DEFAULT_MEMORY_POOL": "system",
}


def server_environment(env: Mapping[str, str]) -> dict[str, str]:
    """`env` for a server process: the settings above unless `env` sets them itself.

    They must be in the environment before the process starts (glibc reads MALLOC_ARENA_MAX then);
    BentoML's workers inherit them from `bentoml serve`.
    """
    return {**SERVER_ENV, **env}


async def _refuse(send: Send, limit: int, size: int | None) -> None:
    told = f"{size:,} bytes" if size is not None else "more bytes"
    message = (
        f"request body of {told} is over the limit of {limit:,} bytes (ADVOCACY_MAX_REQUEST_BYTES); "
        "send fewer rows per request"
    )
    await send_json(send, 413, {"error": message})


class BodyLimit:
    """ASGI middleware: 413 for request bodies over `limit` bytes (read lazily from settings)."""

    def __init__(self, app: ASGIApp, limit: int | None = None, limit_from: Callable[[], int] | None = None):
        self.app = app
        self._limit = limit
        self._limit_from = limit_from

    def limit(self) -> int:
        if self._limit is None:
            self._limit = self._limit_from() if self._limit_from else 4 * 1024 * 1024
        return self._limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        limit = self.limit()
        declared = next((v for k, v in scope.get("headers", ()) if k == b"content-length"), None)
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                size = None
            if size is not None and size > limit:
                await _refuse(send, limit, size)
                return
            await self.app(scope, receive, send)  # the server holds the body to its declared length
            return
        # No length given: buffer up to the limit, then hand the app exactly what arrived.
        chunks: list[bytes] = []
        total = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > limit:
                await _refuse(send, limit, None)
                return
            chunks.append(chunk)
            more = bool(message.get("more_body", False))
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        await self.app(scope, replay, send)
