"""Resilience policies that compose with breakers: retry, timeout, bulkhead, rate limit,
fallback, and ``pipeline()`` to stack them (outermost first).

Every policy is a decorator (``@policy``) and has ``await policy.call(fn, *args, **kwargs)``;
``Timeout``, ``Bulkhead`` and ``RateLimiter`` are also ``async with`` blocks; ``Retry``
retries a block through its attempt iterator. Each has ``.stats()``.
"""

from .adaptive import AdaptiveTimeout
from .base import Policy
from .bulkhead import Bulkhead, BulkheadStatistics
from .events import (
    BulkheadRejected,
    CallTimedOut,
    FailoverAnswered,
    PolicyEvent,
    PolicyListener,
    RateLimited,
    RetryExhausted,
    RetryScheduled,
)
from .failover import Alternative, Failover, FailoverStatistics
from .fallback import Fallback, FallbackStatistics
from .pipeline import Pipeline, PipelineStatistics, SupportsPush, pipeline
from .ratelimit import RateLimiter, RateLimiterStatistics
from .retry import (
    Attempt,
    Backoff,
    Retry,
    RetryBudget,
    RetryBudgetStatistics,
    RetryStatistics,
    constant,
    exponential,
)
from .timeout import Timeout, TimeoutStatistics

__all__ = [
    "AdaptiveTimeout",
    "Alternative",
    "Attempt",
    "Backoff",
    "Bulkhead",
    "BulkheadRejected",
    "BulkheadStatistics",
    "CallTimedOut",
    "Failover",
    "FailoverAnswered",
    "FailoverStatistics",
    "Fallback",
    "FallbackStatistics",
    "Pipeline",
    "PipelineStatistics",
    "Policy",
    "PolicyEvent",
    "PolicyListener",
    "RateLimited",
    "RateLimiter",
    "RateLimiterStatistics",
    "Retry",
    "RetryBudget",
    "RetryBudgetStatistics",
    "RetryExhausted",
    "RetryScheduled",
    "RetryStatistics",
    "SupportsPush",
    "Timeout",
    "TimeoutStatistics",
    "constant",
    "exponential",
    "pipeline",
]
