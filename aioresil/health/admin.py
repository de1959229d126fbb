"""Operator actions over HTTP, off unless the health app is given an ``admin_token``.

Why off by default: the health endpoints are read-only and safe to expose to an orchestrator
or a dashboard; resetting a breaker or purging dead letters is not. The routes are the one
admin API of :mod:`aioresil.web.admin`, mounted at ``/admin`` (the dashboard mounts the same
API at ``/api``), guarded by :class:`aioresil.web.asgi.AdminToken`:

=========================================================  =====================================
``POST   /admin/breakers/<name>/reset``                    CLOSED with cleared counters
``POST   /admin/breakers/<name>/force_open``               FORCED_OPEN until the next reset
``POST   /admin/dlq/entries/<id>/retry``                   run ``dlq_retry_handler`` on it
``DELETE /admin/dlq/entries/<id>``                         delete the entry
``POST   /admin/dlq/purge?older_than=7d[&task_type=T]``    delete old entries (``0``: all); or a
                                                           JSON body ``{"older_than_seconds": N}``
=========================================================  =====================================

``POST /admin/breakers/<name>/open`` and ``POST /admin/dlq/entries/<id>/remove`` still work as
deprecated aliases (``Deprecation: true`` header). Without a token every ``/admin/...`` path
is a plain 404.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..web.asgi import MIN_TOKEN_LENGTH, AdminToken, parse_duration

__all__ = ["MIN_TOKEN_LENGTH", "Reply", "check_token", "parse_duration"]


def check_token(token: object) -> str:
    """Validate an ``admin_token`` (:class:`~aioresil.web.asgi.AdminToken`'s rule)."""
    AdminToken(token)
    assert isinstance(token, str)
    return token


@dataclass(frozen=True, slots=True)
class Reply:
    """What a route answers: HTTP status, a JSON-ready body, extra headers."""

    status: int
    body: Any
    headers: tuple[tuple[bytes, bytes], ...] = ()
