"""``ResilientMiddleware``: circuit breakers (and retry, timeout, bulkhead, rate limit) for
every request of an ``aiohttp.ClientSession``, as a client middleware (aiohttp >= 3.12).

``pip install 'aioresil[aiohttp]'``. Example::

    import aiohttp
    from aioresil import BreakerRegistry, Retry
    from aioresil.integrations.aiohttp import ResilientMiddleware

    guard = ResilientMiddleware(registry=BreakerRegistry(backend=redis_backend), retry=Retry(3))
    async with aiohttp.ClientSession(middlewares=(guard,)) as session:
        async with session.get("https://api.example.com/v1/items") as response:
            ...                                   # CircuitOpenError when the circuit is open

The rules are those of :mod:`aioresil.integrations.httpx`: a breaker per
``scheme://host:port`` or per ``key(request)``; connection errors, timeouts, 5xx and 429 are
failures, other statuses successes; ``Retry-After`` on 429/503 waited out by the ``Retry`` and
reported by rejections. A 5xx/429 is judged when its headers arrive; any other answer when its
body ends: read to the end (success), released or closed early (success: the upstream
answered), or cut while reading (failure, the caller's ``aiohttp.ClientPayloadError``). A
bulkhead slot is held until then too. A response dropped without being read, released or
closed is judged by nobody: when it is garbage-collected, its bulkhead slot and half-open
trial permit are given back, counting neither success nor failure.

Why hooks on the response rather than on the session: aiohttp gives a middleware no event at
the end of a body, so the middleware registers a callback for the body's end of stream
(``response.content.on_eof``) and wraps that response's ``release()``/``close()``; a verdict
that needs I/O (a shared breaker) runs as a task of its own, kept until it is done.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiohttp import ClientRequest, ClientResponse
from aiohttp.client_middlewares import ClientHandlerType

from ..breaker import CircuitBreaker
from ..core.config import BreakerConfig
from ..policies.bulkhead import Bulkhead
from ..policies.ratelimit import RateLimiter
from ..policies.retry import Retry
from ..policies.timeout import Timeout
from ..registry import BreakerRegistry
from ._http import (
    Classify,
    FailedResponse,
    GuardCore,
    Judgement,
    release_when_collected,
)

__all__ = ["ResilientMiddleware", "default_key"]


def default_key(request: ClientRequest) -> str:
    """``scheme://host:port`` of the request: one circuit per upstream server."""
    url = request.url
    return f"{url.scheme}://{url.host}:{url.port}"


class ResilientMiddleware(GuardCore):
    """An aiohttp client middleware guarding every request with a breaker per upstream.

    Args:
        registry: where the breakers come from (on a ``RedisBackend``: fleet-wide); a
            private memory registry by default.
        config: the breakers' ``BreakerConfig`` (the registry's default when ``None``).
        key: ``request -> str``, the breaker's name; ``scheme://host:port`` by default.
        retry: an optional :class:`~aioresil.Retry` around each request (outermost).
        timeout: seconds (or a :class:`~aioresil.Timeout`) for one attempt, until headers.
        bulkhead: an optional :class:`~aioresil.Bulkhead`.
        rate_limiter: an optional :class:`~aioresil.RateLimiter`.
        classify: ``status -> bool``, True when the status is a failure (5xx and 429).
    """

    def __init__(
        self,
        *,
        registry: BreakerRegistry | None = None,
        config: BreakerConfig | None = None,
        key: Callable[[ClientRequest], str] | None = None,
        retry: Retry | None = None,
        timeout: Timeout | float | None = None,
        bulkhead: Bulkhead | None = None,
        rate_limiter: RateLimiter | None = None,
        classify: Classify | None = None,
    ) -> None:
        super().__init__(
            registry=registry,
            config=config,
            key=key,
            default_key=default_key,
            retry=retry,
            timeout=timeout,
            bulkhead=bulkhead,
            rate_limiter=rate_limiter,
            classify=classify,
        )
        self._pending: set[asyncio.Task[None]] = set()

    def breaker_for(self, request_or_key: ClientRequest | str) -> CircuitBreaker:
        """The breaker that guards a request (or a key, e.g. ``"https://api.example:443"``)."""
        return super().breaker_for(request_or_key)

    async def __call__(self, request: ClientRequest, handler: ClientHandlerType) -> ClientResponse:
        key = self._key(request)
        breaker = self._breakers.get(key)
        retry = self._policies.retry
        previous: list[ClientResponse] = []
        try:
            if retry is None:
                return await self._attempt(breaker, key, request, handler, previous)
            return await retry.call(self._attempt, breaker, key, request, handler, previous)
        except FailedResponse as failed:
            response: ClientResponse = failed.response
            return response  # the upstream's (last) answer
        except BaseException:
            for response in previous:  # a failed answer no attempt replaced: release it
                response.release()
            raise

    async def _attempt(
        self,
        breaker: CircuitBreaker,
        key: str,
        request: ClientRequest,
        handler: Any,
        previous: list[ClientResponse],
    ) -> ClientResponse:
        if previous:
            previous.pop().release()  # the failed answer a retry replaces
        response: ClientResponse
        response, judgement = await self._guarded(breaker, key, handler, request, _status, previous)
        self._judge_at_end(response, judgement)
        return response

    def _judge_at_end(self, response: ClientResponse, judgement: Judgement) -> None:
        content = response.content
        if content.is_eof() and content.exception() is None:
            self._verdict(judgement, failed=False)  # nothing left to read
            return
        release, close = response.release, response.close

        def at_eof() -> None:
            self._verdict(judgement, failed=False)

        def ended() -> None:
            self._verdict(judgement, failed=content.exception() is not None)

        def release_judged() -> Any:
            ended()
            return release()

        def close_judged() -> None:
            ended()
            close()

        content.on_eof(at_eof)
        release_when_collected(response, judgement)  # dropped unread: nobody else judges it
        response.release = release_judged  # type: ignore[method-assign]
        response.close = close_judged  # type: ignore[method-assign]

    async def settle(self) -> None:
        """Wait until the verdicts of the bodies that already ended are recorded (for tests,
        and before reading breaker statistics right after a response was read)."""
        while self._pending:
            await asyncio.gather(*tuple(self._pending), return_exceptions=True)

    def _verdict(self, judgement: Judgement, *, failed: bool) -> None:
        if judgement.done:
            return
        verdict = judgement.failure() if failed else judgement.success()
        task = asyncio.get_running_loop().create_task(verdict)
        self._pending.add(task)  # kept until done: a task nobody holds may be collected
        task.add_done_callback(self._pending.discard)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} breakers={len(self.registry)}>"


def _status(response: ClientResponse) -> int:
    return response.status
