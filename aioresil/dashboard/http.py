"""The few pieces of ASGI 3 plumbing the dashboard needs, without a web framework.

Why no framework: the dashboard is a handful of routes mounted inside someone else's app (or
our health app); a dependency on Starlette for that would be heavier than the code below.

Every response carries the headers that make injected markup harmless even if an escaping
bug slipped in: ``Content-Security-Policy`` (no inline script, nothing from other origins)
and ``X-Content-Type-Options: nosniff``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, quote, unquote

from ..web.asgi import MAX_BODY, BodyTooLarge, Receive, Scope, Send, json_bytes, read_body
from ..web.asgi import Message as Message

__all__ = [
    "CSP",
    "MAX_BODY",
    "BodyTooLarge",
    "Receive",
    "Request",
    "Response",
    "Scope",
    "Send",
    "admin_segments",
    "json_response",
    "read_body",
    "route_path",
]

# default-src 'self' forbids inline scripts and styles and every other origin; the rest closes
# what default-src does not cover (<base>, framing, form posts).
CSP = "default-src 'self'; base-uri 'none'; frame-ancestors 'none'; form-action 'none'"

_SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
)


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
    return Response(status, json_bytes(data, compact=False), "application/json", tuple(headers))


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


def admin_segments(scope: Scope, prefix: str) -> list[str] | None:
    """The percent-decoded path segments after ``prefix`` (below the mount point), from the
    raw path so that a ``%2F`` inside a name stays inside its segment; ``None`` when the
    path is not under ``prefix``."""
    raw = scope.get("raw_path")
    path = raw.decode("latin-1") if isinstance(raw, bytes) else quote(str(scope.get("path", "")))
    path = path.split("?", 1)[0]
    root = quote(str(scope.get("root_path", "")).rstrip("/"))
    if root and (path == root or path.startswith(root + "/")):
        path = path[len(root) :]
    if not path.startswith(prefix + "/"):
        return None
    return [unquote(part) for part in path[len(prefix) + 1 :].split("/")]
