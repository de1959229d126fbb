"""A ``prometheus_client`` Collector for apps that already expose metrics with it.

``prometheus_client`` calls ``collect()`` synchronously (often from its HTTP thread), while
reading breakers and the DLQ is asynchronous (Redis). So the collector reports the last
snapshot taken by :meth:`AioresilCollector.refresh`, which your event loop calls on a
schedule (:meth:`AioresilCollector.run` does that) - a scrape never blocks on Redis.

``prometheus_client`` is imported only when the collector is created, so aioresil does not
depend on it.

Example::

    from prometheus_client import REGISTRY
    from aioresil.health.prometheus import AioresilCollector

    collector = AioresilCollector(registry=breakers, dlq=dlq)
    await collector.refresh()
    REGISTRY.register(collector)
    task = asyncio.create_task(collector.run(interval=15))
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ..exceptions import BackendError
from .metrics import (
    CALL_KINDS,
    STATES,
    MetricsSnapshot,
    calls_by_kind,
    collect_snapshot,
    failure_rate_percent,
)

if TYPE_CHECKING:
    from ..registry import BreakerRegistry
    from ..stores.dlq import DeadLetterQueue

__all__ = ["AioresilCollector"]


class AioresilCollector:
    """Reports the metrics of :mod:`aioresil.health.metrics` through ``prometheus_client``.

    Args:
        registry: the breakers to report.
        dlq: the dead letter queue to report.

    Raises:
        ImportError: ``prometheus_client`` is not installed.
    """

    def __init__(
        self,
        *,
        registry: BreakerRegistry | None = None,
        dlq: DeadLetterQueue | None = None,
    ) -> None:
        try:
            from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError(
                "AioresilCollector needs prometheus_client: pip install prometheus-client"
            ) from exc
        self._counter: Any = CounterMetricFamily
        self._gauge: Any = GaugeMetricFamily
        self.registry = registry
        self.dlq = dlq
        self.snapshot = MetricsSnapshot()

    async def refresh(self) -> MetricsSnapshot:
        """Read breakers and DLQ now; later scrapes report this snapshot."""
        self.snapshot = await collect_snapshot(registry=self.registry, dlq=self.dlq)
        return self.snapshot

    async def run(self, interval: float = 15.0) -> None:
        """Refresh every ``interval`` seconds until cancelled; a backend error keeps the
        previous snapshot (the next refresh tries again)."""
        if not interval > 0:
            raise ValueError(f"interval must be > 0 seconds, got {interval!r}")
        while True:
            try:
                await self.refresh()
            except BackendError:
                pass
            await asyncio.sleep(interval)

    def describe(self) -> list[Any]:
        """Nothing up front: the families depend on the snapshot (avoids a read at register)."""
        return []

    def collect(self) -> Iterator[Any]:
        """The families of the last snapshot (called by ``prometheus_client``)."""
        snap = self.snapshot
        state = self._gauge(
            "aioresil_circuitbreaker_state",
            "1 for the circuit breaker's current state, else 0",
            labels=["name", "state"],
        )
        calls = self._counter(
            "aioresil_circuitbreaker_calls",
            "Calls seen by the breaker, by outcome kind",
            labels=["name", "kind"],
        )
        rate = self._gauge(
            "aioresil_circuitbreaker_failure_rate",
            "Failure rate in percent over the window, -1 when not computed",
            labels=["name"],
        )
        config = self._gauge(
            "aioresil_circuitbreaker_config_info",
            "1 per breaker, labelled with the fingerprint of the config in force (stored with it)",
            labels=["name", "fingerprint"],
        )
        threshold = self._gauge(
            "aioresil_circuitbreaker_failure_threshold",
            "Consecutive failures that open the circuit under the config in force (-1: off)",
            labels=["name"],
        )
        for stats in snap.breakers:
            config.add_metric([stats.name, stats.config_fingerprint or ""], 1.0)
            limit = stats.failure_threshold
            threshold.add_metric([stats.name], -1.0 if limit is None else float(limit))
            for value in STATES:
                state.add_metric([stats.name, value], 1.0 if stats.state.value == value else 0.0)
            for kind, count in zip(CALL_KINDS, calls_by_kind(stats), strict=True):
                calls.add_metric([stats.name, kind], float(count))
            rate.add_metric([stats.name], failure_rate_percent(stats))
        yield state
        yield calls
        yield rate
        yield config
        yield threshold
        if snap.dlq_by_type is not None:
            entries = self._gauge(
                "aioresil_dlq_entries", "Dead letters waiting, by task type", labels=["task_type"]
            )
            for task_type, count in sorted(snap.dlq_by_type.items()):
                entries.add_metric([task_type], float(count))
            yield entries
            yield self._gauge(
                "aioresil_dlq_oldest_age_seconds",
                "Age of the oldest dead letter (0 when empty)",
                value=snap.dlq_oldest_age,
            )
