"""Where checkpoints live: one driver per backend, both offering the same atomic operations.

Why drivers: :class:`~aioresil.stores.checkpoint.CheckpointStore` validates, serializes and
raises; a driver only stores bytes. Each driver operation is atomic: on Redis it is one Lua
script (``aioresil/lua/checkpoint_*.lua``), in memory it is synchronous code with no ``await``
inside, so the event loop runs it to completion before any other task looks.

Both drivers answer with the same plain tuples, so the store has one code path for both.
Task ids reach a driver already encoded (:func:`~aioresil.backends.keys.encode_name`); the
listing order is the byte order of the encoded ids on both backends.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from ..backends.scripts import load_script
from ..clock import Clock
from ..exceptions import BackendUnavailableError

if TYPE_CHECKING:
    from ..backends.base import ScriptRunner

__all__ = [
    "CONFLICT",
    "CORRUPT",
    "OK",
    "CheckpointDriver",
    "MemoryCheckpointDriver",
    "RawCheckpoint",
    "RedisCheckpointDriver",
]

OK = 1
CONFLICT = 0
CORRUPT = -1
STAGE_MISSING = -2

#: How long a staged state may wait for its save script (it runs in the same round trip;
#: the TTL only cleans up after a connection that died between the two commands).
_STAGE_TTL_MS = 60_000

#: States up to this size travel inline in ARGV (one EVALSHA); larger ones are staged with a
#: pipelined SET and RENAMEd by the script (Redis copies ARGV into Lua at ~1.2 us per KB,
#: while a pipeline costs the client more than that below ~16 KB).
_INLINE_MAX_BYTES = 16_384

#: How many index members one ``list`` call examines at most (expired ones included).
LIST_SCAN_BUDGET_FACTOR = 10


@dataclass(frozen=True, slots=True)
class RawCheckpoint:
    """A stored checkpoint before decoding: the state and step results as bytes."""

    data: bytes
    version: int
    updated_at: float
    steps: bytes | None


class CheckpointDriver(Protocol):
    """The atomic operations a checkpoint store needs from its backend."""

    async def save(
        self,
        task: str,
        data: bytes,
        *,
        expected: int | None,
        ttl_ms: int,
        keep_history: int,
        steps: bytes | None,
        write_id: str,
        prior_write_id: str,
    ) -> tuple[int, int, float | str]:
        """``(OK, version, updated_at)``, ``(CONFLICT, current, 0.0)`` or ``(CORRUPT, 0, why)``.

        ``write_id`` identifies this save: if the stored record already carries it (the same
        save sent again after a lost reply), the answer is ``OK`` with the stored version and
        nothing is written. ``prior_write_id`` (or ``""``): space-separated ids of earlier
        saves of the same caller whose outcome is unknown; if one of them is the stored one,
        the fence counts as passed.
        """
        ...

    async def load(self, task: str) -> RawCheckpoint | str | None:
        """The record, ``None`` when absent, or a reason string when unreadable."""
        ...

    async def delete(self, task: str, *, expected: int | None) -> tuple[int, int]:
        """``(OK, deleted_version)`` (0: nothing there) or ``(CONFLICT, current)``."""
        ...

    async def page(
        self, low: str | None, prefix: str | None, limit: int
    ) -> tuple[list[tuple[str, int, float]], str | None]:
        """Up to ``limit`` ``(task, version, updated_at)`` after ``low``; and the next cursor."""
        ...

    async def history(self, task: str) -> list[tuple[int, float, bytes]] | str:
        """``(version, updated_at, data)`` newest first, or a reason string when unreadable."""
        ...


# --------------------------------------------------------------------------- memory


@dataclass(slots=True)
class _Record:
    data: bytes
    version: int
    updated_at: float
    steps: bytes | None
    expires_at: float | None
    write_id: str = ""
    history: list[tuple[int, float, bytes]] = field(default_factory=list)


class MemoryCheckpointDriver:
    """Checkpoints in a dict of the :class:`MemoryBackend`, shared by stores on it.

    TTLs are measured on the store's clock (``clock.monotonic()``), so a ``FakeClock`` drives
    expiry in tests; ``updated_at`` is ``clock.time()``.
    """

    __slots__ = ("_clock", "_records")

    def __init__(self, spaces: dict[str, Any], namespace: str, clock: Clock) -> None:
        self._records: dict[str, _Record] = spaces.setdefault(namespace, {})
        self._clock = clock

    def _live(self, task: str) -> _Record | None:
        record = self._records.get(task)
        expires_at = None if record is None else record.expires_at
        if expires_at is not None and self._clock.monotonic() >= expires_at:
            del self._records[task]
            return None
        return record

    async def save(
        self,
        task: str,
        data: bytes,
        *,
        expected: int | None,
        ttl_ms: int,
        keep_history: int,
        steps: bytes | None,
        write_id: str,
        prior_write_id: str,
    ) -> tuple[int, int, float | str]:
        record = self._live(task)
        current = 0 if record is None else record.version
        if record is not None and record.write_id == write_id:
            return OK, current, record.updated_at
        own_prior = record is not None and record.write_id in prior_write_id.split()
        if expected is not None and expected != current and not own_prior:
            return CONFLICT, current, 0.0
        now = self._clock.time()
        expires_at = self._clock.monotonic() + ttl_ms / 1000 if ttl_ms > 0 else None
        if record is None:
            record = self._records[task] = _Record(data, 0, now, steps, expires_at)
        record.version = current + 1
        record.write_id = write_id
        record.data = data
        record.updated_at = now
        record.expires_at = expires_at
        if steps is not None:
            record.steps = steps
        if keep_history > 0:
            record.history.insert(0, (record.version, now, data))
            del record.history[keep_history:]
        else:
            record.history.clear()
        return OK, record.version, now

    async def load(self, task: str) -> RawCheckpoint | str | None:
        record = self._live(task)
        if record is None:
            return None
        return RawCheckpoint(record.data, record.version, record.updated_at, record.steps)

    async def delete(self, task: str, *, expected: int | None) -> tuple[int, int]:
        record = self._live(task)
        current = 0 if record is None else record.version
        if expected is not None and expected != current:
            return CONFLICT, current
        self._records.pop(task, None)
        return OK, current

    async def page(
        self, low: str | None, prefix: str | None, limit: int
    ) -> tuple[list[tuple[str, int, float]], str | None]:
        candidates = (
            task
            for task in list(self._records)
            if (low is None or task > low) and (prefix is None or task.startswith(prefix))
        )
        # Take one more than a page: if it exists, the listing is not complete.
        page = heapq.nsmallest(limit + 1, candidates)
        entries: list[tuple[str, int, float]] = []
        for task in page[:limit]:
            record = self._live(task)
            if record is not None:
                entries.append((task, record.version, record.updated_at))
        cursor = page[limit - 1] if len(page) > limit else None
        return entries, cursor

    async def history(self, task: str) -> list[tuple[int, float, bytes]] | str:
        record = self._live(task)
        return [] if record is None else list(record.history)


# --------------------------------------------------------------------------- redis


def _bytes(value: Any) -> bytes:
    # A client built with decode_responses=True hands back str; stored bytes are UTF-8 then.
    return value.encode("utf-8") if isinstance(value, str) else bytes(value)


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


class RedisCheckpointDriver:
    """Checkpoints in Redis; every operation is one ``EVALSHA``.

    All keys of one namespace share the hash tag ``{ckpt:<namespace>}`` so that the save script
    can maintain the namespace's index atomically (and ``list`` needs neither ``KEYS`` nor
    ``SCAN``). The trade-off: one namespace lives on one Redis Cluster slot; spread a very
    large fleet over several namespaces.
    """

    __slots__ = ("_backend", "_body_base", "_data_base", "_history_base", "_index", "_stage_base")

    def __init__(self, backend: ScriptRunner, namespace: str) -> None:
        self._backend = backend
        self._data_base = backend.key("ckpt", namespace, "d:")
        self._body_base = backend.key("ckpt", namespace, "b:")
        self._stage_base = backend.key("ckpt", namespace, "stage:")
        self._history_base = backend.key("ckpt", namespace, "h:")
        self._index = backend.key("ckpt", namespace, "index")

    async def save(
        self,
        task: str,
        data: bytes,
        *,
        expected: int | None,
        ttl_ms: int,
        keep_history: int,
        steps: bytes | None,
        write_id: str,
        prior_write_id: str,
    ) -> tuple[int, int, float | str]:
        stage = f"{self._stage_base}{task}:{write_id}"
        staged = len(data) > _INLINE_MAX_BYTES
        reply = await self._backend.run_script_staged(
            load_script("checkpoint_save"),
            [
                self._data_base + task,
                self._history_base + task,
                self._index,
                self._body_base + task,
                stage,
            ],
            [
                "" if expected is None else expected,
                ttl_ms,
                keep_history,
                task,
                "0" if steps is None else "1",
                b"" if steps is None else steps,
                write_id,
                prior_write_id,
                "staged" if staged else "inline",
                b"" if staged else data,
            ],
            stage=(stage, data, _STAGE_TTL_MS) if staged else None,
            replicated=True,
        )
        status = int(reply[0])
        if status == STAGE_MISSING:
            raise BackendUnavailableError(
                "checkpoint save: the staged state vanished before the save script ran "
                "(Redis restarted or evicted it); nothing was written"
            )
        if status == OK:
            return OK, int(reply[1]), int(reply[2]) / 1000
        if status == CONFLICT:
            return CONFLICT, int(reply[1]), 0.0
        return CORRUPT, 0, _text(reply[1])

    async def load(self, task: str) -> RawCheckpoint | str | None:
        reply = await self._backend.run_script(
            load_script("checkpoint_load"), [self._data_base + task, self._body_base + task], []
        )
        if not reply:
            return None
        if int(reply[0]) == CORRUPT:
            return _text(reply[1])
        try:
            version = int(reply[2])
            updated_at = int(reply[3]) / 1000
        except ValueError:
            return f"version {reply[2]!r} or timestamp {reply[3]!r} is not an integer"
        steps = _bytes(reply[4]) if len(reply) > 4 and reply[4] is not None else None
        return RawCheckpoint(_bytes(reply[1]), version, updated_at, steps)

    async def delete(self, task: str, *, expected: int | None) -> tuple[int, int]:
        reply = await self._backend.run_script(
            load_script("checkpoint_delete"),
            [
                self._data_base + task,
                self._history_base + task,
                self._index,
                self._body_base + task,
            ],
            ["" if expected is None else expected, task],
        )
        return int(reply[0]), int(reply[1])

    async def page(
        self, low: str | None, prefix: str | None, limit: int
    ) -> tuple[list[tuple[str, int, float]], str | None]:
        if low is not None and (prefix is None or low >= prefix):
            start = "(" + low
        elif prefix is not None:
            start = "[" + prefix  # a cursor before the prefix range: start at the range
        else:
            start = "-"
        # Encoded ids are ASCII, so every id that starts with ``prefix`` sorts before \xff.
        stop: str | bytes = "+" if prefix is None else b"[" + prefix.encode() + b"\xff"
        reply = await self._backend.run_script(
            load_script("checkpoint_list"),
            [self._index],
            [self._data_base, start, stop, limit, limit * LIST_SCAN_BUDGET_FACTOR],
        )
        cursor = _text(reply[0]) or None
        entries: list[tuple[str, int, float]] = []
        for i in range(1, len(reply), 3):
            try:
                version, updated_ms = int(reply[i + 1]), int(reply[i + 2])
            except ValueError:
                version, updated_ms = 0, 0
            entries.append((_text(reply[i]), version, updated_ms / 1000))
        return entries, cursor

    async def history(self, task: str) -> list[tuple[int, float, bytes]] | str:
        reply = await self._backend.run_script(
            load_script("checkpoint_history"), [self._history_base + task], []
        )
        if int(reply[0]) == CORRUPT:
            return _text(reply[1])
        out: list[tuple[int, float, bytes]] = []
        for raw in reply[1:]:
            entry = _bytes(raw)
            try:
                version, updated_ms, data = entry.split(b" ", 2)
                out.append((int(version), int(updated_ms) / 1000, data))
            except ValueError:
                return f"history entry {entry[:40]!r} is malformed"
        return out
