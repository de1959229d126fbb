"""How a shared breaker is stored in Redis, and the Lua prelude generated from the Python core.

Why one module: the hash field names, the order of the config items and the legal moves used
to be spelled in ``breaker.lua``, ``backends/redis.py``, ``backends/redis_breaker.py`` and the
tests; every reader now imports them from here, and ``breaker.lua`` receives them as Lua code
(:func:`lua_prelude`) prepended to its source at load time, the way ``dlq_lib.lua`` is
prepended to the DLQ scripts. The transitions come from :data:`aioresil.core.states.TRANSITIONS`
itself, so the Lua side cannot drift from the Python table: a move added there is legal in both
executors at the next script load, and nothing else is.

The config in force is stored in the breaker's own hash with its fingerprint: the shared rules
(:data:`aioresil.core.config.SHARED_RULES`, encoded by
:func:`~aioresil.core.config.encode_rules`), stored by a process's first script call (its
*bind*) and read back by every later call and by every reader (``stats()``, ``/health``, the
CLI, the dashboard).
"""

from __future__ import annotations

import struct
from functools import cache

from ..core.config import (
    FINGERPRINT_LENGTH,
    MAX_DURATION_US,
    SHARED_RULES,
    WINDOW_RULES,
)
from ..core.states import OPERATOR_TRIGGERS, TRANSITIONS, CircuitState
from ..core.window import TIME_WINDOW_BUCKETS
from .scripts import LuaScript, load_script

__all__ = [
    "FIELDS",
    "HALF_OPEN_CODE",
    "MGET_CHUNK",
    "NO_STATE",
    "NUMERIC",
    "PRELUDE_MARKER",
    "READ_CONFIG",
    "READ_LEASES",
    "READ_ROW",
    "READ_WINDOW",
    "ROW_FIELDS",
    "ROW_FORMAT",
    "ROW_KEY",
    "ROW_NUMBERS",
    "ROW_SIZE",
    "ROW_SUCCESSES_AT",
    "SCHEMA",
    "STATES_BY_CODE",
    "UNREADABLE",
    "WINDOW_COUNT_FIELDS",
    "Field",
    "breaker_script",
    "lua_hot_prelude",
    "lua_prelude",
    "read_script",
]

SCHEMA = "1"
"""Version of the stored layout (field ``v``); a hash of another version is reset."""


class Field:
    """The breaker hash's field names (short: they are stored once per breaker, read often)."""

    SCHEMA = "v"
    STATE = "st"
    GENERATION = "g"
    CONSECUTIVE_FAILURES = "cf"
    OPENED_AT = "oa"
    OPEN_UNTIL = "ou"
    REOPEN_COUNT = "ro"
    TRIAL_SUCCESSES = "ts"
    NEXT_TOKEN = "nt"
    SUCCESSES = "ns"
    FAILURES = "nf"
    IGNORED = "ni"
    REJECTED = "nr"
    SLOW = "nsl"
    WINDOW_POS = "wp"
    WINDOW_CALLS = "wc"
    WINDOW_FAILURES = "wf"
    WINDOW_SLOW = "ws"
    CONFIG = "cfg"
    """The binding in force: the config items, the pub/sub channel and the encoded name."""
    FINGERPRINT = "fp"
    """:func:`fingerprint` of the config in force."""


ROW_KEY = "row"
"""The last part of the key holding a breaker's read row (``<prefix>:{cb:<name>}:row``, in
the hash's slot): the values of :data:`ROW_FIELDS` packed as :data:`ROW_FORMAT` (binary), a
string beside the hash. ``breaker.lua`` rewrites it whenever a field it holds changed (its
hot path writes the success counter's eight bytes in place, ``SETRANGE``), so a reader takes
one value per breaker, and takes all of them with ``MGET``. Written by ``breaker.lua`` only;
a copy of the hash's text fields, which stay the truth.

Why a key of its own, not a field of the hash: a field must be read with one ``HGET`` per
breaker, each a command dispatched from Lua (0.9 ms of Redis time for 1,000 breakers on this
project's machine); one ``MGET`` reads the 1,000 row keys in 0.45 ms (issue 17)."""


FIELDS: dict[str, str] = {
    name.lower(): value for name, value in vars(Field).items() if name.isupper()
}
"""Logical name (``BreakerRecord``'s attribute where there is one) -> hash field."""

_TEXT_FIELDS = ("schema", "state", "opened_at", "config", "fingerprint")
NUMERIC = tuple(name for name in FIELDS if name not in _TEXT_FIELDS)
"""Fields holding a decimal integer."""


WINDOW_COUNT_FIELDS = (Field.WINDOW_CALLS, Field.WINDOW_FAILURES, Field.WINDOW_SLOW)
"""The counters of a count window (in :data:`ROW_FIELDS`, before the fingerprint)."""

ROW_NUMBERS = (
    Field.GENERATION,
    Field.CONSECUTIVE_FAILURES,
    Field.OPENED_AT,
    Field.OPEN_UNTIL,
    Field.REOPEN_COUNT,
    Field.TRIAL_SUCCESSES,
    Field.FAILURES,
    Field.IGNORED,
    Field.SLOW,
    Field.REJECTED,
    *WINDOW_COUNT_FIELDS,
    Field.SUCCESSES,
)
"""The integers of the stored read row, in its order (``opened_at`` 0 when not open).

The success counter is last: ``breaker.lua``'s hot path (a CLOSED success with nothing else
to change) writes it into the row in place (:data:`ROW_SUCCESSES_AT`, ``SETRANGE``) without
packing the rest, so that a reader takes the row alone. Kept beside the row until issue 17's
last round, it cost every read a second value per breaker and a split of the counters:
about 0.5 ms of Redis time per 1,000 breakers (``HMGET`` of two fields against one
``HGET``, when the row was a field of the hash)."""

ROW_FIELDS = (Field.STATE, *ROW_NUMBERS, Field.FINGERPRINT)
"""The fields the stored read row (:data:`ROW_KEY`) holds, in its order: every field a
reader needs (its code, its integers, its fingerprint)."""

NO_STATE = 0
"""The code of a hash holding no state (a breaker no script has written yet)."""
STATES_BY_CODE: tuple[CircuitState | None, ...] = (None, *CircuitState)
"""A read row's state code -> state: a state's code is its index here (``None`` at
:data:`NO_STATE`); any code past the end is :data:`UNREADABLE`."""
HALF_OPEN_CODE = STATES_BY_CODE.index(CircuitState.HALF_OPEN)
"""The code of HALF_OPEN: the one state whose row may come with live trial leases."""
UNREADABLE = 255
"""The code of a row that cannot be read: the script sets it for a hash without a stored row
whose text fields are not what ``breaker.lua`` writes (an unknown state, a state without a
generation, a field that is no number, the success counter included). The reader raises
:class:`~aioresil.CorruptStateError` naming the breaker. ``breaker.lua``'s next full-path
call resets an unreadable state or generation, and reads a counter that is no number as 0 and
writes it back (its hot path leaves a success counter that is no number to the full path)."""

ROW_FORMAT = "<B" + "q" * len(ROW_NUMBERS) + f"{FINGERPRINT_LENGTH}s"
"""The stored read row as :mod:`struct` packs it: the state's code, the integers of
:data:`ROW_NUMBERS` (signed 64-bit, little-endian), the fingerprint (blank when none).

Why binary: a read of 1,000 breakers spent most of its client time turning 13,000 decimal
strings into ints (about 90 ns each); one ``struct.iter_unpack`` over the reply's rows does it
in C. The row is a cache of fields stored as text beside it, which stay the truth for
``breaker.lua``; an operator reading the hash by hand reads those."""

ROW_SIZE = struct.calcsize(ROW_FORMAT)
ROW_SUCCESSES_AT = 1 + 8 * ROW_NUMBERS.index(Field.SUCCESSES)
"""Where the success counter's eight bytes start in the row (0-based, as ``SETRANGE``
counts)."""

MGET_CHUNK = 1000
"""Row keys per ``MGET`` in ``breaker_read.lua``: Lua's ``unpack`` refuses about 8,000
values, so a registry of more breakers is read in chunks (in the same script)."""


def _lua_struct_format(python_format: str) -> str:
    """:data:`ROW_FORMAT` in the notation of Redis' Lua ``struct`` library."""
    return python_format.replace("q", "i8").replace(f"{FINGERPRINT_LENGTH}s", "")


READ_ROW, READ_LEASES, READ_WINDOW, READ_CONFIG = b"1", b"l", b"w", b"?"
"""What a reader asks ``breaker_read.lua`` for, per breaker (a byte each in its ARGV[2]):

* :data:`READ_ROW`: the row alone (its row key and its hash sent: every read counts the
  hashes, see ``breaker_read.lua``). What a breaker needs when the reader knows its config in
  force (the fingerprint its last row carried), that config keeps no time window, its last
  row was not HALF_OPEN and was stored: most of them.
* :data:`READ_LEASES`: the row, and its live trial leases when it is HALF_OPEN; a row packed
  from the hash's fields when its row key holds none (the lease and window keys sent too).
* :data:`READ_WINDOW`: as :data:`READ_LEASES`, and the time window's buckets.
* :data:`READ_CONFIG`: as :data:`READ_LEASES`, and the stored config; the buckets when that
  config keeps a time window. A first read, or a breaker rebound to a config the reader
  has not decoded.

The reader checks each row against what it asked (``RedisBackend._complete``) and reads a
breaker again, asking for everything, when the row needs more than it asked: it entered
HALF_OPEN, carries a fingerprint the reader never decoded, or its row key holds no row,
since the previous read."""


def _lua_string(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _window_items() -> list[int]:
    """1-based positions of :data:`~aioresil.core.config.WINDOW_RULES` in the stored config."""
    names = [name for name, _ in SHARED_RULES]
    return [names.index(rule) + 1 for rule in WINDOW_RULES]


def time_window_pattern() -> str:
    """A Lua pattern capturing the stored config's ``window_duration`` item (empty when the
    config keeps no time window): how ``breaker_read.lua`` tells, from the config *stored*
    with a breaker, whether its window key is a bucket hash to read."""
    position = [name for name, _ in SHARED_RULES].index("window_duration")
    return "^" + "[^,]*," * position + "([^,]*)"


@cache
def lua_prelude() -> str:
    """Lua definitions generated from the Python core, prepended to ``breaker.lua``."""
    legal = ", ".join(
        f"[{_lua_string(f'{state.value}>{trigger.value}')}] = {_lua_string(new.value)}"
        for (state, trigger), new in TRANSITIONS.items()
    )
    lines = [
        "-- generated by aioresil/backends/breaker_schema.py from aioresil/core: do not edit",
        f"local BUCKETS = {TIME_WINDOW_BUCKETS}",
        f"local MAX_DURATION = {MAX_DURATION_US}",
        "local F = {"
        + ", ".join(f"{name} = {_lua_string(field)}" for name, field in FIELDS.items())
        + "}",
        "local FIELD_NAMES = {" + ", ".join(_lua_string(name) for name in FIELDS) + "}",
        "local FIELD_KEYS = {" + ", ".join(_lua_string(f) for f in FIELDS.values()) + "}",
        "local NUMERIC = {" + ", ".join(_lua_string(name) for name in NUMERIC) + "}",
        f"local LEGAL = {{{legal}}}",
        "local OPERATOR = {"
        + ", ".join(f"[{_lua_string(t.value)}] = true" for t in sorted(OPERATOR_TRIGGERS))
        + "}",
        "local STATES = {"
        + ", ".join(f"[{_lua_string(s.value)}] = true" for s in CircuitState)
        + "}",
        "local CONFIG_ITEMS = {" + ", ".join(_lua_string(name) for name, _ in SHARED_RULES) + "}",
        "local WINDOW_ITEMS = {" + ", ".join(str(i) for i in _window_items()) + "}",
        _lua_stored_row(),
    ]
    return "\n".join(lines) + "\n"


_LUA_INT64_BYTES = [
    "local function int64_bytes(n)  -- eight little-endian bytes, two's complement",
    "  local b, negative = {}, n < 0",
    "  n = math.floor(n)",
    "  if negative then n = -n - 1 end  -- the bytes of -n - 1, inverted",
    "  for j = 1, 8 do",
    "    local r = n % 256",
    "    n = (n - r) / 256",
    "    if negative then r = 255 - r end",
    "    b[j] = r",
    "  end",
    "  return string.char(unpack(b))",
    "end",
]
"""``int64_bytes(n)``: one integer as :data:`ROW_FORMAT` packs it, in plain Lua (where a
server has no ``struct``): the one packer of the plain row (``plain_pack_row``) and of
``breaker.lua``'s hot path, which writes the success counter into the row."""


def _lua_row_codes(*, int64_defined: bool = False) -> list[str]:
    """The Lua definitions both scripts use to write a read row (see :data:`ROW_FORMAT`):
    ``pack_row(code, n1, ..., n14)`` packs the state's code and the integers
    (``int64_defined``: the script defines ``int64_bytes`` already, in its hot prelude).

    Redis ships the ``struct`` library; a server that does not (fakeredis, which the test
    suite runs every script on) gets the same bytes from plain Lua: each integer as eight
    little-endian bytes, two's complement (``tests/backends/test_read_rows.py`` compares
    both on a real server). Both agree for every integer of magnitude below 2^53, where a
    Lua number is exact, and for every non-negative one a Lua number holds below 2^63. The
    largest number ``breaker.lua`` writes is an ``open_until``: now (about 2^51 microseconds
    today) plus a recovery timeout of at most 2^53 microseconds (the longest a config may
    give; a growing backoff is clamped to it); the reader calls a text field it could not pack
    (2^63 or more in magnitude) unreadable.
    """
    codes = ", ".join(
        f"[{_lua_string(state.value)}] = {code}"
        for code, state in enumerate(STATES_BY_CODE)
        if state is not None
    )
    return [
        f"local STATE_CODE = {{{codes}}}",
        f"local ROW_PACK, ROW_SIZE = {_lua_string(_lua_struct_format(ROW_FORMAT))}, {ROW_SIZE}",
        f"local FP_LENGTH = {FINGERPRINT_LENGTH}",
        f"local BLANK_FP = {_lua_string(' ' * FINGERPRINT_LENGTH)}",
        "local function fp_of(fp)",
        "  if fp and #fp == FP_LENGTH then return fp end return BLANK_FP",
        "end",
        *([] if int64_defined else _LUA_INT64_BYTES),
        "local function plain_pack_row(code, ...)",
        "  local out = {string.char(code)}",
        "  for _, n in ipairs({...}) do out[#out + 1] = int64_bytes(n) end",
        "  return table.concat(out)",
        "end",
        "local pack_row = plain_pack_row",
        "if struct then",
        "  local pack = struct.pack",
        "  pack_row = function(...) return pack(ROW_PACK, ...) end",
        "end",
    ]


def _lua_stored_row() -> str:
    """``stored_row(rec, fp)``: the read row (:data:`ROW_KEY`) of a record of
    ``breaker.lua`` (whose hot prelude, :func:`lua_hot_prelude`, comes first), packed as
    :data:`ROW_FORMAT` (numbers rounded as the script stores them in their own fields,
    ``%.0f``)."""
    logical = {field: name for name, field in FIELDS.items()}
    values = []
    for field in ROW_NUMBERS:
        name = logical[field]
        if name not in NUMERIC:  # opened_at: '' or the time as text
            values.append(f"tonumber(rec.{name}) or 0")
        elif field == Field.OPEN_UNTIL:  # the one sum with a fraction (the backoff)
            values.append(f"tonumber(string.format('%.0f', rec.{name}))")
        else:
            values.append(f"rec.{name}")
    return "\n".join(
        [
            *_lua_row_codes(int64_defined=True),  # breaker.lua's hot prelude defines it
            "local IN_ROW = {" + ", ".join(f"[{_lua_string(f)}] = true" for f in ROW_FIELDS) + "}",
            "local function stored_row(rec, fp)",
            "  return pack_row(STATE_CODE[rec.state], " + ", ".join(values) + ") .. fp_of(fp)",
            "end",
        ]
    )


_HOT = (
    ("HOT_STATE", Field.STATE),
    ("HOT_GENERATION", Field.GENERATION),
    ("HOT_FINGERPRINT", Field.FINGERPRINT),
    ("HOT_CONSECUTIVE_FAILURES", Field.CONSECUTIVE_FAILURES),
    ("HOT_SCHEMA", Field.SCHEMA),
    ("HOT_SUCCESSES", Field.SUCCESSES),
)
PRELUDE_MARKER = "-- @@PRELUDE@@\n"
"""Where ``breaker.lua`` receives :func:`lua_prelude`: after its hot path, so a CLOSED success
never pays for building the tables (a script's top-level code runs on every call)."""


@cache
def lua_hot_prelude() -> str:
    """The few constants ``breaker.lua``'s hot path needs, as plain locals (no tables), and
    the plain-Lua integer packer (``int64_bytes``) it writes the success counter with where
    a server has no ``struct``."""
    names = ", ".join(name for name, _ in _HOT)
    values = ", ".join(_lua_string(field) for _, field in _HOT)
    return (
        f"local SCHEMA = {_lua_string(SCHEMA)}\nlocal {names} = {values}\n"
        f"local HOT_SUCCESSES_AT, HOT_ROW_SIZE = {ROW_SUCCESSES_AT}, {ROW_SIZE}\n"
        + "\n".join(_LUA_INT64_BYTES)
        + "\n"
    )


@cache
def breaker_script() -> LuaScript:
    """``breaker.lua`` with its generated preludes, as one script (one SHA)."""
    source = load_script("breaker").source
    if source.count(PRELUDE_MARKER) != 1:  # pragma: no cover - a broken package
        raise RuntimeError("breaker.lua must hold the prelude marker exactly once")
    return LuaScript("breaker", lua_hot_prelude() + source.replace(PRELUDE_MARKER, lua_prelude()))


def _lua_list(values: tuple[str, ...]) -> str:
    return "{" + ", ".join(_lua_string(value) for value in values) + "}"


@cache
def read_script() -> LuaScript:
    """``breaker_read.lua`` with its prelude generated from :data:`ROW_FIELDS`,
    :data:`ROW_FORMAT` and :func:`time_window_pattern` prepended (one SHA).

    The prelude defines the field lists of the script's ``HMGET`` calls, the row's layout
    (its size, the code of CLOSED, where the fingerprint starts) and its packer
    (``pack_row``), with which the script packs the row of a hash that has none stored.
    """
    numbers = len(ROW_NUMBERS)
    prelude = "\n".join(
        [
            "-- generated by aioresil/backends/breaker_schema.py: do not edit",
            *_lua_row_codes(),
            f"local CONFIG = {_lua_string(Field.CONFIG)}",
            f"local ROW_FIELDS_AND_CONFIG = {_lua_list((*ROW_FIELDS, Field.CONFIG))}",
            f"local NUMBERS = {numbers}",
            f"local HALF_OPEN = {HALF_OPEN_CODE}",
            f"local NO_STATE, UNREADABLE = {NO_STATE}, {UNREADABLE}",
            f"local TIME_WINDOW = {_lua_string(time_window_pattern())}",
            f"local READ_ROW, READ_WINDOW, READ_CONFIG = {READ_ROW[0]}, {READ_WINDOW[0]}, "
            f"{READ_CONFIG[0]}",
            f"local ASKED_MORE = {_lua_string('()[^' + READ_ROW.decode() + ']')}",
            f"local MGET_CHUNK = {MGET_CHUNK}",
        ]
    )
    return LuaScript("breaker_read", prelude + "\n" + load_script("breaker_read").source)
