"""One exception tree for the whole package.

Why a tree: callers can catch ``AioresilError`` for "the resilience layer said no" without also
catching their own failures. We never wrap or replace the user's exception, and we never shadow a
builtin name (no ``TimeoutError`` / ``ConnectionError`` of our own).

This module imports nothing else of aioresil: every layer may import it (``core`` included),
so it sits at the bottom of the import graph (``tests/test_layering.py``).
"""

from __future__ import annotations

import warnings
from enum import StrEnum

__all__ = [
    "AioresilError",
    "BackendError",
    "BackendUnavailableError",
    "BulkheadFullError",
    "CallTimeoutError",
    "CheckpointConflictError",
    "CheckpointCorruptError",
    "CheckpointOutcomeUnknownError",
    "CheckpointTooLargeError",
    "CircuitOpenError",
    "CorruptStateError",
    "DeadLetterQueueFullError",
    "DeadLetterTooLargeError",
    "DeadLetterUnavailableError",
    "IllegalTransitionError",
    "PoolTimeoutError",
    "RateLimitExceededError",
    "ReplicaAckTimeoutError",
    "SerializationError",
]


class AioresilError(Exception):
    """Base class of every error raised by aioresil itself."""


class CircuitOpenError(AioresilError):
    """The breaker rejected the call; the guarded block did not run.

    Attributes:
        name: the breaker's name.
        state: the :class:`~aioresil.CircuitState` that rejected the call (``OPEN``,
            ``HALF_OPEN`` when all trial permits are taken, or ``FORCED_OPEN``). Annotated as
            its base ``StrEnum``: this module imports nothing of ours (no cycle with core).
        retry_after: seconds until a trial call may be allowed, or ``None`` when unknown
            (forced open, or half-open with every permit taken).
    """

    def __init__(self, name: str, state: StrEnum, retry_after: float | None) -> None:
        # The message is built only when someone reads it: rejections are a hot path.
        self.name = name
        self.state = state
        self.retry_after = retry_after

    def __str__(self) -> str:
        hint = f", retry after {self.retry_after:.3f}s" if self.retry_after is not None else ""
        return f"circuit {self.name!r} is {self.state.value}{hint}"

    def __repr__(self) -> str:
        return f"CircuitOpenError({str(self)!r})"

    def __reduce__(self) -> tuple[type[CircuitOpenError], tuple[str, StrEnum, float | None]]:
        return (type(self), (self.name, self.state, self.retry_after))


class IllegalTransitionError(AioresilError):
    """The state machine was asked for a move its transition table does not allow.

    This signals a bug (in aioresil or in a backend), never a user mistake.
    """


class BackendError(AioresilError):
    """The storage backend failed in a way aioresil could not hide."""


class BackendUnavailableError(BackendError):
    """The backend could not be reached (refused, timed out, restarting).

    Raised by breakers configured with ``on_backend_error="fail_closed"`` and by stores.
    """


class PoolTimeoutError(BackendUnavailableError):
    """No connection of the shared pool became free within the pool timeout."""


class ReplicaAckTimeoutError(BackendUnavailableError):
    """A write reached the master but not ``wait_replicas`` replicas within ``wait_timeout``.

    Why "unavailable": such a write may vanish in a failover (the master can be demoted before
    it replicates), so the caller must treat its outcome as unknown, exactly like a lost reply.
    Stores handle it for you: the DLQ keeps the entry in its spool and pushes it again; a
    checkpoint save raises :class:`CheckpointOutcomeUnknownError`, which is safe to retry.

    Attributes:
        acknowledged: how many replicas confirmed the write.
        required: how many were asked for (the backend's ``wait_replicas``).
    """

    def __init__(self, what: str, acknowledged: int, required: int) -> None:
        self.acknowledged = acknowledged
        self.required = required
        super().__init__(
            f"{what}: written on the master but acknowledged by {acknowledged} of "
            f"{required} required replicas in time; it may be lost in a failover"
        )

    def __reduce__(self) -> tuple[type[ReplicaAckTimeoutError], tuple[str, int, int]]:
        return (type(self), (str(self).split(":")[0], self.acknowledged, self.required))


class CorruptStateError(BackendError):
    """Stored data could not be decoded: written by another version or damaged."""


class SerializationError(AioresilError, ValueError):
    """A value could not be serialized for storage (e.g. not JSON); nothing was stored."""


class CheckpointConflictError(AioresilError):
    """A checkpoint save lost an optimistic-concurrency race.

    Attributes:
        task_id: the checkpoint's task id.
        expected_version: the version the writer believed was current.
        current_version: the version actually stored (0 when none exists).
    """

    def __init__(self, task_id: str, expected_version: int, current_version: int) -> None:
        self.task_id = task_id
        self.expected_version = expected_version
        self.current_version = current_version
        super().__init__(
            f"checkpoint {task_id!r}: expected version {expected_version}, "
            f"stored version is {current_version}"
        )

    def __reduce__(self) -> tuple[type[CheckpointConflictError], tuple[str, int, int]]:
        return (type(self), (self.task_id, self.expected_version, self.current_version))


class CheckpointOutcomeUnknownError(BackendUnavailableError):
    """A checkpoint save may or may not have been stored: its reply or its replica
    acknowledgement never arrived.

    Retrying is safe: every save carries a write id, and the store that raised this remembers
    it, so the same save sent again is recognized as its own write (it returns the version it
    stored, or stores it now) instead of failing with :class:`CheckpointConflictError`. A
    different state saved next by the same store is fenced against either outcome.

    Attributes:
        task_id: the checkpoint's task id.
        expected_version: the version the save was fenced on (``None``: unconditional).
        write_id: the save's write id.
    """

    def __init__(
        self, task_id: str, expected_version: int | None, write_id: str, reason: str
    ) -> None:
        self.task_id = task_id
        self.expected_version = expected_version
        self.write_id = write_id
        self.reason = reason
        super().__init__(
            f"checkpoint {task_id!r}: outcome of the save unknown ({reason}); retrying the "
            "same save is safe (it is recognized by its write id)"
        )

    def __reduce__(
        self,
    ) -> tuple[type[CheckpointOutcomeUnknownError], tuple[str, int | None, str, str]]:
        return (type(self), (self.task_id, self.expected_version, self.write_id, self.reason))


class CheckpointTooLargeError(AioresilError, ValueError):
    """The serialized checkpoint exceeds the store's ``max_bytes``; nothing was stored."""


class CheckpointCorruptError(CorruptStateError):
    """A stored checkpoint could not be decoded; the message names the task."""


class DeadLetterQueueFullError(AioresilError):
    """The dead letter queue is at ``max_entries`` and its overflow policy is ``"reject"``."""


class DeadLetterTooLargeError(AioresilError, ValueError):
    """A dead letter's serialized payload exceeds ``max_payload_bytes``; nothing was stored."""


class DeadLetterUnavailableError(AioresilError, LookupError):
    """A dead letter cannot be claimed: it does not exist, or another worker leases it.

    Attributes:
        entry_id: the entry asked for.
        reason: ``"missing"`` or ``"leased"``.
    """

    def __init__(self, entry_id: str, reason: str) -> None:
        self.entry_id = entry_id
        self.reason = reason
        what = "does not exist" if reason == "missing" else "is leased by another worker"
        super().__init__(f"dead letter {entry_id!r} {what}")

    def __reduce__(self) -> tuple[type[DeadLetterUnavailableError], tuple[str, str]]:
        return (type(self), (self.entry_id, self.reason))


class CallTimeoutError(AioresilError, TimeoutError):
    """A :class:`~aioresil.Timeout` policy cancelled the guarded call when its time ran out.

    Why it also derives from the builtin ``TimeoutError`` (without shadowing its name):
    ``asyncio.timeout`` and ``anyio.fail_after`` raise the builtin, so code that already says
    ``except TimeoutError`` keeps working when it swaps in our policy. Mind that the builtin is
    an ``OSError``: a ``Retry(on=OSError)`` retries timeouts too (usually what you want).

    Attributes:
        name: the policy's name.
        seconds: the limit that was exceeded.
    """

    def __init__(self, name: str, seconds: float) -> None:
        self.name = name
        self.seconds = seconds
        super().__init__(f"{name!r} timed out after {seconds:g}s")

    def __reduce__(self) -> tuple[type[CallTimeoutError], tuple[str, float]]:
        return (type(self), (self.name, self.seconds))


class BulkheadFullError(AioresilError):
    """A :class:`~aioresil.Bulkhead` had no free slot (and no room, or time, left to wait).

    Attributes:
        name: the bulkhead's name.
        max_concurrent: its limit (fleet-wide on the Redis backend).
        retry_after: seconds until a fleet-wide lease expires at the latest, when known.
    """

    def __init__(self, name: str, max_concurrent: int, retry_after: float | None = None) -> None:
        self.name = name
        self.max_concurrent = max_concurrent
        self.retry_after = retry_after
        super().__init__(f"bulkhead {name!r} is full ({max_concurrent} concurrent calls)")

    def __reduce__(self) -> tuple[type[BulkheadFullError], tuple[str, int, float | None]]:
        return (type(self), (self.name, self.max_concurrent, self.retry_after))


class RateLimitExceededError(AioresilError):
    """A :class:`~aioresil.RateLimiter` had no token; the call did not run.

    Attributes:
        name: the limiter's name.
        retry_after: seconds until a token is available (a :class:`~aioresil.Retry` around
            the limiter waits that long instead of its own backoff).
    """

    def __init__(self, name: str, retry_after: float) -> None:
        self.name = name
        self.retry_after = retry_after
        super().__init__(f"rate limit {name!r} exceeded, retry after {retry_after:.3f}s")

    def __reduce__(self) -> tuple[type[RateLimitExceededError], tuple[str, float]]:
        return (type(self), (self.name, self.retry_after))


# Names before 0.x's naming pass (every exception ends in ``Error``). Kept one release as
# deprecated aliases: reading one warns and returns the new class, so ``except`` clauses and
# ``isinstance`` checks written against the old name keep matching.
DEPRECATED_NAMES: dict[str, str] = {
    "CheckpointTooLarge": "CheckpointTooLargeError",
    "DeadLetterQueueFull": "DeadLetterQueueFullError",
    "DeadLetterTooLarge": "DeadLetterTooLargeError",
    "DeadLetterUnavailable": "DeadLetterUnavailableError",
    "RateLimitExceeded": "RateLimitExceededError",
}


def deprecated_alias(module: str, name: str) -> object:
    """The new class for an old exception name, with a ``DeprecationWarning`` (stacklevel 3:
    the warning points at the code that read the old name through a module ``__getattr__``)."""
    new = DEPRECATED_NAMES[name]
    warnings.warn(
        f"{module}.{name} is deprecated; use {new} (same class)",
        DeprecationWarning,
        stacklevel=3,
    )
    return globals()[new]


def __getattr__(name: str) -> object:
    if name in DEPRECATED_NAMES:
        return deprecated_alias(__name__, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
