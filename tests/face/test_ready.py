"""``aioresil._ready`` and the breaker protocol built on it: ``__aenter__``/``__aexit__`` are
plain methods that decide when called and return an awaitable (a ready one on every path that
does not wait), so everything that awaits an ``async with`` protocol must still work: ``async
with``, ``AsyncExitStack``, ``asyncio.wait_for``/``gather``/``shield`` around a bare
``__aenter__()``, several event loops, trio, and every path (hot, ticketed, rejected, remote).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import weakref
from typing import Any

import pytest
import trio

from aioresil import BreakerConfig, CircuitBreaker, CircuitOpenError, CircuitState, MemoryBackend
from aioresil._ready import DONE, Ready

from ..conftest import MakeBreaker
from ..helpers import Boom, fail


def test_a_ready_value_is_awaited_as_often_as_wanted_in_any_loop() -> None:
    ready = Ready(42)

    async def twice() -> tuple[int, int]:
        return await ready, await ready

    assert asyncio.run(twice()) == (42, 42)
    assert asyncio.run(twice()) == (42, 42)  # another loop: it belongs to none
    assert trio.run(twice) == (42, 42)
    assert asyncio.run(_await(DONE)) is None


async def _await(awaitable: Any) -> Any:
    return await awaitable


async def test_asyncio_treats_a_ready_value_as_an_awaitable_not_a_future() -> None:
    """Not a future to asyncio (its loop is none): wait_for, gather, shield and
    ensure_future wrap it like any awaitable instead of scheduling on its loop."""
    ready = Ready("x")
    assert not asyncio.isfuture(ready)
    assert await asyncio.wait_for(ready, 1) == "x"
    assert await asyncio.gather(ready, Ready("y")) == ["x", "y"]
    assert await asyncio.shield(ready) == "x"
    assert await asyncio.ensure_future(ready) == "x"
    with pytest.raises(TypeError):  # as for any awaitable that is not a coroutine
        asyncio.create_task(ready)  # type: ignore[arg-type]  # noqa: RUF006 (it raises)


async def test_hot_enter_and_exit_return_ready_values_and_count_the_call() -> None:
    breaker = CircuitBreaker("ready-hot")
    entered = breaker.__aenter__()
    assert isinstance(entered, Ready)  # no coroutine on the hot path
    assert await entered is breaker
    exited = breaker.__aexit__(None, None, None)
    assert exited is DONE
    assert await exited is None
    stats = await breaker.stats()
    assert (stats.success_count, stats.total_calls) == (1, 1)


async def test_every_path_gives_the_breaker_to_async_with_as(make_breaker: MakeBreaker) -> None:
    """Hot (loose), ticketed (slow-call rule, observers), trial and, on Redis, remote
    acquires: ``async with breaker as b`` binds the breaker itself on every one."""
    plain = make_breaker("as-plain")
    slow = make_breaker("as-slow", slow_call_duration=1.0, slow_call_rate_threshold=0.5)
    observed = make_breaker("as-observed")
    observed.add_call_observer(lambda name, outcome, seconds: None)
    for breaker in (plain, slow, observed):
        async with breaker as bound:
            assert bound is breaker
        async with breaker as outer, breaker as inner:  # nested calls of one breaker
            assert outer is inner is breaker
        assert (await breaker.stats()).success_count == 3


async def test_a_rejection_raises_from_async_with_and_from_a_bare_call() -> None:
    breaker = CircuitBreaker(
        "ready-open", config=BreakerConfig(failure_threshold=1, recovery_timeout=3600)
    )
    await fail(breaker)
    assert breaker.state is CircuitState.OPEN
    with pytest.raises(CircuitOpenError):
        async with breaker:
            raise AssertionError("a rejected call must not run")
    with pytest.raises(CircuitOpenError):
        breaker.__aenter__()  # decided when called, as async with calls it
    assert (await breaker.stats()).rejected_calls == 2


async def test_a_bare_enter_can_be_awaited_through_asyncio_helpers() -> None:
    """Code that awaits ``__aenter__()`` through wait_for or gather (a coroutine before)
    still gets the breaker, and the call it opened is closed by ``__aexit__``."""
    breaker = CircuitBreaker("ready-helpers")
    assert await asyncio.wait_for(breaker.__aenter__(), 1) is breaker
    await asyncio.wait_for(breaker.__aexit__(None, None, None), 1)
    [entered] = await asyncio.gather(breaker.__aenter__())
    assert entered is breaker
    await breaker.__aexit__(Boom, Boom(), None)
    stats = await breaker.stats()
    assert (stats.success_count, stats.failure_count, stats.total_calls) == (1, 1, 2)
    assert breaker._view.loose == 0 and breaker._view.ticketed == 0


async def test_async_exit_stack_enters_and_exits_a_breaker(make_breaker: MakeBreaker) -> None:
    breaker = make_breaker("ready-stack")
    async with contextlib.AsyncExitStack() as stack:
        assert await stack.enter_async_context(breaker) is breaker

    async def failing() -> None:
        async with contextlib.AsyncExitStack() as stack:
            await stack.enter_async_context(breaker)
            raise Boom

    with pytest.raises(Boom):
        await failing()
    stats = await breaker.stats()
    assert (stats.success_count, stats.failure_count) == (1, 1)


def test_the_same_breaker_guards_calls_in_two_loops_and_in_trio() -> None:
    breaker = CircuitBreaker("ready-loops")

    async def one() -> None:
        async with breaker as bound:
            assert bound is breaker

    asyncio.run(one())
    asyncio.run(one())
    trio.run(one)
    assert breaker._view.successes == 3


def test_a_dropped_breaker_is_collected() -> None:
    """A breaker holds its ready self (a reference cycle): the cycle collector frees it."""
    backend = MemoryBackend()
    breaker = CircuitBreaker("ready-dropped", backend=backend)
    asyncio.run(_enter_exit(breaker))
    gone = weakref.ref(breaker)
    del breaker
    gc.collect()
    assert gone() is None


async def _enter_exit(breaker: CircuitBreaker) -> None:
    async with breaker:
        pass
