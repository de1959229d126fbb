"""The admin API: one set of paths and verbs, served by the health app and the dashboard.

Paths are relative to where an app mounts the API (``/admin`` in the health app, ``/api``
in the dashboard); every one needs ``Authorization: Bearer <admin_token>`` and exists only
when the app has a token (404 otherwise, as if it were not there):

=====================================  =====================================================
``POST   breakers/<name>/reset``       CLOSED with cleared counters
``POST   breakers/<name>/force_open``  FORCED_OPEN until the next reset
``POST   dlq/entries/<id>/retry``      run the app's retry handler on it, under a lease
``DELETE dlq/entries/<id>``            delete the entry
``POST   dlq/purge``                   delete old entries: JSON ``{"older_than_seconds": N,
                                       "task_type": T}`` or ``?older_than=7d&task_type=T``
=====================================  =====================================================

Deprecated aliases, kept for the health app's first version (answered the same, with a
``Deprecation: true`` header and a ``Link`` to the new path): ``POST breakers/<name>/open``
and ``POST dlq/entries/<id>/remove``.

``<name>`` and ``<id>`` are percent-encoded path segments (a breaker named ``a/b`` is
``a%2Fb``). Only breakers of the app's registry can be changed: the API never creates one.
Bad numbers (``older_than_seconds=1e308``, ``-1``, ``"abc"``) are 400 with a message.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote

from ..exceptions import DeadLetterUnavailableError
from .asgi import (
    AdminToken,
    BodyTooLarge,
    Headers,
    Receive,
    parse_duration,
    parse_seconds,
    read_body,
)

if TYPE_CHECKING:
    from ..registry import BreakerRegistry
    from ..stores.dlq import DeadLetterQueue, Handler

__all__ = ["AdminApi", "JsonReply"]


@dataclass(frozen=True, slots=True)
class JsonReply:
    """What an admin route answers: status, a JSON-ready body, extra headers."""

    status: int
    body: Any
    headers: tuple[tuple[bytes, bytes], ...] = ()


def _error(status: int, message: str, *headers: tuple[bytes, bytes]) -> JsonReply:
    return JsonReply(status, {"error": message}, headers)


_CHALLENGE = (b"www-authenticate", b'Bearer realm="aioresil"')

Action = Callable[[list[str], bytes, Receive], Awaitable[JsonReply]]


class AdminApi:
    """The admin routes of one app (see the module docstring).

    Args:
        token: the admin token; ``None`` disables every route.
        registry: the breakers that may be reset or forced open.
        dlq: the queue whose entries may be retried, removed and purged.
        retry_handler: ``async handler(dead_letter)`` run by the retry route.
    """

    def __init__(
        self,
        *,
        token: AdminToken | None,
        registry: BreakerRegistry | None,
        dlq: DeadLetterQueue | None,
        retry_handler: Handler | None,
    ) -> None:
        self.token = token
        self.registry = registry
        self.dlq = dlq
        self.retry_handler = retry_handler

    @property
    def enabled(self) -> bool:
        return self.token is not None

    def methods(self, segments: list[str]) -> dict[str, tuple[Action, str | None]]:
        """``{method: (action, canonical path or None)}`` for a path (empty: no route).

        A canonical path is given for deprecated aliases only. Without a token there are
        no routes (see :meth:`routes` for the table itself).
        """
        return self.routes(segments) if self.enabled else {}

    def routes(self, segments: list[str]) -> dict[str, tuple[Action, str | None]]:
        """The route table for a path, whether or not a token enables it."""
        n = len(segments)
        if n == 3 and segments[0] == "breakers":
            if segments[2] == "reset":
                return {"POST": (self._reset, None)}
            if segments[2] == "force_open":
                return {"POST": (self._force_open, None)}
            if segments[2] == "open":
                new = f"breakers/{quote(segments[1], safe='')}/force_open"
                return {"POST": (self._force_open, new)}
        if n >= 3 and segments[:2] == ["dlq", "entries"]:
            if n == 3:
                return {"DELETE": (self._remove, None)}
            if n == 4 and segments[3] == "retry":
                return {"POST": (self._retry, None)}
            if n == 4 and segments[3] == "remove":
                return {"POST": (self._remove, f"dlq/entries/{quote(segments[2], safe='')}")}
        if segments == ["dlq", "purge"]:
            return {"POST": (self._purge, None)}
        return {}

    async def handle(
        self,
        method: str,
        segments: list[str],
        *,
        query: bytes,
        headers: Headers,
        receive: Receive,
        base: str,
    ) -> JsonReply | None:
        """Run the route for ``method`` and ``segments``; ``None`` when no route matches.

        Raises whatever the backend raises (the app maps outages to 503).
        """
        routes = self.methods(segments)
        if not routes:
            return None
        if method not in routes:
            allow = ", ".join(sorted(routes)).encode()
            return _error(405, f"{method} is not allowed here", (b"allow", allow))
        assert self.token is not None
        problem = self.token.problem(headers)
        if problem is not None:
            return _error(401, problem, _CHALLENGE)
        action, canonical = routes[method]
        reply = await action(segments, query, receive)
        if canonical is None:
            return reply
        link = f'<{base.rstrip("/")}/{canonical}>; rel="successor-version"'.encode()
        return JsonReply(
            reply.status, reply.body, (*reply.headers, (b"deprecation", b"true"), (b"link", link))
        )

    # ------------------------------------------------------------------ breakers

    async def _breaker(self, name: str) -> Any:
        if self.registry is None or name not in self.registry:
            return None
        return self.registry.get(name)

    async def _reset(self, segments: list[str], query: bytes, receive: Receive) -> JsonReply:
        return await self._operate(segments[1], "reset")

    async def _force_open(self, segments: list[str], query: bytes, receive: Receive) -> JsonReply:
        return await self._operate(segments[1], "force_open")

    async def _operate(self, name: str, action: str) -> JsonReply:
        breaker = await self._breaker(name)
        if breaker is None:
            return _error(404, f"no breaker named {name!r}")
        if action == "reset":
            await breaker.reset()
        else:
            await breaker.force_open()
        stats = await breaker.stats()
        return JsonReply(
            200,
            {
                "action": action,
                "name": name,
                "state": stats.state.value,
                "breaker": stats.to_dict(),
            },
        )

    # ------------------------------------------------------------------ dead letters

    async def _remove(self, segments: list[str], query: bytes, receive: Receive) -> JsonReply:
        if self.dlq is None:
            return _error(404, "no dead letter queue is configured")
        entry_id = segments[2]
        if await self.dlq.remove(entry_id):
            return JsonReply(200, {"id": entry_id, "removed": True})
        return _error(404, f"no dead letter with id {entry_id!r}")

    async def _retry(self, segments: list[str], query: bytes, receive: Receive) -> JsonReply:
        if self.dlq is None:
            return _error(404, "no dead letter queue is configured")
        if self.retry_handler is None:
            return _error(
                400,
                "retry is not available: the app was started without a retry handler "
                "(health_app(dlq_retry_handler=...) or dashboard_app(retry_handler=...))",
            )
        entry_id = segments[2]
        if await self.dlq.get(entry_id) is None:
            return _error(404, f"no dead letter with id {entry_id!r}")
        try:
            succeeded = await self.dlq.retry(entry_id, self.retry_handler)
        except DeadLetterUnavailableError as exc:
            return _error(409 if exc.reason == "leased" else 404, str(exc))
        body: dict[str, Any] = {"id": entry_id, "succeeded": succeeded}
        if not succeeded:
            after = await self.dlq.get(entry_id)
            if after is not None:
                body["attempts"] = after.attempts
                body["error"] = f"{after.error_type or 'error'}: {after.error_message}"
        return JsonReply(200, body)

    async def _purge(self, segments: list[str], query: bytes, receive: Receive) -> JsonReply:
        if self.dlq is None:
            return _error(404, "no dead letter queue is configured")
        try:
            age, task_type = await _purge_arguments(query, receive)
        except BodyTooLarge as exc:
            return _error(413, str(exc))
        except ValueError as exc:
            return _error(400, str(exc))
        try:
            purged = await self.dlq.purge(older_than=age, task_type=task_type)
        except (ValueError, OverflowError) as exc:
            return _error(400, str(exc))
        return JsonReply(200, {"purged": purged, "older_than_seconds": age, "task_type": task_type})


async def _purge_arguments(query: bytes, receive: Receive) -> tuple[float, str | None]:
    """``(older_than seconds, task_type)`` from the query (``older_than=7d``) or a JSON body
    (``{"older_than_seconds": N}``). Raises ``ValueError`` with the message for a 400."""
    params = parse_qs(query.decode("latin-1"), keep_blank_values=True)
    raw = await read_body(receive)
    if raw.strip():
        if "older_than" in params:
            raise ValueError("give older_than in the query or in the body, not both")
        try:
            body = json.loads(raw)
        except ValueError:
            raise ValueError("the body must be JSON") from None
        if not isinstance(body, dict):
            raise ValueError('the body must be a JSON object: {"older_than_seconds": N}')
        unknown = sorted(set(body) - {"older_than_seconds", "task_type"})
        if unknown:
            raise ValueError(f"unknown fields: {', '.join(unknown)}")
        age = parse_seconds(body.get("older_than_seconds"), name="older_than_seconds")
        task_type = body.get("task_type")
        if task_type is not None and not isinstance(task_type, str):
            raise ValueError("task_type must be a string or null")
        return age, task_type or None
    values = params.get("older_than")
    if not values:
        raise ValueError(
            'purge needs a JSON object {"older_than_seconds": N} as the body, or '
            "?older_than=<duration> (0 purges everything)"
        )
    age = parse_duration(values[-1], name="older_than")
    task_type = params.get("task_type", [""])[-1] or None
    return age, task_type
