"""The advice part of ``DeadLetterQueue.health()``: human sentences from the statistics.

Kept apart from the queue so the wording can evolve (and be tested) without touching storage
code. The empty-queue sentence is part of the seed's ``/health/dlq`` contract.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["EMPTY", "recommendations"]

EMPTY = "DLQ is empty - system operating normally"


def recommendations(stats: Mapping[str, Any], warning: int, critical: int) -> list[str]:
    """Human advice for :meth:`DeadLetterQueue.health`, most urgent first."""
    total = stats["total_failed_tasks"]
    advice: list[str] = []
    if total == 0 and not stats["spooled"]:
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
    by_type: Mapping[str, int] = stats["failures_by_task_type"]
    if by_type and total >= warning:
        top, n = max(by_type.items(), key=lambda item: (item[1], item[0]))
        advice.append(f"Task type '{top}' accounts for {n} of {total} failures - check it first")
    if stats["recent_failures_24h"] >= warning and warning:
        advice.append(
            f"{stats['recent_failures_24h']} failures in the last 24 hours - "
            "a recent deployment or dependency may be failing"
        )
    if stats["evicted"]:
        advice.append(
            f"{stats['evicted']} entries were evicted at max_entries - raise the cap or retry"
        )
    if stats["spooled"]:
        advice.append(
            f"{stats['spooled']} entries are spooled locally - the backend was unreachable"
        )
    return advice
