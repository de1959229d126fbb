"""What the dead letter queue hands back: frozen records, events, and the storage contract.

Why a separate module: :mod:`aioresil.stores.dlq` (the queue), ``dlq_memory`` and ``dlq_redis``
(its two storages) all need these names, and none of them should import the others'
internals.

The storage contract (:class:`DlqStorage`) is deliberately low level: every method is one
atomic step (on Redis, one Lua script or one read), working on raw entry fields. The queue
validates, serializes and decodes; the storages only store. Both storages take the same
lexicographic bounds as Redis ``ZRANGEBYLEX`` (``"+"``, ``"-"``, ``"(x"``, ``"[x"``) over index
members ``"<failed_at ms, 13 digits>|<id>"``, so they cannot drift apart in what a range means.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from .page import Page

__all__ = [
    "DeadLetter",
    "DeadLetterEvent",
    "DeadLetterEvicted",
    "DeadLetterLease",
    "DeadLetterListener",
    "DeadLetterPage",
    "DeadLetterSpoolDropped",
    "DeadLetterSpooled",
    "DeadLetterStats",
    "DlqStorage",
    "RawFields",
    "RetryCounts",
    "RetryReport",
]

RawFields = dict[str, str | bytes]
"""One stored entry: ``ty`` task type, ``tk`` encoded type, ``fa``/``ff`` failed_at and
first_failed_at (13-digit ms), ``ti`` task id (absent when none), ``p`` payload bytes, ``et``
error type, ``em`` message, ``tb`` traceback, ``a`` attempts, ``md`` metadata JSON."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One failed task, as stored.

    ``failed_at`` is the latest failure (it moves when a retry fails), ``first_failed_at`` the
    first; both are aware UTC datetimes from the pushing process's wall clock (labels for
    humans, never used to decide anything).
    """

    id: str
    task_type: str
    task_id: str | None
    payload: Any
    error_type: str | None
    error_message: str
    traceback: str | None
    attempts: int
    first_failed_at: datetime
    failed_at: datetime
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def idempotency_key(self) -> str:
        """``"<id>:<attempts>"``: the same for every redelivery of one retry attempt.

        A handler that crashed after doing its work is retried with the same key once its lease
        expires, so the downstream side can recognise the duplicate.
        """
        return f"{self.id}:{self.attempts}"


@dataclass(frozen=True, slots=True)
class DeadLetterPage(Page[DeadLetter]):
    """One page of :meth:`DeadLetterQueue.list`, newest first.

    ``next_cursor`` is ``None`` on the last page; pass it back as ``cursor=`` for the next.
    Iterating over the page or taking ``len()`` works on ``entries``.
    """

    entries: tuple[DeadLetter, ...]
    next_cursor: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadLetterStats:
    """A queue's statistics at one moment (:meth:`DeadLetterQueue.stats`), from counters and
    index ends only. ``to_dict()`` gives the JSON-ready form (datetimes as ISO-8601).

    Attributes:
        total_failed_tasks: entries stored now.
        recent_failures_24h: entries whose latest failure is less than 24 hours old.
        failures_by_task_type: entries per task type, sorted by type.
        oldest_failure: the oldest entry's latest failure, ``None`` when empty.
        newest_failure: the newest entry's latest failure, ``None`` when empty.
        in_flight: entries leased by a retry worker right now.
        evicted: entries evicted at ``max_entries`` (``overflow="evict_oldest"``), ever.
        expired: entries dropped by ``retention``, ever.
        spooled: pushes waiting in this process's local spool for the backend.
    """

    total_failed_tasks: int
    recent_failures_24h: int
    failures_by_task_type: Mapping[str, int]
    oldest_failure: datetime | None
    newest_failure: datetime | None
    in_flight: int
    evicted: int
    expired: int
    spooled: int

    def to_dict(self) -> dict[str, Any]:
        """Every field by name; ``failures_by_task_type`` as a dict, datetimes as ISO-8601."""
        oldest, newest = self.oldest_failure, self.newest_failure
        return {
            "total_failed_tasks": self.total_failed_tasks,
            "recent_failures_24h": self.recent_failures_24h,
            "failures_by_task_type": dict(self.failures_by_task_type),
            "oldest_failure": None if oldest is None else oldest.isoformat(),
            "newest_failure": None if newest is None else newest.isoformat(),
            "in_flight": self.in_flight,
            "evicted": self.evicted,
            "expired": self.expired,
            "spooled": self.spooled,
        }

    def __getitem__(self, key: str) -> Any:
        """``stats["total_failed_tasks"]``: the dict-style reads of the 0.x ``stats()``, which
        returned ``to_dict()``'s dict. Read the attributes instead; this goes next release."""
        return self.to_dict()[key]


@dataclass(frozen=True, slots=True)
class DeadLetterLease:
    """An entry claimed by :meth:`DeadLetterQueue.claim`: settle it with ``ack`` or ``nack``.

    ``token`` fences this lease: once it expired and another worker claimed the entry, this
    lease's ``ack``/``nack`` change nothing and return ``False``.
    """

    entry: DeadLetter
    token: int
    lease_seconds: float


@dataclass(frozen=True, slots=True)
class RetryCounts:
    """How many retries succeeded, failed, or were skipped (entry gone or leased elsewhere)."""

    succeeded: int = 0
    failed: int = 0
    skipped: int = 0

    @property
    def total(self) -> int:
        return self.succeeded + self.failed + self.skipped


@dataclass(frozen=True, slots=True)
class RetryReport:
    """What :meth:`DeadLetterQueue.retry_all` did, in total and per task type."""

    succeeded: int = 0
    failed: int = 0
    skipped: int = 0
    by_task_type: Mapping[str, RetryCounts] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return self.succeeded + self.failed + self.skipped


@dataclass(frozen=True, slots=True)
class DeadLetterEvicted:
    """The queue was full (``overflow="evict_oldest"``): the oldest entry was dropped."""

    queue: str
    entry_id: str
    at: float


@dataclass(frozen=True, slots=True)
class DeadLetterSpooled:
    """Redis was unreachable: the entry waits in the local spool until a flush."""

    queue: str
    entry_id: str
    at: float
    error: str


@dataclass(frozen=True, slots=True)
class DeadLetterSpoolDropped:
    """A spooled entry could not be stored when flushed (the queue rejected it as full)."""

    queue: str
    entry_id: str
    at: float
    reason: str


DeadLetterEvent = DeadLetterEvicted | DeadLetterSpooled | DeadLetterSpoolDropped
DeadLetterListener = Callable[[DeadLetterEvent], object]
"""A plain callable run inline; an exception it raises is logged and swallowed."""


@dataclass(frozen=True, slots=True)
class StatsRow:
    """Raw statistics read by a storage in one snapshot (members are index members or "")."""

    total: int
    recent: int
    oldest_member: str
    newest_member: str
    evicted: int
    expired: int
    in_flight: int
    by_type: dict[str, int]


@dataclass(frozen=True, slots=True)
class ClaimRow:
    """A storage's answer to a claim: status 1 claimed, 0 missing, -1 leased elsewhere."""

    status: int
    token: int = 0
    fields: RawFields | None = None


class DlqStorage(Protocol):
    """One queue's storage; every method is one atomic step."""

    async def push(
        self,
        entry_id: str,
        fields: RawFields,
        max_entries: int,
        overflow: str,
        retention_bound: str,
    ) -> tuple[int, list[str]]:
        """Store an entry: (1, evicted ids) stored, (0, []) full, (2, []) id already stored."""
        ...

    async def push_many(
        self,
        items: list[tuple[str, RawFields]],
        max_entries: int,
        overflow: str,
        retention_bound: str,
    ) -> list[tuple[int, list[str]]]:
        """:meth:`push` for each item, in order, as one atomic step (one script on Redis):
        all stored, or none. Stops after the first rejection (status 0): later items are not
        stored. The caller bounds the chunk (``DeadLetterQueue.push_prepared``)."""
        ...

    async def get(self, entry_id: str) -> RawFields | None: ...

    async def page(
        self, type_key: str | None, upper: str, lower: str, limit: int
    ) -> list[tuple[str, RawFields]]:
        """``limit`` (member, fields) pairs within the bounds, newest first."""
        ...

    async def count(self, task_type: str | None) -> int: ...

    async def stats(self, since_bound: str, now_ms: float | None) -> StatsRow: ...

    async def claim(self, entry_id: str, now_ms: float | None, lease_ms: int) -> ClaimRow: ...

    async def ack(self, entry_id: str, token: int) -> bool: ...

    async def nack(
        self, entry_id: str, token: int, failed_at: str, error_type: str, message: str, tb: str
    ) -> int:
        """New attempt count, or 0 when the token no longer matches."""
        ...

    async def release(self, entry_id: str, token: int) -> bool: ...

    async def remove(self, entry_id: str) -> bool: ...

    async def purge_batch(self, type_key: str | None, upper: str, batch: int) -> int: ...
