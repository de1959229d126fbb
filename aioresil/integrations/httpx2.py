"""``ResilientTransport`` for ``httpx2.AsyncClient``: the Anthropic SDK (and newer OpenAI SDKs)
send through ``httpx2``, the successor of ``httpx`` with the same transport API.

``pip install 'aioresil[httpx2]'``. Everything (arguments, classification, ``Retry-After``,
streaming, why a rejection raises ``CircuitOpenError`` itself) is as in
:mod:`aioresil.integrations.httpx`. Example::

    import anthropic, httpx2
    from aioresil.integrations.httpx2 import ResilientTransport

    transport = ResilientTransport(registry=registry, retry=Retry(3))
    client = anthropic.AsyncAnthropic(
        http_client=httpx2.AsyncClient(transport=transport), max_retries=0
    )
"""

from __future__ import annotations

import httpx2

from ._http import default_classify, parse_retry_after
from ._transport import JudgedStreamCore, TransportCore, default_key

__all__ = ["ResilientTransport", "default_classify", "default_key", "parse_retry_after"]


class _JudgedStream(JudgedStreamCore, httpx2.AsyncByteStream):
    pass


class ResilientTransport(
    TransportCore[httpx2.AsyncBaseTransport, httpx2.Request, httpx2.Response],
    httpx2.AsyncBaseTransport,
):
    """An ``httpx2`` transport that guards every request with a breaker per upstream.

    Args:
        transport: the transport that really sends (``httpx2.AsyncHTTPTransport()`` by
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
    _default_transport = httpx2.AsyncHTTPTransport
