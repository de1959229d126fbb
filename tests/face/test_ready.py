"""``aioresil._ready`` and the breaker protocol built on it: ``__aenter__``/``__aexit__`` are
plain methods that decide when called and return an awaitable (a ready one on every path that
does not wait), so everything that awaits an ``async with`` protocol must still work: ``async
with``, ``AsyncExitStack``, ``asyncio.wait_for``/``gather``/``shield`` around a bare
``__aenter__()``, several event loops, trio, and every path (hot, ticketed, rejected, remote).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import gc
import weakref
from typing import Any

import pytest
import trio

from aioresil import BreakerConfig, CircuitBreaker, CircuitOpenError, CircuitState, MemoryBackend
from aioresil._ready import DONE, Ready

from ..conftest import MakeBreaker
from ..helpers import Boom, fail, succeed


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
    first = breaker.__aenter__()
    assert isinstance(first, Ready)  # no coroutine on the hot path, from the first call
    assert await first is breaker
    assert await breaker.__aexit__(None, None, None) is None
    entered = breaker.__aenter__()
    assert isinstance(entered, Ready) and entered is not first  # the first one is not kept
    assert await entered is breaker
    assert breaker.__aenter__() is entered  # from the second call: made once, kept
    exited = breaker.__aexit__(None, None, None)
    assert exited is DONE
    assert await exited is None
    await breaker.__aexit__(None, None, None)
    stats = await breaker.stats()
    assert (stats.success_count, stats.total_calls) == (3, 3)


async def test_coroutine_only_apis_refuse_every_call_alike() -> None:
    """Whether a breaker is new or has its ready self, ``__aenter__()`` is the same kind of
    awaitable: ``create_task`` refuses it on the first call as on the third, ``asyncio.wait``
    takes it on every call (it refuses bare coroutines)."""
    breaker = CircuitBreaker("ready-alike")
    for _ in range(3):
        entered = breaker.__aenter__()
        with pytest.raises(TypeError):
            asyncio.create_task(entered)  # type: ignore[arg-type]  # noqa: RUF006 (it raises)
        done, _ = await asyncio.wait([entered])
        assert [task.result() for task in done] == [breaker]
        await breaker.__aexit__(None, None, None)
    assert breaker._view.loose == 0 and breaker._view.successes == 3


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


def test_a_breaker_used_once_is_freed_when_dropped_and_its_listener_stops() -> None:
    """The documented breaker per request: with the cycle collector off, a breaker that
    guarded one call is freed by its last reference going, and its listener hears nothing of
    the circuit's later transitions."""
    backend = MemoryBackend()
    config = BreakerConfig(failure_threshold=1, recovery_timeout=3600)
    heard: list[str] = []

    async def main() -> None:
        gone = await _request("ready-request", backend, config, heard, calls=1)
        assert gone() is None  # freed at once: no reference cycle to wait for
        survivor = CircuitBreaker("ready-request", config=config, backend=backend)
        await fail(survivor)  # opens the circuit: a dropped listener must not hear it
        assert survivor.state is CircuitState.OPEN

    gc.disable()
    try:
        asyncio.run(main())
    finally:
        gc.enable()
    assert heard == []


def test_a_breaker_used_many_times_is_freed_by_the_cycle_collector() -> None:
    """From its second call a breaker holds its ready self (a reference cycle): dropped, it
    lives, and its listener hears the circuit, until the cycle collector frees it (what the
    README tells a per-request breaker with listeners that makes several calls)."""
    backend = MemoryBackend()
    config = BreakerConfig(failure_threshold=1, recovery_timeout=3600)
    heard: list[str] = []

    async def main() -> None:
        gone = await _request("ready-twice", backend, config, heard, calls=2)
        assert gone() is not None  # in a cycle: refcounting alone does not free it
        survivor = CircuitBreaker("ready-twice", config=config, backend=backend)
        await fail(survivor)
        assert heard == ["StateChanged"]  # heard until collected
        gc.collect()
        assert gone() is None
        await survivor.reset()
        assert heard == ["StateChanged"]  # silent once collected

    gc.disable()
    try:
        asyncio.run(main())
    finally:
        gc.enable()


async def _request(
    name: str, backend: MemoryBackend, config: BreakerConfig, heard: list[str], *, calls: int
) -> weakref.ref[CircuitBreaker]:
    """A request's own breaker with a listener, used for ``calls`` calls, then dropped."""
    breaker = CircuitBreaker(name, config=config, backend=backend)
    breaker.add_listener(lambda event: heard.append(type(event).__name__))
    for _ in range(calls):
        await succeed(breaker)
    return weakref.ref(breaker)


async def test_a_copy_gives_itself_to_async_with() -> None:
    breaker = CircuitBreaker("ready-copy")
    for _ in range(3):  # the original holds its ready self
        await succeed(breaker)
    twin = copy.copy(breaker)
    for _ in range(3):
        async with twin as bound:
            assert bound is twin
    async with breaker as bound:
        assert bound is breaker
    assert (await breaker.stats()).success_count == 7  # one circuit, shared


class _Tagged(CircuitBreaker):
    """A subclass with attributes of its own (a ``__dict__``)."""

    def __init__(self, name: str, *, tag: str) -> None:
        super().__init__(name)
        self.tag = tag


async def test_copies_keep_a_subclass_attributes_and_deep_copies_work_after_many_calls() -> None:
    breaker = _Tagged("ready-tagged", tag="payments")
    for _ in range(3):
        await succeed(breaker)
    twin = copy.copy(breaker)
    assert twin.tag == "payments"
    deep = copy.deepcopy(breaker)  # its own backend and circuit: the ready self stays behind
    assert deep.tag == "payments"
    for _ in range(2):
        async with deep as bound:
            assert bound is deep
    assert (await deep.stats()).success_count == 5
    assert (await breaker.stats()).success_count == 3


async def test_a_ready_value_taken_for_a_future_calls_back_on_the_running_loop() -> None:
    """Code that checks isinstance(x, asyncio.Future) and adds a done callback (some SDKs
    do) gets it called soon on the running loop, as a done future's own loop would."""
    ready = Ready(7)
    assert isinstance(ready, asyncio.Future)
    assert ready.get_loop() is asyncio.get_running_loop()
    called: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    ready.add_done_callback(lambda done: called.set_result(done.result()))
    assert await asyncio.wait_for(called, 5) == 7
    assert ready.remove_done_callback(print) == 0
