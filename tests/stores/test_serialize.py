"""OrjsonSerializer is JsonSerializer, faster: the same meaning written, the same errors raised,
and each reads what the other wrote (a fleet mid-upgrade runs both).

"The same meaning": ``json.loads`` of both outputs is equal (the bytes may differ: float
notation, escapes). "The same errors": the same exception type and message, because every
value orjson cannot write exactly is handed to JsonSerializer itself.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import json
import math
import uuid
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aioresil import OrjsonSerializer
from aioresil.stores.serialize import JSON, JsonSerializer, Serializer

ORJSON = OrjsonSerializer()


class RoundTripOnly(OrjsonSerializer):
    """Every value proven by the round trip (a big state's path), none value by value."""

    walk_budget = 0


# Both proofs of orjson's bytes: value by value (small states) and the round trip.
BOTH = pytest.mark.parametrize("fast", [ORJSON, RoundTripOnly()], ids=["walk", "round-trip"])


class Color(enum.Enum):
    RED = 1


class Level(enum.IntEnum):
    HIGH = 3


class Mode(enum.StrEnum):
    FAST = "fast"


class Status(enum.Enum):
    """A plain enum that compares equal to its value (a common pattern before StrEnum): its
    own ``__eq__`` must not pass for a proof that orjson's bytes (the value) mean the member."""

    OK = "ok"

    def __eq__(self, other: object) -> bool:
        return self.value == other if isinstance(other, str) else self is other

    __hash__ = enum.Enum.__hash__


@dataclasses.dataclass
class Point:
    x: int


class Text(str):
    pass


def outcome(serializer: Serializer, value: Any) -> tuple[str, Any]:
    """``("ok", what the bytes read back as)`` or ``(error type, message)``."""
    try:
        data = serializer.dumps(value)
    except Exception as exc:
        return type(exc).__name__, str(exc)
    assert isinstance(data, bytes)
    return "ok", json.loads(data)


def nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


# Each case: the value, and what both serializers do with it. One row per strictness decision.
CASES: list[tuple[str, Any, tuple[str, Any]]] = [
    ("nan", math.nan, ("ValueError", "Out of range float values are not JSON compliant")),
    (
        "infinity in a list",
        [1.0, math.inf],
        ("ValueError", "Out of range float values are not JSON compliant"),
    ),
    (
        "-infinity in a dict",
        {"a": -math.inf},
        ("ValueError", "Out of range float values are not JSON compliant"),
    ),
    (
        "nan as a key",
        {math.nan: 1},
        ("ValueError", "Out of range float values are not JSON compliant"),
    ),
    ("None (written null, like NaN)", {"a": None, "b": [None]}, ("ok", {"a": None, "b": [None]})),
    ("int keys", {1: "a", 2: "b"}, ("ok", {"1": "a", "2": "b"})),
    (
        "float, bool, None keys",
        {1.5: 1, True: 2, None: 3},
        ("ok", {"1.5": 1, "true": 2, "null": 3}),
    ),
    (
        "tuple key",
        {(1, 2): 1},
        ("TypeError", "keys must be str, int, float, bool or None, not tuple"),
    ),
    ("2**64", 2**64, ("ok", 2**64)),
    ("-(2**63) - 1", {"n": -(2**63) - 1}, ("ok", {"n": -(2**63) - 1})),
    ("2**200 deep inside", [[{"n": 2**200}]], ("ok", [[{"n": 2**200}]])),
    ("u64 max (orjson writes it)", 2**64 - 1, ("ok", 2**64 - 1)),
    ("lone surrogate", {"s": "a\udcffb"}, ("ok", {"s": "a\udcffb"})),
    ("lone surrogate key", {"\ud800": 1}, ("ok", {"\ud800": 1})),
    ("tuple", (1, (2, 3)), ("ok", [1, [2, 3]])),
    ("plain enum", Color.RED, ("TypeError", "Object of type Color is not JSON serializable")),
    (
        "enum equal to its value",
        {"s": Status.OK},
        ("TypeError", "Object of type Status is not JSON serializable"),
    ),
    ("int enum", {"level": Level.HIGH}, ("ok", {"level": 3})),
    ("str enum", [Mode.FAST], ("ok", ["fast"])),
    ("uuid", uuid.UUID(int=7), ("TypeError", "Object of type UUID is not JSON serializable")),
    ("dataclass", Point(1), ("TypeError", "Object of type Point is not JSON serializable")),
    (
        "datetime",
        datetime.datetime(2026, 1, 1),
        ("TypeError", "Object of type datetime is not JSON serializable"),
    ),
    (
        "date",
        {"d": datetime.date(2026, 1, 1)},
        ("TypeError", "Object of type date is not JSON serializable"),
    ),
    ("time", datetime.time(1, 2), ("TypeError", "Object of type time is not JSON serializable")),
    (
        "orjson.Fragment",
        orjson.Fragment(b"[1]"),
        ("TypeError", "Object of type Fragment is not JSON serializable"),
    ),
    (
        "orjson.Fragment of text that is not JSON",
        [orjson.Fragment(b"[1,")],
        ("TypeError", "Object of type Fragment is not JSON serializable"),
    ),
    ("bytes", b"raw", ("TypeError", "Object of type bytes is not JSON serializable")),
    ("set", {1}, ("TypeError", "Object of type set is not JSON serializable")),
    ("str subclass", {"k": Text("v")}, ("ok", {"k": "v"})),
    ("floats", [0.1, -0.0, 1e300, 5e-324, 1e16], ("ok", [0.1, -0.0, 1e300, 5e-324, 1e16])),
    ("control characters", "\x00\x1f\x7f\u2028", ("ok", "\x00\x1f\x7f\u2028")),
    (
        "300 levels (past orjson's limit)",
        nested(300),
        ("ok", nested(300)),
    ),
]


@BOTH
@pytest.mark.parametrize(("value", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_each_strictness_case_is_decided_as_the_default_decides_it(
    fast: OrjsonSerializer, value: Any, expected: tuple[str, Any]
) -> None:
    assert outcome(JSON, value) == expected
    assert outcome(fast, value) == expected


@BOTH
def test_a_circular_value_raises_the_defaults_error(fast: OrjsonSerializer) -> None:
    loop: list[Any] = []
    loop.append(loop)
    assert (
        outcome(fast, loop) == outcome(JSON, loop) == ("ValueError", "Circular reference detected")
    )


def test_the_fast_path_is_orjson_and_the_rest_is_the_default() -> None:
    state = {"cursor": 1, "blob": "x" * 1000, "none": None}
    assert ORJSON.dumps(state) == orjson.dumps(state)  # compact, UTF-8: what orjson wrote
    assert ORJSON.dumps({1: "a"}) == JSON.dumps({1: "a"})
    assert ORJSON.dumps((1, 2)) == JSON.dumps((1, 2))
    assert ORJSON.dumps(Level.HIGH) == b"3"  # an int enum: orjson's bytes, proven by round trip
    big = {"rows": [{"id": i, "score": i / 2} for i in range(1000)]}  # past the walk's budget
    assert ORJSON.dumps(big) == orjson.dumps(big)


# JSON-able values: what JsonSerializer writes without error.
characters = st.characters(exclude_categories=())  # lone surrogates included
keys = st.text(characters, max_size=8)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(characters, max_size=20)
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(keys, inner, max_size=5),
    max_leaves=30,
)
# Anything the two may be asked to write, JSON-able or not.
odd = st.sampled_from(
    [
        math.nan,
        math.inf,
        -math.inf,
        Color.RED,
        Status.OK,
        Level.HIGH,
        Mode.FAST,
        uuid.UUID(int=1),
        Point(2),
        datetime.date(2026, 1, 2),
        b"b",
        orjson.Fragment(b"1"),
        Text("t"),
    ]
)
odd_keys = (
    keys
    | st.integers(-(2**70), 2**70)
    | st.floats()
    | st.booleans()
    | st.none()
    | st.tuples(st.integers())
)
any_values = st.recursive(
    scalars | odd,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner)
        | st.dictionaries(odd_keys, inner, max_size=4)
    ),
    max_leaves=20,
)


@BOTH
@settings(max_examples=400, deadline=None)
@given(value=json_values)
def test_json_able_values_read_back_the_same_whoever_wrote_and_whoever_reads(
    fast: OrjsonSerializer, value: Any
) -> None:
    ours, default = fast.dumps(value), JSON.dumps(value)
    assert json.loads(ours) == json.loads(default)
    # A fleet mid-upgrade: each reads the other's bytes as the other reads them.
    assert fast.loads(default) == JSON.loads(default)
    assert JSON.loads(ours) == fast.loads(ours) == json.loads(default)


@BOTH
@settings(max_examples=400, deadline=None)
@given(value=any_values)
def test_errors_and_results_agree_on_any_value(fast: OrjsonSerializer, value: Any) -> None:
    # NaN never reaches 'ok' (both refuse it), so == on decoded values is exact.
    assert outcome(fast, value) == outcome(JSON, value)


@BOTH
@pytest.mark.parametrize(
    "text",
    [
        b"18446744073709551616",  # 2**64: orjson alone reads 1.8446744073709552e+19
        b"-9223372036854775809",  # below the 64-bit range, 19 digits
        b'{"id":123456789012345678901234567890,"s":"x"}',
        b'{"s":"1234567890123456789012345"}',  # a digit run in a string: same result
        b"NaN",  # json.loads reads it (JsonSerializer never writes it)
        b"[Infinity,-Infinity]",
        b'"\\udcff"',  # JsonSerializer's form of a lone surrogate
        b"\xef\xbb\xbf[1]",  # a byte order mark
        b"1e400",
        b"[" * 1100 + b"]" * 1100,  # deeper than orjson reads
        b'{"a":1,"a":2}',
        b"[1,]",  # invalid for both
        b'"\xed\xa0\x80"',  # a UTF-8-encoded surrogate: json.loads reads it
        b"",
    ],
)
def test_loads_reads_every_text_as_the_default_reads_it(
    fast: OrjsonSerializer, text: bytes
) -> None:
    def read(serializer: Serializer) -> tuple[str, Any]:
        try:
            value = serializer.loads(text)
        except Exception as exc:
            return type(exc).__name__, str(exc)
        return "ok", json.dumps(value)  # NaN-safe comparison

    assert read(fast) == read(JSON)


@BOTH
def test_big_integers_read_back_exact(fast: OrjsonSerializer) -> None:
    value = {"ids": [2**64, -(2**63) - 1, 2**64 - 1], "n": 10**30}
    assert fast.loads(JSON.dumps(value)) == value
    assert fast.loads(fast.dumps(value)) == value
    many = {"rows": list(range(1000)), "big": 2**64}  # past the walk's budget: the text scan
    assert fast.loads(JSON.dumps(many)) == many


def test_it_is_a_serializer_and_names_itself() -> None:
    assert isinstance(ORJSON, Serializer)
    assert repr(ORJSON) == "OrjsonSerializer()"
    assert isinstance(JSON, JsonSerializer)
