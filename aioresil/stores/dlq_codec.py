"""The dead letter queue's codec: how a failed task becomes stored fields and back.

Why a module of its own: the queue (``dlq.py``) decides *when* to store and read; what an entry
looks like in storage (13-digit millisecond stamps that sort as text, the error's type, message
and bounded traceback, the payload through the queue's serializer) is one concern, shared by
both storages and the redrive worker, and testable without a queue.
"""

from __future__ import annotations

import json
import traceback as tb_module
from datetime import UTC, datetime

from ..exceptions import CorruptStateError
from .dlq_records import DeadLetter, RawFields
from .serialize import Serializer

__all__ = [
    "MAX_MESSAGE",
    "MAX_TASK_TYPE",
    "as_datetime",
    "as_ms",
    "as_text",
    "check_task_type",
    "decode_entry",
    "error_fields",
    "pad",
]

MAX_TASK_TYPE = 200
MAX_MESSAGE = 4096


def pad(ms: int) -> str:
    """``ms`` as 13 digits: index members and cursors sort as text in time order."""
    return f"{max(ms, 0):013d}"


def as_ms(when: datetime) -> int:
    """Unix milliseconds of an aware datetime (a naive one is refused: which zone?)."""
    if when.tzinfo is None:
        raise ValueError(f"datetimes must be timezone-aware, got naive {when!r}")
    return int(when.timestamp() * 1000)


def as_datetime(padded: str) -> datetime:
    """The UTC datetime of a 13-digit millisecond stamp."""
    return datetime.fromtimestamp(int(padded) / 1000, tz=UTC)


def as_text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def check_task_type(task_type: object) -> str:
    if not isinstance(task_type, str):
        raise TypeError(f"task_type must be a str, got {type(task_type).__name__}")
    if not task_type.strip():
        raise ValueError("task_type must be a non-empty string")
    if len(task_type) > MAX_TASK_TYPE:
        raise ValueError(f"task_type is {len(task_type)} characters, at most {MAX_TASK_TYPE}")
    return task_type


def error_fields(error: BaseException | str, max_traceback_chars: int) -> tuple[str, str, str]:
    """``(error type, message, traceback)`` of an exception (or a plain message), bounded."""
    if isinstance(error, str):
        return "", error[:MAX_MESSAGE], ""
    if not isinstance(error, BaseException):
        raise TypeError(f"error must be an exception or a str, got {type(error).__name__}")
    text = "".join(tb_module.format_exception(error)) if error.__traceback__ else ""
    if len(text) > max_traceback_chars:
        text = "...\n" + text[len(text) - max_traceback_chars :]
    return type(error).__qualname__, str(error)[:MAX_MESSAGE], text


def decode_entry(
    entry_id: str, fields: RawFields, serializer: Serializer, queue: str
) -> DeadLetter:
    """The :class:`DeadLetter` stored as ``fields``; ``CorruptStateError`` naming the entry
    and its queue when they do not decode."""
    try:
        payload_raw = fields["p"]
        payload = serializer.loads(
            payload_raw if isinstance(payload_raw, bytes) else payload_raw.encode()
        )
        task_id = as_text(fields["ti"]) if "ti" in fields else None
        error_type = as_text(fields.get("et", "")) or None
        tb = as_text(fields.get("tb", "")) or None
        metadata = json.loads(as_text(fields.get("md", "{}")))
        return DeadLetter(
            id=entry_id,
            task_type=as_text(fields["ty"]),
            task_id=task_id,
            payload=payload,
            error_type=error_type,
            error_message=as_text(fields.get("em", "")),
            traceback=tb,
            attempts=int(as_text(fields["a"])),
            first_failed_at=as_datetime(as_text(fields["ff"])),
            failed_at=as_datetime(as_text(fields["fa"])),
            metadata=metadata,
        )
    except (KeyError, ValueError, TypeError, UnicodeDecodeError) as exc:
        raise CorruptStateError(
            f"dead letter {entry_id!r} of queue {queue!r} could not be decoded: {exc!r}"
        ) from exc
