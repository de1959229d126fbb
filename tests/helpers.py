"""Small helpers shared by the breaker tests."""

from __future__ import annotations

import asyncio
import inspect
import struct
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from aioresil import CircuitBreaker, CircuitOpenError

if TYPE_CHECKING:
    from aioresil import RedisBackend


class Boom(Exception):
    """The failure our fake upstream raises."""


async def fail(breaker: CircuitBreaker, exc: BaseException | None = None) -> None:
    """Run one failing call through ``breaker`` (the error must propagate unchanged)."""
    error = exc if exc is not None else Boom("upstream down")
    try:
        async with breaker:
            raise error
    except BaseException as caught:
        assert caught is error, f"expected the user's own exception, got {caught!r}"
    else:  # pragma: no cover - the block always raises
        raise AssertionError("no exception")


async def succeed(breaker: CircuitBreaker) -> None:
    async with breaker:
        pass


async def rejected(breaker: CircuitBreaker) -> CircuitOpenError:
    """Assert that ``breaker`` rejects a call without running its block; return the error."""
    ran = False
    try:
        async with breaker:
            ran = True
    except CircuitOpenError as error:
        assert not ran
        return error
    raise AssertionError(f"call was not rejected (state {breaker.state.value})")


async def until(condition: Callable[[], object], *, within: float = 20.0, what: str = "") -> None:
    """Wait (polling every 10 ms) until ``condition()`` is true; fail after ``within`` seconds.

    ``within`` is a generous ceiling for a shared, slow machine, never a speed claim.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {within}s: {what or condition}")
        await asyncio.sleep(0.01)  # the polling interval (one place for it)


def until_sync(
    condition: Callable[[], object],
    *,
    within: float = 20.0,
    what: str = "",
    interval: float = 0.01,
    ignore: tuple[type[BaseException], ...] = (),
) -> None:
    """:func:`until` for code that cannot await (sync tests, server fixtures): poll
    ``condition()`` every ``interval`` s, treating the ``ignore`` exceptions as "not yet"; an
    ``AssertionError`` naming ``what`` after ``within`` seconds (a ceiling, never a claim)."""
    deadline = time.monotonic() + within
    while True:
        try:
            if condition():
                return
        except ignore:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within}s: {what or condition}")
        time.sleep(interval)  # the polling interval (one place for it), not a wait for a result


async def eventually(
    check: Callable[[], Awaitable[bool] | bool],
    *,
    within: float = 10.0,
    interval: float = 0.01,
    what: str = "the condition",
) -> None:
    """Wait until ``check()`` is true (it may be async); an ``AssertionError`` naming ``what``
    after ``within`` seconds. Tests wait on conditions, never for a fixed time: on a loaded
    2-core machine a fixed sleep is either too short (flaky) or too long (slow)."""
    deadline = time.monotonic() + within
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        assert time.monotonic() < deadline, f"{what} did not happen within {within}s"
        await asyncio.sleep(interval)  # the polling interval (one place for it)


async def wait_for_subscribers(backend: RedisBackend, count: int) -> None:
    """Until ``count`` breaker listeners are subscribed to the backend's transitions channel."""

    async def subscribed() -> bool:
        (_, number), *_ = await backend.client.pubsub_numsub(backend.events_channel)
        return int(number) >= count

    await eventually(subscribed, what=f"{count} listeners subscribing")


async def listener_synced(backend: RedisBackend, within: float = 10.0) -> None:
    """Until the backend's breaker listener has subscribed and resynced every view.

    Why before a fault: the resync's reply landing inside the operation the fault then cuts
    makes that cut read as contention (Redis answered something meanwhile), not an outage."""
    await asyncio.wait_for(backend._views_synced.wait(), within)


def scripts_agree(
    machine: Any, client: Any, scripts: Iterable[Any], *, examples: int, steps: int
) -> None:
    """Run ``machine`` (a hypothesis state machine comparing Lua scripts with their Python
    models through its ``client`` attribute) against ``client``, ``scripts`` loaded first."""
    from hypothesis import settings

    for script in scripts:
        client.script_load(script.source)
    machine.client = client
    runner = machine.TestCase
    runner.settings = settings(max_examples=examples, stateful_step_count=steps, deadline=None)
    runner().runTest()


def packed_row(raw: Mapping[bytes, bytes]) -> bytes:
    """The read row (the breaker's row key) that a breaker hash's text fields say, packed in
    Python: the reference ``breaker.lua``'s packers are checked against. ``raw`` is the hash
    as ``HGETALL`` answers it."""
    from aioresil.backends.breaker_schema import ROW_FORMAT, ROW_NUMBERS, STATES_BY_CODE, Field
    from aioresil.core.states import CircuitState

    text = {k.decode(): v.decode() for k, v in raw.items()}
    code = STATES_BY_CODE.index(CircuitState(text[Field.STATE]))
    numbers = [int(text.get(f) or 0) for f in ROW_NUMBERS]
    return struct.pack(ROW_FORMAT, code, *numbers, text[Field.FINGERPRINT].encode())
