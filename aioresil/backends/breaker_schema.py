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

from functools import cache

from ..core.config import SHARED_RULES, WINDOW_RULES, BreakerConfig
from ..core.states import OPERATOR_TRIGGERS, TRANSITIONS, CircuitState
from ..core.window import TIME_WINDOW_BUCKETS
from .scripts import LuaScript, load_script

__all__ = [
    "FIELDS",
    "KNOWN_COUNT",
    "KNOWN_NONE",
    "KNOWN_TIME",
    "NUMERIC",
    "PRELUDE_MARKER",
    "READ_FIELDS",
    "SCHEMA",
    "WINDOW_COUNT_FIELDS",
    "Field",
    "breaker_script",
    "known_window",
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


FIELDS: dict[str, str] = {
    name.lower(): value for name, value in vars(Field).items() if name.isupper()
}
"""Logical name (``BreakerRecord``'s attribute where there is one) -> hash field."""

_TEXT_FIELDS = ("schema", "state", "opened_at", "config", "fingerprint")
NUMERIC = tuple(name for name in FIELDS if name not in _TEXT_FIELDS)
"""Fields holding a decimal integer."""


WINDOW_COUNT_FIELDS = (Field.WINDOW_CALLS, Field.WINDOW_FAILURES, Field.WINDOW_SLOW)
"""The last fields of :data:`READ_FIELDS`: the counters of a count window."""

READ_FIELDS = (
    Field.STATE,
    Field.GENERATION,
    Field.CONSECUTIVE_FAILURES,
    Field.OPENED_AT,
    Field.OPEN_UNTIL,
    Field.REOPEN_COUNT,
    Field.TRIAL_SUCCESSES,
    Field.SUCCESSES,
    Field.FAILURES,
    Field.IGNORED,
    Field.SLOW,
    Field.REJECTED,
    Field.FINGERPRINT,
    *WINDOW_COUNT_FIELDS,
)
"""The fields of a ``breaker_read.lua`` row, in its order (the number of live trial leases
follows them): what a :class:`~aioresil.core.machine.BreakerRecord` is rebuilt from. The
count window's counters (:data:`WINDOW_COUNT_FIELDS`) come last: the script reads them only
for a breaker whose stored config keeps a count window (or is not known to the reader yet),
and otherwise leaves them empty. The stored config (:attr:`Field.CONFIG`) is read only when
its fingerprint is not the one the reader knows."""

KNOWN_NONE, KNOWN_COUNT, KNOWN_TIME = b"n", b"c", b"t"
"""What a reader tells ``breaker_read.lua`` of the window the config it decoded keeps (the
byte after the fingerprint in its ARGV[2]): none, a count window, a time window."""


def known_window(config: BreakerConfig) -> bytes:
    """:data:`KNOWN_COUNT`, :data:`KNOWN_TIME` or :data:`KNOWN_NONE`: the window ``config``
    keeps (as :class:`~aioresil.core.machine.BreakerRecord` builds it), for
    ``breaker_read.lua``."""
    if config.window_size is not None:
        return KNOWN_COUNT
    if config.window_duration is not None:
        return KNOWN_TIME
    return KNOWN_NONE


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
    ]
    return "\n".join(lines) + "\n"


_HOT = (
    ("HOT_STATE", Field.STATE),
    ("HOT_GENERATION", Field.GENERATION),
    ("HOT_FINGERPRINT", Field.FINGERPRINT),
    ("HOT_CONSECUTIVE_FAILURES", Field.CONSECUTIVE_FAILURES),
    ("HOT_SCHEMA", Field.SCHEMA),
    ("HOT_SUCCESSES", Field.SUCCESSES),
    ("HOT_REJECTED", Field.REJECTED),
)
PRELUDE_MARKER = "-- @@PRELUDE@@\n"
"""Where ``breaker.lua`` receives :func:`lua_prelude`: after its hot path, so a CLOSED success
never pays for building the tables (a script's top-level code runs on every call)."""


@cache
def lua_hot_prelude() -> str:
    """The few constants ``breaker.lua``'s hot path needs, as plain locals (no tables)."""
    names = ", ".join(name for name, _ in _HOT)
    values = ", ".join(_lua_string(field) for _, field in _HOT)
    return f"local SCHEMA = {_lua_string(SCHEMA)}\nlocal {names} = {values}\n"


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
    """``breaker_read.lua`` with its prelude generated from :data:`READ_FIELDS` and
    :func:`time_window_pattern` prepended (one SHA).

    The prelude defines the field lists of the script's ``HMGET`` calls, the known-window
    bytes, and ``row(v, live)``: the row as one Lua concatenation of the fields (a missing one
    written as empty), cheaper in Redis than ``table.concat`` over a table patched first.
    """
    base = READ_FIELDS[: -len(WINDOW_COUNT_FIELDS)]
    pieces = " .. ' ' .. ".join(f"(v[{i}] or '')" for i in range(1, len(READ_FIELDS) + 1))
    prelude = "\n".join(
        [
            "-- generated by aioresil/backends/breaker_schema.py: do not edit",
            f"local READ_BASE = {_lua_list(base)}",
            f"local READ_ALL = {_lua_list(READ_FIELDS)}",
            f"local READ_REST = {_lua_list((*WINDOW_COUNT_FIELDS, Field.CONFIG))}",
            f"local FP = {READ_FIELDS.index(Field.FINGERPRINT) + 1}",
            f"local WINDOW_COUNTS = {len(base) + 1}",
            f"local TIME_WINDOW = {_lua_string(time_window_pattern())}",
            f"local KNOWN_COUNT, KNOWN_TIME = {KNOWN_COUNT[0]}, {KNOWN_TIME[0]}",
            f"local function row(v, live) return {pieces} .. ' ' .. live end",
        ]
    )
    return LuaScript("breaker_read", prelude + "\n" + load_script("breaker_read").source)
