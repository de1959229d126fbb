"""How stores turn user values into bytes: JSON by default, never pickle.

Why not pickle: loading a pickle runs code chosen by whoever wrote the bytes, and a Redis
shared by a fleet is writable by every process in it. A custom serializer can be passed to a
store (anything with ``dumps(obj) -> bytes | str`` and ``loads(bytes) -> obj``), and the
store turns any error it raises into :class:`~aioresil.exceptions.SerializationError`.
"""

from __future__ import annotations

import json
from typing import Any, Protocol, runtime_checkable

from ..exceptions import SerializationError

__all__ = ["JSON", "JsonSerializer", "Serializer", "dumps_checked"]


@runtime_checkable
class Serializer(Protocol):
    """What a store needs to store a value and read it back."""

    def dumps(self, obj: Any) -> bytes | str: ...

    def loads(self, data: bytes) -> Any: ...


class JsonSerializer:
    r"""Strict JSON: no NaN/Infinity, UTF-8, compact. The default of every store.

    A string holding a lone surrogate (``"\udcff"``) has no UTF-8 form; such a value is
    written with JSON's ``\uXXXX`` escapes instead, which read back to the same string: text
    is stored losslessly, and the same way on every backend.
    """

    def dumps(self, obj: Any) -> bytes:
        text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        try:
            return text.encode()
        except UnicodeEncodeError:
            return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode()

    def loads(self, data: bytes) -> Any:
        return json.loads(data)

    def __repr__(self) -> str:
        return "JsonSerializer()"


JSON = JsonSerializer()


def dumps_checked(serializer: Serializer, obj: Any, what: str) -> bytes:
    """Serialize ``obj`` or raise :class:`SerializationError` naming ``what`` and the cause."""
    try:
        data = serializer.dumps(obj)
    except (TypeError, ValueError, OverflowError, RecursionError) as exc:
        raise SerializationError(f"{what} is not serializable with {serializer!r}: {exc}") from exc
    if isinstance(data, str):
        data = data.encode("utf-8")
    if not isinstance(data, bytes):
        raise SerializationError(f"{serializer!r}.dumps returned {type(data).__name__}, not bytes")
    return data
