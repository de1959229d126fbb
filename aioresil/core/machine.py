"""The breaker's rules as pure functions over a :class:`BreakerRecord`.

Nothing here does I/O or reads a clock: ``now`` (monotonic seconds) is passed in. The memory
backend calls these functions directly; ``aioresil/lua/breaker_*.lua`` implement the same
rules over a Redis hash, and ``tests/core/test_model_lua.py`` drives both with the same random
sequences and asserts they agree step for step.

Two ideas keep concurrent calls honest:

* **Generations.** Every transition bumps ``generation``; each permit remembers the generation
  it was granted in. An outcome from an older generation (a call that started before the
  circuit opened and ended after) updates the totals but never moves the state: a slow
  failure from the CLOSED era must not re-open a HALF_OPEN circuit, and a late success
  must not count as a trial.
* **Trial leases.** A HALF_OPEN trial permit is a token with a deadline. Whoever reports back
  first (the holder, or the deadline passing) frees the slot; a crashed holder cannot block
  the breaker for longer than ``trial_lease``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import NamedTuple

from .config import BreakerConfig
from .states import OPERATOR_TRIGGERS, CircuitState, Trigger, next_state
from .window import CountWindow, TimeWindow, Window

__all__ = [
    "BreakerRecord",
    "Outcome",
    "Permit",
    "Rejection",
    "Transition",
    "acquire",
    "failure_rate",
    "new_window",
    "operator",
    "rebind",
    "record",
    "record_success",
    "slow_call_rate",
]

CLOSED = CircuitState.CLOSED
OPEN = CircuitState.OPEN
HALF_OPEN = CircuitState.HALF_OPEN
FORCED_OPEN = CircuitState.FORCED_OPEN
DISABLED = CircuitState.DISABLED


class Outcome(IntEnum):
    """How a permitted call ended."""

    SUCCESS = 0
    FAILURE = 1
    IGNORED = 2
    """An ``ignore_exceptions`` error: neither success nor failure."""
    CANCELLED = 3
    """Cancellation (or another ``BaseException``): only gives a trial permit back."""


@dataclass(frozen=True, slots=True)
class Transition:
    """A state change that just happened."""

    old: CircuitState
    new: CircuitState
    trigger: Trigger


class Permit(NamedTuple):
    """Leave to run one call. ``token`` is 0 for a normal call, > 0 for a HALF_OPEN trial.

    (A ``NamedTuple`` rather than a frozen dataclass: it is built on every non-hot call and
    costs half as much.)
    """

    generation: int
    token: int = 0


class Rejection(NamedTuple):
    """The call may not run. ``retry_after`` is ``None`` when no time is known."""

    state: CircuitState
    retry_after: float | None


class BreakerRecord:
    """Everything one breaker remembers. Mutated only by the functions of this module, and
    by its documented twins: ``breaker.lua`` (the same rules on Redis) and the untimed success
    inlined in ``CircuitBreaker.__aexit__`` (see :func:`record_success`).

    ``loose``, ``loose_generation``, ``ticketed`` and ``framed`` are not part of the state: the
    breaker layer counts its calls in flight there (see ``aioresil/breaker.py``); no rule reads
    them.
    """

    __slots__ = (
        "config",
        "consecutive_failures",
        "failures",
        "framed",
        "generation",
        "ignored",
        "loose",
        "loose_generation",
        "next_token",
        "open_until",
        "opened_at",
        "rejected",
        "reopen_count",
        "slow",
        "state",
        "successes",
        "ticketed",
        "trial_successes",
        "trials",
        "window",
    )

    def __init__(self, config: BreakerConfig) -> None:
        self.config = config
        """The rules this record lives under (for a shared breaker: the config in force,
        stored with it, which may be another process's)."""
        self.state = CLOSED
        self.generation = 1
        self.consecutive_failures = 0
        self.opened_at: float | None = None
        self.open_until = 0.0
        self.reopen_count = 0
        self.trials: dict[int, float] = {}  # token -> lease deadline
        self.trial_successes = 0
        self.next_token = 1
        self.loose = 0
        self.loose_generation = 0
        self.ticketed = 0
        self.framed = 0
        self.successes = 0
        self.failures = 0
        self.ignored = 0
        self.rejected = 0
        self.slow = 0
        self.window: Window | None = new_window(config)

    @property
    def total_calls(self) -> int:
        """Calls that ran and ended with an outcome (rejected and cancelled ones excluded)."""
        return self.successes + self.failures + self.ignored


def _move(rec: BreakerRecord, trigger: Trigger) -> Transition:
    old = rec.state
    new = next_state(old, trigger)
    rec.state = new
    rec.generation += 1
    rec.trials.clear()
    rec.trial_successes = 0
    rec.consecutive_failures = 0
    if rec.window is not None:
        rec.window.clear()
    return Transition(old, new, trigger)


def _open(rec: BreakerRecord, config: BreakerConfig, trigger: Trigger, now: float) -> Transition:
    transition = _move(rec, trigger)
    rec.reopen_count = rec.reopen_count + 1 if trigger is Trigger.TRIAL_FAILED else 1
    rec.opened_at = now
    rec.open_until = now + config.recovery_timeout_for(rec.reopen_count)
    return transition


def acquire(
    rec: BreakerRecord, config: BreakerConfig, now: float
) -> tuple[Permit | Rejection, Transition | None]:
    """Ask for leave to run one call at ``now``.

    Returns the permit or rejection, and the transition the request caused (OPEN moves to
    HALF_OPEN lazily, when the first call after the recovery timeout asks).
    """
    state = rec.state
    if state is CLOSED or state is DISABLED:
        return Permit(rec.generation), None
    transition = None
    if state is OPEN:
        if now < rec.open_until:
            rec.rejected += 1
            return Rejection(OPEN, rec.open_until - now), None
        transition = _move(rec, Trigger.TIMEOUT_ELAPSED)
        state = rec.state
    if state is HALF_OPEN:
        trials = rec.trials
        if trials:
            for token in [t for t, deadline in trials.items() if deadline <= now]:
                del trials[token]
        if len(trials) < config.half_open_max_calls:
            token = rec.next_token
            rec.next_token += 1
            trials[token] = now + config.trial_lease
            return Permit(rec.generation, token), transition
        rec.rejected += 1
        return Rejection(HALF_OPEN, None), transition
    rec.rejected += 1
    return Rejection(FORCED_OPEN, None), None


def record(
    rec: BreakerRecord,
    config: BreakerConfig,
    permit: Permit,
    outcome: Outcome,
    now: float,
    duration: float = 0.0,
) -> Transition | None:
    """Report how a permitted call ended; returns the transition it caused, if any."""
    if outcome is Outcome.CANCELLED:
        if permit.token and permit.generation == rec.generation:
            rec.trials.pop(permit.token, None)
        return None
    failed = outcome is Outcome.FAILURE
    slow_limit = config.slow_call_duration
    slow = slow_limit is not None and duration >= slow_limit and outcome is not Outcome.IGNORED
    if outcome is Outcome.SUCCESS:
        rec.successes += 1
    elif failed:
        rec.failures += 1
    else:
        rec.ignored += 1
    rec.slow += slow

    if permit.generation != rec.generation:
        return None  # a call from before the last transition: totals only
    if permit.token:
        if rec.trials.pop(permit.token, None) is None:
            return None  # the lease ran out first; the slot went to someone else
        if outcome is Outcome.IGNORED:
            return None
        if failed:
            return _open(rec, config, Trigger.TRIAL_FAILED, now)
        rec.trial_successes += 1
        if rec.trial_successes >= config.success_threshold:
            rec.reopen_count = 0
            rec.opened_at = None
            return _move(rec, Trigger.TRIALS_PASSED)
        return None
    if rec.state is not CLOSED or outcome is Outcome.IGNORED:
        return None  # DISABLED counts but never moves
    if failed:
        rec.consecutive_failures += 1
    else:
        rec.consecutive_failures = 0
    window = rec.window
    if window is not None:
        window.add(failed, slow, now)
    if not (failed or slow):
        return None  # a fast success never opens a circuit (see BreakerConfig)
    if (
        config.failure_threshold is not None
        and rec.consecutive_failures >= config.failure_threshold
    ) or (window is not None and _rate_rule_fires(window, config)):
        return _open(rec, config, Trigger.TRIP, now)
    return None


def _rate_rule_fires(window: Window, config: BreakerConfig) -> bool:
    calls = window.calls
    if calls < config.minimum_calls:
        return False
    fr = config.failure_rate_threshold
    if fr is not None and window.failures / calls >= fr:
        return True
    sr = config.slow_call_rate_threshold
    return sr is not None and window.slow / calls >= sr


def failure_rate(rec: BreakerRecord, config: BreakerConfig, now: float) -> float | None:
    """Failure rate of the window at ``now``, or ``None`` below ``minimum_calls``/no window."""
    window = rec.window
    if window is None:
        return None
    window.expire(now)
    if window.calls < config.minimum_calls:
        return None
    return window.failures / window.calls


def slow_call_rate(rec: BreakerRecord, config: BreakerConfig, now: float) -> float | None:
    """Slow-call rate of the window at ``now`` (same rules as :func:`failure_rate`)."""
    window = rec.window
    if window is None or config.slow_call_duration is None:
        return None
    window.expire(now)
    if window.calls < config.minimum_calls:
        return None
    return window.slow / window.calls


def record_success(
    rec: BreakerRecord, config: BreakerConfig, generation: int, now: float, duration: float
) -> Transition | None:
    """:func:`record` for the hot path: a success of a normal (non-trial) permit.

    Same effect as ``record(rec, config, Permit(generation), Outcome.SUCCESS, now, duration)``
    without building a ``Permit``. Only a slow success can trip a circuit (slow-call rate).

    The memory backend's breaker inlines the untimed case of this function (no slow-call rule,
    no time window) in ``CircuitBreaker.__aexit__``; ``tests/core/test_machine.py`` checks the three
    paths agree.
    """
    rec.successes += 1
    slow_limit = config.slow_call_duration
    slow = slow_limit is not None and duration >= slow_limit
    if slow:
        rec.slow += 1
    if generation != rec.generation or rec.state is not CLOSED:
        return None
    rec.consecutive_failures = 0
    window = rec.window
    if window is not None:
        window.add(False, slow, now)
        if slow and _rate_rule_fires(window, config):
            return _open(rec, config, Trigger.TRIP, now)
    return None


def new_window(config: BreakerConfig) -> Window | None:
    """The window ``config`` keeps (a count window, a time window, or none)."""
    if config.window_size is not None:
        return CountWindow(config.window_size)
    if config.window_duration is not None:
        return TimeWindow(config.window_duration)
    return None


def rebind(rec: BreakerRecord, config: BreakerConfig) -> bool:
    """Put ``rec`` under another config in force; ``True`` when its window started afresh.

    What a shared breaker's record becomes when a process binds the name with other rules
    (the newest bind wins, see ``breaker.lua``). State, generation, counters and trial leases
    carry over: they mean the same under any rules. The window does too while its shape
    (:data:`~aioresil.core.config.WINDOW_RULES`: kind, size, duration) is unchanged. When the
    shape changes, the window's outcomes were measured under other rules (another ring
    length, another bucket width, another kind), and no conversion is honest: the window
    starts empty, its counters at zero, and fills again under the new rules. The memory
    backend never calls this (one config per name for a backend's life); it is the spec of
    ``breaker.lua``'s rebind, checked by ``tests/core/test_model_lua.py``.
    """
    restarted = config.window_shape != rec.config.window_shape
    rec.config = config
    if restarted:
        rec.window = new_window(config)
    return restarted


def operator(rec: BreakerRecord, trigger: Trigger, now: float) -> Transition:
    """Apply an operator action: ``RESET`` (clears every counter), ``FORCE_OPEN``, ``DISABLE``."""
    if trigger not in OPERATOR_TRIGGERS:
        raise ValueError(f"{trigger!r} is not an operator action")
    transition = _move(rec, trigger)
    rec.reopen_count = 0
    rec.opened_at = now if trigger is Trigger.FORCE_OPEN else None
    rec.open_until = 0.0
    if trigger is Trigger.RESET:
        rec.successes = rec.failures = rec.ignored = rec.rejected = rec.slow = 0
    return transition
