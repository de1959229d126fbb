"""Time, injected.

The state machine never reads a clock itself: the breaker passes ``now`` in. Two readings are
needed: a monotonic one that drives timeouts and windows (immune to NTP jumps) and a wall-clock
one that only labels things for humans (``opened_at`` in stats, event timestamps).

The Redis backend does not use this clock for decisions: it uses Redis ``TIME`` inside each
script, so a fleet with skewed clocks still agrees on when a circuit may be tried again.
"""

from __future__ import annotations

import time
from typing import Protocol, runtime_checkable

__all__ = ["Clock", "SystemClock"]


@runtime_checkable
class Clock(Protocol):
    """What aioresil needs from a clock. ``aioresil.testing.FakeClock`` implements it."""

    def monotonic(self) -> float:
        """Seconds from an arbitrary origin; never goes backwards."""
        ...

    def time(self) -> float:
        """Wall-clock seconds since the Unix epoch (labels only, never decisions)."""
        ...


class SystemClock:
    """The default clock: ``time.monotonic`` and ``time.time``."""

    __slots__ = ()

    def monotonic(self) -> float:
        return time.monotonic()

    def time(self) -> float:
        return time.time()

    def __repr__(self) -> str:
        return "SystemClock()"
