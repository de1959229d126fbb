"""The resilient transport, written once for ``httpx`` and ``httpx2`` (same transport API).

:mod:`aioresil.integrations.httpx` and :mod:`aioresil.integrations.httpx2` each bind it to
their library's base classes. The path of one request::

    Retry (optional, outermost: retries failures, waits Retry-After / retry_after out)
      breaker of the request's key     open -> CircuitOpenError, the upstream is not called
        RateLimiter, Bulkhead          refusal -> not judged, the error propagates
          Timeout (until headers)      -> a failure
            the wrapped transport      connection error / timeout -> a failure
      judged: 5xx / 429 at once (failure); any other status when the body has been read
      (success) or when reading it fails (failure); a body garbage-collected unjudged gives
      its slot and permit back, counted neither way
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, Generic, TypeVar

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

__all__ = ["JudgedStreamCore", "TransportCore", "default_key"]

DEFAULT_PORTS = {"http": 80, "https": 443}

TransportT = TypeVar("TransportT")
RequestT = TypeVar("RequestT")
ResponseT = TypeVar("ResponseT")


def default_key(request: Any) -> str:
    """``scheme://host:port`` of the request: one circuit per upstream server."""
    url = request.url
    port = url.port if url.port is not None else DEFAULT_PORTS.get(url.scheme, 0)
    return f"{url.scheme}://{url.host}:{port}"


class JudgedStreamCore:
    """A response body that reports to the breaker when it ends: read to the end or closed
    (success), or failed while reading (failure).

    A body dropped without being read or closed (``client.send(request, stream=True)`` and
    then forgotten) is judged by nobody: when it is garbage-collected, its bulkhead slot and
    half-open trial permit are given back, counting neither success nor failure (see
    :func:`~aioresil.integrations._http.release_when_collected`).
    """

    def __init__(self, stream: Any, judgement: Judgement) -> None:
        self._stream = stream
        self._judgement = judgement
        release_when_collected(self, judgement)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._stream:
                yield chunk
        except GeneratorExit:
            raise  # the reader stopped early: aclose() gives the verdict (no await allowed here)
        except Exception:
            await self._judgement.failure()  # reset mid-body, read timeout: not an answer
            raise
        except BaseException as exc:
            await self._judgement.cancelled(type(exc))
            raise

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            await self._judgement.success()


class TransportCore(GuardCore, Generic[TransportT, RequestT, ResponseT]):
    """The logic of ``ResilientTransport``; see the public classes for the arguments.

    Why generic: ``httpx`` and ``httpx2`` have the same transport API with classes of their
    own. Each module's ``ResilientTransport`` binds the type parameters to its library's
    wrapped transport, request and response (so its constructor, ``key=`` and
    ``handle_async_request`` are typed for that library) and names its body stream type and
    default transport; the rest is written once here.
    """

    _stream_type: type[JudgedStreamCore]
    _default_transport: Callable[[], TransportT]

    def __init__(
        self,
        transport: TransportT | None = None,
        *,
        registry: BreakerRegistry | None = None,
        config: BreakerConfig | None = None,
        key: Callable[[RequestT], str] | None = None,
        retry: Retry | None = None,
        timeout: Timeout | float | None = None,
        bulkhead: Bulkhead | None = None,
        rate_limiter: RateLimiter | None = None,
        classify: Classify | None = None,
    ) -> None:
        if transport is None:
            transport = self._default_transport()
        if not callable(getattr(transport, "handle_async_request", None)):
            what = type(self).__name__
            raise TypeError(f"{what}: transport must be an async transport, got {transport!r}")
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
        self.transport: Any = transport

    async def handle_async_request(self, request: RequestT) -> ResponseT:
        key = self._key(request)
        breaker = self._breakers.get(key)
        retry = self._policies.retry
        response: ResponseT
        if retry is None:
            try:
                response = await self._attempt(breaker, key, request, None)
            except FailedResponse as failed:
                response = failed.response
            return response
        previous: list[Any] = []
        try:
            response = await retry.call(self._attempt, breaker, key, request, previous)
        except FailedResponse as failed:
            response = failed.response  # retries exhausted: the caller sees the upstream's answer
        except BaseException:
            for failed_response in previous:  # a failed answer no attempt replaced: release it
                await failed_response.aclose()
            raise
        return response

    async def _attempt(
        self, breaker: CircuitBreaker, key: str, request: Any, previous: list[Any] | None
    ) -> Any:
        if previous:
            await previous.pop().aclose()  # the failed answer a retry replaces
        response, judgement = await self._guarded(
            breaker, key, self.transport.handle_async_request, request, _status_code, previous
        )
        response.stream = self._stream_type(response.stream, judgement)
        return response

    async def aclose(self) -> None:
        await self.transport.aclose()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} breakers={len(self.registry)} over {self.transport!r}>"


def _status_code(response: Any) -> int:
    status: int = response.status_code
    return status
