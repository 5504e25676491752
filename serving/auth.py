"""Bearer-token auth for the data routes, and the rule that an open service never leaves this machine.

With `ADVOCACY_API_TOKEN` set, every data route needs `Authorization: Bearer TOKEN` (compared in
constant time). Health, readiness and metrics stay open for probes and scrapers, and so do GET
requests for the page and its assets (the page asks for the token itself); data never.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import os
import socket
import sys
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

OPEN_PATHS: frozenset[str] = frozenset({"/livez", "/readyz", "/healthz", "/metrics"})
_READ_METHODS = frozenset({"GET", "HEAD"})


async def send_json(send: Send, status: int, body: dict[str, Any], headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
    """Answer a request from a middleware: `body` as JSON with `status`, nothing else read or called."""
    data = json.dumps(body).encode()
    start = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()), *headers]
    await send({"type": "http.response.start", "status": status, "headers": start})
    await send({"type": "http.response.body", "body": data})


class InsecureBindError(ValueError):
    """Asked to listen beyond this machine without a token."""


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and `localhost`; every other address is reachable from elsewhere."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Refuse to serve on a non-loopback address without an API token."""
    if not token and not is_loopback(host):
        raise InsecureBindError(
            f"refusing to listen on {host} without an API token: anyone on the network could read every score. "
            "Set ADVOCACY_API_TOKEN, or bind to 127.0.0.1"
        )


def bound_host(argv: Iterable[str] | None = None) -> str | None:
    """The address a BentoML worker listens on (from its `--fd` socket), or None if it cannot tell."""
    args = list(sys.argv if argv is None else argv)
    try:
        fd = int(args[args.index("--fd") + 1])
    except (ValueError, IndexError):
        return None
    try:
        with socket.socket(fileno=os.dup(fd)) as sock:
            address = sock.getsockname()
    except OSError:
        return None
    return str(address[0]) if isinstance(address, tuple) else None


class BearerAuth:
    """ASGI middleware: 401 on data routes without the right bearer token; a no-op without a token."""

    def __init__(self, app: ASGIApp, token: str | None = None, token_from: Callable[[], str | None] | None = None):
        self.app = app
        self._token = token
        self._token_from = token_from
        self._resolved = token is not None

    def _expected(self) -> bytes | None:
        # Resolved at the first request, in the worker, so importing the service reads no settings.
        if not self._resolved:
            self._token = self._token_from() if self._token_from else None
            self._resolved = True
        return self._token.encode() if self._token else None

    @staticmethod
    def _is_open(scope: Scope) -> bool:
        path = scope.get("path", "")
        if path in OPEN_PATHS:
            return True
        # The page and its assets (GET); every data route is a POST.
        return scope.get("method", "GET") in _READ_METHODS

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._is_open(scope):
            await self.app(scope, receive, send)
            return
        expected = self._expected()
        if expected is None:
            await self.app(scope, receive, send)
            return
        given = b""
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                scheme, _, credential = value.partition(b" ")
                if scheme.lower() == b"bearer":
                    given = credential.strip()
                break
        if given and hmac.compare_digest(given, expected):
            await self.app(scope, receive, send)
            return
        await send_json(
            send,
            401,
            {"error": "missing or wrong API token: send the header 'Authorization: Bearer <ADVOCACY_API_TOKEN>'"},
            headers=[(b"www-authenticate", b'Bearer realm="advocacy"')],
        )
