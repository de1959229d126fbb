"""The ``/health/dlq`` body: a queue's statistics judged against thresholds, with advice.

Why here and not on the queue: a store stores; what an operator is told about it (status,
thresholds, sentences) is presentation, and it changes with the endpoints, not with storage.
The empty-queue sentence is part of the seed's ``/health/dlq`` contract.

Example::

    body = await dlq_health(dlq, warning_threshold=10, critical_threshold=50)
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..stores.dlq import DeadLetterQueue
    from ..stores.dlq_records import DeadLetterStats

__all__ = ["EMPTY", "dlq_health", "recommendations"]

EMPTY = "DLQ is empty - system operating normally"


def recommendations(stats: DeadLetterStats, warning: int, critical: int) -> list[str]:
    """Human advice from a queue's statistics, most urgent first."""
    total = stats.total_failed_tasks
    advice: list[str] = []
    if total == 0 and not stats.spooled:
        return [EMPTY]
    if total >= critical:
        advice.append(
            f"DLQ has {total} failed tasks (critical threshold {critical}) - "
            "investigate immediately and retry or purge resolved failures"
        )
    elif total >= warning:
        advice.append(
            f"DLQ has {total} failed tasks (warning threshold {warning}) - "
            "review recent failures before they accumulate"
        )
    elif total:
        advice.append(f"DLQ has {total} failed tasks - monitor for trends")
    by_type = stats.failures_by_task_type
    if by_type and total >= warning:
        top, n = max(by_type.items(), key=lambda item: (item[1], item[0]))
        advice.append(f"Task type '{top}' accounts for {n} of {total} failures - check it first")
    recent = stats.recent_failures_24h
    if recent >= warning and warning:
        advice.append(
            f"{recent} failures in the last 24 hours - "
            "a recent deployment or dependency may be failing"
        )
    if stats.evicted:
        advice.append(
            f"{stats.evicted} entries were evicted at max_entries - raise the cap or retry"
        )
    if stats.spooled:
        advice.append(f"{stats.spooled} entries are spooled locally - the backend was unreachable")
    return advice


async def dlq_health(
    dlq: DeadLetterQueue,
    *,
    warning_threshold: int = 10,
    critical_threshold: int = 50,
    now: float | None = None,
) -> dict[str, Any]:
    """The ``/health/dlq`` body: status, timestamp, statistics, indicators, advice.

    ``status`` is ``"healthy"`` below ``warning_threshold`` entries, ``"degraded"`` from
    it, ``"unhealthy"`` from ``critical_threshold``. ``now`` (Unix seconds) stamps the body;
    the queue's clock by default (a ``FakeClock`` in tests).

    Raises:
        ValueError: the thresholds are not ``0 <= warning <= critical``.
    """
    if warning_threshold < 0 or critical_threshold < warning_threshold:
        raise ValueError(
            f"need 0 <= warning_threshold <= critical_threshold, got "
            f"{warning_threshold} and {critical_threshold}"
        )
    stats = await dlq.stats()
    total = stats.total_failed_tasks
    if total >= critical_threshold:
        status = "unhealthy"
    elif total >= warning_threshold:
        status = "degraded"
    else:
        status = "healthy"
    stamp = dlq.clock.time() if now is None else now
    return {
        "status": status,
        "timestamp": datetime.fromtimestamp(stamp, tz=UTC).isoformat(),
        "statistics": stats.to_dict(),
        "health_indicators": {
            "total_failed_tasks": total,
            "recent_failures_24h": stats.recent_failures_24h,
            "requires_attention": total >= warning_threshold,
            "critical_threshold": critical_threshold,
            "warning_threshold": warning_threshold,
        },
        "recommendations": recommendations(stats, warning_threshold, critical_threshold),
    }
