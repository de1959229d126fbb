"""ResilientTransport with real httpx clients against a real loopback upstream."""

from __future__ import annotations

import gc
from typing import Any

import httpx
import pytest

from aioresil import (
    BreakerConfig,
    BreakerRegistry,
    Bulkhead,
    BulkheadFullError,
    CircuitOpenError,
    CircuitState,
    Retry,
    constant,
)
from aioresil.integrations._http import parse_retry_after
from aioresil.integrations.httpx import ResilientTransport

from ..helpers import until
from .upstream import Upstream

THRESHOLD = 3


def transport(**kwargs: Any) -> ResilientTransport:
    config = BreakerConfig(failure_threshold=THRESHOLD, recovery_timeout=30)
    kwargs.setdefault("registry", BreakerRegistry(default_config=config))
    return ResilientTransport(**kwargs)


def client(upstream: Upstream, t: ResilientTransport) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=upstream.url, transport=t, trust_env=False)


async def test_5xx_opens_the_breaker_and_the_next_call_never_reaches_the_upstream(
    upstream: Upstream,
) -> None:
    t = transport()
    async with client(upstream, t) as http:
        statuses = [(await http.get("/status/503")).status_code for _ in range(THRESHOLD)]
        with pytest.raises(CircuitOpenError) as caught:
            await http.get("/status/503")
        with pytest.raises(CircuitOpenError):
            await http.get("/status/200")  # one circuit per host: every route is rejected

    assert statuses == [503] * THRESHOLD  # the upstream's own answers reach the caller
    assert upstream.count("/status/503") == THRESHOLD
    assert upstream.count("/status/200") == 0
    assert caught.value.name == f"http://127.0.0.1:{upstream.url.rsplit(':', 1)[1]}"
    assert caught.value.state is CircuitState.OPEN
    assert 0 < (caught.value.retry_after or 0) <= 30


@pytest.mark.parametrize("status", [400, 401, 404, 409, 422])
async def test_4xx_never_opens_the_breaker(upstream: Upstream, status: int) -> None:
    t = transport()
    async with client(upstream, t) as http:
        for _ in range(THRESHOLD * 2):
            assert (await http.get(f"/status/{status}")).status_code == status

    stats = await t.breaker_for(f"http://127.0.0.1:{upstream.url.rsplit(':', 1)[1]}").stats()
    assert stats.state is CircuitState.CLOSED
    assert stats.success_count == THRESHOLD * 2
    assert stats.failure_count == 0


async def test_connection_reset_and_timeout_are_failures(upstream: Upstream) -> None:
    t = transport(timeout=0.2)
    async with client(upstream, t) as http:
        with pytest.raises(httpx.RemoteProtocolError):
            await http.get("/reset")
        with pytest.raises(TimeoutError):  # CallTimeoutError, a TimeoutError
            await http.get("/hang")
        with pytest.raises(httpx.ReadTimeout):
            await http.get("/hang", timeout=0.1)  # httpx's own timeout counts too
        with pytest.raises(CircuitOpenError):
            await http.get("/status/200")

    assert upstream.count("/status/200") == 0


async def test_429_retry_after_is_waited_out_and_lengthens_the_rejection(
    upstream: Upstream,
) -> None:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    retry = Retry(2, backoff=constant(0.01), max_retry_after=60, sleep=sleep)
    config = BreakerConfig(failure_threshold=2, recovery_timeout=1)
    t = transport(retry=retry, registry=BreakerRegistry(default_config=config))
    async with client(upstream, t) as http:
        response = await http.get("/status/429", params={"retry_after": "7"})
        with pytest.raises(CircuitOpenError) as caught:
            await http.get("/status/200")

    assert response.status_code == 429  # retries exhausted: the upstream's last answer
    assert response.headers["retry-after"] == "7"
    assert waits[0] == 7.0  # Retry-After, not the 0.01 s backoff
    assert upstream.count("/status/429") == 2
    assert upstream.count("/status/200") == 0
    # The second call's rejection was retried after the upstream's hint, not the breaker's 1 s.
    assert len(waits) == 2
    assert 6 < waits[1] <= 7
    # The breaker would retry after 1 s; the upstream asked for 7: the longer one is reported.
    assert 6 < (caught.value.retry_after or 0) <= 7


async def test_a_retry_replaces_a_5xx_with_the_next_answer(upstream: Upstream) -> None:
    calls = 0

    def key(request: httpx.Request) -> str:
        return request.url.path  # per-route circuits

    async def sleep(seconds: float) -> None:
        nonlocal calls
        calls += 1

    t = transport(retry=Retry(3, backoff=constant(0), sleep=sleep), key=key)
    async with client(upstream, t) as http:
        response = await http.get("/status/500")
        ok = await http.get("/status/204")

    assert response.status_code == 500
    assert upstream.count("/status/500") == 3
    assert ok.status_code == 204  # another route, another circuit
    assert (await t.breaker_for("/status/500").stats()).failure_count == 3


async def test_streaming_is_judged_when_the_body_ends_or_fails(upstream: Upstream) -> None:
    t = transport(key=lambda request: request.url.path)
    async with client(upstream, t) as http:
        async with http.stream("GET", "/stream", params={"chunks": "3"}) as response:
            # Headers are in, the body is not: not judged yet.
            assert (await t.breaker_for("/stream").stats()).total_calls == 0
            chunks = [chunk async for chunk in response.aiter_bytes()]
        assert b"".join(chunks) == b"chunk0;chunk1;chunk2;"
        stats = await t.breaker_for("/stream").stats()
        assert (stats.success_count, stats.failure_count) == (1, 0)

        async with http.stream("GET", "/stream", params={"chunks": "3"}) as response:
            async for _chunk in response.aiter_raw():
                break  # the reader stops early: the upstream did answer
        stats = await t.breaker_for("/stream").stats()
        assert (stats.success_count, stats.failure_count) == (2, 0)

        async def read_cut_stream() -> None:
            async with http.stream("GET", "/stream", params={"fail": "1"}) as response:
                assert response.status_code == 200  # the headers looked fine
                async for _chunk in response.aiter_bytes():
                    pass

        for _ in range(THRESHOLD):
            with pytest.raises(httpx.RemoteProtocolError):
                await read_cut_stream()
        with pytest.raises(CircuitOpenError):
            await http.get("/stream")

    stats = await t.breaker_for("/stream").stats()
    assert stats.failure_count == THRESHOLD
    assert stats.state is CircuitState.OPEN
    assert upstream.count("/stream") == 2 + THRESHOLD


async def test_responses_dropped_unread_give_their_bulkhead_slots_back(
    upstream: Upstream,
) -> None:
    bulkhead = Bulkhead(2)
    t = transport(key=lambda request: request.url.path, bulkhead=bulkhead)
    async with client(upstream, t) as http:
        for _ in range(2):  # streamed, then dropped: neither read nor closed
            await http.send(http.build_request("GET", "/stream", params={"hold": "1"}), stream=True)
        assert bulkhead.stats().active == 2
        with pytest.raises(BulkheadFullError):
            await http.get("/status/200")
        gc.collect()
        await until(lambda: bulkhead.stats().active == 0, what="dropped bodies released")
        upstream.stream_release.set()
        assert (await http.get("/status/200")).status_code == 200

    stats = await t.breaker_for("/stream").stats()
    assert (stats.success_count, stats.failure_count) == (0, 0)  # counted neither way
    assert upstream.count("/stream") == 2


async def test_a_breaker_config_that_cannot_record_failures_is_refused() -> None:
    config = BreakerConfig(record_exceptions=(KeyError,))

    with pytest.raises(ValueError, match="record Exception"):
        ResilientTransport(config=config)
    with pytest.raises(TypeError, match="registry must be a BreakerRegistry"):
        ResilientTransport(registry="nope")  # type: ignore[arg-type]


def test_retry_after_parsing() -> None:
    assert parse_retry_after("5") == 5.0
    assert parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412490.0) == 0.0
    for bad in (None, "", "-1", "nan", "inf", "soon"):
        assert parse_retry_after(bad) is None


def test_the_transport_runs_on_trio_too() -> None:
    trio = pytest.importorskip("trio")
    seen: list[int] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(1)
        return httpx.Response(502 if request.url.path == "/bad" else 200)

    async def main() -> tuple[list[int], str]:
        t = transport(transport=httpx.MockTransport(answer))
        async with httpx.AsyncClient(transport=t) as http:
            ok = (await http.get("http://up/")).status_code
            bad = [(await http.get("http://up/bad")).status_code for _ in range(THRESHOLD)]
            try:
                await http.get("http://up/")
            except CircuitOpenError as error:
                return [ok, *bad], error.state.value
        raise AssertionError("not rejected")

    statuses, state = trio.run(main)

    assert statuses == [200] + [502] * THRESHOLD
    assert state == "open"
    assert len(seen) == 1 + THRESHOLD
