"""Notifications to a webhook: breaker transitions and dead-letter threshold crossings.

Posts to Slack (incoming webhook, ``{"text": ...}``), to any endpoint taking a generic JSON
body, or to PagerDuty's Events API v2 (``trigger`` / ``resolve`` with a stable
``dedup_key``, so an incident opens when a circuit opens and resolves when it closes).

Why a queue and a worker: a listener runs inside the breaker's transition, on the path of a
guarded call. :meth:`WebhookNotifier.notify` only appends to a bounded in-memory queue and
returns; one background task does the HTTP, so a slow or dead webhook never delays a call.
The worker:

* **deduplicates repeats, never changes**: a notification is dropped only when its state is
  the state last delivered for that subject (a repeat: two processes or two registries seeing
  one transition, a DLQ watcher re-reporting a level) within ``dedup_seconds``. A change is
  always sent, so a flapping circuit that re-opens pages again: dropping that re-open would
  leave a PagerDuty incident resolved while the circuit is open;
* **rate-limits**: at most ``max_per_minute`` posts; the rest are counted in ``dropped``;
* **retries with backoff**: transport errors, 429 and 5xx are retried up to ``retries``
  times, waiting ``backoff * 2**attempt`` (capped at ``max_backoff``, or the server's
  ``Retry-After``); other 4xx are not retried (the request itself is wrong).

Each process notifies what it sees: with Redis every process observes a shared transition,
so point one process (for example ``aioresil serve``) at the webhook, or rely on the
receiver's deduplication (PagerDuty's ``dedup_key``).

HTTP is a minimal HTTP/1.1 client on :mod:`asyncio` streams (``http://`` and ``https://``),
so notifications need no extra dependency.

Example::

    notifier = WebhookNotifier(os.environ["SLACK_WEBHOOK_URL"], style="slack", service="api")
    notifier.watch_registry(registry)
    notifier.watch_dlq(dlq, warning_threshold=10, critical_threshold=50)
    await notifier.start()
    ...
    await notifier.aclose()
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import ssl
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

import structlog

from ..core.states import CircuitState
from ..events import BreakerEvent, StateChanged

if TYPE_CHECKING:
    from ..registry import BreakerRegistry
    from ..stores.dlq import DeadLetterQueue

__all__ = ["Notification", "NotifierStats", "WebhookNotifier", "render_body"]

Style = Literal["slack", "json", "pagerduty"]
_log = structlog.get_logger("aioresil")

_SEVERITY = {
    CircuitState.OPEN: "critical",
    CircuitState.FORCED_OPEN: "warning",
    CircuitState.HALF_OPEN: "info",
    CircuitState.CLOSED: "info",
    CircuitState.DISABLED: "info",
}
_RESOLVING = {CircuitState.CLOSED, CircuitState.DISABLED}


@dataclass(frozen=True, slots=True)
class Notification:
    """One thing worth telling a human: what, about which subject, how bad.

    ``kind`` is ``"breaker"`` or ``"dlq"``; ``subject`` the breaker or queue name; ``state``
    the new state (``open``, ``closed``, ... or ``ok``/``warning``/``critical`` for a queue);
    ``resolved`` is true when it ends a problem (circuit closed, queue back under warning).
    """

    kind: str
    subject: str
    state: str
    previous: str
    severity: str
    message: str
    at: float
    resolved: bool = False
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class NotifierStats:
    """Counts since the notifier was created (``queued`` is the current backlog)."""

    sent: int
    failed: int
    retried: int
    deduplicated: int
    dropped: int
    queued: int


def render_body(note: Notification, style: Style, *, service: str, routing_key: str | None) -> Any:
    """The JSON body of ``note`` for ``style`` (Slack, generic JSON or PagerDuty Events v2)."""
    stamp = datetime.fromtimestamp(note.at, tz=UTC).isoformat()
    if style == "slack":
        icon = {"critical": ":red_circle:", "warning": ":large_orange_circle:"}.get(
            note.severity, ":large_green_circle:" if note.resolved else ":white_circle:"
        )
        return {"text": f"{icon} [{service}] {note.message}"}
    if style == "pagerduty":
        return {
            "routing_key": routing_key,
            "event_action": "resolve" if note.resolved else "trigger",
            "dedup_key": f"aioresil/{service}/{note.kind}/{note.subject}",
            "payload": {
                "summary": f"[{service}] {note.message}"[:1024],
                "source": service,
                "severity": note.severity,
                "timestamp": stamp,
                "component": note.subject,
                "group": "circuit-breaker" if note.kind == "breaker" else "dead-letter-queue",
                "class": f"{note.kind}_{note.state}",
                "custom_details": {"previous": note.previous, **note.details},
            },
        }
    return {
        "source": "aioresil",
        "service": service,
        "kind": note.kind,
        "subject": note.subject,
        "state": note.state,
        "previous": note.previous,
        "severity": note.severity,
        "resolved": note.resolved,
        "message": note.message,
        "at": stamp,
        "details": note.details,
    }


class WebhookNotifier:
    """Posts :class:`Notification` s to one webhook (see the module docstring).

    Args:
        url: ``http://`` or ``https://`` webhook URL.
        style: ``"slack"``, ``"json"`` (generic) or ``"pagerduty"`` (Events API v2; then
            ``routing_key`` is required and ``url`` is usually
            ``https://events.pagerduty.com/v2/enqueue``).
        service: names the application in every message.
        routing_key: PagerDuty integration key.
        dedup_seconds: a repeat of the state last delivered for a subject is dropped within
            this window (a change of state is always sent).
        max_per_minute: posts per minute at most; beyond, notifications are dropped.
        retries: attempts after the first for retryable failures.
        backoff: first retry delay in seconds (doubles, with jitter, up to ``max_backoff``).
        timeout: seconds for one HTTP request.
        max_queue: backlog bound; when full the oldest waiting notification is dropped.
        headers: extra HTTP headers (e.g. an authorization header of the receiver).
        clock: ``time.time`` by default (notification timestamps).
    """

    def __init__(
        self,
        url: str,
        *,
        style: Style = "json",
        service: str = "aioresil",
        routing_key: str | None = None,
        dedup_seconds: float = 300.0,
        max_per_minute: int = 30,
        retries: int = 5,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        timeout: float = 5.0,
        max_queue: int = 1000,
        headers: dict[str, str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("url must be an http:// or https:// URL with a host")
        if style not in ("slack", "json", "pagerduty"):
            raise ValueError(f"style must be 'slack', 'json' or 'pagerduty', got {style!r}")
        if style == "pagerduty" and not routing_key:
            raise ValueError("style='pagerduty' needs routing_key (the integration key)")
        for name, value in (
            ("dedup_seconds", dedup_seconds),
            ("backoff", backoff),
            ("max_backoff", max_backoff),
        ):
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if not math.isfinite(timeout) or timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}")
        if max_per_minute < 1 or retries < 0 or max_queue < 1:
            raise ValueError("need max_per_minute >= 1, retries >= 0 and max_queue >= 1")
        self.url = url
        self.style: Style = style
        self.service = service
        self.routing_key = routing_key
        self.dedup_seconds = dedup_seconds
        self.max_per_minute = max_per_minute
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.timeout = timeout
        self.headers = dict(headers or {})
        self._clock = clock
        self._queue: deque[Notification] = deque(maxlen=max_queue)
        self._wakeup: asyncio.Event | None = None
        self._idle: asyncio.Event | None = None  # set while nothing is queued or sending
        self._busy = False
        self._worker: asyncio.Task[None] | None = None
        self._watchers: list[asyncio.Task[None]] = []
        self._pending_dlq: list[tuple[DeadLetterQueue, int, int, float]] = []
        # (kind, subject) -> (state last delivered, monotonic time it was delivered)
        self._last_sent: dict[tuple[str, str], tuple[str, float]] = {}
        self._sent_times: deque[float] = deque()
        self._counts = {"sent": 0, "failed": 0, "retried": 0, "deduplicated": 0, "dropped": 0}
        self._closed = False

    # ------------------------------------------------------------------ sources

    def notify(self, note: Notification) -> None:
        """Queue ``note`` for sending; never blocks, never raises (called from listeners)."""
        if self._closed:
            return
        if len(self._queue) == self._queue.maxlen:
            self._counts["dropped"] += 1  # the deque drops the oldest
        self._queue.append(note)
        if self._idle is not None:
            self._idle.clear()
        if self._wakeup is not None:
            self._wakeup.set()

    def on_event(self, event: BreakerEvent) -> None:
        """A breaker listener: queues a notification for every :class:`StateChanged`."""
        if not isinstance(event, StateChanged) or event.old is event.new:
            return
        new, old = event.new, event.old
        resolved = new in _RESOLVING and old not in _RESOLVING
        verb = {
            CircuitState.OPEN: "opened: calls are rejected",
            CircuitState.FORCED_OPEN: "was forced open by an operator",
            CircuitState.HALF_OPEN: "is half-open: trial calls are let through",
            CircuitState.CLOSED: "closed: calls flow again",
            CircuitState.DISABLED: "was disabled: every call is let through",
        }[new]
        trigger = event.trigger.value if event.trigger is not None else "external"
        self.notify(
            Notification(
                kind="breaker",
                subject=event.name,
                state=new.value,
                previous=old.value,
                severity=_SEVERITY[new],
                message=f"circuit {event.name!r} {verb} (was {old.value}, {trigger})",
                at=event.at,
                resolved=resolved,
                details={"trigger": trigger, "retry_after": event.retry_after},
            )
        )

    def watch_registry(self, registry: BreakerRegistry) -> None:
        """Notify the transitions of every breaker of ``registry``, present and future."""
        registry.add_listener(self.on_event)

    def watch_dlq(
        self,
        dlq: DeadLetterQueue,
        *,
        warning_threshold: int = 10,
        critical_threshold: int = 50,
        interval: float = 15.0,
    ) -> None:
        """Poll ``dlq``'s size every ``interval`` seconds (once :meth:`start` ran) and notify
        when it crosses a threshold, up or down (``ok`` < warning <= ``warning`` < critical
        <= ``critical``)."""
        if not 0 <= warning_threshold <= critical_threshold:
            raise ValueError("need 0 <= warning_threshold <= critical_threshold")
        if not math.isfinite(interval) or interval <= 0:
            raise ValueError(f"interval must be > 0 seconds, got {interval!r}")
        self._pending_dlq.append((dlq, warning_threshold, critical_threshold, interval))
        if self._worker is not None:
            self._start_dlq_watchers()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start the sending worker (and the DLQ watchers) on the running loop."""
        if self._worker is not None:
            return
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        if self._queue:
            self._wakeup.set()
        else:
            self._idle.set()
        self._worker = asyncio.ensure_future(self._run())
        self._start_dlq_watchers()

    async def aclose(self, *, drain_timeout: float = 5.0) -> None:
        """Stop watching, send what is queued or being sent (for at most ``drain_timeout``
        s), stop.

        Nothing is lost silently: a send still in flight when ``drain_timeout`` expires is
        cancelled and counted in ``failed`` (it was attempted, the receiver may or may not have
        it), and what is still queued, never attempted, is counted in ``dropped``.
        """
        for task in self._watchers:
            task.cancel()
        for task in self._watchers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._closed = True
        worker = self._worker
        if worker is None:
            return
        if self._queue or self._busy:  # the worker may hold the last item: wait for it too
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._drained(), drain_timeout)
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker
        if self._queue:
            self._counts["dropped"] += len(self._queue)
            _log.warning("notifications_dropped_at_close", count=len(self._queue))
            self._queue.clear()

    async def __aenter__(self) -> WebhookNotifier:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def stats(self) -> NotifierStats:
        return NotifierStats(**self._counts, queued=len(self._queue))

    # ------------------------------------------------------------------ worker

    async def _drained(self) -> None:
        """Return once nothing is queued or being sent."""
        assert self._idle is not None
        await self._idle.wait()

    async def wait_idle(self) -> None:
        """Wait until every queued notification was sent, dropped or given up (tests,
        graceful shutdown); returns at once before :meth:`start`."""
        if self._idle is not None:
            await self._idle.wait()

    async def _run(self) -> None:
        assert self._wakeup is not None
        while True:
            if not self._queue:
                assert self._idle is not None
                self._idle.set()
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            note = self._queue.popleft()
            self._busy = True
            try:
                await self._deliver(note)
            except asyncio.CancelledError:  # aclose gave up on this send: count it
                self._counts["failed"] += 1
                _log.warning("notification_not_delivered", subject=note.subject, reason="cancelled")
                raise
            except Exception:  # never let one notification end the worker
                _log.exception("notification_failed", subject=note.subject)
            finally:
                self._busy = False

    async def _deliver(self, note: Notification) -> None:
        now = time.monotonic()
        key = (note.kind, note.subject)
        last = self._last_sent.get(key)
        if last is not None and last[0] == note.state and now - last[1] < self.dedup_seconds:
            self._counts["deduplicated"] += 1
            return
        while self._sent_times and now - self._sent_times[0] >= 60.0:
            self._sent_times.popleft()
        if len(self._sent_times) >= self.max_per_minute:
            self._counts["dropped"] += 1
            _log.warning("notification_rate_limited", subject=note.subject, state=note.state)
            return
        self._sent_times.append(now)
        body = render_body(note, self.style, service=self.service, routing_key=self.routing_key)
        payload = json.dumps(body, default=str).encode()
        for attempt in range(self.retries + 1):
            retry_after: float | None = None
            try:
                status, retry_after = await asyncio.wait_for(
                    _post(self.url, payload, self.headers), self.timeout
                )
            except (TimeoutError, OSError, ValueError) as exc:
                status, reason = 0, f"{type(exc).__name__}: {exc}"
            else:
                reason = f"HTTP {status}"
                if 200 <= status < 300:
                    self._counts["sent"] += 1
                    self._remember(key, note.state)
                    return
                if status != 429 and status < 500:
                    break  # the receiver refuses this request: retrying will not help
            if attempt == self.retries:
                break
            self._counts["retried"] += 1
            delay = min(self.backoff * 2**attempt, self.max_backoff)
            delay = delay * (0.5 + random.random() / 2)  # jitter: replicas do not align
            if retry_after is not None:
                delay = max(delay, min(retry_after, self.max_backoff))
            _log.info("notification_retry", subject=note.subject, reason=reason, delay=delay)
            await asyncio.sleep(delay)
        self._counts["failed"] += 1
        _log.warning("notification_not_delivered", subject=note.subject, reason=reason)

    def _remember(self, key: tuple[str, str], state: str) -> None:
        """Record ``state`` as the last delivered for ``key`` (only a delivery counts: after a
        failed or rate-limited send, the same state again is not a repeat for the receiver)."""
        now = time.monotonic()
        self._last_sent[key] = (state, now)
        if len(self._last_sent) > 10_000:
            self._last_sent = {
                k: v for k, v in self._last_sent.items() if now - v[1] < self.dedup_seconds
            }

    # ------------------------------------------------------------------ DLQ watching

    def _start_dlq_watchers(self) -> None:
        while self._pending_dlq:
            dlq, warning, critical, interval = self._pending_dlq.pop()
            self._watchers.append(
                asyncio.ensure_future(self._watch_dlq(dlq, warning, critical, interval))
            )

    async def _watch_dlq(
        self, dlq: DeadLetterQueue, warning: int, critical: int, interval: float
    ) -> None:
        level = "ok"
        while True:
            try:
                count = await dlq.count()
            except Exception as exc:  # Redis down: no crossing can be judged; try again later
                _log.info("notifier_dlq_unreadable", queue=dlq.name, error=type(exc).__name__)
            else:
                new = "critical" if count >= critical else "warning" if count >= warning else "ok"
                if new != level:
                    threshold = {"critical": critical, "warning": warning, "ok": warning}[new]
                    if new == "ok":
                        message = f"dead letter queue {dlq.name!r} is back under {warning} entries"
                    else:
                        message = (
                            f"dead letter queue {dlq.name!r} holds {count} entries "
                            f"({new} threshold {threshold})"
                        )
                    self.notify(
                        Notification(
                            kind="dlq",
                            subject=dlq.name,
                            state=new,
                            previous=level,
                            severity="info" if new == "ok" else new,
                            message=message,
                            at=self._clock(),
                            resolved=new == "ok",
                            details={"entries": count, "warning": warning, "critical": critical},
                        )
                    )
                    level = new
            await asyncio.sleep(interval)


async def _post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, float | None]:
    """POST ``body`` as JSON; ``(status, Retry-After seconds or None)``."""
    parts = urlsplit(url)
    secure = parts.scheme == "https"
    host = parts.hostname or ""
    port = parts.port or (443 if secure else 80)
    context = ssl.create_default_context() if secure else None
    reader, writer = await asyncio.open_connection(host, port, ssl=context)
    try:
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        netloc = host if parts.port is None else f"{host}:{port}"
        lines = [
            f"POST {target} HTTP/1.1",
            f"Host: {netloc}",
            "Content-Type: application/json",
            f"Content-Length: {len(body)}",
            "User-Agent: aioresil-notifier",
            "Connection: close",
            *(f"{k}: {v}" for k, v in headers.items()),
        ]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        await writer.drain()
        status_line = await reader.readline()
        fields = status_line.decode("latin-1").split(" ", 2)
        if len(fields) < 2 or not fields[0].startswith("HTTP/") or not fields[1].isdigit():
            raise ValueError(f"not an HTTP response: {status_line[:80]!r}")
        retry_after: float | None = None
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == "retry-after":
                with contextlib.suppress(ValueError):
                    retry_after = max(float(value.strip()), 0.0)
        return int(fields[1]), retry_after
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
