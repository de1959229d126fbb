"""Admission control at the door of an ASGI server: answer 503 / 429 with ``Retry-After``
instead of queueing without bound.

``pip install 'aioresil[starlette]'``. Why at the door: a server that accepts every request
while its dependencies slow down builds a queue it can never drain; every request then waits,
times out at the client, and is retried on top. A :class:`~aioresil.Bulkhead` caps the
requests in progress (at most ``max_waiting`` more may wait ``max_wait`` seconds), a
:class:`~aioresil.RateLimiter` caps the rate; what is over the limit is answered at once:

* bulkhead full: **503** ``{"error": "overloaded", ...}`` with ``Retry-After``;
* rate limit exceeded: **429** ``{"error": "rate limited", ...}`` with ``Retry-After`` (the
  seconds until a token is free, rounded up, at least 1).

Limits are per key (``key=`` maps the ASGI scope to a name, e.g. a route group or an API
key's tier; ``None`` exempts the request): each key gets its own bulkhead and rate limiter,
named ``<name>:<key>``. With ``backend=RedisBackend(...)`` both are fleet-wide: every server
process using the same names shares one limit. Keep keys a bounded set.

Two forms::

    app.add_middleware(AdmissionMiddleware, max_concurrent=100, rate=50, per=1.0)   # ASGI

    limit = admission(bulkhead=Bulkhead(10, name="reports"))                           # FastAPI
    @app.get("/report", dependencies=[Depends(limit)])
    async def report() -> dict[str, str]: ...

Mount the health app beside your routes (``Mount("/ops", app=health_app(...))``) and exempt
it with ``key=`` so that an overloaded server still answers its probes.
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

from ..exceptions import BulkheadFullError, RateLimitExceededError
from ..policies.bulkhead import Bulkhead
from ..policies.ratelimit import RateLimiter

__all__ = ["AdmissionMiddleware", "admission", "prefix_key", "retry_after_header"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
KeyFunction = Callable[[Scope], "str | None"]


def retry_after_header(seconds: float | None) -> str:
    """A ``Retry-After`` value: whole seconds, rounded up, at least 1 (``None``: 1)."""
    if seconds is None or not math.isfinite(seconds):
        return "1"
    return str(max(1, math.ceil(seconds)))


def _everything(scope: Scope) -> str | None:
    return "all"


def prefix_key(prefixes: dict[str, str | None], default: str | None = None) -> KeyFunction:
    """A ``key=`` for per-route limits: the name of the longest path prefix that matches.

    Why prefixes and not the path itself: paths carry ids (``/users/42``), and a limit per id
    is an unbounded number of limits; a fixed table of route groups is not. A prefix mapped
    to ``None`` exempts its routes (e.g. the mounted health app).

    Example::

        key = prefix_key({"/reports": "reports", "/api": "api", "/ops": None})
    """
    if not isinstance(prefixes, dict) or not prefixes:
        raise ValueError("prefix_key needs a non-empty {path prefix: key or None} dict")
    for prefix, name in prefixes.items():
        if not isinstance(prefix, str) or not prefix.startswith("/"):
            raise ValueError(f"prefix_key: prefixes must start with '/', got {prefix!r}")
        if name is not None and (not isinstance(name, str) or not name):
            raise ValueError(f"prefix_key: {prefix!r} maps to {name!r}, not a name or None")
    ordered = sorted(prefixes.items(), key=lambda item: len(item[0]), reverse=True)

    def key(scope: Scope) -> str | None:
        path: str = scope.get("path", "")
        for prefix, name in ordered:
            if path == prefix or path.startswith(prefix.rstrip("/") + "/"):
                return name
        return default

    return key


class AdmissionMiddleware:
    """ASGI middleware: a bulkhead and/or a rate limit per key, refusals answered at once.

    Args:
        app: the ASGI app to protect.
        max_concurrent: requests in progress at once per key (``None``: no bulkhead).
        max_waiting: requests that may wait for a slot (0: refuse at once when full).
        max_wait: seconds a waiting request waits before it is refused.
        rate: requests per ``per`` seconds per key (``None``: no rate limit).
        per: the rate's period in seconds.
        burst: requests allowed at once after a quiet spell (``max(1, rate)`` by default).
        key: ``scope -> str | None``: the limit a request counts against; ``None`` exempts
            it. One limit for every request by default.
        backend: ``None`` (this process) or a ``RedisBackend`` (fleet-wide limits).
        name: prefix of the limits' names (their Redis keys on a fleet).
        lease: seconds a fleet slot is held at most (a crashed server frees it then).

    Example::

        app = Starlette(routes=[...])
        app.add_middleware(AdmissionMiddleware, max_concurrent=64, rate=200, per=1.0,
                           key=lambda scope: None if scope["path"].startswith("/ops") else "api")
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_concurrent: int | None = None,
        max_waiting: int = 0,
        max_wait: float | None = None,
        rate: float | None = None,
        per: float = 1.0,
        burst: float | None = None,
        key: KeyFunction | None = None,
        backend: object = None,
        name: str = "admission",
        lease: float = 60.0,
    ) -> None:
        if max_concurrent is None and rate is None:
            raise ValueError("AdmissionMiddleware needs max_concurrent=, rate= or both")
        if key is not None and not callable(key):
            raise TypeError(f"key must be a callable scope -> str | None, got {key!r}")
        self.app = app
        self.name = name
        self._key = key or _everything
        self._backend = backend
        self._bulkhead_args: dict[str, Any] | None = (
            None
            if max_concurrent is None
            else {
                "max_concurrent": max_concurrent,
                "max_waiting": max_waiting,
                "max_wait": max_wait,
                "lease": lease,
            }
        )
        self._rate_args: dict[str, Any] | None = (
            None if rate is None else {"rate": rate, "per": per, "burst": burst}
        )
        self._limits: dict[str, tuple[Bulkhead | None, RateLimiter | None]] = {}
        self._build("check")  # bad limits fail here, at startup, not on the first request

    def _limits_for(self, key: str) -> tuple[Bulkhead | None, RateLimiter | None]:
        limits = self._limits.get(key)
        if limits is None:
            limits = self._limits[key] = self._build(key)
        return limits

    def _build(self, key: str) -> tuple[Bulkhead | None, RateLimiter | None]:
        name = f"{self.name}:{key}"
        bulkhead = (
            None
            if self._bulkhead_args is None
            else Bulkhead(name=name, backend=self._backend, **self._bulkhead_args)
        )
        limiter = (
            None
            if self._rate_args is None
            else RateLimiter(name=name, backend=self._backend, **self._rate_args)
        )
        return bulkhead, limiter

    def limits(self, key: str = "all") -> tuple[Bulkhead | None, RateLimiter | None]:
        """The bulkhead and rate limiter of ``key`` (for statistics and tests)."""
        return self._limits_for(key)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        key = self._key(scope)
        if key is None:
            await self.app(scope, receive, send)
            return
        bulkhead, limiter = self._limits_for(key)
        if limiter is not None:
            try:
                await limiter.acquire()
            except RateLimitExceededError as error:
                await _refuse(send, 429, "rate limited", key, error.retry_after)
                return
        if bulkhead is None:
            await self.app(scope, receive, send)
            return
        try:
            await bulkhead.__aenter__()
        except BulkheadFullError as error:
            await _refuse(send, 503, "overloaded", key, error.retry_after)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            await bulkhead.__aexit__(None, None, None)


async def _refuse(send: Send, status: int, error: str, key: str, retry_after: float | None) -> None:
    header = retry_after_header(retry_after)
    body = json.dumps({"error": error, "limit": key, "retry_after": int(header)}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", header.encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def admission(
    *, bulkhead: Bulkhead | None = None, rate_limiter: RateLimiter | None = None
) -> Callable[[], AsyncIterator[None]]:
    """A FastAPI dependency (``Depends(admission(...))``) with the middleware's answers.

    The request takes a rate-limit token, then a bulkhead slot held while the endpoint runs;
    a refusal raises Starlette's ``HTTPException`` (429 or 503 with ``Retry-After``), which
    FastAPI turns into the response. Share one ``Bulkhead`` between the routes it should cap.

    Example::

        reports = admission(bulkhead=Bulkhead(4, name="reports"),
                            rate_limiter=RateLimiter(10, per=60, name="reports"))

        @app.get("/report", dependencies=[Depends(reports)])
        async def report() -> dict[str, str]: ...
    """
    if bulkhead is None and rate_limiter is None:
        raise ValueError("admission() needs bulkhead=, rate_limiter= or both")
    if bulkhead is not None and not isinstance(bulkhead, Bulkhead):
        raise TypeError(f"bulkhead must be an aioresil.Bulkhead, got {bulkhead!r}")
    if rate_limiter is not None and not isinstance(rate_limiter, RateLimiter):
        raise TypeError(f"rate_limiter must be an aioresil.RateLimiter, got {rate_limiter!r}")
    from starlette.exceptions import HTTPException

    async def dependency() -> AsyncIterator[None]:
        if rate_limiter is not None:
            try:
                await rate_limiter.acquire()
            except RateLimitExceededError as error:
                raise HTTPException(
                    429, "rate limited", {"Retry-After": retry_after_header(error.retry_after)}
                ) from None
        if bulkhead is None:
            yield
            return
        try:
            await bulkhead.__aenter__()
        except BulkheadFullError as error:
            raise HTTPException(
                503, "overloaded", {"Retry-After": retry_after_header(error.retry_after)}
            ) from None
        try:
            yield
        finally:
            await bulkhead.__aexit__(None, None, None)

    return dependency
