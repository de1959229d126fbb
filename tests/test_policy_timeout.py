"""Timeout: the guarded call is really cancelled, only our own deadline becomes
``CallTimeoutError``, and one object serves many tasks. Runs on asyncio and trio.

The only real waits in the policy suite live here: limits of a few milliseconds around calls
that would otherwise sleep for a minute (anyio's deadlines run on the event loop's clock).
"""

from __future__ import annotations

import pickle

import anyio
import pytest
from structlog.testing import capture_logs

from aioresil import AioresilError, CallTimedOut, CallTimeoutError, Timeout
from aioresil.testing import EventRecorder

from .policy_helpers import BACKENDS, on_both_backends

TINY = 0.02


@pytest.fixture(params=BACKENDS)
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@on_both_backends
async def test_a_call_that_finishes_in_time_returns_its_result() -> None:
    timeout = Timeout(60)

    async def quick(x: int) -> int:
        return x * 2

    assert await timeout.call(quick, 21) == 42
    stats = timeout.stats()
    assert (stats.calls, stats.timed_out) == (1, 0)


@on_both_backends
async def test_a_slow_call_is_cancelled_and_raises_call_timeout_error() -> None:
    timeout = Timeout(TINY, name="lookup")
    events = EventRecorder()
    timeout.add_listener(events)  # type: ignore[arg-type]
    cleaned_up = False

    async def slow() -> None:
        nonlocal cleaned_up
        try:
            await anyio.sleep(60)
        finally:
            cleaned_up = True  # the guarded call really was cancelled

    with capture_logs() as logs, pytest.raises(CallTimeoutError) as caught:
        await timeout.call(slow)
    assert cleaned_up
    assert (caught.value.name, caught.value.seconds) == ("lookup", TINY)
    assert timeout.stats().timed_out == 1
    assert [e.name for e in events.of_type(CallTimedOut)] == ["lookup"]
    assert [entry["event"] for entry in logs] == ["call_timed_out"]


def test_call_timeout_error_is_ours_and_a_builtin_timeout_error() -> None:
    error = CallTimeoutError("x", 1.5)
    assert isinstance(error, AioresilError)
    assert isinstance(error, TimeoutError)  # `except TimeoutError` keeps working
    assert CallTimeoutError.__name__ != TimeoutError.__name__
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.name, copy.seconds, str(copy)) == ("x", 1.5, str(error))


@on_both_backends
async def test_async_with_form_times_out_a_block() -> None:
    timeout = Timeout(TINY)
    reached_end = False

    async def block() -> None:
        nonlocal reached_end
        async with timeout:
            await anyio.sleep(60)
            reached_end = True

    with pytest.raises(CallTimeoutError):
        await block()
    assert not reached_end
    async with timeout:
        pass  # a fresh block gets a fresh deadline
    assert timeout.stats().calls == 2


@on_both_backends
async def test_an_outer_cancellation_is_not_reported_as_our_timeout() -> None:
    timeout = Timeout(60)
    with anyio.move_on_after(TINY) as outer:
        async with timeout:
            await anyio.sleep(60)
    assert outer.cancelled_caught
    assert timeout.stats().timed_out == 0
    with anyio.move_on_after(TINY) as outer:
        await timeout.call(anyio.sleep, 60)
    assert outer.cancelled_caught
    assert timeout.stats().timed_out == 0


@on_both_backends
async def test_one_timeout_object_serves_concurrent_tasks_and_nesting() -> None:
    timeout = Timeout(TINY * 5)
    results: dict[str, str] = {}

    async def worker(label: str, seconds: float) -> None:
        try:
            async with timeout, timeout:  # nested use of the same object
                await anyio.sleep(seconds)
            results[label] = "done"
        except CallTimeoutError:
            results[label] = "timed out"

    async with anyio.create_task_group() as group:
        group.start_soon(worker, "fast", 0)
        group.start_soon(worker, "slow", 60)
    assert results == {"fast": "done", "slow": "timed out"}


@on_both_backends
async def test_the_callers_own_exception_passes_through_unchanged() -> None:
    error = KeyError("mine")

    async def failing() -> None:
        raise error

    with pytest.raises(KeyError) as caught:
        await Timeout(60).call(failing)
    assert caught.value is error


@pytest.mark.parametrize("seconds", [0, -1, float("inf"), float("nan")])
def test_bad_seconds_are_refused(seconds: float) -> None:
    with pytest.raises(ValueError, match="seconds"):
        Timeout(seconds)


def test_exit_without_enter_is_an_error() -> None:
    async def main() -> None:
        with pytest.raises(RuntimeError, match="without a matching"):
            await Timeout(1).__aexit__(None, None, None)

    anyio.run(main)
