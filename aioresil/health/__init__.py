"""Health endpoints and metrics: a plain ASGI app, Prometheus text, an optional Collector.

Example::

    from aioresil import health_app

    app = health_app(registry=registry, dlq=dlq)   # serve with uvicorn or mount it
"""

from .app import HealthApp, health_app
from .dlq import dlq_health
from .metrics import MetricsSnapshot, collect_snapshot, render

__all__ = ["HealthApp", "MetricsSnapshot", "collect_snapshot", "dlq_health", "health_app", "render"]
