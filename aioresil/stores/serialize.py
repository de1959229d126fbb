"""How stores turn user values into bytes: JSON by default, never pickle.

Why not pickle: loading a pickle runs code chosen by whoever wrote the bytes, and a Redis
shared by a fleet is writable by every process in it. A custom serializer can be passed to a
store (anything with ``dumps(obj) -> bytes | str`` and ``loads(bytes) -> obj``), and the
store turns any error it raises into :class:`~aioresil.exceptions.SerializationError`.

Why :class:`OrjsonSerializer` is opt-in and checks orjson's work: the standard library's
encoder takes ~200 us for 100 KB of state, more than a raw ``SET`` of it, while orjson takes
a few; but orjson is strict in other ways than ours (it writes NaN and Infinity as ``null``,
enums and UUIDs in forms that read back as something else, and reads integers beyond 64 bits
as floats). It keeps orjson's work only where it provably means what :class:`JsonSerializer`
would have written or read, and hands everything else to the standard library, so the two
are interchangeable in a fleet mid-upgrade.
"""

from __future__ import annotations

import json
import marshal
import math
from typing import Any, Protocol, runtime_checkable

from ..exceptions import SerializationError

__all__ = ["JSON", "JsonSerializer", "OrjsonSerializer", "Serializer", "dumps_checked"]


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

#: Bytes that are not ASCII digits (``bytes.translate`` deletes them: what is left are digits).
_NOT_DIGITS = bytes(b for b in range(256) if not 0x30 <= b <= 0x39)
#: Every digit to ``0``, everything else to a space: a run of digits becomes a run of ``0``.
_DIGIT_RUNS = bytes(0x30 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))
#: orjson reads an integer literal beyond the 64-bit range as a float. Every such literal has
#: at least 19 digits (-2**63 - 1 has 19), so text without a run of 19 digits is safe.
_LONG_RUN = b"0" * 19


_SCALARS = frozenset({str, int, bool, type(None)})


def _plain_json(obj: Any, budget: int) -> bool:
    """``True`` when ``obj`` is made of at most ``budget`` values, each exactly a ``str``,
    ``int``, ``bool``, ``None``, finite ``float``, ``dict``, ``list`` or ``tuple``: what orjson
    provably writes as the standard library does (dict keys and integer ranges are orjson's
    own checks: it raises). ``False`` means "not proven" (an enum, a UUID, NaN, or too big)."""
    stack = [obj]
    pop, extend = stack.pop, stack.extend
    while stack:
        budget -= 1
        if budget < 0:
            return False
        value = pop()
        kind = type(value)
        if kind in _SCALARS:
            continue
        if kind is float:
            if not math.isfinite(value):
                return False
        elif kind is dict:
            extend(value.values())
        elif kind is list or kind is tuple:
            extend(value)
        else:
            return False
    return True


def _exact_builtins(obj: Any) -> bool:
    """``True`` when ``obj`` is made of builtin values of exactly their builtin type, so ``==``
    on it is the builtins' own. ``marshal`` is the C-speed check: it refuses every other type
    (subclasses, enums, UUIDs, ``orjson.Fragment``) and nesting deeper than ~2000 levels.
    It also takes bytes, sets and complex numbers, which orjson refuses before this is asked.
    Why it matters: the round trip below compares with ``==``, and an object's own ``__eq__``
    (an enum equal to its value) would vouch for bytes that do not mean it."""
    try:
        marshal.dumps(obj)
    except ValueError:
        return False
    return True


def _no_float_past_64_bits(decoded: Any, budget: int) -> bool:
    """``True`` when what orjson decoded has at most ``budget`` values and no float of a
    magnitude an integer beyond 64 bits would have become (so none did)."""
    stack = [decoded]
    pop, extend = stack.pop, stack.extend
    while stack:
        budget -= 1
        if budget < 0:
            return False
        value = pop()
        kind = type(value)
        if kind is float:
            if not -9.2e18 < value < 9.2e18:
                return False
        elif kind is dict:
            extend(value.values())
        elif kind is list:
            extend(value)
    return True


def _may_hold_a_big_int(data: bytes) -> bool:
    # Two C-speed passes, the second only when there are 19 digits at all. A run inside a
    # string or a float is a false alarm, which only costs the standard library's decoder.
    if len(data.translate(None, _NOT_DIGITS)) < len(_LONG_RUN):
        return False
    return _LONG_RUN in data.translate(_DIGIT_RUNS)


class OrjsonSerializer:
    r""":class:`JsonSerializer`'s strict JSON, encoded and decoded by ``orjson`` where that is
    exact: much faster on large states. Needs ``pip install 'aioresil[orjson]'``.

    What it writes always reads back (with either serializer) as what :class:`JsonSerializer`
    writes for the same value reads back as; the bytes may differ (float notation, escapes).
    Every value :class:`JsonSerializer` refuses is refused with the same error, which a store
    raises as :class:`~aioresil.exceptions.SerializationError`. Per case:

    * orjson's bytes are kept only when the value is made of plain JSON types (``str``,
      ``int``, ``bool``, ``None``, finite ``float``, ``dict``, ``list``, ``tuple``, each
      exactly that type): proven value by value up to ``walk_budget`` values, else by orjson
      reading the bytes back as a value ``==`` to the one given; otherwise
      :class:`JsonSerializer` writes the value, or raises, exactly as it would alone. So
      NaN and Infinity (orjson writes ``null``) raise ``ValueError``; plain enums (not
      ``int``/``str`` ones), UUIDs and ``orjson.Fragment`` raise ``TypeError``; tuples are
      written as lists, as by the default.
    * Values orjson refuses go to :class:`JsonSerializer` too: ``int``/``float``/``bool``/
      ``None`` dict keys (written as strings, as by the default), integers beyond 64 bits
      (written exactly), strings with a lone surrogate (``\uXXXX`` escapes), subclasses of
      ``str``, ``int``, ``dict`` and ``list``, nesting deeper than orjson's limit.
    * Dataclasses, datetimes, dates and times raise ``TypeError``, as in the default (orjson
      would write them as objects and strings that read back as something else).

    ``loads`` reads what either serializer wrote, as :class:`JsonSerializer` reads it. The
    standard library reads text orjson refuses (``NaN``, escaped lone surrogates, a byte order
    mark, very deep nesting) and text that may hold an integer beyond 64 bits, which orjson
    alone reads as a float (what it read has a float that large, or, in a state of more than
    ``walk_budget`` values, the text has a run of 19 digits).

    Example::

        store = CheckpointStore(backend, serializer=OrjsonSerializer())
    """

    __slots__ = ("_dumps", "_loads", "_option")

    #: Values a state may have for the value-by-value checks; bigger states get the round trip
    #: (``dumps``) or the scan of the text (``loads``).
    walk_budget = 512

    def __init__(self) -> None:
        try:
            import orjson
        except ImportError as exc:  # pragma: no cover - the test extra installs it
            raise ImportError(
                "OrjsonSerializer needs orjson: pip install 'aioresil[orjson]' "
                "(in a checkout: pip install -e '.[orjson]')"
            ) from exc
        self._dumps = orjson.dumps
        self._loads = orjson.loads
        # These go to ``default`` (there is none: TypeError), so the standard library decides.
        self._option = (
            orjson.OPT_PASSTHROUGH_DATACLASS
            | orjson.OPT_PASSTHROUGH_DATETIME
            | orjson.OPT_PASSTHROUGH_SUBCLASS
        )

    def dumps(self, obj: Any) -> bytes:
        try:
            data = self._dumps(obj, option=self._option)
        except TypeError:  # orjson.JSONEncodeError: a value orjson does not write as we do
            return JSON.dumps(obj)
        # Proof that the bytes mean the value, whatever orjson made of it (NaN as null, an
        # enum as its value, a UUID as a string): a state of a few hundred plain values is
        # checked value by value (a large string counts once); a bigger one by a round trip,
        # C speed both ways, still several times cheaper than the standard library's encoder
        # on 100 KB. The round trip's ``==`` only proves anything between builtins: a value
        # of any other type (an enum whose ``__eq__`` matches its value, an orjson.Fragment
        # whose text does not even read back) goes to the default, which decides it.
        if _plain_json(obj, self.walk_budget) or (
            _exact_builtins(obj) and self._loads(data) == obj
        ):
            return data
        return JSON.dumps(obj)

    def loads(self, data: bytes) -> Any:
        try:
            value = self._loads(data)
        except ValueError:  # orjson.JSONDecodeError: the standard library may read it
            return json.loads(data)
        # orjson reads an integer beyond 64 bits as a float: proven absent value by value
        # (a small state), else by the text (no run of 19 digits); else the standard library.
        if _no_float_past_64_bits(value, self.walk_budget) or not _may_hold_a_big_int(data):
            return value
        return json.loads(data)

    def __repr__(self) -> str:
        return "OrjsonSerializer()"


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
