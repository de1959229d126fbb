"""SharedDeadline: one timer for every operation in flight, with asyncio.timeout()'s semantics.

The Redis fault tests (test_faults.py, test_survival.py) prove the cut on a black-holed
server; these pin the timer's own contract: what is cut, what is not, whose cancellation
wins, and that nothing is left behind.
"""

from __future__ import annotations

import asyncio

import pytest

from aioresil.backends.deadlines import SharedDeadline


def hang() -> asyncio.Future[None]:
    return asyncio.get_running_loop().create_future()


async def test_an_operation_past_its_deadline_raises_timeout_error_and_leaves_no_cancel() -> None:
    deadlines = SharedDeadline(0.05)
    flight = deadlines.start()
    with pytest.raises(TimeoutError):
        await deadlines.run(hang, flight)
    assert flight.expired
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0
    assert len(deadlines) == 0
    await asyncio.sleep(0)  # the task is not cancelled later by a cut that is over


async def test_one_timer_cuts_every_hung_operation_and_spares_the_answered_ones() -> None:
    deadlines = SharedDeadline(0.2)
    answered = asyncio.Event()

    async def answers() -> str:
        await answered.wait()
        return "reply"

    async def one(operation: object) -> object:
        flight = deadlines.start()
        try:
            return await deadlines.run(operation, flight)  # type: ignore[arg-type]
        except TimeoutError as error:
            return error

    hung = [asyncio.create_task(one(hang)) for _ in range(50)]
    quick = [asyncio.create_task(one(answers)) for _ in range(50)]
    await asyncio.sleep(0)
    answered.set()  # the quick half answers long before the deadline
    results = await asyncio.gather(*hung, *quick)
    assert all(isinstance(r, TimeoutError) for r in results[:50])
    assert results[50:] == ["reply"] * 50
    assert len(deadlines) == 0
    assert deadlines._timer is None  # nothing left armed once the queue is empty


async def test_an_outer_cancel_is_a_cancellation_not_a_timeout() -> None:
    deadlines = SharedDeadline(30.0)
    started = asyncio.Event()

    async def op() -> None:
        started.set()
        await hang()

    async def call() -> None:
        await deadlines.run(op, deadlines.start())

    task = asyncio.create_task(call())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(deadlines) == 0


async def test_an_outer_asyncio_timeout_that_fires_first_wins() -> None:
    deadlines = SharedDeadline(30.0)
    flight = deadlines.start()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05) as outer:
            await deadlines.run(hang, flight)
    assert outer.expired() and not flight.expired


async def test_a_cut_and_an_outer_cancel_together_stay_a_cancellation() -> None:
    deadlines = SharedDeadline(0.05)
    flight_seen: list[object] = []

    async def op() -> None:
        # Block past the deadline, then the outer cancel lands on top of our cut.
        try:
            await hang()
        except asyncio.CancelledError:
            task = asyncio.current_task()
            assert task is not None
            task.cancel()  # someone else cancels too
            raise

    async def call() -> None:
        flight = deadlines.start()
        flight_seen.append(flight)
        await deadlines.run(op, flight)

    task = asyncio.create_task(call())
    with pytest.raises(asyncio.CancelledError):
        await task
    assert flight_seen and flight_seen[0].expired  # type: ignore[attr-defined]


async def test_a_shorter_deadline_behind_longer_ones_is_still_cut_first() -> None:
    deadlines = SharedDeadline(30.0)
    long_started = asyncio.Event()

    async def long_one() -> None:
        flight = deadlines.start()
        long_started.set()
        await deadlines.run(hang, flight)

    long_task = asyncio.create_task(long_one())
    await long_started.wait()
    short = deadlines.start(0.05)
    with pytest.raises(TimeoutError):
        await deadlines.run(hang, short)
    assert short.expired and not long_task.done()
    long_task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await long_task
    assert len(deadlines) == 0


async def test_an_operation_that_swallows_the_cut_returns_and_the_task_is_not_cancelled() -> None:
    deadlines = SharedDeadline(0.05)

    async def stubborn() -> str:
        try:
            await hang()
        except asyncio.CancelledError:
            return "kept"
        return "unreachable"

    flight = deadlines.start()
    assert await deadlines.run(stubborn, flight) == "kept"
    assert flight.expired
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0


def test_a_deadline_survives_a_new_event_loop() -> None:
    deadlines = SharedDeadline(0.05)

    async def cut() -> bool:
        flight = deadlines.start()
        try:
            await deadlines.run(hang, flight)
        except TimeoutError:
            return flight.expired
        return False

    async def left_armed() -> None:
        deadlines.start(30.0)  # never run: the loop ends with it queued and the timer armed

    asyncio.run(left_armed())
    assert asyncio.run(cut())  # the old loop's queue and timer do not leak into this one
    assert asyncio.run(cut())


async def test_start_outside_a_task_is_a_clear_error() -> None:
    deadlines = SharedDeadline(1.0)
    loop = asyncio.get_running_loop()
    error: list[BaseException] = []

    done = asyncio.Event()

    def outside() -> None:
        try:
            deadlines.start()
        except RuntimeError as exc:
            error.append(exc)
        done.set()

    loop.call_soon(outside)
    await done.wait()
    assert error and "inside a task" in str(error[0])
