"""The few pieces of ASGI 3 plumbing the dashboard needs, without a web framework.

Why no framework: the dashboard is a handful of routes mounted inside someone else's app (or
our health app); a dependency on Starlette for that would be heavier than the code below.

Every response carries the headers that make injected markup harmless even if an escaping
bug slipped in: ``Content-Security-Policy`` (no inline script, nothing from other origins)
and ``X-Content-Type-Options: nosniff``.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

__all__ = [
    "CSP",
    "Receive",
    "Request",
    "Response",
    "Scope",
    "Send",
    "json_response",
    "read_body",
    "route_path",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

# default-src 'self' forbids inline scripts and styles and every other origin; the rest closes
# what default-src does not cover (<base>, framing, form posts).
CSP = "default-src 'self'; base-uri 'none'; frame-ancestors 'none'; form-action 'none'"
MAX_BODY = 64 * 1024

_SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
)


class BodyTooLarge(Exception):
    """The request body exceeds :data:`MAX_BODY`."""


@dataclass(frozen=True, slots=True)
class Response:
    """A complete response: status, body bytes, content type and extra headers."""

    status: int
    body: bytes
    content_type: str
    headers: tuple[tuple[str, str], ...] = ()
    cache: str = "no-store"

    async def send(self, send: Send) -> None:
        headers = [
            (b"content-type", self.content_type.encode()),
            (b"content-length", str(len(self.body)).encode()),
            (b"cache-control", self.cache.encode()),
            *_SECURITY_HEADERS,
            *((k.lower().encode(), v.encode("latin-1")) for k, v in self.headers),
        ]
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": self.body})


def json_response(status: int, data: Any, *headers: tuple[str, str]) -> Response:
    """``data`` as JSON (non-JSON values such as custom payload objects become strings)."""
    body = json.dumps(data, default=str, ensure_ascii=False, allow_nan=False).encode()
    return Response(status, body, "application/json", tuple(headers))


@dataclass(frozen=True, slots=True)
class Request:
    """What a handler needs from the scope: method, path below the mount point, query."""

    method: str
    path: str
    root_path: str
    query: dict[str, str] = field(default_factory=dict)
    authorization: bytes | None = None

    @classmethod
    def from_scope(cls, scope: Scope) -> Request:
        raw_query = scope.get("query_string", b"").decode("latin-1")
        query = {k: v[-1] for k, v in parse_qs(raw_query, keep_blank_values=True).items()}
        auth = None
        for name, value in scope.get("headers", ()):
            if name.lower() == b"authorization":
                auth = bytes(value)
        root = str(scope.get("root_path", "")).rstrip("/")
        return cls(
            method=str(scope["method"]).upper(),
            path=route_path(scope),
            root_path=root,
            query=query,
            authorization=auth,
        )


def route_path(scope: Scope) -> str:
    """The request path relative to the mount point, always starting with ``/``.

    ASGI servers and routers disagree on whether ``scope["path"]`` still includes
    ``scope["root_path"]`` (uvicorn >= 0.26 and Starlette's ``Mount`` keep it, older ones
    strip it), so the prefix is removed only when present.

    Example::

        route_path({"root_path": "/dashboard", "path": "/dashboard/api/config"})  # /api/config
        route_path({"root_path": "/dashboard", "path": "/api/config"})  # /api/config
    """
    path = str(scope.get("path", "/"))
    root = str(scope.get("root_path", "")).rstrip("/")
    if root and (path == root or path.startswith(root + "/")):
        path = path[len(root) :]
    return path or "/"


async def read_body(receive: Receive) -> bytes:
    """The whole request body; raises :class:`BodyTooLarge` beyond :data:`MAX_BODY` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = bytes(message.get("body", b""))
        size += len(chunk)
        if size > MAX_BODY:
            raise BodyTooLarge(f"request body is larger than {MAX_BODY} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)
