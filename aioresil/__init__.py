"""aioresil: asyncio-native resilience.

Circuit breakers that many processes share through Redis (every transition one Lua script),
with an in-process memory backend as the default.

Why some names load lazily: ``import aioresil`` should cost what one breaker needs. The
breaker, its config, states, events, exceptions and the memory backend load at once; policies,
stores, the registry, the health app and the Redis backend load on first access through the
module ``__getattr__`` below (type checkers see them through the ``TYPE_CHECKING`` imports).
``tests/face/test_import_cost.py`` pins which modules stay unloaded.
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
    CheckpointOutcomeUnknownError,
    CheckpointTooLargeError,
    CircuitOpenError,
    CorruptStateError,
    DeadLetterQueueFullError,
    DeadLetterTooLargeError,
    DeadLetterUnavailableError,
    IllegalTransitionError,
    PoolTimeoutError,
    RateLimitExceededError,
    ReplicaAckTimeoutError,
    SerializationError,
)

if TYPE_CHECKING:
    from .backends.backend_health import BackendHealthStats, BackendState, BackendStateChanged
    from .backends.redis import RedisBackend
    from .fleet import (
        FleetRetryBudget,
        FleetRetryBudgetStatistics,
        QuorumBreaker,
        QuorumConfig,
        QuorumReported,
        QuorumStats,
    )
    from .health import HealthApp, health_app
    from .policies import (
        AdaptiveTimeout,
        Alternative,
        Attempt,
        Backoff,
        Bulkhead,
        BulkheadRejected,
        BulkheadStatistics,
        CallTimedOut,
        Failover,
        FailoverAnswered,
        FailoverStatistics,
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
        DeadLetterStats,
        RetryCounts,
        RetryReport,
    )
    from .stores.dlq_redrive import (
        Redrive,
        RedrivePolicy,
        RedriveStats,
        RedriveWorker,
        RedriveWorkerStats,
    )
    from .stores.serialize import OrjsonSerializer

# name -> module that defines it, imported on first access.
_LAZY: dict[str, str] = {
    "BackendHealthStats": ".backends.backend_health",
    "BackendState": ".backends.backend_health",
    "BackendStateChanged": ".backends.backend_health",
    "AdaptiveTimeout": ".policies",
    "Alternative": ".policies",
    "Attempt": ".policies",
    "Backoff": ".policies",
    "BreakerRegistry": ".registry",
    "Bulkhead": ".policies",
    "BulkheadRejected": ".policies",
    "BulkheadStatistics": ".policies",
    "CallTimedOut": ".policies",
    "Checkpoint": ".stores.checkpoint",
    "CheckpointPage": ".stores.checkpoint",
    "CheckpointRun": ".stores.checkpoint_resume",
    "CheckpointStore": ".stores.checkpoint",
    "CheckpointSummary": ".stores.checkpoint",
    "DeadLetter": ".stores.dlq_records",
    "DeadLetterEvent": ".stores.dlq_records",
    "DeadLetterEvicted": ".stores.dlq_records",
    "DeadLetterLease": ".stores.dlq_records",
    "DeadLetterPage": ".stores.dlq_records",
    "DeadLetterQueue": ".stores.dlq",
    "DeadLetterSpoolDropped": ".stores.dlq_records",
    "DeadLetterSpooled": ".stores.dlq_records",
    "DeadLetterStats": ".stores.dlq_records",
    "Failover": ".policies",
    "FailoverAnswered": ".policies",
    "FailoverStatistics": ".policies",
    "Fallback": ".policies",
    "FallbackStatistics": ".policies",
    "FleetRetryBudget": ".fleet",
    "FleetRetryBudgetStatistics": ".fleet",
    "HealthApp": ".health",
    "OrjsonSerializer": ".stores.serialize",
    "Pipeline": ".policies",
    "PipelineStatistics": ".policies",
    "Policy": ".policies",
    "PolicyEvent": ".policies",
    "PolicyListener": ".policies",
    "QuorumBreaker": ".fleet",
    "QuorumConfig": ".fleet",
    "QuorumReported": ".fleet",
    "QuorumStats": ".fleet",
    "RateLimited": ".policies",
    "RateLimiter": ".policies",
    "RateLimiterStatistics": ".policies",
    "RedisBackend": ".backends.redis",
    "Redrive": ".stores.dlq_redrive",
    "RedrivePolicy": ".stores.dlq_redrive",
    "RedriveStats": ".stores.dlq_redrive",
    "RedriveWorker": ".stores.dlq_redrive",
    "RedriveWorkerStats": ".stores.dlq_redrive",
    "Retry": ".policies",
    "RetryBudget": ".policies",
    "RetryBudgetStatistics": ".policies",
    "RetryCounts": ".stores.dlq_records",
    "RetryExhausted": ".policies",
    "RetryReport": ".stores.dlq_records",
    "RetryScheduled": ".policies",
    "RetryStatistics": ".policies",
    "SupportsPush": ".policies",
    "Timeout": ".policies",
    "TimeoutStatistics": ".policies",
    "constant": ".policies",
    "exponential": ".policies",
    "health_app": ".health",
    "pipeline": ".policies",
}

# Plain ASCII order with dunders last (tests/face/test_public_api.py); ruff would put `__version__`
# before the lowercase function names.
__all__ = [  # noqa: RUF022 - dunders last, the rest in plain sorted order
    "AdaptiveTimeout",
    "AioresilError",
    "Alternative",
    "Attempt",
    "BackendError",
    "BackendFailover",
    "BackendHealthStats",
    "BackendRecovered",
    "BackendState",
    "BackendStateChanged",
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
    "CheckpointOutcomeUnknownError",
    "CheckpointPage",
    "CheckpointRun",
    "CheckpointStore",
    "CheckpointSummary",
    "CheckpointTooLargeError",
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
    "DeadLetterQueueFullError",
    "DeadLetterSpoolDropped",
    "DeadLetterSpooled",
    "DeadLetterStats",
    "DeadLetterTooLargeError",
    "DeadLetterUnavailableError",
    "Failover",
    "FailoverAnswered",
    "FailoverStatistics",
    "Fallback",
    "FallbackStatistics",
    "FleetRetryBudget",
    "FleetRetryBudgetStatistics",
    "HealthApp",
    "IllegalTransitionError",
    "Listener",
    "MemoryBackend",
    "OrjsonSerializer",
    "Pipeline",
    "PipelineStatistics",
    "Policy",
    "PolicyEvent",
    "PolicyListener",
    "PoolTimeoutError",
    "QuorumBreaker",
    "QuorumConfig",
    "QuorumReported",
    "QuorumStats",
    "RateLimitExceededError",
    "RateLimited",
    "RateLimiter",
    "RateLimiterStatistics",
    "RedisBackend",
    "Redrive",
    "RedrivePolicy",
    "RedriveStats",
    "RedriveWorker",
    "RedriveWorkerStats",
    "ReplicaAckTimeoutError",
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


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is not None:
        from importlib import import_module

        value = getattr(import_module(module, __name__), name)
        globals()[name] = value  # later reads skip this function
        return value
    from .exceptions import DEPRECATED_NAMES, deprecated_alias

    if name in DEPRECATED_NAMES:
        return deprecated_alias(__name__, name)
    raise AttributeError(f"module 'aioresil' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
