"""The dead letter queue's retry worker: run a handler over many entries, a few at a time.

Why a module of its own: the queue (``dlq.py``) offers the atomic steps (``claim``, ``ack``,
``nack``, ``release``, ``list``); driving them for a whole queue (a producer paging through
the index, ``concurrency`` workers, per-type counts, progress, errors raised as themselves) is
a policy on top, and it uses nothing but the queue's public methods.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Protocol

import structlog

from ..exceptions import BackendUnavailableError, DeadLetterUnavailableError
from .dlq_records import DeadLetter, DeadLetterLease, DeadLetterPage, RetryCounts, RetryReport

__all__ = ["PAGE", "RetryableQueue", "retry_all", "run_leased"]


class RetryableQueue(Protocol):
    """The queue's public steps the worker drives (``DeadLetterQueue`` has them all); a
    protocol, so this module does not import ``dlq.py`` back (no import cycle)."""

    name: str

    async def claim(self, entry_id: str, *, lease: float = ...) -> DeadLetterLease: ...

    async def ack(self, lease: DeadLetterLease) -> bool: ...

    async def nack(self, lease: DeadLetterLease, error: BaseException | str) -> bool: ...

    async def release(self, lease: DeadLetterLease) -> bool: ...

    async def list(
        self, *, task_type: str | None = ..., limit: int = ..., cursor: str | None = ...
    ) -> DeadLetterPage: ...


Handler = Callable[[DeadLetter], Awaitable[object]]

PAGE = 200
"""Entries read per page while retrying a whole queue."""

_log = structlog.get_logger("aioresil")


async def run_leased(queue: RetryableQueue, held: DeadLetterLease, handler: Handler) -> bool:
    """Run ``handler`` on a leased entry and settle the lease: ack on success, nack with the
    error on an exception, released (and re-raised) on cancellation."""
    try:
        await handler(held.entry)
    except Exception as exc:
        if not await queue.nack(held, exc):
            _log.warning("dlq_lease_lost", queue=queue.name, entry_id=held.entry.id)
        return False
    except BaseException:
        await asyncio.shield(_release_quietly(queue, held))
        raise
    if not await queue.ack(held):
        _log.warning("dlq_lease_lost", queue=queue.name, entry_id=held.entry.id)
    return True


async def _release_quietly(queue: RetryableQueue, held: DeadLetterLease) -> None:
    try:
        await queue.release(held)
    except BackendUnavailableError:
        pass  # the lease will expire on its own


async def retry_all(
    queue: RetryableQueue,
    handler: Handler,
    *,
    task_type: str | None,
    concurrency: int,
    limit: int | None,
    lease: float,
    progress: Callable[[RetryReport], object] | None,
) -> RetryReport:
    """:meth:`DeadLetterQueue.retry_all` (see there)."""
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ValueError(f"concurrency must be an int >= 1, got {concurrency!r}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0 or None, got {limit!r}")
    counts: dict[str, list[int]] = {}
    totals = [0, 0, 0]
    pending: asyncio.Queue[DeadLetter | None] = asyncio.Queue(maxsize=concurrency * 2)

    def report() -> RetryReport:
        return RetryReport(
            totals[0],
            totals[1],
            totals[2],
            {t: RetryCounts(*c) for t, c in sorted(counts.items())},
        )

    async def worker() -> None:
        while (letter := await pending.get()) is not None:
            try:
                held = await queue.claim(letter.id, lease=lease)
            except DeadLetterUnavailableError:
                outcome = 2
            else:
                outcome = 0 if await run_leased(queue, held, handler) else 1
            totals[outcome] += 1
            counts.setdefault(letter.task_type, [0, 0, 0])[outcome] += 1
            if progress is not None:
                progress(report())

    async def producer() -> None:
        sent = 0
        cursor: str | None = None
        while limit is None or sent < limit:
            size = PAGE if limit is None else min(PAGE, limit - sent)
            page = await queue.list(task_type=task_type, limit=size, cursor=cursor)
            for letter in page.entries:
                await pending.put(letter)
            sent += len(page.entries)
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        # Only on a normal end: after an error the task group cancels the workers, and a
        # put into a full queue nobody reads any more would hang forever.
        for _ in range(concurrency):
            await pending.put(None)

    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(producer())
            for _ in range(concurrency):
                group.create_task(worker())
    except BaseExceptionGroup as failed:
        # Raise what went wrong (Redis down, a raising progress callback) as itself, so
        # `except BackendUnavailableError` works; extra errors are logged, not lost.
        first, *others = failed.exceptions
        for other in others:
            _log.error("dlq_retry_all_error", queue=queue.name, error=repr(other))
        raise first from None
    return report()
