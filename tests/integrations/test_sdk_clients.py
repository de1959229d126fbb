"""The OpenAI and Anthropic SDKs, unchanged, on a ResilientTransport, against a real upstream;
and Failover between two OpenAI-compatible providers."""

from __future__ import annotations

from typing import Any

import anthropic
import httpx
import httpx2
import openai
import pytest

from aioresil import (
    BreakerConfig,
    BreakerRegistry,
    CircuitOpenError,
    Failover,
    FailoverAnswered,
)
from aioresil.integrations import httpx as rhttpx
from aioresil.integrations import httpx2 as rhttpx2

from ..helpers import eventually
from .upstream import Upstream

THRESHOLD = 2


def registry(recovery: float = 30.0) -> BreakerRegistry:
    config = BreakerConfig(failure_threshold=THRESHOLD, recovery_timeout=recovery)
    return BreakerRegistry(default_config=config)


def provider_key(request: Any) -> str:
    """One circuit per provider: the first path segment (``/p1/v1/...`` -> ``p1``)."""
    return str(request.url.path).split("/")[1]


def openai_client(upstream: Upstream, provider: str, t: Any, **kwargs: Any) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=f"{upstream.url}/{provider}/v1",
        api_key="test",
        http_client=httpx.AsyncClient(transport=t, trust_env=False),
        **kwargs,
    )


async def ask(client: openai.AsyncOpenAI, question: str) -> str:
    reply = await client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": question}]
    )
    return str(reply.choices[0].message.content)


async def test_openai_sdk_fails_fast_once_the_breaker_is_open(upstream: Upstream) -> None:
    t = rhttpx.ResilientTransport(registry=registry(), key=provider_key)
    client = openai_client(upstream, "p1", t, max_retries=0)
    path = "/p1/v1/chat/completions"
    assert await ask(client, "hi") == "p1 says: hi"
    upstream.modes["p1"] = "failing"
    for _ in range(THRESHOLD):
        with pytest.raises(openai.InternalServerError):
            await ask(client, "hi")
    hits = upstream.count(path)

    with pytest.raises(CircuitOpenError) as caught:  # not wrapped: the SDK lets it through
        await ask(client, "hi")

    assert upstream.count(path) == hits
    assert caught.value.name == "p1"
    await client.close()


async def test_openai_sdk_with_its_own_retries_still_never_reaches_an_open_upstream(
    upstream: Upstream,
) -> None:
    t = rhttpx.ResilientTransport(registry=registry(), key=provider_key)
    client = openai_client(upstream, "p1", t, max_retries=2)
    upstream.modes["p1"] = "failing"
    with pytest.raises(openai.InternalServerError):
        await client.with_options(max_retries=THRESHOLD - 1).chat.completions.create(
            model="m", messages=[{"role": "user", "content": "x"}]
        )
    hits = upstream.count("/p1/v1/chat/completions")
    assert hits == THRESHOLD
    rejected = (await t.breaker_for("p1").stats()).rejected_calls

    with pytest.raises(CircuitOpenError):
        await ask(client, "hi")

    # Rejected once: the SDK did not retry it (it is not an httpx.RequestError), so no
    # backoff sleeps either.
    assert (await t.breaker_for("p1").stats()).rejected_calls == rejected + 1
    assert upstream.count("/p1/v1/chat/completions") == hits
    await client.close()


async def test_openai_streaming_is_judged_when_the_stream_ends_or_breaks(
    upstream: Upstream,
) -> None:
    t = rhttpx.ResilientTransport(registry=registry(), key=provider_key)
    client = openai_client(upstream, "p1", t, max_retries=0)
    breaker = t.breaker_for("p1")

    async def words() -> list[str]:
        before = (await breaker.stats()).total_calls
        stream = await client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "a b c"}], stream=True
        )
        seen = []
        async for chunk in stream:
            seen.append(chunk.choices[0].delta.content or "")
            if len(seen) == 1:  # mid-stream: the answer is not judged yet
                assert (await breaker.stats()).total_calls == before
        return seen

    assert "".join(await words()) == "p1 says: a b c "
    assert (await breaker.stats()).success_count == 1

    upstream.modes["p1"] = "cut"  # a 200 whose stream breaks after its first event
    for _ in range(THRESHOLD):
        with pytest.raises(openai.APIConnectionError):
            await words()
    hits = upstream.count("/p1/v1/chat/completions")
    with pytest.raises(CircuitOpenError):
        await words()

    stats = await breaker.stats()
    assert (stats.success_count, stats.failure_count) == (1, THRESHOLD)
    assert upstream.count("/p1/v1/chat/completions") == hits
    await client.close()


async def test_anthropic_sdk_on_httpx2_fails_fast_without_touching_the_upstream(
    upstream: Upstream,
) -> None:
    t = rhttpx2.ResilientTransport(registry=registry(), key=provider_key)
    client = anthropic.AsyncAnthropic(
        base_url=f"{upstream.url}/a1",
        api_key="test",
        http_client=httpx2.AsyncClient(transport=t, trust_env=False),
        max_retries=0,
    )

    async def message() -> str:
        reply = await client.messages.create(
            model="m", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )
        block = reply.content[0]
        assert isinstance(block, anthropic.types.TextBlock)
        return block.text

    assert await message() == "a1 says: hi"
    upstream.modes["a1"] = "failing"
    for _ in range(THRESHOLD):
        with pytest.raises(anthropic.InternalServerError):
            await message()
    hits = upstream.count("/a1/v1/messages")

    with pytest.raises(anthropic.APIConnectionError) as caught:
        await message()

    assert isinstance(caught.value.__cause__, CircuitOpenError)  # the SDK wraps it
    assert caught.value.__cause__.name == "a1"
    assert upstream.count("/a1/v1/messages") == hits
    await client.close()


async def test_failover_moves_to_the_second_provider_while_the_first_is_open_and_back(
    upstream: Upstream,
) -> None:
    t = rhttpx.ResilientTransport(registry=registry(recovery=0.3), key=provider_key)
    clients = [openai_client(upstream, p, t, max_retries=0) for p in ("p1", "p2")]
    providers = Failover([("p1", clients[0]), ("p2", clients[1])], name="llm")
    events: list[FailoverAnswered] = []
    providers.add_listener(lambda event: events.append(event))  # type: ignore[arg-type]
    assert await providers.call(ask, "q") == "p1 says: q"

    upstream.modes["p1"] = "failing"
    answers = [await providers.call(ask, "q") for _ in range(THRESHOLD + 2)]
    p1_hits = upstream.count("/p1/v1/chat/completions")

    # Each call answered by p2 in the same call; once p1 opened, it was skipped unasked.
    assert answers == ["p2 says: q"] * (THRESHOLD + 2)
    assert p1_hits == 1 + THRESHOLD
    assert [e.alternative for e in events] == ["p1"] + ["p2"] * (THRESHOLD + 2)
    assert events[1].failed == ("p1",)
    assert events[-1].skipped == ("p1",)

    upstream.modes["p1"] = "healthy"

    async def p1_answers() -> bool:
        answer = await providers.call(ask, "q")
        assert answer in ("p1 says: q", "p2 says: q"), answer
        return answer == "p1 says: q"

    await eventually(p1_answers, within=10, interval=0.02, what="p1 coming back")

    assert events[-1].alternative == "p1"
    assert providers.stats().failed_over >= THRESHOLD + 2
    for client in clients:
        await client.close()


async def test_failover_all_open_reports_the_soonest_retry_after(upstream: Upstream) -> None:
    t = rhttpx.ResilientTransport(registry=registry(), key=provider_key)
    clients = [openai_client(upstream, p, t, max_retries=0) for p in ("p1", "p2")]
    await t.breaker_for("p1").force_open()  # no retry_after: forced
    upstream.modes["p2"] = "failing"
    providers = Failover([("p1", clients[0]), ("p2", clients[1])], name="llm")
    for _ in range(THRESHOLD):
        with pytest.raises(openai.InternalServerError):  # the last real failure
            await providers.call(ask, "q")
    hits = upstream.count("/p2/v1/chat/completions")

    with pytest.raises(CircuitOpenError) as caught:
        await providers.call(ask, "q")

    assert caught.value.name == "llm"
    assert 29 < (caught.value.retry_after or 0) <= 30  # p2's; p1 (forced) has none
    assert upstream.count("/p2/v1/chat/completions") == hits
    assert upstream.count("/p1/v1/chat/completions") == 0
    for client in clients:
        await client.close()
