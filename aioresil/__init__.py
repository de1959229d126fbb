"""aioresil: asyncio-native resilience.

Circuit breakers that many processes share through Redis (every transition one Lua script),
with an in-process memory backend as the default.
"""

from ._version import __version__
from .backends.base import BreakerBackend, BreakerHandle
from .backends.memory import MemoryBackend
from .breaker import BreakerStats, CircuitBreaker
from .clock import Clock, SystemClock
from .core.config import BreakerConfig
from .core.states import CircuitState, Trigger
from .events import (
    BackendFailover,
    BackendRecovered,
    BreakerEvent,
    CallRejected,
    Listener,
    StateChanged,
)
from .exceptions import (
    AioresilError,
    BackendError,
    BackendUnavailableError,
    CheckpointConflictError,
    CheckpointCorruptError,
    CheckpointTooLarge,
    CircuitOpenError,
    CorruptStateError,
    DeadLetterQueueFull,
    DeadLetterTooLarge,
    DeadLetterUnavailable,
    IllegalTransitionError,
    PoolTimeoutError,
    SerializationError,
)
from .health import HealthApp, health_app
from .registry import BreakerRegistry
from .stores.checkpoint import Checkpoint, CheckpointPage, CheckpointStore, CheckpointSummary
from .stores.checkpoint_resume import CheckpointRun
from .stores.dlq import DeadLetterQueue
from .stores.dlq_records import (
    DeadLetter,
    DeadLetterEvent,
    DeadLetterEvicted,
    DeadLetterLease,
    DeadLetterPage,
    DeadLetterSpoolDropped,
    DeadLetterSpooled,
    RetryCounts,
    RetryReport,
)

# Sorted as tests/test_public_api.py checks (dunders last), not as ruff's RUF022 would.
__all__ = [  # noqa: RUF022
    "AioresilError",
    "BackendError",
    "BackendFailover",
    "BackendRecovered",
    "BackendUnavailableError",
    "BreakerBackend",
    "BreakerConfig",
    "BreakerEvent",
    "BreakerHandle",
    "BreakerRegistry",
    "BreakerStats",
    "CallRejected",
    "Checkpoint",
    "CheckpointConflictError",
    "CheckpointCorruptError",
    "CheckpointPage",
    "CheckpointRun",
    "CheckpointStore",
    "CheckpointSummary",
    "CheckpointTooLarge",
    "CircuitBreaker",
    "CircuitOpenError",
    "CircuitState",
    "Clock",
    "CorruptStateError",
    "DeadLetter",
    "DeadLetterEvent",
    "DeadLetterEvicted",
    "DeadLetterLease",
    "DeadLetterPage",
    "DeadLetterQueue",
    "DeadLetterQueueFull",
    "DeadLetterSpoolDropped",
    "DeadLetterSpooled",
    "DeadLetterTooLarge",
    "DeadLetterUnavailable",
    "HealthApp",
    "IllegalTransitionError",
    "Listener",
    "MemoryBackend",
    "PoolTimeoutError",
    "RedisBackend",
    "RetryCounts",
    "RetryReport",
    "SerializationError",
    "StateChanged",
    "SystemClock",
    "Trigger",
    "health_app",
    "__version__",
]


def __getattr__(name: str) -> object:
    # RedisBackend needs the optional ``redis`` extra: import it only when asked for.
    if name == "RedisBackend":
        from .backends.redis import RedisBackend

        return RedisBackend
    raise AttributeError(f"module 'aioresil' has no attribute {name!r}")
