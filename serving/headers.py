"""Headers on every answer of the service: its page is never shown inside another site's frame.

A page that can be framed by any site can be overlaid with that site's own buttons (clickjacking):
a CSM clicks what looks like the other site and records an ask or makes a plan here. Every answer
(the page, its scripts and styles, the API, the refusals) therefore says `frame-ancestors 'none'`
in its Content-Security-Policy, merged into one the answer already has, and `X-Frame-Options: DENY`
for browsers that predate frame-ancestors.
"""

from __future__ import annotations

from collections.abc import Iterable

from serving.auth import ASGIApp, Message, Receive, Scope, Send

FRAME_ANCESTORS = b"frame-ancestors 'none'"
_CSP = b"content-security-policy"
_XFO = b"x-frame-options"


def _no_framing(policy: bytes) -> bytes:
    """`policy` with its frame-ancestors directive, if any, replaced by `frame-ancestors 'none'`."""
    kept = [d.strip() for d in policy.split(b";") if d.strip() and d.split()[0].lower() != b"frame-ancestors"]
    return b"; ".join([*kept, FRAME_ANCESTORS])


def framing_headers(headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """An answer's headers with framing forbidden: every CSP gets frame-ancestors 'none' (one is
    added if there is none), and X-Frame-Options is DENY."""
    out: list[tuple[bytes, bytes]] = []
    has_policy = False
    for name, value in headers:
        lower = bytes(name).lower()
        if lower == _XFO:
            continue
        if lower == _CSP:
            has_policy = True
            value = _no_framing(bytes(value))
        out.append((name, value))
    if not has_policy:
        out.append((_CSP, FRAME_ANCESTORS))
    out.append((_XFO, b"DENY"))
    return out


class FrameGuard:
    """ASGI middleware: the headers of `framing_headers` on every HTTP answer that passes through it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def framed(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": framing_headers(message.get("headers", ()))}
            await send(message)

        await self.app(scope, receive, framed)
