"""The health of one shared backend, as a small explicit state machine.

Why one machine per backend and not per breaker: when Redis is black-holed, out of memory or
read-only, it is so for every breaker, store and policy on that connection pool. The first
operation that learns it marks the backend ``UNAVAILABLE``; from then on every operation is
refused *before* touching a socket (microseconds, not a socket timeout each), so breakers
decide by their ``on_backend_error`` policy at once, and the DLQ spools at once. One
background probe (with exponential backoff) asks Redis whether it can serve us again; when it
can, the backend is ``RECOVERING`` while the recovery hooks run (breakers re-read their shared
state, the DLQ flushes its spool), then ``HEALTHY``.

Transitions (everything that changes the state is in :data:`TRANSITIONS`)::

    HEALTHY     --outage-->      UNAVAILABLE   (start the probe)
    UNAVAILABLE --probe_ok-->    RECOVERING    (run the recovery hooks)
    RECOVERING  --recovered-->   HEALTHY
    RECOVERING  --outage-->      UNAVAILABLE   (probe again, longer backoff)

No Redis and no I/O here: the backend passes in the probe and the hooks.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from .._log import get_logger
from ..exceptions import BackendUnavailableError

__all__ = [
    "TRANSITIONS",
    "BackendHealth",
    "BackendHealthStats",
    "BackendState",
    "BackendStateChanged",
]

_log = get_logger("aioresil")


class BackendState(enum.Enum):
    """Whether a shared backend can serve calls (see :mod:`aioresil.backends.backend_health`)."""

    HEALTHY = "healthy"
    UNAVAILABLE = "unavailable"
    RECOVERING = "recovering"


HEALTHY = BackendState.HEALTHY
UNAVAILABLE = BackendState.UNAVAILABLE
RECOVERING = BackendState.RECOVERING

TRANSITIONS: dict[tuple[BackendState, str], BackendState] = {
    (HEALTHY, "outage"): UNAVAILABLE,
    (RECOVERING, "outage"): UNAVAILABLE,
    (UNAVAILABLE, "probe_ok"): RECOVERING,
    (RECOVERING, "recovered"): HEALTHY,
}
"""``(state, event) -> new state``; a pair not in the table leaves the state as it is."""


@dataclass(frozen=True, slots=True)
class BackendStateChanged:
    """A shared backend moved from ``old`` to ``new`` (``reason``: the error, or the probe)."""

    backend: str
    old: BackendState
    new: BackendState
    at: float
    reason: str


@dataclass(frozen=True, slots=True)
class BackendHealthStats:
    """A snapshot of :class:`BackendHealth` (for ``/health`` and ``/metrics``)."""

    state: BackendState
    reason: str
    """The error that made the backend unavailable (empty while healthy)."""
    since: float
    """Wall-clock Unix seconds of the last change."""
    outages: int
    """How many times the backend became unavailable."""

    @property
    def up(self) -> bool:
        """False only while ``UNAVAILABLE`` (``RECOVERING`` serves calls again)."""
        return self.state is not UNAVAILABLE

    def to_dict(self) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "reason": self.reason,
            "since": self.since,
            "outages": self.outages,
            "up": self.up,
        }


StateListener = Callable[[BackendStateChanged], None]


class BackendHealth:
    """The state machine, its probe task and its listeners.

    Args:
        name: the backend's name in events and logs.
        probe: one check that Redis can serve us (it raises when it cannot).
        recover: hooks awaited in ``RECOVERING`` (breakers resync, spools flush).
        min_backoff, max_backoff: seconds between probes, doubling from one to the other.
    """

    def __init__(
        self,
        name: str,
        probe: Callable[[], Awaitable[None]],
        *,
        min_backoff: float = 0.05,
        max_backoff: float = 2.0,
    ) -> None:
        self.name = name
        self._probe = probe
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self._state = HEALTHY
        self._reason = ""
        self._since = time.time()
        self._outages = 0
        self._listeners: list[StateListener] = []
        self._recover_hooks: list[Callable[[], Awaitable[None]]] = []
        self._probe_task: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def state(self) -> BackendState:
        return self._state

    def stats(self) -> BackendHealthStats:
        """A snapshot: state, reason, since when, how many outages so far."""
        return BackendHealthStats(self._state, self._reason, self._since, self._outages)

    def subscribe(self, listener: StateListener) -> None:
        """Call ``listener(event)`` on every change of state."""
        self._listeners.append(listener)

    def unsubscribe(self, listener: StateListener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def on_recover(self, hook: Callable[[], Awaitable[None]]) -> None:
        """Await ``hook()`` each time the backend comes back, before it is ``HEALTHY``."""
        self._recover_hooks.append(hook)

    def check(self, what: str) -> None:
        """Raise at once (no socket touched) while the backend is known to be unavailable."""
        if self._state is UNAVAILABLE:
            raise BackendUnavailableError(
                f"{what}: Redis is unavailable ({self._reason}); decided locally until a "
                "background probe reaches it again"
            )

    def outage(self, error: BaseException) -> None:
        """An operation learnt that Redis cannot serve us: mark it, start the probe."""
        if self._closed:
            return
        if self._fire("outage", str(error)):
            self._outages += 1
            self._start_probe()

    def _fire(self, event: str, reason: str) -> bool:
        old = self._state
        new = TRANSITIONS.get((old, event))
        if new is None:
            return False
        self._state = new
        self._since = time.time()
        self._reason = reason if new is UNAVAILABLE else ""
        log = _log.warning if new is UNAVAILABLE else _log.info
        log("backend_state_changed", backend=self.name, old=old.value, new=new.value, reason=reason)
        change = BackendStateChanged(self.name, old, new, self._since, reason)
        for listener in list(self._listeners):
            try:
                listener(change)
            except Exception:  # a listener's bug must not stop the machine
                _log.exception("backend_state_listener_failed", backend=self.name)
        return True

    def _start_probe(self) -> None:
        if self._probe_task is not None and not self._probe_task.done():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # pragma: no cover - outages are found by awaited operations
            return
        self._probe_task = loop.create_task(self._probe_loop())

    async def _probe_loop(self) -> None:
        delay = self.min_backoff
        while not self._closed:
            await asyncio.sleep(delay)
            if self._state is not UNAVAILABLE:
                return
            try:
                await self._probe()
            except Exception as exc:
                _log.debug("backend_probe_failed", backend=self.name, error=str(exc))
                delay = min(delay * 2, self.max_backoff)
                continue
            self._fire("probe_ok", "probe succeeded")
            for hook in list(self._recover_hooks):
                try:
                    await hook()
                except Exception as exc:  # the hook's own outage marks us again
                    _log.warning("backend_recover_hook_failed", backend=self.name, error=str(exc))
            if self._fire("recovered", "recovery hooks done"):
                return
            delay = min(delay * 2, self.max_backoff)

    async def probe_once(self) -> bool:
        """Probe now, without waiting for the next backoff step; whether Redis is usable.

        For shutdown: a backend closing while ``UNAVAILABLE`` must not refuse its last
        flush only because the background probe has not run since Redis came back. On
        success the state moves on exactly as after a background probe (hooks included).
        """
        if self._state is HEALTHY:
            return True
        if self._state is RECOVERING:
            return False
        try:
            await self._probe()
        except Exception as exc:
            _log.debug("backend_probe_failed", backend=self.name, error=str(exc))
            return False
        if self._state is not UNAVAILABLE:
            return self._state is HEALTHY
        self._fire("probe_ok", "probe succeeded")
        for hook in list(self._recover_hooks):
            try:
                await hook()
            except Exception as exc:
                _log.warning("backend_recover_hook_failed", backend=self.name, error=str(exc))
        return self._fire("recovered", "recovery hooks done")

    async def aclose(self) -> None:
        self._closed = True
        task = self._probe_task
        if task is not None and not task.done():
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
