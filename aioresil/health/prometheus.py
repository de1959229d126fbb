"""A ``prometheus_client`` Collector for apps that already expose metrics with it.

``prometheus_client`` calls ``collect()`` synchronously (often from its HTTP thread), while
reading breakers and the DLQ is asynchronous (Redis). So the collector reports the last
snapshot taken by :meth:`AioresilCollector.refresh`, which your event loop calls on a
schedule (:meth:`AioresilCollector.run` does that) - a scrape never blocks on Redis. The
families are those of :func:`aioresil.health.metrics.families`: the same names, types and
labels as the health app's ``/metrics``.

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

from .metrics import MetricsSnapshot, Monotonic, collect_snapshot, families

if TYPE_CHECKING:
    from ..registry import BreakerRegistry
    from ..stores.dlq import DeadLetterQueue
    from .instruments import CallMetrics

__all__ = ["AioresilCollector"]


class AioresilCollector:
    """Reports the metrics of :mod:`aioresil.health.metrics` through ``prometheus_client``.

    Args:
        registry: the breakers to report.
        dlq: the dead letter queue to report.
        call_metrics: this process's call-duration histograms.
        dlq_warning_threshold: exported as ``aioresil_dlq_warning_threshold``.
        dlq_critical_threshold: exported as ``aioresil_dlq_critical_threshold``.

    Raises:
        ImportError: ``prometheus_client`` is not installed.
    """

    def __init__(
        self,
        *,
        registry: BreakerRegistry | None = None,
        dlq: DeadLetterQueue | None = None,
        call_metrics: CallMetrics | None = None,
        dlq_warning_threshold: int = 10,
        dlq_critical_threshold: int = 50,
    ) -> None:
        try:
            from prometheus_client.core import Metric
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError(
                "AioresilCollector needs prometheus_client: pip install prometheus-client"
            ) from exc
        self._metric: Any = Metric
        self.registry = registry
        self.dlq = dlq
        self.call_metrics = call_metrics
        self.thresholds = (dlq_warning_threshold, dlq_critical_threshold)
        self.snapshot = MetricsSnapshot()
        self._monotonic = Monotonic()

    async def refresh(self) -> MetricsSnapshot:
        """Read breakers and DLQ now; later scrapes report this snapshot."""
        self.snapshot = await collect_snapshot(
            registry=self.registry,
            dlq=self.dlq,
            dlq_warning_threshold=self.thresholds[0],
            dlq_critical_threshold=self.thresholds[1],
        )
        return self.snapshot

    async def run(self, interval: float = 15.0) -> None:
        """Refresh every ``interval`` seconds until cancelled (a backend that cannot be read
        leaves its series out until the next refresh)."""
        if not interval > 0:
            raise ValueError(f"interval must be > 0 seconds, got {interval!r}")
        while True:
            await self.refresh()
            await asyncio.sleep(interval)

    def describe(self) -> list[Any]:
        """Nothing up front: the families depend on the snapshot (avoids a read at register)."""
        return []

    def collect(self) -> Iterator[Any]:
        """The families of the last snapshot (called by ``prometheus_client``)."""
        for family in families(self.snapshot, monotonic=self._monotonic, calls=self.call_metrics):
            metric = self._metric(family.name, family.help, family.type)
            for suffix, labels, value in family.samples:
                metric.add_sample(family.name + suffix, dict(labels), float(value))
            yield metric
