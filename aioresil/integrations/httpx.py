"""``ResilientTransport``: circuit breakers (and retry, timeout, bulkhead, rate limit) for
every request of an ``httpx.AsyncClient``, without touching a call site.

``pip install 'aioresil[httpx]'``. Example::

    import httpx
    from aioresil import BreakerRegistry, Retry, RedisBackend
    from aioresil.integrations.httpx import ResilientTransport

    transport = ResilientTransport(registry=BreakerRegistry(backend=redis_backend),
                                   retry=Retry(3), timeout=10)
    async with httpx.AsyncClient(transport=transport) as client:
        await client.get("https://api.example.com/v1/items")   # CircuitOpenError when open

    openai_client = openai.AsyncOpenAI(http_client=httpx.AsyncClient(transport=transport))

What counts (``classify=`` changes the status rule): connection errors, timeouts, 5xx and 429
are failures; every other answer, 4xx included, is a success (the upstream answered). A 2xx
(or 4xx) is judged when its body has been read: a connection reset while streaming is a
failure. ``Retry-After`` on 429/503 is waited out by the ``Retry`` and, where it is longer,
becomes the ``retry_after`` of the ``CircuitOpenError`` a rejected request raises.

Why a rejection raises :class:`~aioresil.CircuitOpenError` itself and not a subclass of
``httpx.TransportError``: the SDKs' retry loops treat ``httpx.RequestError`` as a flaky
connection, retry it ``max_retries`` times with their own backoff (the rejection is repeated
locally each time, seconds later) and then hide it inside their connection error. OpenAI's
SDK lets any other exception through at once and unchanged, so the caller gets the
``CircuitOpenError`` with its ``retry_after`` in microseconds. Anthropic's SDK wraps every
transport exception in ``APIConnectionError`` (``__cause__`` is our error) and retries it:
give that client ``max_retries=0`` and let this transport's ``Retry`` do the retrying (it
knows ``retry_after``). :class:`~aioresil.Failover` finds the rejection in either form.
"""

from __future__ import annotations

import httpx

from ._http import default_classify, parse_retry_after
from ._transport import JudgedStreamCore, TransportCore, default_key

__all__ = ["ResilientTransport", "default_classify", "default_key", "parse_retry_after"]


class _JudgedStream(JudgedStreamCore, httpx.AsyncByteStream):
    pass


class ResilientTransport(
    TransportCore[httpx.AsyncBaseTransport, httpx.Request, httpx.Response], httpx.AsyncBaseTransport
):
    """An ``httpx`` transport that guards every request with a breaker per upstream.

    Args:
        transport: the transport that really sends (``httpx.AsyncHTTPTransport()`` by
            default); closed with this one.
        registry: where the breakers come from (a ``RedisBackend`` registry shares every
            circuit with the fleet); a private memory registry by default.
        config: the breakers' ``BreakerConfig`` (the registry's default when ``None``).
        key: ``request -> str``, the breaker's name; ``scheme://host:port`` by default. Keep
            the set of keys bounded (hosts, routes), never per user or per id.
        retry: an optional :class:`~aioresil.Retry` around each request (outermost).
        timeout: seconds (or a :class:`~aioresil.Timeout`) for one attempt, until headers.
        bulkhead: an optional :class:`~aioresil.Bulkhead`; a slot is held until the body ends.
        rate_limiter: an optional :class:`~aioresil.RateLimiter`.
        classify: ``status -> bool``, True when the status is a failure (5xx and 429 by
            default).
    """

    _stream_type = _JudgedStream
    _default_transport = httpx.AsyncHTTPTransport
