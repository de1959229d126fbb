"""Everything that decides which state follows which lives here, as a data table.

A move not in :data:`TRANSITIONS` raises :class:`~aioresil.exceptions.IllegalTransitionError`.
Both executors use this one table: the memory backend through :func:`next_state`, and
``breaker.lua`` through a ``LEGAL`` table generated from it when the script is loaded
(``aioresil/backends/breaker_schema.py``); an illegal move there raises the same error type.
"""

from __future__ import annotations

from enum import StrEnum
from types import MappingProxyType

from ..exceptions import IllegalTransitionError

__all__ = ["OPERATOR_TRIGGERS", "TRANSITIONS", "CircuitState", "Trigger", "next_state"]


class CircuitState(StrEnum):
    """The state of a circuit. A ``str`` enum, so it serializes as its value."""

    CLOSED = "closed"
    """Calls flow; failures are counted."""
    OPEN = "open"
    """Calls are rejected until the recovery timeout elapses."""
    HALF_OPEN = "half_open"
    """A bounded number of trial calls decide between CLOSED and OPEN."""
    FORCED_OPEN = "forced_open"
    """An operator opened the circuit; everything is rejected until ``reset()``."""
    DISABLED = "disabled"
    """An operator switched the breaker off; everything passes and is still counted."""


class Trigger(StrEnum):
    """What can move a circuit from one state to another."""

    TRIP = "trip"
    """A failure rule fired in CLOSED (consecutive failures, failure rate or slow-call rate)."""
    TIMEOUT_ELAPSED = "timeout_elapsed"
    """The recovery timeout passed in OPEN; a call asks for a trial permit."""
    TRIAL_FAILED = "trial_failed"
    """A trial call in HALF_OPEN failed."""
    TRIALS_PASSED = "trials_passed"
    """``success_threshold`` trial calls in HALF_OPEN succeeded."""
    RESET = "reset"
    FORCE_OPEN = "force_open"
    DISABLE = "disable"


_S = CircuitState
_T = Trigger

TRANSITIONS: MappingProxyType[tuple[CircuitState, Trigger], CircuitState] = MappingProxyType(
    {
        (_S.CLOSED, _T.TRIP): _S.OPEN,
        (_S.OPEN, _T.TIMEOUT_ELAPSED): _S.HALF_OPEN,
        (_S.HALF_OPEN, _T.TRIAL_FAILED): _S.OPEN,
        (_S.HALF_OPEN, _T.TRIALS_PASSED): _S.CLOSED,
        # Operator actions are legal from every state.
        **{(s, _T.RESET): _S.CLOSED for s in _S},
        **{(s, _T.FORCE_OPEN): _S.FORCED_OPEN for s in _S},
        **{(s, _T.DISABLE): _S.DISABLED for s in _S},
    }
)
"""Every legal ``(state, trigger) -> state`` move. Nothing else may happen."""

OPERATOR_TRIGGERS: frozenset[Trigger] = frozenset(
    t for t in Trigger if all((s, t) in TRANSITIONS for s in CircuitState)
)
"""The operator actions: the triggers legal from every state (reset, force open, disable)."""


def next_state(state: CircuitState, trigger: Trigger) -> CircuitState:
    """The state ``trigger`` leads to from ``state``; raises on an illegal move.

    >>> next_state(CircuitState.CLOSED, Trigger.TRIP)
    <CircuitState.OPEN: 'open'>
    """
    try:
        return TRANSITIONS[(state, trigger)]
    except KeyError:
        raise IllegalTransitionError(
            f"no transition from {state.value!r} on {trigger.value!r}"
        ) from None
