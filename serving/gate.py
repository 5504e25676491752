"""The request gate: which requests the service agrees to read at all, checked before anything else of ours.

Three rules, for every route but the probes (`OPEN_PATHS`):

- **Host.** The `Host` header must name this machine (localhost, 127.0.0.0/8, ::1) or one of
  `ADVOCACY_ALLOWED_HOSTS`. A page on another site that points its own DNS name at 127.0.0.1 (DNS
  rebinding) is the same origin to the browser, so only the name it sends tells it apart.
- **Origin.** A request that says it comes from a browser page (`Origin`) must come from this
  service's own page: the origin's host and port are the request's `Host`.
- **JSON.** Every data route is a POST and takes JSON: any other `Content-Type` (or none) is 415.
  Browsers send `text/plain`, form and multipart bodies from any site without asking first; a JSON
  body from another origin needs a CORS preflight, which this service never grants. Multipart
  bodies never reach BentoML's multipart parser, and a type that is not text never reaches a log.

Together they make the service's writes safe from other origins with no token configured (the
default on loopback); with a token, the token is the main defence and these still hold.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

from serving.auth import OPEN_PATHS, ASGIApp, Receive, Scope, Send, is_loopback, send_json

_NOT_WRITES = frozenset({"GET", "HEAD", "OPTIONS"})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def host_name(host: str) -> str:
    """`host` of a `Host` header or an origin's netloc, without the port: `[::1]:3000` -> `::1`."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if host.count(":") == 1 else host


def json_media_type(content_type: str | None) -> bool:
    """True for `application/json`, with no parameter but a UTF-8 charset."""
    if content_type is None:
        return False
    media, *params = (part.strip().lower() for part in content_type.split(";"))
    if media != "application/json":
        return False
    for param in params:
        name, _, value = param.partition("=")
        if name.strip() != "charset" or value.strip().strip('"') not in ("utf-8", "utf8"):
            return False
    return True


def _printable(value: str) -> str:
    return repr(value[:100])


class RequestGate:
    """ASGI middleware: 400 for a foreign `Host`, 403 for a foreign `Origin`, 415 for a POST that is not JSON."""

    def __init__(self, app: ASGIApp, hosts_from: Callable[[], frozenset[str]] | None = None) -> None:
        self.app = app
        self._hosts_from = hosts_from
        self._hosts: frozenset[str] | None = None

    def hosts(self) -> frozenset[str]:
        # Resolved at the first request, in the worker, so importing the service reads no settings.
        if self._hosts is None:
            self._hosts = self._hosts_from() if self._hosts_from else frozenset()
        return self._hosts

    def _allowed_host(self, host: str) -> bool:
        name = host_name(host)
        hosts = self.hosts()
        return is_loopback(name) or name in hosts or "*" in hosts

    def refusal(self, scope: Scope) -> tuple[int, str] | None:
        """The status and reason this request is refused with, or None to let it through."""
        host = _header(scope, b"host")
        if host is not None and not self._allowed_host(host):
            return 400, (
                f"Host {_printable(host)} is not a name this service answers to: add it to "
                "ADVOCACY_ALLOWED_HOSTS (comma-separated) if clients reach the service by that name"
            )
        if scope.get("method", "GET") in _NOT_WRITES:
            return None
        origin = _header(scope, b"origin")
        if origin is not None and (host is None or urlsplit(origin.strip()).netloc.lower() != host.strip().lower()):
            return 403, (
                f"cross-origin request refused: Origin {_printable(origin)} is not this service's own page; "
                "call the API from a server, or from the page the service serves"
            )
        content_type = _header(scope, b"content-type")
        if not json_media_type(content_type):
            given = "no Content-Type" if content_type is None else f"Content-Type {_printable(content_type)}"
            return 415, f"{given}: this route takes a JSON body, sent with 'Content-Type: application/json'"
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("path", "") not in OPEN_PATHS:
            refused = self.refusal(scope)
            if refused is not None:
                status, message = refused
                await send_json(send, status, {"error": message})
                return
        await self.app(scope, receive, send)
