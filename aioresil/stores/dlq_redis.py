"""The dead letter queue's Redis storage: every change is one ``dlq_*.lua`` script.

The scripts share helpers from ``dlq_lib.lua``, prepended here to each script's source before
its SHA is computed, so each remains one self-contained ``EVALSHA``. Reads that touch a single
key (``get``, ``count``) are plain commands; reads that span keys (``list``, ``stats``) are
scripts too, so they see one snapshot in one round trip.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

from ..backends.scripts import LuaScript, load_script
from .dlq_records import ClaimRow, RawFields, StatsRow

if TYPE_CHECKING:
    from ..backends.base import ScriptRunner

__all__ = ["QUEUE_KEY_PARTS", "RedisDlqStorage", "dlq_script"]

QUEUE_KEY_PARTS = ("idx", "counts", "lease", "tok", "seq", "evicted", "expired")
"""The queue's own keys, KEYS[1..7] of every dlq_* script (see ``dlq_lib.lua``)."""


@cache
def dlq_script(name: str) -> LuaScript:
    """``dlq_lib.lua`` followed by ``<name>.lua``, as one script."""
    return LuaScript(name, load_script("dlq_lib").source + "\n" + load_script(name).source)


def _text(value: Any) -> str:
    # surrogatepass: the inverse of _wire (identical to strict UTF-8 for every valid text)
    return value.decode("utf-8", "surrogatepass") if isinstance(value, bytes) else str(value)


def _wire(value: str | int | float | bytes) -> str | int | float | bytes:
    """Text as bytes with ``surrogatepass``: an error message or task id holding a lone
    surrogate is stored losslessly, as the memory backend stores it (redis-py would raise)."""
    return value.encode("utf-8", "surrogatepass") if isinstance(value, str) else value


def _fields(flat: list[Any]) -> RawFields:
    """A flat [field, value, ...] reply as a dict; the payload stays bytes."""
    out: RawFields = {}
    for i in range(0, len(flat) - 1, 2):
        name = _text(flat[i])
        value = flat[i + 1]
        if name == "p":
            out[name] = value if isinstance(value, bytes) else str(value).encode()
        else:
            out[name] = _text(value)
    return out


class RedisDlqStorage:
    """One queue's keys on a :class:`~aioresil.backends.redis.RedisBackend`."""

    __slots__ = ("backend", "base", "idx", "queue_keys")

    def __init__(self, backend: ScriptRunner, name: str) -> None:
        self.backend = backend
        self.base = backend.key("dlq", name, "")
        self.idx = self.base + "idx"
        # KEYS[1..7] of every dlq_* script, in dlq_lib.lua's order
        self.queue_keys = [self.base + part for part in QUEUE_KEY_PARTS]

    def entry_key(self, entry_id: str) -> str:
        return self.base + "e:" + entry_id

    def type_key(self, encoded_type: str | bytes) -> str:
        tk = encoded_type.decode() if isinstance(encoded_type, bytes) else encoded_type
        return self.base + "t:" + tk

    async def _run(self, script: str, keys: list[str], *args: str | int | float | bytes) -> Any:
        """One dlq script: the queue's keys, then ``keys``, then ``args`` (never a key name)."""
        return await self.backend.run_script(
            dlq_script(script), [*self.queue_keys, *keys], [*map(_wire, args)]
        )

    async def push(
        self,
        entry_id: str,
        fields: RawFields,
        max_entries: int,
        overflow: str,
        retention_bound: str,
    ) -> tuple[int, list[str]]:
        args = _push_args(entry_id, fields, max_entries, overflow, retention_bound)
        keys = [*self.queue_keys, self.entry_key(entry_id), self.type_key(fields["tk"])]
        # replicated=True: with the backend's wait_replicas, the push counts only once that many
        # replicas hold it (ReplicaAckTimeoutError otherwise, and the queue spools the entry).
        reply = await self.backend.run_script_staged(
            dlq_script("dlq_push"), keys, [*map(_wire, args)], replicated=True
        )
        return int(reply[0]), [_text(v) for v in reply[1:]]

    async def push_many(
        self,
        items: list[tuple[str, RawFields]],
        max_entries: int,
        overflow: str,
        retention_bound: str,
    ) -> list[tuple[int, list[str]]]:
        """One ``dlq_push_many`` script for the whole chunk: all of it is stored or none.

        The caller keeps ``items`` small (``push_prepared`` cuts its chunks): this is one
        operation under ``operation_timeout``.
        """
        keys = list(self.queue_keys)
        args: list[str | bytes | int] = [max_entries, overflow, retention_bound]
        for entry_id, fields in items:
            keys += [self.entry_key(entry_id), self.type_key(fields["tk"])]
            rest = [(name, value) for name, value in fields.items() if name not in _HEAD]
            args += [entry_id, fields["ty"], fields["tk"], fields["fa"], len(rest)]
            for name, value in rest:
                args += [name, value]
        replies = await self.backend.run_script(
            dlq_script("dlq_push_many"), keys, [*map(_wire, args)]
        )
        return [(int(r[0]), [_text(v) for v in r[1:]]) for r in replies]

    async def get(self, entry_id: str) -> RawFields | None:
        client = self.backend.client
        key = self.entry_key(entry_id)

        async def run() -> dict[Any, Any]:
            return dict(await client.hgetall(key))

        flat = await self.backend.execute("dlq get", run)
        if not flat:
            return None
        out: list[Any] = []
        for name, value in flat.items():
            out += [name, value]
        return _fields(out)

    async def page(
        self, type_key: str | None, upper: str, lower: str, limit: int
    ) -> list[tuple[str, RawFields]]:
        key = self.idx if type_key is None else self.type_key(type_key)
        rows = await self._run("dlq_list", [key], upper, lower, limit)
        return [(_text(row[0]), _fields(row[1:])) for row in rows if len(row) > 1]

    async def count(self, task_type: str | None) -> int:
        client = self.backend.client

        async def run() -> int:
            if task_type is None:
                return int(await client.zcard(self.idx))
            value = await client.hget(self.base + "counts", task_type)
            return int(value) if value is not None else 0

        return await self.backend.execute("dlq count", run)

    async def stats(self, since_bound: str, now_ms: float | None) -> StatsRow:
        now = "" if now_ms is None else repr(now_ms)
        reply = await self._run("dlq_stats", [], since_bound, now)
        counts = reply[7:]
        return StatsRow(
            total=int(reply[0]),
            recent=int(reply[1]),
            oldest_member=_text(reply[2]),
            newest_member=_text(reply[3]),
            evicted=int(reply[4]),
            expired=int(reply[5]),
            in_flight=int(reply[6]),
            by_type={_text(counts[i]): int(counts[i + 1]) for i in range(0, len(counts) - 1, 2)},
        )

    async def claim(self, entry_id: str, now_ms: float | None, lease_ms: int) -> ClaimRow:
        now = "" if now_ms is None else repr(now_ms)
        reply = await self._run("dlq_claim", [self.entry_key(entry_id)], entry_id, now, lease_ms)
        status = int(reply[0])
        if status != 1:
            return ClaimRow(status)
        return ClaimRow(1, int(reply[1]), _fields(reply[3:]))

    async def ack(self, entry_id: str, token: int) -> bool:
        return bool(await self._run("dlq_ack", [self.entry_key(entry_id)], entry_id, token))

    async def nack(
        self, entry_id: str, token: int, failed_at: str, error_type: str, message: str, tb: str
    ) -> int:
        reply = await self._run(
            "dlq_nack",
            [self.entry_key(entry_id)],
            entry_id,
            token,
            failed_at,
            error_type,
            message,
            tb,
        )
        return int(reply)

    async def release(self, entry_id: str, token: int) -> bool:
        return bool(await self._run("dlq_release", [], entry_id, token))

    async def remove(self, entry_id: str) -> bool:
        return bool(await self._run("dlq_remove", [self.entry_key(entry_id)], entry_id))

    async def purge_batch(self, type_key: str | None, upper: str, batch: int) -> int:
        key = self.idx if type_key is None else self.type_key(type_key)
        return int(await self._run("dlq_purge", [key], upper, batch))


_HEAD = ("ty", "tk", "fa")
"""The fields every push passes first, by position (the rest go as field/value pairs)."""


def _push_args(
    entry_id: str, fields: RawFields, max_entries: int, overflow: str, retention_bound: str
) -> list[str | bytes | int]:
    """ARGV of dlq_push.lua (its keys are the caller's: the queue's, the entry, its type)."""
    args: list[str | bytes | int] = [
        entry_id,
        fields["ty"],
        fields["tk"],
        fields["fa"],
        max_entries,
        overflow,
        retention_bound,
    ]
    for name, value in fields.items():
        if name not in _HEAD:
            args += [name, value]
    return args
