"""Typed events: one frozen class per thing that happens to a breaker.

Listeners receive these objects (never strings). Timestamps are wall-clock Unix seconds, for
humans and logs; decisions use the monotonic clock.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .core.states import CircuitState, Trigger

__all__ = [
    "BackendFailover",
    "BackendRecovered",
    "BreakerConfigConflict",
    "BreakerEvent",
    "CallRejected",
    "Listener",
    "StateChanged",
]


@dataclass(frozen=True, slots=True)
class StateChanged:
    """The circuit moved from ``old`` to ``new`` because of ``trigger``."""

    name: str
    old: CircuitState
    new: CircuitState
    at: float
    trigger: Trigger | None = None
    retry_after: float | None = None
    """Seconds until trial calls, when ``new`` is OPEN."""


@dataclass(frozen=True, slots=True)
class CallRejected:
    """A call was not let through."""

    name: str
    state: CircuitState
    at: float
    retry_after: float | None


@dataclass(frozen=True, slots=True)
class BackendFailover:
    """A shared breaker lost its backend and applies ``policy`` until it returns."""

    name: str
    at: float
    policy: str
    error: str


@dataclass(frozen=True, slots=True)
class BackendRecovered:
    """A shared breaker reached its backend again after a failover."""

    name: str
    at: float


@dataclass(frozen=True, slots=True)
class BreakerConfigConflict:
    """Processes sharing breaker ``name`` were configured with different rules.

    The newest process to bind the name wins: from its first call on, every process runs
    under its config (``in_force``), whatever its own (``ours``). Emitted once per process and
    config seen, with one warning log line, so a rolling deploy that changes the rules keeps
    working and is visible. Fingerprints come from ``BreakerStats.config_fingerprint``'s
    function (equal rules, equal fingerprint, in every process).
    """

    name: str
    at: float
    ours: str
    """Fingerprint of this process's config."""
    in_force: str
    """Fingerprint of the config now stored with the breaker (the one every call runs under)."""
    replaced: str = ""
    """When this process's own bind replaced another config: that config's fingerprint."""
    window_restarted: bool = False
    """Whether that bind changed the window's shape (its kind, size or duration), so the
    shared sliding window was cleared and fills again under the new rules: its outcomes were
    measured under the old ones. Only the process whose bind did it is told."""


BreakerEvent = (
    StateChanged | CallRejected | BackendFailover | BackendRecovered | BreakerConfigConflict
)
Listener = Callable[[BreakerEvent], object]
"""A listener is a plain callable; it runs inline, so it must be quick and must not raise
(an exception it raises is logged and swallowed, never turned into a failed call)."""
