"""The dashboard's ASGI application: one HTML page, its static files and a small JSON API.

The page is static (package data, no build step, no CDN) and fetches everything it shows
from the JSON routes below, every second. Routes are relative to the mount point
(``scope["root_path"]``), so the same app works standalone at ``/`` and mounted under
``/dashboard`` by :func:`aioresil.health_app` or a Starlette ``Mount``.

Read-only routes::

    GET  /                              the page
    GET  /static/dashboard.js|.css|favicon.svg
    GET  /api/config                    what the page may show (admin actions available?)
    GET  /api/breakers                  [stats dict + "config" thresholds, ...] sorted by name
    GET  /api/dlq/stats                 DeadLetterQueue.stats() + oldest_age_seconds + redrive
    GET  /api/dlq/entries?type=&cursor=&limit=   one page, newest first (summaries)
    GET  /api/dlq/entries/{id}          one entry in full: error, traceback, payload

Admin routes are the one admin API of :mod:`aioresil.web.admin` (the health app serves the
same paths under ``/admin``); they exist only when ``admin_token`` is set (404 otherwise) and
need ``Authorization: Bearer <token>`` (401 otherwise; :class:`aioresil.web.asgi.AdminToken`)::

    POST   /api/breakers/{name}/reset
    POST   /api/breakers/{name}/force_open
    POST   /api/dlq/entries/{id}/retry  runs ``retry_handler`` under a lease (400 without one)
    DELETE /api/dlq/entries/{id}
    POST   /api/dlq/purge               {"older_than_seconds": N, "task_type": optional}

The bearer header (not a cookie) is what makes cross-site request forgery moot: a foreign
page cannot make the browser attach it.
"""

from __future__ import annotations

import html
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from importlib.resources import files
from typing import Any

from ..clock import Clock, SystemClock
from ..exceptions import BackendError, CorruptStateError
from ..registry import BreakerRegistry
from ..stores.dlq import DeadLetterQueue, Handler
from ..stores.dlq_records import DeadLetter
from ..web.admin import AdminApi
from ..web.asgi import AdminToken, lifespan
from .http import Receive, Request, Response, Scope, Send, admin_segments, json_response

__all__ = ["DashboardApp", "dashboard_app"]

_STATIC_TYPES = {
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
_MAX_LIST_MESSAGE = 300
_CONFIG_FIELDS = (
    "failure_threshold",
    "failure_rate_threshold",
    "minimum_calls",
    "window_size",
    "window_duration",
    "slow_call_rate_threshold",
    "recovery_timeout",
    "half_open_max_calls",
    "success_threshold",
)


class HttpError(Exception):
    """Ends a request with ``status`` and a JSON ``{"error": message}`` body."""

    def __init__(self, status: int, message: str, *headers: tuple[str, str]) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


Endpoint = Callable[[Request, Receive], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class _Route:
    method: str
    admin: bool
    endpoint: Endpoint


def _static(name: str) -> bytes:
    return files("aioresil.dashboard").joinpath("static", name).read_bytes()


def _summary(entry: DeadLetter) -> dict[str, Any]:
    message = entry.error_message
    if len(message) > _MAX_LIST_MESSAGE:
        message = message[:_MAX_LIST_MESSAGE] + "…"
    return {
        "id": entry.id,
        "task_type": entry.task_type,
        "task_id": entry.task_id,
        "error_type": entry.error_type,
        "error_message": message,
        "attempts": entry.attempts,
        "failed_at": entry.failed_at.isoformat(),
        "first_failed_at": entry.first_failed_at.isoformat(),
    }


def _detail(entry: DeadLetter) -> dict[str, Any]:
    return {
        **_summary(entry),
        "error_message": entry.error_message,
        "traceback": entry.traceback,
        "payload": entry.payload,
        "metadata": dict(entry.metadata),
        "idempotency_key": entry.idempotency_key,
    }


class DashboardApp:
    """The dashboard as an ASGI 3 application; build it with :func:`dashboard_app`."""

    def __init__(
        self,
        *,
        registry: BreakerRegistry | None,
        dlq: DeadLetterQueue | None,
        admin_token: str | None,
        retry_handler: Handler | None,
        title: str,
        clock: Clock,
    ) -> None:
        self.registry = registry
        self.dlq = dlq
        self.title = title
        self.retry_handler = retry_handler
        self._clock = clock
        self._token = None if admin_token is None else AdminToken(admin_token)
        self.admin = AdminApi(
            token=self._token, registry=registry, dlq=dlq, retry_handler=retry_handler
        )
        self._index = _static("index.html").decode()
        self._pages: dict[str, bytes] = {}
        self._files = {name: _static(name) for name in _STATIC_TYPES}

    # ------------------------------------------------------------------ ASGI

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
            return
        if kind != "http":
            if kind == "websocket":
                await send({"type": "websocket.close", "code": 1000})
            return
        request = Request.from_scope(scope)
        try:
            response = await self._dispatch(request, receive, scope)
        except HttpError as exc:
            response = json_response(exc.status, {"error": exc.message}, *exc.headers)
        except CorruptStateError as exc:
            # Names the record that could not be decoded; the page shows it instead of a blank.
            response = json_response(500, {"error": str(exc)})
        except BackendError as exc:
            # The exception's text may name the server; say what failed, not where.
            response = json_response(
                503, {"error": f"the backend is unavailable ({type(exc).__name__})"}
            )
        await response.send(send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        await lifespan(receive, send)

    # ------------------------------------------------------------------ routing

    def _routes(self, path: str) -> list[_Route]:
        """Every route whose pattern matches ``path`` (one per method)."""
        if path in ("/", "/index.html"):
            return [_Route("GET", False, self._page)]
        if path.startswith("/static/") and path[8:] in self._files:
            return [_Route("GET", False, self._file)]
        fixed: dict[str, list[_Route]] = {
            "/api/config": [_Route("GET", False, self._config)],
            "/api/breakers": [_Route("GET", False, self._breakers)],
            "/api/dlq/stats": [_Route("GET", False, self._dlq_stats)],
            "/api/dlq/entries": [_Route("GET", False, self._dlq_entries)],
        }
        if path in fixed:
            return fixed[path]
        if path.startswith("/api/dlq/entries/"):
            rest = path[17:]
            if rest and "/" not in rest:
                return [_Route("GET", False, self._dlq_entry)]
        return []

    async def _dispatch(self, request: Request, receive: Receive, scope: Scope) -> Response:
        reads = self._routes(request.path)
        for route in reads:
            if route.method == request.method:
                return await route.endpoint(request, receive)
        segments = admin_segments(scope, "/api")
        admin = self.admin.methods(segments) if segments is not None else {}
        if request.method in admin and segments is not None:
            answer = await self.admin.handle(
                request.method,
                segments,
                query=scope.get("query_string", b""),
                headers=scope.get("headers", []),
                receive=receive,
                base=f"{request.root_path}/api",
            )
            assert answer is not None
            headers = tuple((k.decode(), v.decode("latin-1")) for k, v in answer.headers)
            return json_response(answer.status, answer.body, *headers)
        hidden = (
            not self.admin.enabled
            and segments is not None
            and request.method in (self.admin.routes(segments))
        )
        allowed = {r.method for r in reads} | set(admin)
        if not allowed or hidden:
            # Without a token the admin routes do not exist, whatever else shares their path.
            raise HttpError(404, f"no such route: {request.method} {request.path}")
        allow = ", ".join(sorted(allowed))
        raise HttpError(405, f"{request.method} is not allowed here", ("allow", allow))

    # ------------------------------------------------------------------ page

    async def _page(self, request: Request, receive: Receive) -> Response:
        page = self._pages.get(request.root_path)
        if page is None:
            base = html.escape(request.root_path, quote=True)
            text = self._index.replace("{{base}}", base).replace(
                "{{title}}", html.escape(self.title, quote=True)
            )
            page = text.encode()
            if len(self._pages) < 16:  # one per mount point; the server sets root_path
                self._pages[request.root_path] = page
        return Response(200, page, "text/html; charset=utf-8")

    async def _file(self, request: Request, receive: Receive) -> Response:
        name = request.path[8:]
        return Response(200, self._files[name], _STATIC_TYPES[name], cache="no-cache")

    async def _config(self, request: Request, receive: Receive) -> Response:
        return json_response(
            200,
            {
                "title": self.title,
                "breakers": self.registry is not None,
                "dlq": self.dlq is not None,
                "admin": self._token is not None,
                "retry": self.retry_handler is not None,
            },
        )

    # ------------------------------------------------------------------ breakers

    def _registry(self) -> BreakerRegistry:
        if self.registry is None:
            raise HttpError(404, "no breaker registry is configured")
        return self.registry

    async def _breakers(self, request: Request, receive: Receive) -> Response:
        registry = self._registry()
        stats = await registry.stats()
        rows = []
        for breaker in sorted(registry, key=lambda b: b.name):
            row = stats[breaker.name].to_dict()
            in_force = stats[breaker.name].config or breaker.config  # stored with the breaker
            row["config"] = {name: getattr(in_force, name) for name in _CONFIG_FIELDS}
            rows.append(row)
        return json_response(200, rows)

    # ------------------------------------------------------------------ dead letters

    def _dlq(self) -> DeadLetterQueue:
        if self.dlq is None:
            raise HttpError(404, "no dead letter queue is configured")
        return self.dlq

    async def _dlq_stats(self, request: Request, receive: Receive) -> Response:
        stats = await self._dlq().stats()
        now = self._clock.time()
        oldest = stats.get("oldest_failure")
        age = None
        if oldest is not None:
            age = max(0.0, now - datetime.fromisoformat(oldest).timestamp())
        redrive = None
        dlq = self._dlq()
        from ..stores.dlq_redrive import Redrive

        if Redrive.available(dlq):  # the schedule lives in Redis
            redrive = (await Redrive(dlq).stats()).to_dict()
        body = {**stats, "oldest_age_seconds": age, "now": now, "redrive": redrive}
        return json_response(200, body)

    async def _dlq_entries(self, request: Request, receive: Receive) -> Response:
        dlq = self._dlq()
        task_type = request.query.get("type") or None
        cursor = request.query.get("cursor") or None
        raw_limit = request.query.get("limit") or "50"
        try:
            limit = int(raw_limit)
        except ValueError:
            raise HttpError(400, f"limit must be an integer, got {raw_limit!r}") from None
        try:
            page = await dlq.list(task_type=task_type, limit=limit, cursor=cursor)
        except ValueError as exc:
            raise HttpError(400, str(exc)) from None
        return json_response(
            200,
            {"entries": [_summary(e) for e in page.entries], "next_cursor": page.next_cursor},
        )

    async def _entry(self, request: Request) -> tuple[DeadLetterQueue, str, DeadLetter]:
        dlq = self._dlq()
        entry_id = request.path[17:].removesuffix("/retry")
        entry = await dlq.get(entry_id)
        if entry is None:
            raise HttpError(404, f"no dead letter with id {entry_id!r}")
        return dlq, entry_id, entry

    async def _dlq_entry(self, request: Request, receive: Receive) -> Response:
        _, _, entry = await self._entry(request)
        return json_response(200, _detail(entry))


def dashboard_app(
    *,
    registry: BreakerRegistry | None = None,
    dlq: DeadLetterQueue | None = None,
    admin_token: str | None = None,
    retry_handler: Handler | None = None,
    title: str = "aioresil",
    clock: Clock | None = None,
) -> DashboardApp:
    """A live dashboard of breakers and dead letters, as a plain ASGI 3 application.

    Serve it with uvicorn, or mount it (``root_path`` is honoured) in Starlette/FastAPI. It
    needs no web framework and no network beyond the browser talking to it: the page, its
    script and its stylesheet are package data.

    Args:
        registry: the breakers to show (the registry's own breakers, read together).
        dlq: the dead letter queue to show.
        admin_token: enables the admin routes (reset/force-open breakers, retry/remove/purge
            dead letters), each requiring ``Authorization: Bearer <admin_token>``. ``None``
            (the default) makes the dashboard read-only: the routes do not exist.
        retry_handler: ``await retry_handler(dead_letter)`` re-runs a task for the retry
            action (see :meth:`DeadLetterQueue.retry`); without it retry answers 400.
        title: shown in the page's heading and title.
        clock: time for the "oldest dead letter" age; the DLQ's clock, when it has one.

    Example::

        app = dashboard_app(registry=registry, dlq=dlq, admin_token=os.environ["TOKEN"])
        uvicorn.run(app, host="127.0.0.1", port=8000)
    """
    if registry is not None and not isinstance(registry, BreakerRegistry):
        raise TypeError(f"registry must be a BreakerRegistry, got {type(registry).__name__}")
    if dlq is not None and not isinstance(dlq, DeadLetterQueue):
        raise TypeError(f"dlq must be a DeadLetterQueue, got {type(dlq).__name__}")
    if admin_token is not None:
        AdminToken(admin_token)  # the one rule: >= 16 printable ASCII characters, no spaces
    if retry_handler is not None and not callable(retry_handler):
        raise TypeError("retry_handler must be an async callable taking a DeadLetter")
    if not isinstance(title, str):
        raise TypeError(f"title must be a str, got {type(title).__name__}")
    if clock is None:
        clock = getattr(dlq, "_clock", None) if dlq is not None else None
    return DashboardApp(
        registry=registry,
        dlq=dlq,
        admin_token=admin_token,
        retry_handler=retry_handler,
        title=title,
        clock=clock if clock is not None else SystemClock(),
    )
