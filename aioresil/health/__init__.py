"""Health endpoints, metrics and notifications: a plain ASGI app, Prometheus text, an optional
Collector, call-duration histograms and a webhook notifier.

Example::

    from aioresil import health_app

    app = health_app(registry=registry, dlq=dlq)   # serve with uvicorn or mount it
"""

from .app import HealthApp, health_app
from .instruments import CallMetrics
from .metrics import MetricsSnapshot, collect_snapshot, render
from .notifier import Notification, WebhookNotifier

__all__ = [
    "CallMetrics",
    "HealthApp",
    "MetricsSnapshot",
    "Notification",
    "WebhookNotifier",
    "collect_snapshot",
    "health_app",
    "render",
]
