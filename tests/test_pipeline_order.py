"""Every sensible order of the policies composes; an order that cannot work is refused.

Issue 13 item 4. The README's ``cached = pipeline(Fallback(...), guarded)`` around a
dead-lettering pipeline used to push our internal run object as the payload ("Object of type
_Run is not JSON serializable", DLQ empty). Here every permutation of Timeout, Retry, breaker,
Bulkhead and RateLimiter runs inside a dead-lettering pipeline wrapped by a Fallback, and every
permutation of the six stages runs flat, on the memory backend and a real ``redis-server``,
with a real :class:`DeadLetterQueue`.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from typing import Any

import pytest

from aioresil import (
    BreakerConfig,
    Bulkhead,
    CircuitBreaker,
    DeadLetterQueue,
    Fallback,
    MemoryBackend,
    RateLimiter,
    Retry,
    Timeout,
    constant,
    pipeline,
)
from aioresil.testing import FakeClock

from .policy_helpers import FakeSleep

CACHED = {"EUR": 1.0}
FIVE = ("Timeout", "Retry", "breaker", "Bulkhead", "RateLimiter")


@pytest.fixture(params=["memory", "redis"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    if request.param == "memory":
        yield MemoryBackend()
        return
    from aioresil import RedisBackend

    async with RedisBackend.from_url(request.getfixturevalue("redis_url")) as redis_backend:
        yield redis_backend


def build(kind: str, backend: Any, tag: str) -> Any:
    """A fresh stage of ``kind``; names carry ``tag`` so Redis state never leaks across runs."""
    if kind == "Timeout":
        return Timeout(60)
    if kind == "Retry":
        clock = FakeClock()
        return Retry(3, on=OSError, backoff=constant(0.1), sleep=FakeSleep(clock), clock=clock)
    if kind == "breaker":
        config = BreakerConfig(failure_threshold=100)
        return CircuitBreaker(f"cb-{tag}", config=config, backend=backend)
    if kind == "Bulkhead":
        return Bulkhead(5, name=f"bh-{tag}", backend=backend)
    if kind == "RateLimiter":
        return RateLimiter(1000, burst=1000, name=f"rl-{tag}", backend=backend)
    if kind == "Fallback":
        return Fallback(lambda error: CACHED)
    raise AssertionError(kind)  # pragma: no cover


class Upstream:
    """Fails with ``OSError`` while ``down``; counts calls."""

    def __init__(self) -> None:
        self.down = True
        self.calls = 0

    async def fetch_rates(self, currency: str, *, day: str) -> dict[str, float]:
        self.calls += 1
        if self.down:
            raise OSError("rates service down")
        return {currency: 2.0}


async def test_fallback_around_a_dead_lettering_pipeline_in_every_order(backend: Any) -> None:
    dlq = DeadLetterQueue(backend, name="rates")
    for number, order in enumerate(itertools.permutations(FIVE)):
        tag = f"{number}"
        stages = {kind: build(kind, backend, tag) for kind in order}
        guarded = pipeline(*stages.values(), to_dlq=(dlq, f"fetch-{tag}"), name=f"p{tag}")
        cached = pipeline(Fallback(lambda error: CACHED), guarded)  # the README's shape
        upstream = Upstream()
        fetch_rates = cached(upstream.fetch_rates)

        assert await fetch_rates("EUR", day="2026-12-04") == CACHED, order
        page = await dlq.list(task_type=f"fetch-{tag}")
        [letter] = page.entries
        assert letter.payload == {"args": ["EUR"], "kwargs": {"day": "2026-12-04"}}, order
        assert (letter.attempts, letter.error_type) == (3, "OSError"), order
        assert letter.metadata["function"] == Upstream.fetch_rates.__qualname__
        assert upstream.calls == 3, order
        # A breaker outside the retry judges the call once, inside it every attempt.
        outside = order.index("breaker") < order.index("Retry")
        assert (await stages["breaker"].stats()).failure_count == (1 if outside else 3), order
        stats = guarded.stats()
        assert (stats.failures, stats.dead_lettered, stats.dlq_errors) == (1, 1, 0), order

        upstream.down = False
        assert await fetch_rates("USD", day="2026-12-05") == {"USD": 2.0}, order
        assert len((await dlq.list(task_type=f"fetch-{tag}")).entries) == 1, order
    assert (await dlq.stats())["total_failed_tasks"] == 120


def fallback_fits(order: tuple[str, ...]) -> bool:
    where = order.index("Fallback")
    return where < order.index("Retry") and where < order.index("breaker")


async def test_every_flat_order_runs_or_is_refused_naming_the_order(backend: Any) -> None:
    ran = refused = 0
    for number, order in enumerate(itertools.permutations(("Fallback", *FIVE))):
        stages = [build(kind, backend, f"flat-{number}") for kind in order]
        if not fallback_fits(order):
            with pytest.raises(ValueError, match=r"put the Fallback outside it, first"):
                pipeline(*stages)
            refused += 1
            continue
        upstream = Upstream()
        assert await pipeline(*stages).call(upstream.fetch_rates, "EUR", day="d") == CACHED
        assert upstream.calls == 3, order
        ran += 1
    assert (ran, refused) == (240, 480)


def test_orders_that_cannot_work_are_refused_at_construction() -> None:
    dlq = DeadLetterQueue(MemoryBackend())

    def stage(kind: str) -> Any:
        return build(kind, MemoryBackend(), kind)

    guarded = pipeline(stage("Retry"), stage("breaker"), to_dlq=(dlq, "t"))
    with pytest.raises(ValueError, match=r"nothing would ever reach the dead letter queue"):
        pipeline(stage("Fallback"), stage("Retry"), to_dlq=(dlq, "t"))
    with pytest.raises(ValueError, match=r"pipeline\(Fallback\(\.\.\.\), pipeline\("):
        pipeline(pipeline(stage("Timeout"), stage("Fallback")), to_dlq=(dlq, "t"))
    with pytest.raises(ValueError, match=r"every failed attempt would be dead-lettered"):
        pipeline(stage("Retry"), guarded)
    with pytest.raises(ValueError, match=r"give to_dlq to the pipeline around the Retry"):
        pipeline(stage("Retry"), pipeline(stage("Timeout"), guarded))
    with pytest.raises(ValueError, match=r"dead-lettered twice"):
        pipeline(guarded, to_dlq=(dlq, "again"))
    with pytest.raises(ValueError, match=r"never sees a failure to retry"):
        pipeline(stage("Retry"), pipeline(stage("Timeout"), stage("Fallback")))
    with pytest.raises(ValueError, match=r"never opens"):
        pipeline(stage("breaker"), stage("Fallback"))


async def test_a_fallback_for_some_errors_may_sit_inside_the_retry() -> None:
    class Refused(Exception):
        pass

    calls = 0

    async def answer() -> str:
        nonlocal calls
        calls += 1
        raise Refused if calls == 1 else OSError("down")

    retry = build("Retry", None, "narrow")
    narrow = Fallback(lambda error: "refused", on=Refused)
    assert await pipeline(retry, narrow).call(answer) == "refused"
    assert calls == 1
    with pytest.raises(OSError, match="down"):
        await pipeline(retry, narrow).call(answer)
    assert calls == 4


async def test_nested_pipelines_keep_the_callers_function_and_arguments() -> None:
    dlq = DeadLetterQueue(MemoryBackend())
    seen: list[tuple[Any, ...]] = []

    class Spy:
        async def call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
            seen.append(args)
            return await fn(*args, **kwargs)

    retry = build("Retry", None, "deep")
    innermost = pipeline(Spy(), retry, Timeout(60), to_dlq=(dlq, "deep"))
    three_deep = pipeline(Fallback(lambda error: "cached"), pipeline(Timeout(60), innermost))
    upstream = Upstream()
    assert await three_deep.call(upstream.fetch_rates, "JPY", day="d") == "cached"
    [letter] = (await dlq.list()).entries
    assert (letter.payload, letter.attempts) == ({"args": ["JPY"], "kwargs": {"day": "d"}}, 3)
    assert upstream.calls == 3
    assert len(seen) == 1  # the spy sits outside the retry: one pass per call
    upstream.down = False
    assert await three_deep.call(upstream.fetch_rates, "CHF", day="d") == {"CHF": 2.0}
    assert innermost.stats().calls == 2
