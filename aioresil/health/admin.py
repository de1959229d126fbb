"""Operator actions over HTTP, off unless the health app is given an ``admin_token``.

Why off by default: the health endpoints are read-only and safe to expose to an orchestrator
or a dashboard; resetting a breaker or purging dead letters is not. With a token, these routes
exist and every request needs ``Authorization: Bearer <token>`` (compared with
:func:`hmac.compare_digest`, so the comparison time does not reveal how much matched):

=====================================================  =========================================
``POST /admin/breakers/<name>/reset``                  CLOSED with cleared counters
``POST /admin/breakers/<name>/open``                   FORCED_OPEN until the next reset
``POST /admin/dlq/entries/<id>/retry``                 run the app's ``dlq_retry_handler`` on it
``POST /admin/dlq/entries/<id>/remove``                delete the entry
``POST /admin/dlq/purge?older_than=7d[&task_type=T]``  delete old entries (``older_than=0``: all)
=====================================================  =========================================

``<name>`` is percent-encoded in the path (a breaker named ``a/b`` is ``a%2Fb``). Only
breakers of the app's registry can be changed (unknown names get 404: the API never creates
breakers). Without a token every ``/admin/...`` path is a plain 404.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from ..exceptions import DeadLetterUnavailableError

if TYPE_CHECKING:
    from ..registry import BreakerRegistry
    from ..stores.dlq import DeadLetterQueue, Handler

__all__ = ["AdminRoutes", "Reply", "check_token", "parse_duration"]

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86_400.0, "w": 604_800.0}
MIN_TOKEN_LENGTH = 16


def parse_duration(text: str) -> float:
    """Seconds in ``text``: a number with an optional unit ``ms s m h d w`` (``"7d"``, ``"90"``).

    >>> parse_duration("7d")
    604800.0

    Raises:
        ValueError: naming the text, when it is not a duration.
    """
    match = _DURATION_RE.match(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(
            f"not a duration: {text!r} (use a number with an optional unit ms, s, m, h, d or w, "
            "e.g. 7d or 90s)"
        )
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def check_token(token: object) -> str:
    """Validate an ``admin_token``: a str of at least 16 characters (guessing must be hopeless)."""
    if not isinstance(token, str):
        raise TypeError(f"admin_token must be a str, got {type(token).__name__}")
    if len(token) < MIN_TOKEN_LENGTH or token != token.strip():
        raise ValueError(
            f"admin_token must be at least {MIN_TOKEN_LENGTH} characters without surrounding "
            "whitespace (e.g. secrets.token_urlsafe(32))"
        )
    return token


@dataclass(frozen=True, slots=True)
class Reply:
    """What a route answers: HTTP status, a JSON-ready body, extra headers."""

    status: int
    body: Any
    headers: tuple[tuple[bytes, bytes], ...] = ()


def _error(status: int, message: str) -> Reply:
    return Reply(status, {"error": message})


class AdminRoutes:
    """The admin routes of one health app (see the module docstring)."""

    def __init__(
        self,
        token: str,
        registry: BreakerRegistry | None,
        dlq: DeadLetterQueue | None,
        retry_handler: Handler | None,
    ) -> None:
        self._expected = f"Bearer {check_token(token)}".encode()
        self.registry = registry
        self.dlq = dlq
        self.retry_handler = retry_handler

    def authorized(self, headers: Sequence[tuple[bytes, bytes]]) -> bool:
        """Whether the request carries the bearer token (constant-time comparison)."""
        given = b""
        for key, value in headers:
            if key.lower() == b"authorization":
                given = value.strip()
                break
        return hmac.compare_digest(given, self._expected)

    def match(self, segments: list[str]) -> bool:
        """Whether ``segments`` (after ``admin``) name an admin route."""
        if segments[:1] == ["breakers"]:
            return len(segments) == 3 and segments[2] in ("reset", "open")
        if segments[:2] == ["dlq", "entries"]:
            return len(segments) == 4 and segments[3] in ("retry", "remove")
        return segments == ["dlq", "purge"]

    async def handle(self, segments: list[str], query: bytes) -> Reply:
        """Run the action named by ``segments`` (already authorized and matched)."""
        if segments[0] == "breakers":
            return await self._breaker(segments[1], segments[2])
        if self.dlq is None:
            return _error(404, "no dead letter queue is configured")
        if segments[1] == "purge":
            return await self._purge(query)
        entry_id, action = segments[2], segments[3]
        if action == "remove":
            if await self.dlq.remove(entry_id):
                return Reply(200, {"id": entry_id, "removed": True})
            return _error(404, f"no dead letter {entry_id!r}")
        if self.retry_handler is None:
            return _error(
                404, "retry over HTTP needs health_app(dlq_retry_handler=...) to run the task"
            )
        try:
            succeeded = await self.dlq.retry(entry_id, self.retry_handler)
        except DeadLetterUnavailableError as exc:
            status = 409 if exc.reason == "leased" else 404
            return _error(status, str(exc))
        return Reply(200, {"id": entry_id, "succeeded": succeeded})

    async def _breaker(self, name: str, action: str) -> Reply:
        if self.registry is None or name not in self.registry:
            return _error(404, f"no breaker named {name!r}")
        breaker = self.registry.get(name)
        if action == "reset":
            await breaker.reset()
        else:
            await breaker.force_open()
        stats = await breaker.stats()
        return Reply(200, {"name": name, "state": stats.state.value})

    async def _purge(self, query: bytes) -> Reply:
        assert self.dlq is not None
        params = parse_qs(query.decode("latin-1"), keep_blank_values=True)
        raw_age = params.get("older_than", [None])[0]
        if raw_age is None:
            return _error(400, "purge needs ?older_than=<duration> (older_than=0 purges all)")
        try:
            age = parse_duration(raw_age)
        except ValueError as exc:
            return _error(400, str(exc))
        task_type = params.get("task_type", [None])[0]
        try:
            removed = await self.dlq.purge(older_than=age, task_type=task_type)
        except ValueError as exc:
            return _error(400, str(exc))
        return Reply(200, {"removed": removed, "older_than_seconds": age, "task_type": task_type})
