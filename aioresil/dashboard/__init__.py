"""A live dashboard of breakers and dead letters: an ASGI app with a vanilla-JS page.

Example::

    from aioresil.dashboard import dashboard_app

    app = dashboard_app(registry=registry, dlq=dlq)   # read-only
    uvicorn.run(app, host="127.0.0.1", port=8000)
"""

from .app import DashboardApp, dashboard_app

__all__ = ["DashboardApp", "dashboard_app"]
