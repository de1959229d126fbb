"""One exception tree for the whole package.

Why a tree: callers can catch ``AioresilError`` for "the resilience layer said no" without also
catching their own failures. We never wrap or replace the user's exception, and we never shadow a
builtin name (no ``TimeoutError`` / ``ConnectionError`` of our own).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .core.states import CircuitState

__all__ = [
    "AioresilError",
    "BackendError",
    "BackendUnavailableError",
    "CheckpointConflictError",
    "CheckpointCorruptError",
    "CheckpointTooLarge",
    "CircuitOpenError",
    "CorruptStateError",
    "DeadLetterQueueFull",
    "DeadLetterTooLarge",
    "DeadLetterUnavailable",
    "IllegalTransitionError",
    "PoolTimeoutError",
    "SerializationError",
]


class AioresilError(Exception):
    """Base class of every error raised by aioresil itself."""


class CircuitOpenError(AioresilError):
    """The breaker rejected the call; the guarded block did not run.

    Attributes:
        name: the breaker's name.
        state: the state that rejected the call (``OPEN``, ``HALF_OPEN`` when all trial
            permits are taken, or ``FORCED_OPEN``).
        retry_after: seconds until a trial call may be allowed, or ``None`` when unknown
            (forced open, or half-open with every permit taken).
    """

    def __init__(self, name: str, state: CircuitState, retry_after: float | None) -> None:
        # The message is built only when someone reads it: rejections are a hot path.
        self.name = name
        self.state = state
        self.retry_after = retry_after

    def __str__(self) -> str:
        hint = f", retry after {self.retry_after:.3f}s" if self.retry_after is not None else ""
        return f"circuit {self.name!r} is {self.state.value}{hint}"

    def __repr__(self) -> str:
        return f"CircuitOpenError({str(self)!r})"

    def __reduce__(self) -> tuple[type[CircuitOpenError], tuple[str, CircuitState, float | None]]:
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


class CheckpointTooLarge(AioresilError, ValueError):
    """The serialized checkpoint exceeds the store's ``max_bytes``; nothing was stored."""


class CheckpointCorruptError(CorruptStateError):
    """A stored checkpoint could not be decoded; the message names the task."""


class DeadLetterQueueFull(AioresilError):
    """The dead letter queue is at ``max_entries`` and its overflow policy is ``"reject"``."""


class DeadLetterTooLarge(AioresilError, ValueError):
    """A dead letter's serialized payload exceeds ``max_payload_bytes``; nothing was stored."""


class DeadLetterUnavailable(AioresilError, LookupError):
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

    def __reduce__(self) -> tuple[type[DeadLetterUnavailable], tuple[str, str]]:
        return (type(self), (self.entry_id, self.reason))
