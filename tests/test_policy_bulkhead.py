"""In-process Bulkhead: the limit holds under concurrency, waiters are served in order, a
cancelled or failed call never leaks a slot. Runs on asyncio and trio."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest
from structlog.testing import capture_logs

from aioresil import Bulkhead, BulkheadFullError, BulkheadRejected, MemoryBackend
from aioresil.testing import EventRecorder

from .policy_helpers import BACKENDS, Boom, on_both_backends


@pytest.fixture(params=BACKENDS)
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def settle() -> None:
    """Let every ready task run until it blocks."""
    for _ in range(10):
        await anyio.lowlevel.checkpoint()


@on_both_backends
async def test_calls_beyond_the_limit_are_rejected_at_once() -> None:
    bulkhead = Bulkhead(2, name="reports")
    events = EventRecorder()
    bulkhead.add_listener(events)  # type: ignore[arg-type]
    release = anyio.Event()

    async def hold() -> None:
        await release.wait()

    async with anyio.create_task_group() as group:
        group.start_soon(bulkhead.call, hold)
        group.start_soon(bulkhead.call, hold)
        await settle()
        assert bulkhead.stats().active == 2
        with capture_logs() as logs, pytest.raises(BulkheadFullError) as caught:
            await bulkhead.call(hold)
        assert (caught.value.name, caught.value.max_concurrent) == ("reports", 2)
        assert [entry["event"] for entry in logs] == ["bulkhead_rejected"]
        release.set()
    assert [e.max_concurrent for e in events.of_type(BulkheadRejected)] == [2]
    stats = bulkhead.stats()
    assert (stats.active, stats.accepted, stats.rejected) == (0, 2, 1)


@on_both_backends
async def test_waiters_queue_in_order_up_to_max_waiting() -> None:
    bulkhead = Bulkhead(1, max_waiting=2)
    order: list[str] = []
    gate = anyio.Event()

    async def job(label: str) -> None:
        order.append(label)
        if label == "first":
            await gate.wait()

    async with anyio.create_task_group() as group:
        group.start_soon(bulkhead.call, job, "first")
        await settle()
        group.start_soon(bulkhead.call, job, "second")
        await settle()
        group.start_soon(bulkhead.call, job, "third")
        await settle()
        assert bulkhead.stats().waiting == 2
        with pytest.raises(BulkheadFullError):
            await bulkhead.call(job, "fourth")
        gate.set()
    assert order == ["first", "second", "third"]
    assert bulkhead.stats().active == 0


@on_both_backends
async def test_a_waiter_gives_up_after_max_wait() -> None:
    bulkhead = Bulkhead(1, max_waiting=1, max_wait=0.01)
    release = anyio.Event()
    async with anyio.create_task_group() as group:
        group.start_soon(bulkhead.call, release.wait)
        await settle()
        with pytest.raises(BulkheadFullError):
            await bulkhead.call(anyio.lowlevel.checkpoint)
        assert bulkhead.stats().waiting == 0
        release.set()
    assert bulkhead.stats().active == 0


@on_both_backends
async def test_a_cancelled_waiter_leaves_the_queue_without_leaking_a_slot() -> None:
    bulkhead = Bulkhead(1, max_waiting=5)
    release = anyio.Event()
    ran: list[str] = []

    async def job(label: str) -> None:
        ran.append(label)

    waiter_scope = anyio.CancelScope()

    async def cancelled_waiter() -> None:
        with waiter_scope:
            await bulkhead.call(job, "cancelled")

    async with anyio.create_task_group() as group:
        group.start_soon(bulkhead.call, release.wait)
        await settle()
        group.start_soon(cancelled_waiter)
        await settle()
        assert bulkhead.stats().waiting == 1
        waiter_scope.cancel()
        await settle()
        assert bulkhead.stats().waiting == 0
        release.set()
    await bulkhead.call(job, "after")
    assert ran == ["after"]
    stats = bulkhead.stats()
    assert (stats.active, stats.waiting) == (0, 0)


@on_both_backends
async def test_a_slot_handed_to_a_waiter_cancelled_at_that_moment_is_passed_on() -> None:
    bulkhead = Bulkhead(1, max_waiting=5)
    release = anyio.Event()
    ran: list[str] = []
    waiter_scope = anyio.CancelScope()

    async def job(label: str) -> None:
        ran.append(label)

    async def cancelled_waiter() -> None:
        with waiter_scope:
            await bulkhead.call(job, "cancelled")

    async def holder() -> None:
        await bulkhead.call(release.wait)
        waiter_scope.cancel()  # the slot was just handed over; its new owner is cancelled

    async with anyio.create_task_group() as group:
        group.start_soon(holder)
        await settle()
        group.start_soon(cancelled_waiter)
        await settle()
        group.start_soon(bulkhead.call, job, "next")
        await settle()
        release.set()
    assert "next" in ran
    stats = bulkhead.stats()
    assert (stats.active, stats.waiting) == (0, 0)


@on_both_backends
async def test_a_failing_call_gives_its_slot_back() -> None:
    bulkhead = Bulkhead(1)

    async def failing() -> None:
        raise Boom("down")

    for _ in range(3):
        with pytest.raises(Boom):
            await bulkhead.call(failing)
    assert bulkhead.stats().active == 0


@on_both_backends
async def test_async_with_form_holds_a_slot_for_the_block() -> None:
    bulkhead = Bulkhead(1, backend=MemoryBackend())
    async with bulkhead:
        assert bulkhead.stats().active == 1
        with pytest.raises(BulkheadFullError):
            async with bulkhead:
                pass  # pragma: no cover
    assert bulkhead.stats().active == 0


@on_both_backends
async def test_peak_concurrency_never_exceeds_the_limit() -> None:
    bulkhead = Bulkhead(3, max_waiting=100)
    running = peak = done = 0

    async def job() -> None:
        nonlocal running, peak, done
        running += 1
        peak = max(peak, running)
        for _ in range(3):
            await anyio.lowlevel.checkpoint()
        running -= 1
        done += 1

    async with anyio.create_task_group() as group:
        for _ in range(60):
            group.start_soon(bulkhead.call, job)
    assert (peak, done) == (3, 60)
    stats = bulkhead.stats()
    assert (stats.active, stats.accepted, stats.rejected) == (0, 60, 0)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_concurrent": 0}, "max_concurrent"),
        ({"max_concurrent": 2, "max_waiting": -1}, "max_waiting"),
        ({"max_concurrent": 2, "max_wait": 0}, "max_wait"),
        ({"max_concurrent": 2, "backend": object()}, "backend"),
        ({"max_concurrent": 2, "name": ""}, "name"),
    ],
)
def test_bad_configuration_is_refused(options: dict[str, object], message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        Bulkhead(**options)  # type: ignore[arg-type]
