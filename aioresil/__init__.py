"""aioresil: asyncio-native resilience.

Circuit breakers that many processes share through Redis (every transition one Lua script),
with an in-process memory backend as the default.
"""

from typing import TYPE_CHECKING

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
    BreakerConfigConflict,
    BreakerEvent,
    CallRejected,
    Listener,
    StateChanged,
)
from .exceptions import (
    AioresilError,
    BackendError,
    BackendUnavailableError,
    BulkheadFullError,
    CallTimeoutError,
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
    RateLimitExceeded,
    SerializationError,
)
from .health import HealthApp, health_app
from .policies import (
    Attempt,
    Backoff,
    Bulkhead,
    BulkheadRejected,
    BulkheadStatistics,
    CallTimedOut,
    Fallback,
    FallbackStatistics,
    Pipeline,
    PipelineStatistics,
    Policy,
    PolicyEvent,
    PolicyListener,
    RateLimited,
    RateLimiter,
    RateLimiterStatistics,
    Retry,
    RetryBudget,
    RetryBudgetStatistics,
    RetryExhausted,
    RetryScheduled,
    RetryStatistics,
    SupportsPush,
    Timeout,
    TimeoutStatistics,
    constant,
    exponential,
    pipeline,
)
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

# Plain ASCII order with dunders last (tests/test_public_api.py); ruff would put `__version__`
# before the lowercase function names.
__all__ = [  # noqa: RUF022 - dunders last, the rest in plain sorted order
    "AioresilError",
    "Attempt",
    "BackendError",
    "BackendFailover",
    "BackendRecovered",
    "BackendUnavailableError",
    "Backoff",
    "BreakerBackend",
    "BreakerConfig",
    "BreakerConfigConflict",
    "BreakerEvent",
    "BreakerHandle",
    "BreakerRegistry",
    "BreakerStats",
    "Bulkhead",
    "BulkheadFullError",
    "BulkheadRejected",
    "BulkheadStatistics",
    "CallRejected",
    "CallTimedOut",
    "CallTimeoutError",
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
    "Fallback",
    "FallbackStatistics",
    "HealthApp",
    "IllegalTransitionError",
    "Listener",
    "MemoryBackend",
    "Pipeline",
    "PipelineStatistics",
    "Policy",
    "PolicyEvent",
    "PolicyListener",
    "PoolTimeoutError",
    "RateLimitExceeded",
    "RateLimited",
    "RateLimiter",
    "RateLimiterStatistics",
    "RedisBackend",
    "Retry",
    "RetryBudget",
    "RetryBudgetStatistics",
    "RetryCounts",
    "RetryExhausted",
    "RetryReport",
    "RetryScheduled",
    "RetryStatistics",
    "SerializationError",
    "StateChanged",
    "SupportsPush",
    "SystemClock",
    "Timeout",
    "TimeoutStatistics",
    "Trigger",
    "constant",
    "exponential",
    "health_app",
    "pipeline",
    "__version__",
]


if TYPE_CHECKING:  # type checkers see the real class; at run time it is imported lazily
    from .backends.redis import RedisBackend


def __getattr__(name: str) -> object:
    # RedisBackend needs the optional ``redis`` extra: import it only when asked for.
    if name == "RedisBackend":
        from .backends.redis import RedisBackend

        return RedisBackend
    raise AttributeError(f"module 'aioresil' has no attribute {name!r}")
