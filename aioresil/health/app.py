"""The health app: liveness, readiness, breakers, DLQ and Prometheus metrics, as plain ASGI 3.

Why plain ASGI: no web framework to install or keep compatible; the app mounts under
Starlette/FastAPI (``app.mount("/ops", health_app(...))``) and uvicorn serves it directly.

Routes (``GET`` and ``HEAD``; any other method gets 405 with an ``Allow`` header, unknown
paths 404):

* ``/health``: liveness. Never touches Redis, so a Redis outage never makes an orchestrator
  restart every pod.
* ``/health/ready``: checks each backend can take writes (a Redis backend: its health state,
  then a small write with a TTL, so ``OOM`` and ``READONLY`` are caught where a ``PING``
  passes); 503 with the error's class and message (never a URL or password) when one cannot.
  Each entry of ``backends`` has two fields that answer two questions: ``status``
  (``healthy``/``unhealthy``) is this request's write check; ``state`` is the backend's
  connection state machine (``healthy``/``unavailable``/``recovering``, see
  :mod:`aioresil.backends.backend_health`) as that check left it. So a dead Redis reads
  ``unhealthy``/``unavailable``, while a Redis that answers but refuses writes (``OOM``,
  ``READONLY``) reads ``unhealthy`` with ``state`` ``healthy``: reachable, not writable.
* ``/health/circuit-breakers``: every breaker's statistics (one Redis round trip for all),
  a summary; ``degraded`` (200) while a circuit is open or half-open, ``unhealthy`` (503)
  for an open one when ``open_circuit_is_unhealthy``.
* ``/health/dlq``: :meth:`~aioresil.DeadLetterQueue.health`; 503 when ``unhealthy``.
* ``/metrics``: Prometheus text 0.0.4 (see :mod:`aioresil.health.metrics`). Always 200:
  while Redis is unavailable the series it cannot read are left out, ``aioresil_backend_up``
  says so, and each breaker's state is the one this process sees.

Every route answers within ``timeout`` seconds (2 by default): a route whose backend read
has not finished by then answers 503 saying so (``/metrics``: the local series).

JSON is ``application/json``; a client whose ``Accept`` asks for ``application/health+json``
gets that type with ``status`` as ``pass``/``warn``/``fail`` (plus ``serviceId`` and
``version``), the draft "Health Check Response Format for HTTP APIs". Admin actions exist only
with an ``admin_token`` (see :mod:`aioresil.health.admin`).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from .._version import __version__
from ..core.states import CircuitState
from ..web.admin import AdminApi
from ..web.asgi import AdminToken, lifespan, send_response
from .admin import Reply
from .dlq import dlq_health
from .metrics import CONTENT_TYPE as METRICS_TYPE
from .metrics import Monotonic, collect_snapshot, local_snapshot, render_lines
from .rows import circuits_json_parts

if TYPE_CHECKING:
    from ..registry import BreakerRegistry
    from ..stores.dlq import DeadLetterQueue, Handler
    from .instruments import CallMetrics

__all__ = ["HealthApp", "health_app"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

JSON_TYPE = b"application/json"
HEALTH_JSON_TYPE = b"application/health+json"
READY_TIMEOUT = 2.0
_HEALTH_STATUS = {"healthy": "pass", "degraded": "warn", "unhealthy": "fail"}
_URL_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://\S+")
_CACHEABLE = frozenset({"/health/circuit-breakers", "/health/dlq", "/metrics"})
Rendered = tuple[int, bytes, tuple[bytes, ...]]
"""``(status, content type, body chunks)``: large bodies travel as several chunks."""


def _now() -> str:
    return datetime.now(UTC).isoformat()


class HealthApp:
    """The ASGI application :func:`health_app` returns (see the module docstring)."""

    def __init__(
        self,
        *,
        registry: BreakerRegistry | None,
        dlq: DeadLetterQueue | None,
        backend: Any,
        service: str,
        version: str,
        dlq_warning_threshold: int,
        dlq_critical_threshold: int,
        open_circuit_is_unhealthy: bool,
        admin_token: str | None,
        dlq_retry_handler: Handler | None,
        cache_ttl: float = 0.0,
        dashboard: bool = False,
        call_metrics: CallMetrics | None = None,
        timeout: float = READY_TIMEOUT,
    ) -> None:
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not 0 < timeout < float("inf")
        ):
            raise ValueError(f"timeout must be a finite number of seconds > 0, got {timeout!r}")
        self.timeout = float(timeout)
        if not isinstance(service, str) or not service:
            raise ValueError(f"service must be a non-empty str, got {service!r}")
        if not 0 <= dlq_warning_threshold <= dlq_critical_threshold:
            raise ValueError(
                "need 0 <= dlq_warning_threshold <= dlq_critical_threshold, got "
                f"{dlq_warning_threshold} and {dlq_critical_threshold}"
            )
        if isinstance(cache_ttl, bool) or not isinstance(cache_ttl, int | float) or cache_ttl < 0:
            raise ValueError(f"cache_ttl must be >= 0 seconds, got {cache_ttl!r}")
        self.cache_ttl = float(cache_ttl)
        self._cache: dict[tuple[str, bool], tuple[float, Rendered]] = {}
        self._inflight: dict[tuple[str, bool], asyncio.Task[Rendered]] = {}
        self.registry = registry
        self.dlq = dlq
        self.call_metrics = call_metrics
        self._monotonic = Monotonic()
        self._backend = backend
        self.service = service
        self.version = version
        self.dlq_warning_threshold = dlq_warning_threshold
        self.dlq_critical_threshold = dlq_critical_threshold
        self.open_circuit_is_unhealthy = open_circuit_is_unhealthy
        self.backends: list[Any] = []
        for candidate in (
            backend,
            getattr(registry, "backend", None),
            getattr(dlq, "backend", None),
        ):
            if candidate is not None and all(candidate is not b for b in self.backends):
                self.backends.append(candidate)
        self._secrets = _secrets_of(self.backends)
        self.admin = AdminApi(
            token=None if admin_token is None else AdminToken(admin_token),
            registry=registry,
            dlq=dlq,
            retry_handler=dlq_retry_handler,
        )
        self.dashboard: Any = None
        if dashboard:
            from ..dashboard import dashboard_app

            # The same token guards the dashboard's actions; without one it is read-only.
            self.dashboard = dashboard_app(
                registry=registry,
                dlq=dlq,
                admin_token=admin_token,
                retry_handler=dlq_retry_handler,
                title=service,
            )
        self._routes: dict[str, Callable[[], Awaitable[Reply]]] = {
            "/health": self._live,
            "/health/ready": self._ready,
            "/health/circuit-breakers": self._breakers,
            "/health/dlq": self._dlq,
            "/metrics": self._metrics,
        }

    # ------------------------------------------------------------------ ASGI

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await lifespan(receive, send)
            return
        if kind != "http":
            return  # websockets: not ours; closing without accepting refuses them
        path: str = scope["path"]
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        if self.dashboard is not None and (path == "/dashboard" or path.startswith("/dashboard/")):
            # Mounted: the dashboard sees its own root path, as under Starlette's Mount.
            if path == "/dashboard":
                location = f"{root}/dashboard/".encode()
                await _send(send, 308, b"", b"text/plain", ((b"location", location),))
                return
            await self.dashboard({**scope, "root_path": f"{root}/dashboard"}, receive, send)
            return
        path = path.rstrip("/") or "/"
        method: str = scope["method"]
        headers: list[tuple[bytes, bytes]] = scope.get("headers", [])
        route = self._routes.get(path)
        if route is not None:
            if method not in ("GET", "HEAD"):
                await _reply(send, Reply(405, {"error": f"{method} not allowed"}, _ALLOW_GET))
                return
            flavour = self._flavour(headers)
            bounded = self._bounded(path, route)
            if path in _CACHEABLE:
                status, content_type, body = await self._shared(path, bounded, flavour)
            else:
                status, content_type, body = _render(await bounded(), flavour)
            await _send(send, status, body, content_type, (), head=method == "HEAD")
            return
        if self.admin.enabled and path.startswith("/admin/"):
            segments = [unquote(s) for s in _raw_path(scope, root).split("/")[2:]]
            try:
                answer = await self.admin.handle(
                    method,
                    segments,
                    query=scope.get("query_string", b""),
                    headers=headers,
                    receive=receive,
                    base=f"{root}/admin",
                )
            except Exception as exc:  # Redis down, corrupt entry: 503, never a 500
                answer = None
                await _reply(send, self._failure(exc))
                return
            if answer is not None:
                if answer.status < 400:
                    self._cache.clear()  # the next read shows what the action did
                await _reply(send, Reply(answer.status, answer.body, answer.headers))
                return
        await _reply(send, Reply(404, {"error": "not found", "path": path[:200]}))

    def _flavour(self, headers: list[tuple[bytes, bytes]]) -> tuple[str, str] | None:
        for key, value in headers:
            if key.lower() == b"accept" and HEALTH_JSON_TYPE in value.lower():
                return (self.service, self.version)
        return None

    async def _shared(
        self,
        path: str,
        route: Callable[[], Awaitable[Reply]],
        flavour: tuple[str, str] | None,
    ) -> Rendered:
        """One backend read for every request that arrives while it runs (and for
        ``cache_ttl`` seconds after it, when set): a thousand probes at once cost one read."""
        key = (path, flavour is not None)
        if self.cache_ttl:
            cached = self._cache.get(key)
            if cached is not None and time.monotonic() < cached[0]:
                return cached[1]
        task = self._inflight.get(key)
        if task is None:

            async def produce() -> Rendered:
                try:
                    rendered = _render(await route(), flavour)
                    if self.cache_ttl:
                        # joined once for every request the cache answers: one send each
                        status, content_type, chunks = rendered
                        if len(chunks) > 1:
                            rendered = (status, content_type, (b"".join(chunks),))
                        self._cache[key] = (time.monotonic() + self.cache_ttl, rendered)
                    return rendered
                finally:
                    del self._inflight[key]

            task = self._inflight[key] = asyncio.ensure_future(produce())
        # shield: a client that disconnects does not cancel the read the others wait for
        return await asyncio.shield(task)

    def _bounded(
        self, path: str, route: Callable[[], Awaitable[Reply]]
    ) -> Callable[[], Awaitable[Reply]]:
        """``route`` cut at ``timeout`` seconds: a slow backend never holds a probe longer."""

        async def run() -> Reply:
            try:
                return await asyncio.wait_for(route(), self.timeout)
            except TimeoutError:
                if path == "/metrics":
                    return self._local_metrics(f"backend reads timed out after {self.timeout:g}s")
                error = f"timed out after {self.timeout:g}s waiting for the backend"
                return Reply(503, {"status": "unhealthy", "timestamp": _now(), "error": error})

        return run

    def _local_metrics(self, why: str) -> Reply:
        """What ``/metrics`` knows without the backend (its reads timed out)."""
        snapshot = local_snapshot(
            registry=self.registry, dlq=self.dlq, backend=self._backend, why=why
        )
        lines = render_lines(snapshot, monotonic=self._monotonic, calls=self.call_metrics)
        lines.insert(0, f"# aioresil: serving local values only: {self._safe_error_text(why)}")
        return Reply(200, _Text(lines))

    # ------------------------------------------------------------------ routes

    async def _live(self) -> Reply:
        return Reply(
            200,
            {
                "status": "healthy",
                "timestamp": _now(),
                "service": self.service,
                "version": self.version,
            },
        )

    async def _ready(self) -> Reply:
        checks: list[dict[str, Any]] = []
        healthy = True
        for backend in self.backends:
            check: dict[str, Any] = {"kind": type(backend).__name__, "status": "healthy"}
            # a write check, not a PING: a Redis out of memory still answers PING
            try:
                await asyncio.wait_for(backend.check_writable(), self.timeout)
            except Exception as exc:
                healthy = False
                check["status"] = "unhealthy"
                check["error"] = self._safe_error(exc)
            health = backend.health
            if health is not None:
                # Read after the check: the check that finds Redis gone is what marks the
                # backend unavailable, so a state read before it said "healthy" in the same
                # body as "status": "unhealthy".
                check["state"] = health.state.value
            checks.append(check)
        body = {
            "status": "healthy" if healthy else "unhealthy",
            "timestamp": _now(),
            "backends": checks,
        }
        return Reply(200 if healthy else 503, body)

    async def _breakers(self) -> Reply:
        try:
            states, circuits = await _circuits(self.registry)
        except Exception as exc:
            return self._failure(exc)
        open_ = half_open = 0
        opened, forced, trial = CircuitState.OPEN, CircuitState.FORCED_OPEN, CircuitState.HALF_OPEN
        for state in states:  # identity tests: an Enum member's hash runs Python code
            if state is opened or state is forced:
                open_ += 1
            elif state is trial:
                half_open += 1
        # A breaker on its local fallback (fail_open) reads fine while Redis is down: say so.
        down = [
            {"backend": h.name, "state": h.state.value, "error": self._safe_error_text(s.reason)}
            for h in (b.health for b in self.backends)
            if h is not None and not (s := h.stats()).up
        ]
        if open_ and self.open_circuit_is_unhealthy:
            status, code = "unhealthy", 503
        elif open_ or half_open or down:
            status, code = "degraded", 200
        else:
            status, code = "healthy", 200
        body = {
            "status": status,
            "timestamp": _now(),
            **({"backends_unavailable": down} if down else {}),
            # pre-encoded: one format string per breaker instead of a dict and json.dumps
            "circuit_breakers": circuits,
            "summary": {
                "total_breakers": len(states),
                "open_circuits": open_,
                "half_open_circuits": half_open,
                "closed_circuits": len(states) - open_ - half_open,
                "all_healthy": not (open_ or half_open),
            },
        }
        return Reply(code, body)

    async def _dlq(self) -> Reply:
        if self.dlq is None:
            return Reply(404, {"error": "no dead letter queue is configured"})
        try:
            body = await dlq_health(
                self.dlq,
                warning_threshold=self.dlq_warning_threshold,
                critical_threshold=self.dlq_critical_threshold,
            )
        except Exception as exc:
            return self._failure(exc)
        return Reply(503 if body["status"] == "unhealthy" else 200, body)

    async def _metrics(self) -> Reply:
        # Never a 503: a backend that cannot be read leaves its series out and says so
        # (aioresil_backend_up, aioresil_metrics_source_up); this process's series stay.
        snapshot = await collect_snapshot(
            registry=self.registry,
            dlq=self.dlq,
            dlq_warning_threshold=self.dlq_warning_threshold,
            dlq_critical_threshold=self.dlq_critical_threshold,
            backend=self._backend,
            rows=False,
        )
        lines = render_lines(snapshot, monotonic=self._monotonic, calls=self.call_metrics)
        if snapshot.error is not None:
            why = self._safe_error_text(snapshot.error)
            lines.insert(0, f"# aioresil: serving local values only: {why}")
        return Reply(200, _Text(lines))

    # ------------------------------------------------------------------ errors

    def _failure(self, exc: Exception) -> Reply:
        return Reply(
            503, {"status": "unhealthy", "timestamp": _now(), "error": self._safe_error(exc)}
        )

    def _safe_error(self, exc: BaseException) -> str:
        """``"Class: message"`` with any URL, password or user name blanked out."""
        return self._safe_error_text(f"{type(exc).__name__}: {exc}")

    def _safe_error_text(self, text: str) -> str:
        text = _URL_RE.sub("<url>", text.replace("\n", " "))
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text[:500]

    def __repr__(self) -> str:
        return f"HealthApp(service={self.service!r}, admin={self.admin.enabled})"


_ALLOW_GET = ((b"allow", b"GET, HEAD"),)


async def _circuits(registry: BreakerRegistry | None) -> tuple[list[CircuitState], RawJson]:
    """Every breaker's state and the ``circuit_breakers`` JSON, written straight from one
    registry read (one round trip on Redis; when the backend cannot answer, each breaker's
    own policy answers: its local fallback or an error)."""
    if registry is None:
        return [], RawJson("{}")
    readings = await registry.readings(fallback=True)
    return [rec.state for _, (rec, _, _) in readings], RawJson(circuits_json_parts(readings))


def _secrets_of(backends: list[Any]) -> list[str]:
    """Passwords and user names of the backends' Redis connections (never shown)."""
    found: list[str] = []
    for backend in backends:
        pool = getattr(getattr(backend, "client", None), "connection_pool", None)
        kwargs = getattr(pool, "connection_kwargs", None) or {}
        for key in ("password", "username"):
            value = kwargs.get(key)
            if isinstance(value, str) and value:
                found.append(value)
    return sorted(set(found), key=len, reverse=True)


def _raw_path(scope: Scope, root: str) -> str:
    raw = scope.get("raw_path")
    path = raw.decode("latin-1") if isinstance(raw, bytes) else scope["path"]
    path = path.split("?", 1)[0]
    if root and path.startswith(root):
        path = path[len(root) :]
    return path.rstrip("/")


class RawJson:
    """JSON text spliced into a body as it is (built by :func:`~.rows.circuits_json_parts`):
    one string, or pieces that the body joins in the same copy as the rest of it."""

    __slots__ = ("parts",)

    def __init__(self, text: str | Sequence[str]) -> None:
        self.parts: Sequence[str] = (text,) if isinstance(text, str) else text


def _encode(body: Any) -> bytes:
    """``body`` as compact JSON, :class:`RawJson` values spliced in as they are."""
    return b"".join(_encode_chunks(body))


def _encode_chunks(body: Any) -> tuple[bytes, ...]:
    raw: list[RawJson] = []
    nonce = ""

    def default(value: Any) -> Any:
        nonlocal nonce
        if isinstance(value, RawJson):
            # a placeholder string, swapped for the fragment below; the random part keeps a
            # body string that happens to look like it from being swapped instead
            nonce = nonce or os.urandom(8).hex()
            raw.append(value)
            return f"raw-{nonce}-{len(raw) - 1}"
        return str(value)

    text = json.dumps(body, separators=(",", ":"), default=default)
    if not raw:
        return (text.encode(),)
    # The small body's pieces around the fragments, encoded a few hundred at a time: a
    # fragment may be most of a large body, and copying it whole (once to join, once to
    # encode) costs more than the rest of the request.
    pieces: list[str] = []
    rest = text
    for i, fragment in enumerate(raw):
        before, found, rest = rest.partition(f'"raw-{nonce}-{i}"')
        if not found:  # pragma: no cover - json.dumps writes every placeholder, in order
            raise AssertionError("a raw JSON placeholder went missing")
        pieces.append(before)
        pieces += fragment.parts
    pieces.append(rest)
    return _chunks(pieces, "")


class _Text:
    """A text body as lines (``/metrics``): encoded by :func:`_chunks`, never joined whole."""

    __slots__ = ("lines",)

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines


CHUNK_PIECES = 256
"""Pieces per body chunk (tens of KB: below the size from which the C allocator maps fresh
pages for each buffer and unmaps them after)."""


def _chunks(pieces: list[str], separator: str) -> tuple[bytes, ...]:
    """``separator.join(pieces).encode()`` as several chunks."""
    if len(pieces) <= CHUNK_PIECES:
        return (separator.join(pieces).encode(),)
    out = []
    for start in range(0, len(pieces), CHUNK_PIECES):
        part = pieces[start : start + CHUNK_PIECES]
        if start + CHUNK_PIECES < len(pieces):
            part.append("")  # the separator between this chunk and the next
        out.append(separator.join(part).encode())
    return tuple(out)


async def _send(
    send: Send,
    status: int,
    body: bytes | tuple[bytes, ...],
    content_type: bytes,
    extra: tuple[tuple[bytes, bytes], ...],
    *,
    head: bool = False,
) -> None:
    await send_response(send, status, body, content_type, extra, head=head)


def _render(reply: Reply, flavour: tuple[str, str] | None = None) -> Rendered:
    """``(status, content type, body chunks)``: text bodies are metrics, dicts JSON."""
    body = reply.body
    if isinstance(body, _Text):
        return reply.status, METRICS_TYPE.encode(), _chunks(body.lines, "\n")
    if isinstance(body, str):
        return reply.status, METRICS_TYPE.encode(), (body.encode(),)
    content_type = JSON_TYPE
    if flavour is not None and isinstance(body, dict) and body.get("status") in _HEALTH_STATUS:
        body = {
            **body,
            "status": _HEALTH_STATUS[body["status"]],
            "serviceId": flavour[0],
            "version": flavour[1],
        }
        content_type = HEALTH_JSON_TYPE
    return reply.status, content_type, _encode_chunks(body)


async def _reply(send: Send, reply: Reply) -> None:
    status, content_type, body = _render(reply)
    await _send(send, status, body, content_type, reply.headers)


def health_app(
    *,
    registry: BreakerRegistry | None = None,
    dlq: DeadLetterQueue | None = None,
    backend: Any = None,
    service: str = "aioresil",
    version: str = __version__,
    dlq_warning_threshold: int = 10,
    dlq_critical_threshold: int = 50,
    open_circuit_is_unhealthy: bool = False,
    admin_token: str | None = None,
    dlq_retry_handler: Handler | None = None,
    cache_ttl: float = 0.0,
    dashboard: bool = False,
    call_metrics: CallMetrics | None = None,
    timeout: float = READY_TIMEOUT,
) -> HealthApp:
    """A plain ASGI 3 app serving health, readiness, breakers, DLQ and metrics.

    Args:
        registry: the breakers to report (``/health/circuit-breakers``, ``/metrics``).
        dlq: the dead letter queue to report (``/health/dlq``, ``/metrics``).
        backend: pinged by ``/health/ready``, besides the registry's and the DLQ's backends.
        service: reported by ``/health`` (``serviceId`` in ``health+json``).
        version: reported by ``/health``.
        dlq_warning_threshold: entries from which ``/health/dlq`` is ``degraded``.
        dlq_critical_threshold: entries from which it is ``unhealthy`` (503).
        open_circuit_is_unhealthy: an open circuit makes ``/health/circuit-breakers``
            ``unhealthy`` (503) instead of ``degraded`` (200).
        admin_token: enables the ``/admin/...`` routes (:mod:`aioresil.health.admin`, the
            admin API of :mod:`aioresil.web.admin`), at least 16 printable ASCII characters;
            ``None`` (default): no admin routes at all.
        dlq_retry_handler: ``async handler(dead_letter)`` run by ``POST
            /admin/dlq/entries/<id>/retry``; without it that route answers 400 saying so.
        cache_ttl: seconds a breakers, DLQ or metrics answer is reused. ``0`` (default):
            every request reads the backend, but requests arriving while a read runs share
            it. With thousands of breakers and frequent probes, ``1.0`` bounds the backend
            load to one read per second per endpoint, whatever the probe rate.
        dashboard: also serve the live dashboard (:mod:`aioresil.dashboard`) at
            ``/dashboard/``; its actions are enabled by the same ``admin_token``.
        call_metrics: this process's call-duration histograms
            (:class:`~aioresil.health.instruments.CallMetrics`), rendered by ``/metrics``.
        timeout: seconds within which every route answers (2 by default); a backend read
            still running then gives 503 saying so (``/metrics``: its local series).

    Example::

        app = health_app(registry=registry, dlq=dlq, open_circuit_is_unhealthy=True)
        # uvicorn module:app, or Starlette: Mount("/ops", app=app)
    """
    return HealthApp(
        registry=registry,
        dlq=dlq,
        backend=backend,
        service=service,
        version=version,
        dlq_warning_threshold=dlq_warning_threshold,
        dlq_critical_threshold=dlq_critical_threshold,
        open_circuit_is_unhealthy=open_circuit_is_unhealthy,
        admin_token=admin_token,
        dlq_retry_handler=dlq_retry_handler,
        cache_ttl=cache_ttl,
        dashboard=dashboard,
        call_metrics=call_metrics,
        timeout=timeout,
    )
