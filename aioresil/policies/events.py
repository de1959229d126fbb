"""Typed events of the policies: one frozen class per thing that happens.

Listeners (``policy.add_listener(fn)``) receive these objects; every one is also logged by
structlog under the name in its docstring. ``at`` is wall-clock Unix seconds, for humans.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "BulkheadRejected",
    "CallTimedOut",
    "FailoverAnswered",
    "PolicyEvent",
    "PolicyListener",
    "RateLimited",
    "RetryExhausted",
    "RetryScheduled",
]


@dataclass(frozen=True, slots=True)
class RetryScheduled:
    """``retry_scheduled``: attempt ``attempt`` failed; the next starts after ``delay`` s."""

    name: str
    attempt: int
    delay: float
    error: str
    at: float


@dataclass(frozen=True, slots=True)
class RetryExhausted:
    """``retry_exhausted``: the last error propagates after ``attempts`` attempts.

    ``reason`` is ``"attempts"`` (all used), ``"timeout"`` (the retry's time budget would be
    exceeded by the next wait) or ``"budget"`` (the shared :class:`RetryBudget` is empty).
    """

    name: str
    attempts: int
    reason: str
    error: str
    at: float


@dataclass(frozen=True, slots=True)
class CallTimedOut:
    """``call_timed_out``: the guarded call was cancelled after ``seconds``."""

    name: str
    seconds: float
    at: float


@dataclass(frozen=True, slots=True)
class BulkheadRejected:
    """``bulkhead_rejected``: no slot, and no room or time left to wait for one."""

    name: str
    max_concurrent: int
    fleet_wide: bool
    at: float


@dataclass(frozen=True, slots=True)
class RateLimited:
    """``rate_limited``: no token; one is available in ``retry_after`` seconds."""

    name: str
    retry_after: float
    fleet_wide: bool
    at: float


@dataclass(frozen=True, slots=True)
class FailoverAnswered:
    """``failover_answered``: alternative ``alternative`` answered the call, after the
    alternatives in ``skipped`` (circuit open, not called) and ``failed`` (called, failed)."""

    name: str
    alternative: str
    skipped: tuple[str, ...]
    failed: tuple[str, ...]
    at: float


PolicyEvent = (
    RetryScheduled
    | RetryExhausted
    | CallTimedOut
    | BulkheadRejected
    | RateLimited
    | FailoverAnswered
)
PolicyListener = Callable[[PolicyEvent], object]
