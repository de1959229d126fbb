"""The dead letter queue's in-process storage: the same operations as the Lua scripts.

Each method runs to completion without an ``await`` inside, so on one event loop it is as
atomic as a Lua script is on Redis. Indexes are sorted Python lists of the same members the
Redis indexes hold (``"<failed_at ms, 13 digits>|<id>"``) searched with :mod:`bisect`, and the
bounds use ``ZRANGEBYLEX`` syntax, so both storages answer every range identically.

Queues of one name on one :class:`~aioresil.MemoryBackend` share a :class:`QueueState`
(kept in ``backend.namespace("dlq")``), as they would share keys on Redis.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from dataclasses import dataclass, field

from .dlq_records import ClaimRow, RawFields, StatsRow

__all__ = ["MemoryDlqStorage", "QueueState"]


@dataclass
class QueueState:
    """Everything one queue stores; the mirror of its Redis keys (see ``dlq_lib.lua``)."""

    entries: dict[str, RawFields] = field(default_factory=dict)
    idx: list[str] = field(default_factory=list)
    by_type: dict[str, list[str]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    lease: dict[str, float] = field(default_factory=dict)
    tok: dict[str, int] = field(default_factory=dict)
    seq: int = 0
    evicted: int = 0
    expired: int = 0


def _upper(index: list[str], bound: str) -> int:
    """Index one past the last member within the upper bound."""
    if bound == "+":
        return len(index)
    if bound.startswith("("):
        return bisect_left(index, bound[1:])
    return bisect_right(index, bound[1:])


def _lower(index: list[str], bound: str) -> int:
    """Index of the first member within the lower bound."""
    if bound == "-":
        return 0
    if bound.startswith("["):
        return bisect_left(index, bound[1:])
    return bisect_right(index, bound[1:])


def _discard(index: list[str], member: str) -> None:
    i = bisect_left(index, member)
    if i < len(index) and index[i] == member:
        del index[i]


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


class MemoryDlqStorage:
    """One queue's storage in this process (the ``DlqStorage`` contract, without I/O)."""

    __slots__ = ("state",)

    def __init__(self, state: QueueState) -> None:
        self.state = state

    def _remove(self, entry_id: str) -> bool:
        s = self.state
        fields = s.entries.pop(entry_id, None)
        if fields is None:
            return False
        task_type, type_key = _text(fields["ty"]), _text(fields["tk"])
        member = f"{_text(fields['fa'])}|{entry_id}"
        _discard(s.idx, member)
        typed = s.by_type.get(type_key)
        if typed is not None:
            _discard(typed, member)
            if not typed:
                del s.by_type[type_key]
        left = s.counts.get(task_type, 0) - 1
        if left <= 0:
            s.counts.pop(task_type, None)
        else:
            s.counts[task_type] = left
        s.lease.pop(entry_id, None)
        s.tok.pop(entry_id, None)
        return True

    async def push(
        self,
        entry_id: str,
        fields: RawFields,
        max_entries: int,
        overflow: str,
        retention_bound: str,
    ) -> tuple[int, list[str]]:
        s = self.state
        if entry_id in s.entries:
            return 2, []
        if retention_bound:
            old = s.idx[: min(_upper(s.idx, retention_bound), 100)]
            for member in old:
                if self._remove(member[14:]):
                    s.expired += 1
        evicted: list[str] = []
        if len(s.idx) >= max_entries:
            if overflow != "evict_oldest":
                return 0, []
            while len(s.idx) >= max_entries:
                victim = s.idx[0][14:]
                self._remove(victim)
                s.evicted += 1
                evicted.append(victim)
        task_type, type_key = _text(fields["ty"]), _text(fields["tk"])
        member = f"{_text(fields['fa'])}|{entry_id}"
        s.entries[entry_id] = dict(fields)
        insort(s.idx, member)
        insort(s.by_type.setdefault(type_key, []), member)
        s.counts[task_type] = s.counts.get(task_type, 0) + 1
        return 1, evicted

    async def push_many(
        self,
        items: list[tuple[str, RawFields]],
        max_entries: int,
        overflow: str,
        retention_bound: str,
    ) -> list[tuple[int, list[str]]]:
        results = []
        for entry_id, fields in items:
            result = await self.push(entry_id, fields, max_entries, overflow, retention_bound)
            results.append(result)
            if result[0] == 0:
                break  # as on Redis, where the caller stops at the first rejection
        return results

    async def get(self, entry_id: str) -> RawFields | None:
        fields = self.state.entries.get(entry_id)
        return dict(fields) if fields is not None else None

    async def page(
        self, type_key: str | None, upper: str, lower: str, limit: int
    ) -> list[tuple[str, RawFields]]:
        s = self.state
        index = s.idx if type_key is None else s.by_type.get(type_key, [])
        hi = _upper(index, upper)
        lo = max(_lower(index, lower), hi - limit)
        members = index[lo:hi] if lo < hi else []
        return [(m, dict(s.entries[m[14:]])) for m in reversed(members)]

    async def count(self, task_type: str | None) -> int:
        if task_type is None:
            return len(self.state.idx)
        return self.state.counts.get(task_type, 0)

    async def stats(self, since_bound: str, now_ms: float | None) -> StatsRow:
        s = self.state
        now = now_ms if now_ms is not None else 0.0
        return StatsRow(
            total=len(s.idx),
            recent=len(s.idx) - _lower(s.idx, since_bound),
            oldest_member=s.idx[0] if s.idx else "",
            newest_member=s.idx[-1] if s.idx else "",
            evicted=s.evicted,
            expired=s.expired,
            in_flight=sum(1 for deadline in s.lease.values() if deadline > now),
            by_type=dict(s.counts),
        )

    async def claim(self, entry_id: str, now_ms: float | None, lease_ms: int) -> ClaimRow:
        s = self.state
        fields = s.entries.get(entry_id)
        if fields is None:
            return ClaimRow(0)
        now = now_ms if now_ms is not None else 0.0
        held = s.lease.get(entry_id)
        if held is not None and held > now:
            return ClaimRow(-1)
        s.seq += 1
        s.lease[entry_id] = now + lease_ms
        s.tok[entry_id] = s.seq
        return ClaimRow(1, s.seq, dict(fields))

    async def ack(self, entry_id: str, token: int) -> bool:
        if self.state.tok.get(entry_id) != token:
            return False
        return self._remove(entry_id)

    async def nack(
        self, entry_id: str, token: int, failed_at: str, error_type: str, message: str, tb: str
    ) -> int:
        s = self.state
        if s.tok.get(entry_id) != token:
            return 0
        fields = s.entries[entry_id]
        type_key = _text(fields["tk"])
        old_member = f"{_text(fields['fa'])}|{entry_id}"
        new_member = f"{failed_at}|{entry_id}"
        typed = s.by_type[type_key]
        _discard(s.idx, old_member)
        _discard(typed, old_member)
        insort(s.idx, new_member)
        insort(typed, new_member)
        attempts = int(_text(fields["a"])) + 1
        fields.update(fa=failed_at, et=error_type, em=message, tb=tb, a=str(attempts))
        s.lease.pop(entry_id, None)
        s.tok.pop(entry_id, None)
        return attempts

    async def release(self, entry_id: str, token: int) -> bool:
        s = self.state
        if s.tok.get(entry_id) != token:
            return False
        s.lease.pop(entry_id, None)
        s.tok.pop(entry_id, None)
        return True

    async def remove(self, entry_id: str) -> bool:
        return self._remove(entry_id)

    async def purge_batch(self, type_key: str | None, upper: str, batch: int) -> int:
        s = self.state
        index = s.idx if type_key is None else s.by_type.get(type_key, [])
        members = index[: min(_upper(index, upper), batch)]
        return sum(1 for member in members if self._remove(member[14:]))
