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
from typing import Any

from ..breaker import CircuitBreaker
from ..core.config import BreakerConfig
from ..exceptions import CircuitOpenError
from ..policies.bulkhead import Bulkhead
from ..policies.ratelimit import RateLimiter
from ..policies.retry import Retry
from ..policies.timeout import Timeout
from ..registry import BreakerRegistry
from ._http import (
    RETRY_AFTER_STATUSES,
    Breakers,
    Classify,
    FailedResponse,
    HintBook,
    Judgement,
    Policies,
    default_classify,
    parse_retry_after,
    release_when_collected,
)

__all__ = ["JudgedStreamCore", "TransportCore", "default_key"]

DEFAULT_PORTS = {"http": 80, "https": 443}


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


class TransportCore:
    """The logic of ``ResilientTransport``; see the public classes for the arguments."""

    _stream_type: type[JudgedStreamCore]

    def __init__(
        self,
        transport: Any,
        *,
        registry: BreakerRegistry | None = None,
        config: BreakerConfig | None = None,
        key: Callable[[Any], str] | None = None,
        retry: Retry | None = None,
        timeout: Timeout | float | None = None,
        bulkhead: Bulkhead | None = None,
        rate_limiter: RateLimiter | None = None,
        classify: Classify | None = None,
    ) -> None:
        what = type(self).__name__
        if not callable(getattr(transport, "handle_async_request", None)):
            raise TypeError(f"{what}: transport must be an async transport, got {transport!r}")
        self._breakers = Breakers(registry, config, what)
        if key is not None and not callable(key):
            raise TypeError(f"{what}: key must be a callable request -> str, got {key!r}")
        if classify is not None and not callable(classify):
            raise TypeError(f"{what}: classify must be a callable status -> bool")
        self.transport = transport
        self.registry = self._breakers.registry
        self._key = key or default_key
        self._policies = Policies(
            retry=retry, timeout=timeout, bulkhead=bulkhead, rate_limiter=rate_limiter, what=what
        )
        self._classify = classify or default_classify
        self._hints = HintBook()

    def breaker_for(self, request_or_key: Any) -> CircuitBreaker:
        """The breaker that guards a request (or a key, e.g. ``"https://api.example:443"``)."""
        key = request_or_key if isinstance(request_or_key, str) else self._key(request_or_key)
        return self._breakers.get(key)

    async def handle_async_request(self, request: Any) -> Any:
        key = self._key(request)
        breaker = self._breakers.get(key)
        retry = self._policies.retry
        if retry is None:
            try:
                return await self._attempt(breaker, key, request, None)
            except FailedResponse as failed:
                return failed.response
        previous: list[Any] = []
        try:
            return await retry.call(self._attempt, breaker, key, request, previous)
        except FailedResponse as failed:
            return failed.response  # retries exhausted: the caller sees the upstream's answer
        except BaseException:
            for response in previous:  # a failed answer no attempt replaced: release it
                await response.aclose()
            raise

    async def _attempt(
        self, breaker: CircuitBreaker, key: str, request: Any, previous: list[Any] | None
    ) -> Any:
        if previous:
            await previous.pop().aclose()  # the failed answer a retry replaces
        judgement = Judgement(breaker)
        try:
            await judgement.enter()
        except CircuitOpenError as error:
            raise self._hints.rejection(key, error) from None
        policies = self._policies
        await policies.admit(judgement)
        try:
            response = await policies.send(self.transport.handle_async_request, request)
        except Exception:
            await judgement.failure()
            raise
        except BaseException as exc:
            await judgement.cancelled(type(exc))
            raise
        status = response.status_code
        if self._classify(status):
            hint = None
            if status in RETRY_AFTER_STATUSES:
                hint = parse_retry_after(response.headers.get("retry-after"))
                if hint is not None:
                    self._hints.note(key, hint)
            await judgement.failure()
            if previous is not None:
                previous.append(response)
            raise FailedResponse(response, status, hint)
        response.stream = self._stream_type(response.stream, judgement)
        return response

    async def aclose(self) -> None:
        await self.transport.aclose()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} breakers={len(self.registry)} over {self.transport!r}>"
