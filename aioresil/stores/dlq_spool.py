"""Where a dead letter waits while Redis is unreachable: a bounded local spool.

Why: a task fails during a Redis outage exactly when failures are most likely; dropping its
dead letter then would lose the record of the outage itself. The spool is a bounded deque
(pushes beyond ``max_entries`` fail loudly) and, optionally, an append-only JSON-lines file
that a restarted process reads back, so the entries also survive a crash of the pusher.

Replaying is idempotent by entry id (the push script refuses an id it already holds), so an
entry whose first push reached Redis but whose reply was lost is not stored twice. The file
is emptied once the spool has been fully flushed; a crash between the flush and that
truncation replays entries already stored, which the same id check absorbs, unless they were
retried and deleted meanwhile (then they come back once: at-least-once, never lost).

File writes run in a worker thread (``asyncio.to_thread``), one at a time under a lock: a slow
or network-mounted disk must not stall every other task on the event loop, and a push is
only acknowledged once its line is written, so an acknowledged entry is always on disk.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections import deque
from pathlib import Path

import structlog

from .dlq_records import RawFields

__all__ = ["LocalSpool"]

_log = structlog.get_logger("aioresil")


class LocalSpool:
    """Entries (id, fields) waiting for the backend, oldest first.

    Args:
        max_entries: how many entries may wait; :meth:`append` refuses more.
        path: optional append-only file mirroring the spool; read back on construction.
    """

    def __init__(self, max_entries: int, path: str | Path | None = None) -> None:
        self.max_entries = max_entries
        self.path = Path(path) if path is not None else None
        self._entries: deque[tuple[str, RawFields]] = deque()
        self._file_lock = asyncio.Lock()
        if self.path is not None and self.path.exists():
            self._load(self.path)

    def __len__(self) -> int:
        return len(self._entries)

    async def append(self, entry_id: str, fields: RawFields) -> bool:
        """Keep an entry; ``False`` (nothing kept) when the spool is full.

        Returns once the entry's line is in the spool file (when there is one).
        """
        if len(self._entries) >= self.max_entries:
            return False
        self._entries.append((entry_id, fields))
        if self.path is not None:
            encoded = {
                k: {"b64": base64.b64encode(v).decode()} if isinstance(v, bytes) else v
                for k, v in fields.items()
            }
            line = json.dumps({"id": entry_id, "fields": encoded}) + "\n"
            async with self._file_lock:
                await asyncio.to_thread(_append_line, self.path, line)
        return True

    def first(self) -> tuple[str, RawFields]:
        return self._entries[0]

    async def pop_first(self) -> None:
        """Forget the oldest entry (stored or dropped); empty the file once all are gone."""
        self._entries.popleft()
        if not self._entries and self.path is not None:
            async with self._file_lock:
                # Checked again under the lock: an append may have arrived meanwhile.
                if not self._entries:
                    await asyncio.to_thread(_truncate, self.path)

    def _load(self, path: Path) -> None:
        for number, line in enumerate(path.read_text("utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                fields: RawFields = {}
                for key, value in record["fields"].items():
                    if isinstance(value, dict):
                        fields[str(key)] = base64.b64decode(value["b64"])
                    else:
                        fields[str(key)] = str(value)
                self._entries.append((str(record["id"]), fields))
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                # A torn last line (a crash mid-write) is expected; it is reported, not fatal.
                _log.warning(
                    "dlq_spool_line_unreadable", path=str(path), line=number, error=repr(exc)
                )


def _append_line(path: Path, line: str) -> None:
    with path.open("a", encoding="utf-8") as file:
        file.write(line)


def _truncate(path: Path) -> None:
    if path.exists():
        path.write_text("", encoding="utf-8")
