"""The checkpoint store: long tasks and agents resume after a crash, and a stale writer can
never overwrite newer work.

Why versions: every save returns the stored version + 1, and ``expected_version`` turns a save
into a compare-and-set. A worker that loaded version 7 and saves with ``expected_version=7``
either writes version 8 or gets :class:`~aioresil.exceptions.CheckpointConflictError` carrying
the version that beat it; it can never silently replace version 8 written by someone else.
On Redis the check and every write of a save (state, version, timestamp, TTL, history entry,
index entry) are one Lua script; in memory they are one synchronous block.

Why bytes are checked before any I/O: a state that is not JSON, or larger than ``max_bytes``,
is refused with a clear error before anything is sent, so nothing is half stored.

Key layout on Redis (``<prefix>`` is the backend's prefix, ``<ns>`` and ``<task>`` encoded)::

    <prefix>:{ckpt:<ns>}:d:<task>     hash: v = version, t = updated_at ms, s = steps,
                                      w = write id of the save that wrote this version
    <prefix>:{ckpt:<ns>}:b:<task>     string: the state (staged by SET, moved by RENAME)
    <prefix>:{ckpt:<ns>}:h:<task>     list: kept versions, newest first
    <prefix>:{ckpt:<ns>}:index        zset: every task id of the namespace (for ``list``)

One hash tag per namespace keeps every script on one Redis Cluster slot; the price is that a
namespace lives on one slot, so spread a very large fleet over several namespaces.

Why write ids: a save whose reply is lost (or, with ``wait_replicas``, whose replicas did not
confirm it in time) may or may not be stored. The store raises
:class:`~aioresil.exceptions.CheckpointOutcomeUnknownError` and remembers that save's random
write id; sending the same save again reuses the id, so the script recognizes its own write
and answers "saved" instead of "conflict". A *different* state saved next is fenced against
either outcome (the remembered id counts as the expected version). A real stale writer holds
no such id and still gets :class:`~aioresil.exceptions.CheckpointConflictError`.
"""

from __future__ import annotations

import asyncio
import builtins
import hashlib
import math
import re
import secrets
import warnings
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..backends.base import BreakerBackend, ScriptRunner
from ..backends.keys import decode_name, encode_name
from ..backends.memory import MemoryBackend
from ..clock import Clock, SystemClock
from ..exceptions import (
    BackendUnavailableError,
    CheckpointConflictError,
    CheckpointCorruptError,
    CheckpointOutcomeUnknownError,
    CheckpointTooLargeError,
)
from .checkpoint_backends import (
    CONFLICT,
    CORRUPT,
    CheckpointDriver,
    MemoryCheckpointDriver,
    RawCheckpoint,
    RedisCheckpointDriver,
)
from .page import Page
from .serialize import JSON, Serializer, dumps_checked

if TYPE_CHECKING:
    from .checkpoint_resume import CheckpointRun

__all__ = ["Checkpoint", "CheckpointPage", "CheckpointStore", "CheckpointSummary"]

_CURSOR_RE = re.compile(r"^[A-Za-z0-9._%\-]+$")
MAX_LIST_LIMIT = 10_000
#: Saves with an unknown outcome a store remembers (per task, the latest; oldest forgotten).
MAX_UNKNOWN_SAVES = 10_000
_MAX_EARLIER = 8


@dataclass(frozen=True, slots=True)
class _UnknownSave:
    """A save whose outcome this store never learned: what a retry must match."""

    write_id: str
    expected: int | None
    digest: bytes
    earlier: tuple[str, ...]
    """Write ids of saves before it whose outcome is unknown too (any may be the stored one)."""


def _digest(data: bytes, steps: bytes | None) -> bytes:
    hasher = hashlib.blake2b(data, digest_size=16)
    if steps is not None:
        hasher.update(b"\x00steps\x00" + steps)
    return hasher.digest()


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """One stored version of a task's state.

    Attributes:
        task_id: the task the state belongs to.
        state: the decoded state (a fresh object on every load: mutate it freely).
        version: 1 for the first save, +1 for each save after it.
        updated_at: Unix seconds of the save (Redis ``TIME`` on Redis, the store's clock in
            memory), millisecond resolution on Redis.
    """

    task_id: str
    state: Any
    version: int
    updated_at: float


@dataclass(frozen=True, slots=True)
class CheckpointSummary:
    """A listed checkpoint without its state (``list`` never moves megabytes).

    ``version == 0`` marks a record that cannot be read; ``load`` raises
    :class:`~aioresil.exceptions.CheckpointCorruptError` naming the problem.
    """

    task_id: str
    version: int
    updated_at: float


class _RunAccess:
    """What a :class:`CheckpointRun` may do with its store (``ResumableStore``)."""

    __slots__ = ("_store",)

    def __init__(self, store: CheckpointStore) -> None:
        self._store = store

    @property
    def serializer(self) -> Serializer:
        return self._store.serializer

    @property
    def clock(self) -> Clock:
        return self._store.clock

    def task(self, task_id: object) -> str:
        return self._store._task(task_id)

    def check_size(self, task_id: str, state_bytes: int, step_bytes: int) -> None:
        self._store._check_size(task_id, state_bytes, step_bytes)

    def corrupt(self, task_id: str, why: str) -> Exception:
        return self._store._corrupt(task_id, why)

    def decode(self, task_id: str, data: bytes, what: str = "state") -> Any:
        return self._store._decode(task_id, data, what)

    async def load_raw(self, task_id: str) -> RawCheckpoint | None:
        return await self._store._load_raw(task_id)

    async def write(
        self, task_id: str, task: str, data: bytes, expected: int | None, steps: bytes | None
    ) -> int:
        return await self._store._write(task_id, task, data, expected, steps)


class _DriverFactory:
    """Builds a store's driver for whichever backend it is on (``backend.open_storage``)."""

    kind = "checkpoint"

    def __init__(self, namespace: str, clock: Clock) -> None:
        self.namespace = namespace
        self.clock = clock

    def in_process(self, shared: dict[str, Any]) -> CheckpointDriver:
        return MemoryCheckpointDriver(shared, self.namespace, self.clock)

    def on_scripts(self, runner: ScriptRunner) -> CheckpointDriver:
        return RedisCheckpointDriver(runner, self.namespace)


@dataclass(frozen=True, slots=True)
class CheckpointPage(Page[CheckpointSummary]):
    """One page of :meth:`CheckpointStore.list`.

    Attributes:
        entries: checkpoints in task id order (the byte order of the encoded ids).
        next_cursor: pass it back as ``cursor=`` for the next page; ``None`` when the listing
            is complete. A page can be shorter than ``limit`` (even empty) and still have a
            cursor when expired entries were cleaned out of the index while it was built.

    Iterating over the page or taking ``len()`` works on ``entries``.
    """

    entries: tuple[CheckpointSummary, ...]
    next_cursor: str | None

    @property
    def cursor(self) -> str | None:
        """Deprecated: use ``next_cursor`` (the name every page uses)."""
        warnings.warn(
            "CheckpointPage.cursor is deprecated; use .next_cursor",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.next_cursor


def _check_name(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, got {type(value).__name__}")
    if not value:
        raise ValueError(f"{what} must not be empty")
    return value


def _check_version(value: object, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int or None, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{what} must be >= 0, got {value}")
    return value


class CheckpointStore:
    """Versioned task state on memory or Redis, with optimistic concurrency.

    Args:
        backend: ``None`` for a private :class:`MemoryBackend`; a :class:`MemoryBackend` to share
            checkpoints with other stores on it; a ``RedisBackend`` to share them with a fleet.
        namespace: separates unrelated sets of tasks (and, on Redis Cluster, spreads them over
            slots: each namespace is one hash tag).
        ttl: seconds a checkpoint lives after its last save (``None``: forever). Every save
            renews it.
        keep_history: how many versions :meth:`history` keeps, newest first, the current one
            included (``0``: none).
        max_bytes: the largest serialized state (plus step results, see :meth:`resume`)
            accepted; bigger ones raise :class:`CheckpointTooLargeError` and nothing is stored.
        serializer: ``dumps``/``loads`` pair (default strict JSON; never pickle).
            :class:`~aioresil.OrjsonSerializer` (extra ``aioresil[orjson]``) is the same
            strict JSON, much faster on large states; it reads what the default wrote.
        clock: drives ``updated_at`` and TTLs of the memory backend (pass
            ``aioresil.testing.FakeClock`` in tests). Redis uses its own ``TIME`` instead, so a
            fleet agrees on timestamps.

    Example::

        async with RedisBackend.from_url(url) as backend:   # closing it closes the store
            store = CheckpointStore(backend, namespace="ingest", ttl=86_400)
            version = await store.save("job-42", {"offset": 1000})
            await store.save("job-42", {"offset": 2000}, expected_version=version)
            checkpoint = await store.load("job-42")     # Checkpoint(..., version=2)
    """

    def __init__(
        self,
        backend: Any = None,
        *,
        namespace: str = "default",
        ttl: float | None = None,
        keep_history: int = 0,
        max_bytes: int = 1_000_000,
        serializer: Serializer = JSON,
        clock: Clock | None = None,
    ) -> None:
        self.namespace = _check_name(namespace, "namespace")
        if ttl is not None:
            if isinstance(ttl, bool) or not isinstance(ttl, int | float):
                raise TypeError(f"ttl must be seconds (a number) or None, got {ttl!r}")
            if not math.isfinite(ttl) or ttl <= 0:
                raise ValueError(f"ttl must be a positive number of seconds, got {ttl!r}")
        if isinstance(keep_history, bool) or not isinstance(keep_history, int):
            raise TypeError(f"keep_history must be an int, got {keep_history!r}")
        if keep_history < 0:
            raise ValueError(f"keep_history must be >= 0, got {keep_history}")
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int):
            raise TypeError(f"max_bytes must be an int, got {max_bytes!r}")
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, got {max_bytes}")
        if not isinstance(serializer, Serializer):
            raise TypeError(f"serializer must have dumps(obj) and loads(bytes), got {serializer!r}")
        self.ttl = ttl
        self.keep_history = keep_history
        self.max_bytes = max_bytes
        self.serializer = serializer
        self.clock: Clock = clock if clock is not None else SystemClock()
        self._ttl_ms = 0 if ttl is None else max(1, math.ceil(ttl * 1000))
        self._unknown: dict[str, _UnknownSave] = {}
        if backend is None:
            backend = MemoryBackend()
        if not isinstance(backend, BreakerBackend):
            raise TypeError(
                f"backend must be None, a MemoryBackend or a RedisBackend, got {backend!r}"
            )
        self.backend = backend
        self._driver: CheckpointDriver = backend.open_storage(
            _DriverFactory(self.namespace, self.clock)
        )

    # ------------------------------------------------------------------ helpers

    def _task(self, task_id: object) -> str:
        return encode_name(_check_name(task_id, "task_id"))

    def _encode_state(self, task_id: str, state: Any, extra: int = 0) -> bytes:
        data = dumps_checked(self.serializer, state, f"checkpoint state of {task_id!r}")
        self._check_size(task_id, len(data), extra)
        return data

    def _check_size(self, task_id: str, state_bytes: int, step_bytes: int) -> None:
        total = state_bytes + step_bytes
        if total > self.max_bytes:
            detail = (
                f" ({state_bytes} of state, {step_bytes} of step results)" if step_bytes else ""
            )
            raise CheckpointTooLargeError(
                f"checkpoint {task_id!r}: serialized size is {total} bytes{detail}, over "
                f"max_bytes={self.max_bytes}; nothing was stored"
            )

    def _corrupt(self, task_id: str, why: str) -> CheckpointCorruptError:
        return CheckpointCorruptError(
            f"checkpoint {task_id!r} in namespace {self.namespace!r} cannot be read: {why}; "
            f"delete it (await store.delete({task_id!r})) to start the task over"
        )

    def _decode(self, task_id: str, data: bytes, what: str = "state") -> Any:
        try:
            return self.serializer.loads(data)
        except Exception as exc:
            raise self._corrupt(task_id, f"its {what} does not decode ({exc})") from exc

    # ------------------------------------------------------------------ operations

    async def save(self, task_id: str, state: Any, *, expected_version: int | None = None) -> int:
        """Store ``state`` as the task's next version and return that version.

        Args:
            task_id: any non-empty string (encoded before it reaches a key).
            state: a JSON-serializable value (or one the store's serializer accepts).
            expected_version: ``None`` to save unconditionally; ``0`` to save only if the task
                has no checkpoint yet; ``n`` to save only if the stored version is still ``n``.

        Raises:
            CheckpointConflictError: the stored version is not ``expected_version`` (the error
                carries the current one); nothing was written.
            SerializationError: ``state`` cannot be serialized; nothing was written.
            CheckpointTooLargeError: over ``max_bytes`` once serialized; nothing was written.
            CheckpointCorruptError: the stored record is unreadable; nothing was written.

        Example::

            v = await store.save("job", {"offset": 0}, expected_version=0)   # 1
        """
        task = self._task(task_id)
        expected = _check_version(expected_version, "expected_version")
        data = self._encode_state(task_id, state)
        return await self._write(task_id, task, data, expected, None)

    async def _write(
        self, task_id: str, task: str, data: bytes, expected: int | None, steps: bytes | None
    ) -> int:
        write_id = secrets.token_hex(8)
        earlier: tuple[str, ...] = ()
        unknown = self._unknown.get(task)
        digest = b""
        if unknown is not None:
            digest = _digest(data, steps)
            earlier = unknown.earlier
            if unknown.expected == expected and unknown.digest == digest:
                write_id = unknown.write_id  # the same save again: recognized if it landed
            else:
                # A new save on top of ours, whichever way ours went.
                earlier = (*earlier, unknown.write_id)[-_MAX_EARLIER:]
        try:
            status, version, detail = await self._driver.save(
                task,
                data,
                expected=expected,
                ttl_ms=self._ttl_ms,
                keep_history=self.keep_history,
                steps=steps,
                write_id=write_id,
                prior_write_id=" ".join(earlier),
            )
        except BaseException as exc:
            if not isinstance(exc, BackendUnavailableError | asyncio.CancelledError):
                raise
            # Sent, maybe stored, reply lost (or replicas silent): remember this save so a
            # retry is recognized, and the earlier unknown ones so any of them passes the fence.
            digest = digest or _digest(data, steps)
            self._remember(task, _UnknownSave(write_id, expected, digest, earlier))
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise CheckpointOutcomeUnknownError(task_id, expected, write_id, str(exc)) from exc
        self._unknown.pop(task, None)
        if status == CONFLICT:
            raise CheckpointConflictError(task_id, expected if expected is not None else 0, version)
        if status == CORRUPT:
            raise self._corrupt(task_id, str(detail))
        return version

    def _remember(self, task: str, unknown: _UnknownSave) -> None:
        self._unknown.pop(task, None)
        self._unknown[task] = unknown
        while len(self._unknown) > MAX_UNKNOWN_SAVES:
            del self._unknown[next(iter(self._unknown))]

    async def _load_raw(self, task_id: str) -> RawCheckpoint | None:
        raw = await self._driver.load(self._task(task_id))
        if isinstance(raw, str):
            raise self._corrupt(task_id, raw)
        return raw

    async def load(self, task_id: str) -> Checkpoint | None:
        """The task's latest checkpoint, or ``None`` when it has none (or it expired).

        Raises:
            CheckpointCorruptError: the stored record cannot be decoded (the message names
                the task and how to start over), rather than a decoder's raw error.
        """
        raw = await self._load_raw(task_id)
        if raw is None:
            return None
        return Checkpoint(task_id, self._decode(task_id, raw.data), raw.version, raw.updated_at)

    async def delete(self, task_id: str, *, expected_version: int | None = None) -> bool:
        """Delete the task's checkpoint and history; ``True`` if there was one.

        With ``expected_version``, delete only if the stored version is still that one (else
        :class:`CheckpointConflictError`). Without it, even an unreadable record is deleted.
        """
        task = self._task(task_id)
        expected = _check_version(expected_version, "expected_version")
        status, version = await self._driver.delete(task, expected=expected)
        if status == CONFLICT:
            raise CheckpointConflictError(task_id, expected if expected is not None else 0, version)
        return version != 0

    async def list(
        self, *, prefix: str | None = None, limit: int = 100, cursor: str | None = None
    ) -> CheckpointPage:
        """One page of the namespace's checkpoints, in task id order (no ``KEYS``, no ``SCAN``).

        Args:
            prefix: only task ids starting with it.
            limit: page size, 1 to 10 000.
            cursor: the ``cursor`` of the previous page.

        Example::

            page = await store.list(prefix="user-7/", limit=50)
            while page.next_cursor is not None:
                page = await store.list(prefix="user-7/", limit=50, cursor=page.next_cursor)
        """
        if isinstance(limit, bool) or not isinstance(limit, int):
            raise TypeError(f"limit must be an int, got {limit!r}")
        if not 1 <= limit <= MAX_LIST_LIMIT:
            raise ValueError(f"limit must be between 1 and {MAX_LIST_LIMIT}, got {limit}")
        encoded_prefix = None
        if prefix is not None:
            if not isinstance(prefix, str):
                raise TypeError(f"prefix must be a str or None, got {type(prefix).__name__}")
            encoded_prefix = encode_name(prefix) if prefix else None
        if cursor is not None and (not isinstance(cursor, str) or not _CURSOR_RE.match(cursor)):
            raise ValueError(f"cursor must be a cursor returned by list(), got {cursor!r}")
        entries, next_cursor = await self._driver.page(cursor, encoded_prefix, limit)
        return CheckpointPage(
            tuple(CheckpointSummary(decode_name(t), v, at) for t, v, at in entries), next_cursor
        )

    async def iter(
        self, *, prefix: str | None = None, page_size: int = 100
    ) -> AsyncIterator[CheckpointSummary]:
        """Every checkpoint of the namespace (optionally under ``prefix``), page by page.

        Example::

            async for summary in store.iter(prefix="job-"):
                print(summary.task_id, summary.version)
        """
        page = await self.list(prefix=prefix, limit=page_size)
        while True:
            for entry in page.entries:
                yield entry
            if page.next_cursor is None:
                return
            page = await self.list(prefix=prefix, limit=page_size, cursor=page.next_cursor)

    async def history(self, task_id: str) -> builtins.list[Checkpoint]:
        """The kept versions of the task, newest first, the current one included.

        At most ``keep_history`` entries; empty when ``keep_history == 0`` or the task has no
        checkpoint. Versions are saved with the store's current setting: a store opened with
        ``keep_history=0`` drops the history of the tasks it saves.
        """
        entries = await self._driver.history(self._task(task_id))
        if isinstance(entries, str):
            raise self._corrupt(task_id, entries)
        return [
            Checkpoint(task_id, self._decode(task_id, data, f"version {version}"), version, at)
            for version, at, data in entries
        ]

    def resume(self, task_id: str, initial: Any = None) -> CheckpointRun:
        """Open a task for a long loop: ``async with store.resume(task_id, initial=...) as cp``.

        ``cp.state`` is the last saved state (or ``initial``), ``await cp.save(state)`` saves
        with the version that was loaded, so a second worker on the same task gets
        :class:`CheckpointConflictError` instead of overwriting. See
        :class:`~aioresil.stores.checkpoint_resume.CheckpointRun` for throttled saves
        (``cp.every(n=..., seconds=...)`` + ``cp.maybe_save``) and step memoization
        (``cp.step``).

        ``initial`` is validated (serialized) here, before anything else happens.
        """
        from .checkpoint_resume import CheckpointRun

        _check_name(task_id, "task_id")
        initial_bytes = self._encode_state(task_id, initial)
        return CheckpointRun(_RunAccess(self), task_id, initial_bytes)

    def __repr__(self) -> str:
        return (
            f"CheckpointStore(backend={self.backend!r}, namespace={self.namespace!r}, "
            f"ttl={self.ttl!r}, keep_history={self.keep_history}, max_bytes={self.max_bytes})"
        )
