"""A dead letter queue that never loses an entry: failed tasks kept, inspected and retried.

Why another DLQ: existing Python DLQs retry a dead job by removing it and pushing it back in a
second step (a crash in between loses it), cap silently, and offer no per-type statistics.
Here every change is one atomic step (one Lua script on Redis), a retry *leases* the entry
instead of removing it, caps are loud, and a push made while Redis is down waits in a local
spool instead of vanishing.

Storage: ``DeadLetterQueue()`` keeps its entries in a private
:class:`~aioresil.MemoryBackend`; pass a ``MemoryBackend`` to share a queue between objects
of one process, or a :class:`~aioresil.RedisBackend` to share it across processes (the same
connection pool as the breakers). Every key of one queue shares one hash tag, so a queue lives
in one Redis Cluster slot: scripts stay slot-local, at the price that one queue cannot be
spread over shards (use several queue names for that).

Time, decided once:

* ``failed_at`` / ``first_failed_at`` are *labels*: the pushing process's wall clock
  (``clock.time()``), sent to Redis as an argument. ``since=``/``until=``, ``older_than=``,
  retention and the 24 h statistic compare against that same wall clock.
* *Lease expiry* is a decision shared by every worker, so it uses one time base: Redis
  ``TIME`` inside the claim script (workers with skewed clocks agree). When a ``clock`` is
  injected (tests), its ``time()`` is passed to the scripts instead, so a
  :class:`~aioresil.testing.FakeClock` drives leases on Redis too. The memory storage uses the
  clock's ``monotonic()`` reading for leases.

Bulk work, decided once: every Redis operation runs under the backend's one deadline
(``operation_timeout``, 1 s by default), so no single operation does work that grows with the
queue or with a caller's batch size. ``purge``, ``push_prepared`` and ``retry_all`` are loops
of small chunks, each chunk one script call, atomic, with a deadline of its own; ``stats``
reads counters and index ends only (O(log n)). Why not a longer deadline for bulk operations
instead: a script blocks Redis for every other client (the breakers included) while it runs,
and a deadline long enough for any size stops telling a dead Redis from a busy one. What a
chunked operation cut short leaves is stated where it is defined: whole chunks, never half an
entry, and running it again finishes the job.

Example::

    dlq = DeadLetterQueue(backend, name="orders")
    entry_id = await dlq.push("send_email", {"to": "a@b.c"}, exc, attempts=3)

    async def resend(letter: DeadLetter) -> None:
        await send_email(**letter.payload, idempotency_key=letter.idempotency_key)

    ok = await dlq.retry(entry_id, resend)          # at-least-once, under a lease
    report = await dlq.retry_all(resend, task_type="send_email", concurrency=20)
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import re
import secrets
import weakref
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Any, Literal, ParamSpec, Self, TypeVar

import structlog

from ..backends.base import BreakerBackend, ScriptRunner
from ..backends.keys import encode_name
from ..backends.memory import MemoryBackend
from ..clock import Clock, SystemClock
from ..exceptions import (
    BackendError,
    BackendUnavailableError,
    DeadLetterQueueFullError,
    DeadLetterTooLargeError,
    DeadLetterUnavailableError,
)
from .dlq_codec import (
    as_datetime,
    as_ms,
    as_text,
    check_task_type,
    decode_entry,
    error_fields,
    pad,
)
from .dlq_memory import MemoryDlqStorage, QueueState
from .dlq_records import (
    DeadLetter,
    DeadLetterEvent,
    DeadLetterEvicted,
    DeadLetterLease,
    DeadLetterListener,
    DeadLetterPage,
    DeadLetterSpoolDropped,
    DeadLetterSpooled,
    DeadLetterStats,
    DlqStorage,
    RawFields,
    RetryReport,
)
from .dlq_redis import RedisDlqStorage
from .dlq_retry import retry_all, run_leased
from .dlq_spool import LocalSpool
from .serialize import JSON, Serializer, dumps_checked

__all__ = ["DeadLetterQueue", "Handler", "Overflow"]

P = ParamSpec("P")
R = TypeVar("R")
Handler = Callable[[DeadLetter], Awaitable[object]]
Overflow = Literal["reject", "evict_oldest"]

_log = structlog.get_logger("aioresil")
_ID_RE = re.compile(r"^[0-9a-f]{12}-[0-9a-f]{16}$")
_CURSOR_RE = re.compile(r"^\d{13}\|[0-9a-f]{12}-[0-9a-f]{16}$")
_PURGE_BATCH = 500
"""Entries one purge script deletes (about 3 ms on a loopback Redis, 13 ms on a loaded 2-core
machine: a margin of 30x or more under the default 1 s ``operation_timeout``)."""
_PUSH_CHUNK = 200
"""Entries one push_prepared script stores, at most (about 5 ms on a loopback Redis)."""
_PUSH_CHUNK_BYTES = 1 << 20
"""Field bytes one push_prepared script carries, at most (one bigger entry goes alone)."""
_DAY_MS = 86_400_000


def _utf8_size(value: str | bytes) -> int:
    """Bytes a field takes on the wire (a text field is sent as UTF-8; ``isascii`` is O(1))."""
    if isinstance(value, bytes) or value.isascii():
        return len(value)
    return len(value.encode("utf-8", "surrogatepass"))


def _spool_flusher(ref: weakref.ref[DeadLetterQueue]) -> Callable[[], Awaitable[None]]:
    async def flush() -> None:
        queue = ref()
        if queue is not None and queue.spooled:
            await queue._flush_quietly()

    return flush


async def _redeliver(ref: weakref.ref[DeadLetterQueue]) -> None:
    """The background flush of one queue's spool (see ``DeadLetterQueue._start_redelivery``)."""
    delay = 0.05
    while True:
        await asyncio.sleep(delay)
        queue = ref()
        if queue is None or not queue.spooled or getattr(queue.backend, "closing", False):
            return
        try:
            await queue.flush_spool()
        except BackendUnavailableError:
            delay = min(delay * 2, 2.0)
        except Exception:
            _log.exception("dlq_redelivery_failed", queue=queue.name)
            delay = 2.0
        del queue  # hold the queue only while flushing


class _StorageFactory:
    """Builds a queue's storage for whichever backend it is on (``backend.open_storage``)."""

    kind = "dlq"

    def __init__(self, name: str) -> None:
        self.name = name

    def in_process(self, shared: dict[str, Any]) -> tuple[DlqStorage, bool]:
        state = shared.get(self.name)
        if state is None:
            state = shared[self.name] = QueueState()
        return MemoryDlqStorage(state), True

    def on_scripts(self, runner: ScriptRunner) -> tuple[DlqStorage, bool]:
        return RedisDlqStorage(runner, self.name), False


class DeadLetterQueue:
    """Failed tasks, stored atomically, listed cheaply, retried under a lease.

    Args:
        backend: ``None`` (a private in-process store), a :class:`~aioresil.MemoryBackend`
            (queues of one ``name`` on it share entries) or a
            :class:`~aioresil.RedisBackend`.
        name: the queue's name (any non-empty string; encoded inside Redis keys).
        max_entries: the cap; what happens beyond it is ``overflow``.
        retention: seconds (or a ``timedelta``) after which an entry is dropped; enforced on
            push (at most 100 per push, counted as ``expired`` in :meth:`stats`) and by
            :meth:`purge`. ``None`` keeps entries until removed.
        overflow: ``"reject"`` raises :class:`~aioresil.DeadLetterQueueFullError` and stores
            nothing; ``"evict_oldest"`` drops the oldest entry, counts it (``evicted`` in
            :meth:`stats`) and emits :class:`DeadLetterEvicted`. Never silent.
        serializer: turns payloads into bytes; strict JSON by default, never pickle.
        max_payload_bytes: the largest serialized payload accepted.
        max_traceback_chars: tracebacks are cut to their last this-many characters.
        spool_max: how many pushes may wait in the local spool while Redis is unreachable;
            beyond it the push raises :class:`~aioresil.BackendUnavailableError`.
        spool_path: optional append-only JSON-lines file that mirrors the spool, so entries
            survive a restart (or a crash) of this process; it is read back on construction
            and replayed by the next push or :meth:`flush_spool`. There is no default file:
            see :meth:`aclose` for what happens to spooled entries without one.
        close_timeout: seconds :meth:`aclose` may spend flushing the spool.
        clock: injected time (tests); see the module docstring for what it decides. Defaults
            to the backend's own test clock when it has one, else the system clock.
    """

    def __init__(
        self,
        backend: Any = None,
        *,
        name: str = "default",
        max_entries: int = 100_000,
        retention: float | timedelta | None = None,
        overflow: Overflow = "reject",
        serializer: Serializer = JSON,
        max_payload_bytes: int = 1_048_576,
        max_traceback_chars: int = 8192,
        spool_max: int = 10_000,
        spool_path: str | Path | None = None,
        close_timeout: float = 5.0,
        clock: Clock | None = None,
    ) -> None:
        encode_name(name)  # validates: a str, not empty
        if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 1:
            raise ValueError(f"max_entries must be an int >= 1, got {max_entries!r}")
        if overflow not in ("reject", "evict_oldest"):
            raise ValueError(f"overflow must be 'reject' or 'evict_oldest', got {overflow!r}")
        if isinstance(retention, timedelta):
            retention = retention.total_seconds()
        if retention is not None and not retention > 0:
            raise ValueError(f"retention must be > 0 seconds or None, got {retention!r}")
        if not isinstance(serializer, Serializer):
            raise TypeError(f"serializer needs dumps() and loads(), got {serializer!r}")
        if max_payload_bytes < 1 or max_traceback_chars < 0 or spool_max < 0:
            raise ValueError(
                "max_payload_bytes must be >= 1, max_traceback_chars and spool_max >= 0"
            )
        self.name = name
        self.max_entries = max_entries
        self.retention = retention
        self.overflow: Overflow = overflow
        self.serializer = serializer
        self.max_payload_bytes = max_payload_bytes
        self.max_traceback_chars = max_traceback_chars
        self.spool_max = spool_max
        if not close_timeout > 0:
            raise ValueError(f"close_timeout must be > 0 seconds, got {close_timeout!r}")
        self.close_timeout = close_timeout
        if clock is None:
            # a RedisBackend's test clock, if any (anything else is refused just below)
            clock = backend.clock if isinstance(backend, BreakerBackend) else None
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._injected_clock = clock is not None
        self._listeners: list[DeadLetterListener] = []
        self._id_ms = self._id_counter = 0
        self._spool = LocalSpool(spool_max, spool_path)
        self._flush_lock = asyncio.Lock()
        if backend is None:
            backend = MemoryBackend()
        if not isinstance(backend, BreakerBackend):
            raise TypeError(
                f"backend must be None, a MemoryBackend or a RedisBackend, got {backend!r}"
            )
        self.backend = backend
        self._holding = False
        self._redelivery: asyncio.Task[None] | None = None
        self._storage: DlqStorage
        self._storage, self._is_memory = backend.open_storage(_StorageFactory(name))
        health = backend.health
        if health is not None:
            # Flush the spool as soon as the backend's probe reaches Redis again (not at the
            # next push, which may never come). A weak reference: the backend's hook list must
            # not keep a dropped queue alive.
            health.on_recover(_spool_flusher(weakref.ref(self)))
        if not self._is_memory and self._spool:
            self._hold()  # entries read back from the spool file: flushed at close too

    # ------------------------------------------------------------------ helpers

    @property
    def clock(self) -> Clock:
        """The queue's clock: ``failed_at`` stamps and retention come from it."""
        return self._clock

    def add_listener(self, listener: DeadLetterListener) -> None:
        """Call ``listener(event)`` for every :data:`DeadLetterEvent` of this queue."""
        self._listeners.append(listener)

    def _emit(self, event: DeadLetterEvent) -> None:
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:
                _log.exception("dlq_listener_failed", queue=self.name, listener=repr(listener))

    def _lease_now(self) -> int | None:
        """The lease time base: see the module docstring."""
        if self._is_memory:
            return int(self._clock.monotonic() * 1000)
        if self._injected_clock:
            return int(self._clock.time() * 1000)
        return None

    def _wall_ms(self) -> int:
        return int(self._clock.time() * 1000)

    def _new_id(self, now_ms: int) -> str:
        # 12 hex digits of ms, a counter restarted every ms (so the ids one queue object makes
        # in one ms keep their order) and 48 random bits (so two processes do not collide; if
        # they ever did, the push script refuses the duplicate and push() draws a new id).
        if now_ms != self._id_ms:
            self._id_ms, self._id_counter = now_ms, 0
        else:
            self._id_counter += 1
        return f"{now_ms:012x}-{self._id_counter & 0xFFFF:04x}{secrets.token_hex(6)}"

    def _error_fields(self, error: BaseException | str) -> tuple[str, str, str]:
        return error_fields(error, self.max_traceback_chars)

    def _decode(self, entry_id: str, fields: RawFields) -> DeadLetter:
        return decode_entry(entry_id, fields, self.serializer, self.name)

    # ------------------------------------------------------------------ push

    def prepare(
        self,
        task_type: str,
        payload: Any,
        error: BaseException | str,
        *,
        attempts: int = 1,
        task_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> RawFields:
        """Validate and encode one entry as :meth:`push` stores it (nothing is stored).

        Public for bulk loaders and benchmarks that pipeline the push script themselves;
        raises exactly what :meth:`push` raises for bad input.
        """
        check_task_type(task_type)
        if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
            raise ValueError(f"attempts must be an int >= 1, got {attempts!r}")
        if task_id is not None and (not isinstance(task_id, str) or not task_id):
            raise ValueError(f"task_id must be a non-empty str or None, got {task_id!r}")
        if metadata is not None and not isinstance(metadata, Mapping):
            raise TypeError(f"metadata must be a mapping, got {type(metadata).__name__}")
        error_type, message, text = self._error_fields(error)
        data = dumps_checked(self.serializer, payload, f"payload of {task_type!r}")
        if len(data) > self.max_payload_bytes:
            raise DeadLetterTooLargeError(
                f"payload of {task_type!r} is {len(data)} bytes serialized, "
                f"max_payload_bytes is {self.max_payload_bytes}"
            )
        meta = dumps_checked(JSON, dict(metadata or {}), f"metadata of {task_type!r}")
        now_ms = self._wall_ms()
        fields: RawFields = {
            "ty": task_type,
            "tk": encode_name(task_type),
            "fa": pad(now_ms),
            "ff": pad(now_ms),
            "p": data,
            "et": error_type,
            "em": message,
            "tb": text,
            "a": str(attempts),
            "md": meta.decode(),
        }
        if task_id is not None:
            fields["ti"] = task_id
        return fields

    async def push(
        self,
        task_type: str,
        payload: Any,
        error: BaseException | str,
        *,
        attempts: int = 1,
        task_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> str:
        """Store a failed task; return its id.

        Everything is validated before anything is stored; on Redis the entry and all its
        indexes are written by one script. When Redis is unreachable the entry goes to the
        local spool (see :meth:`flush_spool`) and its id is returned all the same.

        Args:
            task_type: what kind of task failed (any non-empty string, at most 200 chars).
            payload: the task's input, serializable by the queue's serializer.
            error: the exception (type, message and the end of its traceback are kept) or a
                message.
            attempts: how many times the task was tried (>= 1).
            task_id: the task's own id, if it has one.
            metadata: JSON-serializable extra fields (tenant, queue, ...).

        Raises:
            SerializationError: the payload or metadata cannot be serialized.
            DeadLetterTooLargeError: the serialized payload exceeds ``max_payload_bytes``.
            DeadLetterQueueFullError: the queue is full and ``overflow="reject"``.
        """
        fields = self.prepare(
            task_type, payload, error, attempts=attempts, task_id=task_id, metadata=metadata
        )
        now_ms = int(as_text(fields["fa"]))
        for _ in range(3):
            entry_id = self._new_id(now_ms)
            try:
                if await self._store(entry_id, fields):
                    break
            except BackendUnavailableError as exc:
                await self._to_spool(entry_id, fields, exc)
                return entry_id
        else:  # pragma: no cover - three id collisions in a row
            raise RuntimeError("could not draw an unused dead letter id")
        if self._spool:
            await self._flush_quietly()
        return entry_id

    async def push_prepared(self, entries: Iterable[RawFields], *, batch: int = _PUSH_CHUNK) -> int:
        """Store entries made by :meth:`prepare`, many per round trip; return how many.

        For migrations, bulk loads and benchmarks. Entries are stored in order, in chunks of
        at most ``batch`` entries (and 1 MiB of fields, as UTF-8 bytes), each chunk one atomic
        step (one script on Redis: all of it is stored or none), with the cap and retention
        applied per entry as :meth:`push` does. A full queue (``overflow="reject"``) stops the
        load with :class:`~aioresil.DeadLetterQueueFullError` after the entries before it.
        Nothing is spooled.

        Cut short (a timeout, Redis gone), it raises the backend's error with a note: the
        chunks before it are stored, the chunk in flight is stored entirely or not at all
        (``await dlq.get(id)`` of the entry the note names tells which), the entries after it
        were not pushed. Pushing the rest again stores none twice.

        Args:
            entries: rows from :meth:`prepare`.
            batch: entries per round trip, at most 200 (larger values are cut to 200): each
                round trip is one script call, which must stay far below the backend's
                ``operation_timeout`` whatever the size of the load (a single call for a
                100,000-entry batch timed out and marked the backend unavailable).

        Example::

            rows = [dlq.prepare("import", row, "legacy failure") for row in legacy_rows]
            await dlq.push_prepared(rows)
        """
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise ValueError(f"batch must be an int >= 1, got {batch!r}")
        size = min(batch, _PUSH_CHUNK)
        stored = 0
        chunk: list[tuple[str, RawFields]] = []
        chunk_bytes = 0
        retention_bound = ""
        if self.retention is not None:
            retention_bound = "(" + pad(self._wall_ms() - int(self.retention * 1000))
        for fields in entries:
            weight = sum(map(_utf8_size, fields.values()))
            if chunk and (len(chunk) >= size or chunk_bytes + weight > _PUSH_CHUNK_BYTES):
                stored += await self._push_chunk(chunk, retention_bound, stored)
                chunk, chunk_bytes = [], 0
            chunk.append((self._new_id(int(as_text(fields["fa"]))), fields))
            chunk_bytes += weight
        if chunk:
            stored += await self._push_chunk(chunk, retention_bound, stored)
        return stored

    async def _push_chunk(
        self, chunk: list[tuple[str, RawFields]], retention_bound: str, before: int
    ) -> int:
        try:
            results = await self._storage.push_many(
                chunk, self.max_entries, self.overflow, retention_bound
            )
        except BackendError as exc:
            exc.add_note(
                f"push_prepared stored {before} entries before this chunk of {len(chunk)}; the "
                f"chunk is stored entirely or not at all (dlq.get({chunk[0][0]!r}) tells "
                "which); the entries after it were not pushed"
            )
            raise
        stored = 0
        for (entry_id, _), (status, evicted) in zip(chunk, results, strict=True):
            for victim in evicted:
                _log.warning("dlq_evicted", queue=self.name, entry_id=victim)
                self._emit(DeadLetterEvicted(self.name, victim, self._clock.time()))
            if status == 0:
                raise DeadLetterQueueFullError(
                    f"dead letter queue {self.name!r} holds max_entries={self.max_entries}; "
                    f"{before + stored} entries were stored before {entry_id!r}"
                )
            stored += status == 1
        return stored

    async def _store(self, entry_id: str, fields: RawFields) -> bool:
        """Push one entry; raise ``DeadLetterQueueFullError``; False when it was already stored."""
        retention_bound = ""
        if self.retention is not None:
            retention_bound = "(" + pad(self._wall_ms() - int(self.retention * 1000))
        status, evicted = await self._storage.push(
            entry_id, fields, self.max_entries, self.overflow, retention_bound
        )
        if status == 0:
            raise DeadLetterQueueFullError(
                f"dead letter queue {self.name!r} holds max_entries={self.max_entries}; "
                "nothing was stored (overflow='reject')"
            )
        for victim in evicted:
            _log.warning("dlq_evicted", queue=self.name, entry_id=victim)
            self._emit(DeadLetterEvicted(self.name, victim, self._clock.time()))
        return status == 1

    # ------------------------------------------------------------------ spool

    async def _to_spool(self, entry_id: str, fields: RawFields, exc: BaseException) -> None:
        if not await self._spool.append(entry_id, fields):
            raise BackendUnavailableError(
                f"dead letter queue {self.name!r}: backend unreachable and the local spool is "
                f"full ({self.spool_max} entries); entry not stored"
            ) from exc
        self._hold()
        self._start_redelivery()
        _log.warning("dlq_spooled", queue=self.name, entry_id=entry_id, error=str(exc))
        self._emit(DeadLetterSpooled(self.name, entry_id, self._clock.time(), str(exc)))

    def _start_redelivery(self) -> None:
        """Keep flushing the spool in the background until it is empty.

        Why not only on the next push or on recovery: an entry spooled because its replicas
        did not confirm it (``wait_replicas``) finds a backend that never was "unavailable",
        and the next push may be hours away. One task per queue, backing off to 2 s; it holds
        the queue only weakly and stops when the backend closes (``aclose`` drains the rest).
        """
        if self._redelivery is not None and not self._redelivery.done():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # pragma: no cover - pushes run on a loop
            return
        self._redelivery = loop.create_task(_redeliver(weakref.ref(self)))

    def _hold(self) -> None:
        """While entries are spooled, the backend's ``aclose()`` closes this queue first."""
        if not self._holding:
            self.backend.add_drain(self, self.aclose)
            self._holding = True

    def _release_hold(self) -> None:
        if self._holding and not self._spool:
            self.backend.discard_drain(self)
            self._holding = False

    async def aclose(self) -> None:
        """Make sure no spooled entry is lost silently when this process stops.

        Called for you by the backend's ``aclose()`` (before its connections close) whenever
        this queue holds spooled entries. In order:

        1. flush the spool to the backend, for at most ``close_timeout`` seconds;
        2. if entries remain and ``spool_path`` is set, they are already in that file (each
           spooled entry is appended when spooled): log where, and how many, and return;
        3. otherwise log an error and raise :class:`~aioresil.BackendUnavailableError` with the
           number of entries that only this process's memory still holds.

        Why no default spool file: a fleet of workers on one host would share it, and one
        process replaying and truncating the file while another appends to it can lose
        entries; a path is something each deployment must give each process.
        """
        task, self._redelivery = self._redelivery, None
        if task is not None and not task.done():
            task.cancel()
        if not self._spool:
            self._release_hold()
            return
        try:
            async with asyncio.timeout(self.close_timeout):
                health = self.backend.health
                if health is not None:
                    # Redis may be back before the background probe noticed: ask now.
                    await health.probe_once()
                await self.flush_spool()
        except (BackendUnavailableError, TimeoutError) as exc:
            error: BaseException = exc
        else:
            self._release_hold()
            return
        held = len(self._spool)
        if self._spool.path is not None:
            _log.warning(
                "dlq_spool_kept_in_file",
                queue=self.name,
                entries=held,
                path=str(self._spool.path),
                error=str(error),
            )
            return
        _log.error("dlq_spool_not_persisted", queue=self.name, entries=held, error=str(error))
        raise BackendUnavailableError(
            f"dead letter queue {self.name!r}: the backend is unreachable at close and "
            f"{held} spooled entr{'y is' if held == 1 else 'ies are'} held only in this "
            "process's memory (no spool_path configured); they are lost if it exits"
        ) from error

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    @property
    def spooled(self) -> int:
        """How many pushes wait in the local spool for the backend to come back."""
        return len(self._spool)

    async def flush_spool(self) -> int:
        """Store every spooled entry; return how many were stored.

        Raises :class:`~aioresil.BackendUnavailableError` (keeping the rest spooled) when the
        backend is still unreachable. Replaying is idempotent by entry id, so an entry whose
        first push reached Redis but whose reply was lost is not stored twice. An entry the
        queue rejects as full is dropped loudly (logged, :class:`DeadLetterSpoolDropped`).
        """
        stored = 0
        async with self._flush_lock:
            while self._spool:
                entry_id, fields = self._spool.first()
                try:
                    if await self._store(entry_id, fields):
                        stored += 1
                except DeadLetterQueueFullError as exc:
                    _log.error("dlq_spool_dropped", queue=self.name, entry_id=entry_id)
                    self._emit(
                        DeadLetterSpoolDropped(self.name, entry_id, self._clock.time(), str(exc))
                    )
                await self._spool.pop_first()
            self._release_hold()
        return stored

    async def _flush_quietly(self) -> None:
        try:
            await self.flush_spool()
        except BackendUnavailableError:
            pass  # still down: the entries stay spooled for the next push or flush

    # ------------------------------------------------------------------ reads

    async def get(self, entry_id: str) -> DeadLetter | None:
        """The entry ``entry_id``, or ``None`` when there is none (retried, removed, unknown)."""
        if not isinstance(entry_id, str):
            raise TypeError(f"entry_id must be a str, got {type(entry_id).__name__}")
        if not _ID_RE.match(entry_id):
            return None
        fields = await self._storage.get(entry_id)
        return self._decode(entry_id, fields) if fields is not None else None

    async def list(
        self,
        *,
        task_type: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> DeadLetterPage:
        """One page of entries, newest ``failed_at`` first.

        Cost is O(log n + limit) on either storage: pages come from a time index (one per task
        type), never from a scan.

        Args:
            task_type: only entries of this type.
            since: only entries that failed at or after this aware datetime.
            until: only entries that failed strictly before this aware datetime.
            limit: page size, 1..1000.
            cursor: ``next_cursor`` of the previous page.

        Example::

            page = await dlq.list(task_type="email", limit=50)
            while page.next_cursor:
                page = await dlq.list(task_type="email", limit=50, cursor=page.next_cursor)
        """
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 1000:
            raise ValueError(f"limit must be an int in 1..1000, got {limit!r}")
        type_key = encode_name(check_task_type(task_type)) if task_type is not None else None
        upper = "+"
        if until is not None:
            upper = "(" + pad(as_ms(until))
        if cursor is not None:
            if not isinstance(cursor, str) or not _CURSOR_RE.match(cursor):
                raise ValueError(f"cursor is not one this queue returned: {cursor!r}")
            if upper == "+" or cursor < upper[1:]:
                upper = "(" + cursor
        lower = "-" if since is None else "[" + pad(as_ms(since))
        rows = await self._storage.page(type_key, upper, lower, limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        entries = tuple(self._decode(member[14:], fields) for member, fields in rows)
        next_cursor = rows[-1][0] if more and rows else None
        return DeadLetterPage(entries, next_cursor)

    async def count(self, *, task_type: str | None = None) -> int:
        """How many entries the queue holds (of ``task_type``, when given); O(1)."""
        if task_type is not None:
            check_task_type(task_type)
        return await self._storage.count(task_type)

    async def stats(self) -> DeadLetterStats:
        """The queue's statistics, from counters and index ends only (no scan).

        ``to_dict()`` gives the seed's shape, ``total_failed_tasks``, ``recent_failures_24h``,
        ``failures_by_task_type``, ``oldest_failure``, ``newest_failure`` (ISO-8601 or
        ``None``), plus ``in_flight`` (live retry leases), ``evicted`` (overflow evictions),
        ``expired`` (retention drops) and ``spooled`` (pushes waiting for the backend).
        The ``/health/dlq`` body and its advice are built from it in :mod:`aioresil.health`.
        """
        since = "[" + pad(self._wall_ms() - _DAY_MS)
        row = await self._storage.stats(since, self._lease_now())
        return DeadLetterStats(
            total_failed_tasks=row.total,
            recent_failures_24h=row.recent,
            failures_by_task_type=MappingProxyType(dict(sorted(row.by_type.items()))),
            oldest_failure=as_datetime(row.oldest_member[:13]) if row.oldest_member else None,
            newest_failure=as_datetime(row.newest_member[:13]) if row.newest_member else None,
            in_flight=row.in_flight,
            evicted=row.evicted,
            expired=row.expired,
            spooled=len(self._spool),
        )

    # ------------------------------------------------------------------ retry

    async def claim(self, entry_id: str, *, lease: float = 60.0) -> DeadLetterLease:
        """Lease one entry for ``lease`` seconds; settle it with :meth:`ack` or :meth:`nack`.

        The entry stays in the queue (listed, counted) until acknowledged; if the holder dies,
        the lease expires and the entry can be claimed again.

        Raises:
            DeadLetterUnavailableError: no such entry, or another worker holds a live lease on it.
        """
        if not isinstance(entry_id, str):
            raise TypeError(f"entry_id must be a str, got {type(entry_id).__name__}")
        if not lease > 0:
            raise ValueError(f"lease must be > 0 seconds, got {lease!r}")
        if not _ID_RE.match(entry_id):
            raise DeadLetterUnavailableError(entry_id, "missing")
        row = await self._storage.claim(entry_id, self._lease_now(), max(int(lease * 1000), 1))
        if row.status < 0:
            raise DeadLetterUnavailableError(entry_id, "leased")
        if row.status == 0 or row.fields is None:
            raise DeadLetterUnavailableError(entry_id, "missing")
        return DeadLetterLease(self._decode(entry_id, row.fields), row.token, float(lease))

    async def ack(self, lease: DeadLetterLease) -> bool:
        """Delete the leased entry (its retry succeeded); ``False`` if the lease was lost."""
        return await self._storage.ack(lease.entry.id, lease.token)

    async def nack(self, lease: DeadLetterLease, error: BaseException | str) -> bool:
        """Return the leased entry with ``attempts + 1`` and ``error``; ``False`` if lost."""
        error_type, message, text = self._error_fields(error)
        attempts = await self._storage.nack(
            lease.entry.id, lease.token, pad(self._wall_ms()), error_type, message, text
        )
        return attempts > 0

    async def release(self, lease: DeadLetterLease) -> bool:
        """Give the lease back without an outcome (attempts unchanged)."""
        return await self._storage.release(lease.entry.id, lease.token)

    async def retry(self, entry_id: str, handler: Handler, *, lease: float = 60.0) -> bool:
        """Run ``await handler(dead_letter)`` under a lease; return whether it succeeded.

        On success the entry is deleted; on an exception it is returned with
        ``attempts + 1`` and the new error (the exception is not re-raised). If this process
        dies meanwhile the lease expires and the entry is back: at-least-once, so the
        handler should honour ``dead_letter.idempotency_key``. Cancellation gives the lease
        back and propagates.

        Raises:
            DeadLetterUnavailableError: no such entry, or another worker is retrying it.
        """
        held = await self.claim(entry_id, lease=lease)
        return await self._run_leased(held, handler)

    async def _run_leased(self, held: DeadLetterLease, handler: Handler) -> bool:
        return await run_leased(self, held, handler)

    async def retry_all(
        self,
        handler: Handler,
        *,
        task_type: str | None = None,
        concurrency: int = 10,
        limit: int | None = None,
        lease: float = 60.0,
        progress: Callable[[RetryReport], object] | None = None,
    ) -> RetryReport:
        """Retry every entry (of ``task_type``), at most ``concurrency`` at a time.

        Entries are read page by page (never all in memory), newest first. An entry whose
        retry fails moves to "now" and is not retried again in the same run; entries leased
        by another worker, or gone, are counted as ``skipped``.

        Args:
            handler: ``async handler(dead_letter)``; an exception means "still failing".
            concurrency: handlers running at once.
            limit: stop after this many entries.
            progress: called with the report so far after each entry.
        """
        return await retry_all(
            self,
            handler,
            task_type=task_type,
            concurrency=concurrency,
            limit=limit,
            lease=lease,
            progress=progress,
        )

    # ------------------------------------------------------------------ removal

    async def remove(self, entry_id: str) -> bool:
        """Delete one entry; ``True`` when it existed."""
        if not isinstance(entry_id, str):
            raise TypeError(f"entry_id must be a str, got {type(entry_id).__name__}")
        if not _ID_RE.match(entry_id):
            return False
        return await self._storage.remove(entry_id)

    async def purge(
        self,
        *,
        older_than: float | timedelta | datetime | None = None,
        task_type: str | None = None,
        progress: Callable[[int], object] | None = None,
    ) -> int:
        """Delete entries, oldest first, in batches of 500; return how many.

        Each batch is one atomic step (one script on Redis, a few ms) with a deadline of its
        own, so a purge of any size never meets ``operation_timeout`` as a whole, and never
        blocks Redis for long. Cut short after batch k (a timeout, Redis gone), it raises the
        backend's error with a note of how many it removed: the oldest k * 500 matching
        entries are gone (k + 1 batches if only the reply of the last one was lost), each
        with its indexes and counters, every other entry is intact, and running the same
        purge again removes the rest.

        Args:
            older_than: an age (seconds or ``timedelta``: entries that failed longer ago) or an
                aware ``datetime`` (entries that failed before it). ``None``: every entry.
            task_type: only entries of this type.
            progress: called with the number removed so far after each batch (progress bars).
        """
        type_key = encode_name(check_task_type(task_type)) if task_type is not None else None
        upper = "+"
        if isinstance(older_than, datetime):
            upper = "(" + pad(as_ms(older_than))
        elif older_than is not None:
            age = older_than.total_seconds() if isinstance(older_than, timedelta) else older_than
            if isinstance(age, bool) or not isinstance(age, int | float) or age < 0:
                raise ValueError(f"older_than must be >= 0 seconds, got {older_than!r}")
            upper = "(" + pad(self._wall_ms() - int(age * 1000))
        removed = 0
        while True:
            try:
                batch = await self._storage.purge_batch(type_key, upper, _PURGE_BATCH)
            except BackendError as exc:
                exc.add_note(
                    f"purge removed {removed} entries (the oldest first) before this error, "
                    f"and perhaps the {_PURGE_BATCH} at most in flight; every other entry is "
                    "intact: run the same purge again to remove the rest"
                )
                raise
            removed += batch
            if progress is not None:
                progress(removed)
            if batch < _PURGE_BATCH:
                return removed

    # ------------------------------------------------------------------ decorator

    def on_failure(
        self, task_type: str, *, payload: Callable[..., Any] | None = None
    ) -> Callable[[Callable[P, R]], Callable[P, R]]:
        """Decorate a function so its failures are pushed here, then re-raised unchanged.

        The payload is ``{"args": [...], "kwargs": {...}}`` of the call, or
        ``payload(*args, **kwargs)`` when given. If the push itself fails (payload not
        serializable, queue full, backend down with a full spool) that is logged, and the
        original exception is still the one raised. Cancellation is never dead-lettered.

        Example::

            @dlq.on_failure("send_email")
            async def send_email(to: str, body: str) -> None: ...
        """
        check_task_type(task_type)

        def build(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            if payload is not None:
                return payload(*args, **kwargs)
            return {"args": list(args), "kwargs": kwargs}

        def decorate(func: Callable[P, R]) -> Callable[P, R]:
            if inspect.iscoroutinefunction(func):

                @functools.wraps(func)
                async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
                    try:
                        return await func(*args, **kwargs)
                    except Exception as exc:
                        await self._push_failure(task_type, build, args, kwargs, exc)
                        raise

                return async_wrapper  # type: ignore[return-value]
            raise TypeError(
                f"on_failure decorates async functions; {func!r} is not one "
                "(call dlq.push() from synchronous code)"
            )

        return decorate

    async def _push_failure(
        self,
        task_type: str,
        build: Callable[[tuple[Any, ...], dict[str, Any]], Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        exc: Exception,
    ) -> None:
        try:
            await self.push(task_type, build(args, kwargs), exc)
        except Exception:
            _log.exception("dlq_on_failure_push_failed", queue=self.name, task_type=task_type)

    def __repr__(self) -> str:
        return f"DeadLetterQueue(name={self.name!r}, backend={self.backend!r})"
