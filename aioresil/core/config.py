"""Breaker configuration: immutable, keyword-only, validated when it is built.

Why validate here: a typo like ``failure_rate_threshold=50`` (meant 50 %) must fail at start-up
with a message naming the field, not silently produce a breaker that can never open.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "DEFAULT_WINDOW_SIZE",
    "FINGERPRINT_LENGTH",
    "SHARED_RULES",
    "WINDOW_RULES",
    "BreakerConfig",
    "decode_rules",
    "encode_rules",
]

FINGERPRINT_LENGTH = 16
"""Characters of :attr:`BreakerConfig.fingerprint` (hex): fixed, so a reader of a stored row
finds the fingerprint at its end without splitting it."""

DEFAULT_WINDOW_SIZE = 100
"""Count-based window used when a rate rule is set but no window is given."""

ExceptionTypes = tuple[type[BaseException], ...]


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


MICROSECOND = 1e-6
MILLISECOND = 1e-3
MAX_DURATION_US = 2**53
"""Durations above 2**53 microseconds (~285 years) are not exact in Lua's doubles."""


def _is_number(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


def _exception_types(name: str, value: object) -> ExceptionTypes:
    if isinstance(value, type):
        value = (value,)
    if not isinstance(value, tuple | list | frozenset | set):
        raise ValueError(f"{name} must be an exception class or a tuple of them, got {value!r}")
    out = tuple(value)
    for item in out:
        if not (isinstance(item, type) and issubclass(item, BaseException)):
            raise ValueError(f"{name} must hold exception classes, got {item!r}")
    return out


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerConfig:
    """How a circuit breaker decides. Every field is validated at construction.

    Two rules can open a CLOSED circuit, and either is enough:

    * ``failure_threshold`` consecutive failures (a success resets the run; ``None`` turns this
      rule off when a rate rule is set), and
    * a rate rule over a sliding window: ``failure_rate_threshold`` and/or
      ``slow_call_rate_threshold``, evaluated once ``minimum_calls`` calls are in the window.

    The rules are checked when a failure or a slow call is recorded: a fast success never
    opens a circuit, even one that brings the window up to ``minimum_calls``.

    Example::

        BreakerConfig(failure_threshold=None, failure_rate_threshold=0.5,
                      window_duration=60, minimum_calls=20, recovery_timeout=10)

    Attributes:
        failure_threshold: consecutive failures in CLOSED that open the circuit.
        failure_rate_threshold: failure rate (0 < x <= 1) at or above which the circuit opens.
        window_size: count-based window: the last ``window_size`` calls.
        window_duration: time-based window: calls of the last ``window_duration`` seconds,
            kept in 10 buckets (so the window slides in steps of ``window_duration / 10``).
        minimum_calls: calls the window must hold before a rate is evaluated.
        slow_call_duration: a call taking at least this many seconds is slow.
        slow_call_rate_threshold: slow-call rate (0 < x <= 1) at or above which the circuit opens.
        recovery_timeout: seconds in OPEN before trial calls are allowed.
        backoff_multiplier: each re-opening from HALF_OPEN multiplies the timeout by this.
        max_recovery_timeout: cap of the grown timeout (``None``: only the longest duration a
            config may give, ``MAX_DURATION_US``, ~285 years).
        half_open_max_calls: trial calls allowed at the same time in HALF_OPEN.
        success_threshold: successful trial calls that close the circuit.
        trial_lease: seconds a trial permit stays taken if its holder never reports back
            (crashed process, abandoned context manager); then the slot is given back.
        record_exceptions: exceptions that count as failures; any other exception counts as a
            success (the upstream answered), as in resilience4j.
        ignore_exceptions: exceptions that count as neither (checked first); they still propagate.
        on_backend_error: what a shared (Redis) breaker does when its store is unreachable:
            ``"fail_open"`` judges calls with a local in-memory breaker until it is back,
            ``"fail_closed"`` raises ``BackendUnavailableError``.
        recording: Redis only. ``"strict"`` records each outcome in one script call before the
            guarded block returns; ``"batched"`` aggregates outcomes locally and flushes them
            every ``batch_interval`` seconds (zero round trips inline, exact counts).
        batch_interval: seconds between flushes in ``"batched"`` mode.
    """

    failure_threshold: int | None = 5
    failure_rate_threshold: float | None = None
    window_size: int | None = None
    window_duration: float | None = None
    minimum_calls: int = 10
    slow_call_duration: float | None = None
    slow_call_rate_threshold: float | None = None
    recovery_timeout: float = 30.0
    backoff_multiplier: float = 1.0
    max_recovery_timeout: float | None = None
    half_open_max_calls: int = 1
    success_threshold: int = 2
    trial_lease: float = 60.0
    record_exceptions: ExceptionTypes = field(default=(Exception,))
    ignore_exceptions: ExceptionTypes = field(default=())
    on_backend_error: Literal["fail_open", "fail_closed"] = "fail_open"
    recording: Literal["strict", "batched"] = "strict"
    batch_interval: float = 0.005
    fingerprint: str = field(default="", init=False, repr=False, compare=False)
    """A short digest of the shared rules (:data:`SHARED_RULES`): equal rules give an equal
    fingerprint in every process. Computed once, at construction."""

    def __post_init__(self) -> None:
        def bad(name: str, rule: str) -> ValueError:
            return ValueError(f"{name} must be {rule}, got {getattr(self, name)!r}")

        def positive_int(name: str, *, optional: bool = False) -> None:
            value = getattr(self, name)
            if value is None and optional:
                return
            if not _is_int(value) or value < 1:
                raise bad(name, "an int >= 1" + (" or None" if optional else ""))

        def positive_number(name: str, *, optional: bool = False) -> None:
            value = getattr(self, name)
            if value is None and optional:
                return
            if not _is_number(value) or value <= 0:
                raise bad(name, "a finite number > 0" + (" or None" if optional else ""))

        def lua_duration(name: str, *, unit: float = MICROSECOND) -> None:
            # Shared breakers send durations to Lua as whole microseconds and keep time-window
            # bucket indexes as Lua numbers (printed exactly below 1e14): a duration the Lua
            # side cannot represent exactly is refused here, not found later by stats().
            value = getattr(self, name)
            if value is None:
                return
            units = value / unit
            if units < 1 or abs(units - round(units)) > 1e-6 * max(units, 1.0):
                what = "microseconds" if unit == MICROSECOND else "milliseconds"
                raise bad(name, f"a whole number of {what} (at least 1)")
            if value * 1e6 > MAX_DURATION_US:
                raise bad(name, f"at most {MAX_DURATION_US / 1e6:.0f} seconds")

        def rate(name: str) -> None:
            value = getattr(self, name)
            if value is not None and (not _is_number(value) or not 0 < value <= 1):
                raise bad(name, "a number with 0 < x <= 1 (a fraction, not a percent) or None")

        positive_int("failure_threshold", optional=True)
        rate("failure_rate_threshold")
        rate("slow_call_rate_threshold")
        positive_int("window_size", optional=True)
        positive_number("window_duration", optional=True)
        positive_int("minimum_calls")
        positive_number("slow_call_duration", optional=True)
        positive_number("recovery_timeout")
        if not _is_number(self.backoff_multiplier) or self.backoff_multiplier < 1:
            raise bad("backoff_multiplier", "a finite number >= 1")
        positive_number("max_recovery_timeout", optional=True)
        if (
            self.max_recovery_timeout is not None
            and self.max_recovery_timeout < self.recovery_timeout
        ):
            raise bad("max_recovery_timeout", f">= recovery_timeout ({self.recovery_timeout})")
        positive_int("half_open_max_calls")
        positive_int("success_threshold")
        positive_number("trial_lease")
        positive_number("batch_interval")
        lua_duration("window_duration", unit=MILLISECOND)
        for name in (
            "slow_call_duration",
            "recovery_timeout",
            "max_recovery_timeout",
            "trial_lease",
            "batch_interval",
        ):
            lua_duration(name)
        if self.on_backend_error not in ("fail_open", "fail_closed"):
            raise bad("on_backend_error", "'fail_open' or 'fail_closed'")
        if self.recording not in ("strict", "batched"):
            raise bad("recording", "'strict' or 'batched'")

        object.__setattr__(
            self, "record_exceptions", _exception_types("record_exceptions", self.record_exceptions)
        )
        object.__setattr__(
            self, "ignore_exceptions", _exception_types("ignore_exceptions", self.ignore_exceptions)
        )

        if (self.slow_call_duration is None) != (self.slow_call_rate_threshold is None):
            raise ValueError(
                "slow_call_duration and slow_call_rate_threshold must be set together "
                f"(got slow_call_duration={self.slow_call_duration!r}, "
                f"slow_call_rate_threshold={self.slow_call_rate_threshold!r})"
            )
        if self.window_size is not None and self.window_duration is not None:
            raise ValueError(
                "window_size and window_duration are exclusive: pick a count-based or a "
                f"time-based window (got window_size={self.window_size!r}, "
                f"window_duration={self.window_duration!r})"
            )
        if self.has_rate_rule:
            if self.window_size is None and self.window_duration is None:
                object.__setattr__(self, "window_size", DEFAULT_WINDOW_SIZE)
            if self.window_size is not None and self.minimum_calls > self.window_size:
                raise ValueError(
                    f"minimum_calls must be <= window_size ({self.window_size}), got "
                    f"{self.minimum_calls!r}: the rate could never be evaluated"
                )
        elif self.window_size is not None or self.window_duration is not None:
            raise ValueError(
                "window_size/window_duration need a rate rule: set failure_rate_threshold "
                "or slow_call_duration with slow_call_rate_threshold"
            )
        if self.failure_threshold is None and not self.has_rate_rule:
            raise ValueError(
                "failure_threshold may be None only when a rate rule is set; "
                "otherwise nothing could ever open the circuit"
            )
        # Numbers typed float are held as floats (30 becomes 30.0): a config reads back the
        # same from every backend (Redis stores text, read back as float), in stats and JSON.
        for name in _FLOAT_FIELDS:
            value = getattr(self, name)
            if value is not None and value.__class__ is not float:
                object.__setattr__(self, name, float(value))
        digest = hashlib.sha1(encode_rules(self).encode()).hexdigest()[:FINGERPRINT_LENGTH]
        object.__setattr__(self, "fingerprint", digest)

    @property
    def has_rate_rule(self) -> bool:
        """Whether a sliding window is kept (failure-rate or slow-call rule)."""
        return self.failure_rate_threshold is not None or self.slow_call_rate_threshold is not None

    @property
    def window_shape(self) -> tuple[int | None, float | None]:
        """The values of :data:`WINDOW_RULES`: the window's kind and its size or duration.

        Two configs with the same shape keep the same window (same ring, same buckets); a
        shared breaker whose config in force changes shape starts its window afresh
        (:func:`aioresil.core.machine.rebind`).
        """
        return (self.window_size, self.window_duration)

    @property
    def timed(self) -> bool:
        """Whether each call needs a clock reading (slow-call rule or time-based window)."""
        return self.slow_call_duration is not None or self.window_duration is not None

    def recovery_timeout_for(self, reopen_count: int) -> float:
        """Recovery timeout after the ``reopen_count``-th opening in a row (1 = first)."""
        if reopen_count <= 1:  # multiplier ** 0 == 1: the operator reads ask this per breaker
            timeout = float(self.recovery_timeout)
        else:
            try:
                growth = math.pow(float(self.backoff_multiplier), reopen_count - 1)
            except OverflowError:
                growth = math.inf
            timeout = float(self.recovery_timeout) * growth
        if self.max_recovery_timeout is not None:
            timeout = min(timeout, self.max_recovery_timeout)
        # Never past the longest duration a config may give (breaker.lua's twin clamps the
        # same): a backoff left uncapped would otherwise grow past what a stored time holds.
        return min(float(timeout), MAX_DURATION_US / 1e6)


SHARED_RULES: tuple[tuple[str, bool], ...] = (
    ("failure_threshold", False),
    ("failure_rate_threshold", False),
    ("window_size", False),
    ("window_duration", True),
    ("minimum_calls", False),
    ("slow_call_duration", True),
    ("slow_call_rate_threshold", False),
    ("recovery_timeout", True),
    ("backoff_multiplier", False),
    ("max_recovery_timeout", True),
    ("half_open_max_calls", False),
    ("success_threshold", False),
    ("trial_lease", True),
)
"""The rules every process sharing a breaker must agree on, in their canonical order, each
with whether it is written in microseconds. The rest of :class:`BreakerConfig` (which
exceptions count, ``on_backend_error``, ``recording``, ``batch_interval``) is each process's
own business. ``breaker.lua`` reads the stored rules in this order."""

WINDOW_RULES: tuple[str, ...] = ("window_size", "window_duration")
"""The rules of :data:`SHARED_RULES` that give the sliding window its shape: which kind it is
(count or time, or none) and its size or duration. Its outcomes were measured under them, so
when the config in force changes any of them the window starts afresh (see
:func:`aioresil.core.machine.rebind`, and its twin in ``breaker.lua``); the other rules
(thresholds, ``minimum_calls``) are applied to the same window as it stands."""


_FLOAT_FIELDS: tuple[str, ...] = tuple(
    f.name for f in dataclasses.fields(BreakerConfig) if f.type in ("float", "float | None")
)
"""The fields typed float, held as floats whatever number was given (see ``__post_init__``)."""


def _encode(value: float | None, micros: bool) -> str:
    if value is None:
        return ""
    if micros:
        return "1e300" if math.isinf(value) else str(round(value * 1_000_000))
    if isinstance(value, float):
        return repr(value)
    return str(value)


def encode_rules(config: BreakerConfig) -> str:
    """The shared rules as one canonical string: comma-separated, times in microseconds."""
    return ",".join(_encode(getattr(config, name), micros) for name, micros in SHARED_RULES)


def decode_rules(text: str, base: BreakerConfig) -> BreakerConfig:
    """``base`` with the rules of ``text`` (from :func:`encode_rules`, possibly followed by
    more comma-separated items); ``ValueError`` for text no aioresil wrote."""
    parts = text.split(",")
    if len(parts) < len(SHARED_RULES):
        raise ValueError(f"stored config has {len(parts)} items, expected {len(SHARED_RULES)}")
    values: dict[str, float | int | None] = {}
    for (name, micros), raw in zip(SHARED_RULES, parts, strict=False):
        if raw == "":
            values[name] = None
        elif micros:
            values[name] = int(raw) / 1_000_000
        elif "." in raw or "e" in raw:
            values[name] = float(raw)
        else:
            values[name] = int(raw)
    for name in ("recovery_timeout", "backoff_multiplier", "minimum_calls"):
        if values[name] is None:
            raise ValueError(f"stored config has no {name}")
    return dataclasses.replace(base, **values)  # type: ignore[arg-type]
