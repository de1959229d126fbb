"""What every fleet object needs: who "this instance" is, the time base, the two stores.

Why an instance id of our own (``host:pid:random``): a pid is reused after a restart and a
host name is shared by every process on it; the random suffix makes each *run* distinct, so a
restarted process never inherits the reports of the one it replaced. Reports carry a TTL, so
the id of a dead process ages out on its own.

Why one time base per decision: everything the fleet decides together (which reports are
live, which window bucket a retry falls in, which latency epoch is current) is decided inside
one Lua script with Redis ``TIME``. A backend built with ``clock=`` (tests) passes that clock's
``monotonic()`` instead, so a :class:`~aioresil.testing.FakeClock` drives the shared state, as
it does for breakers. The memory stores use the same rule with the process's clock.
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..backends.base import ScriptRunner

__all__ = [
    "FleetBackend",
    "Split",
    "check_backend",
    "instance_id",
    "memory_now_ms",
    "now_ms_arg",
    "text",
]

FleetBackend = Any
"""A :class:`~aioresil.MemoryBackend` or a :class:`~aioresil.backends.redis.RedisBackend`."""

_INSTANCE: str | None = None


def instance_id() -> str:
    """This process's fleet identity: ``host:pid:random`` (fixed for the process's life).

    >>> instance_id() == instance_id()
    True
    """
    global _INSTANCE
    if _INSTANCE is None or _INSTANCE.split(":")[1] != str(os.getpid()):
        host = socket.gethostname().replace(":", "-")[:64] or "host"
        _INSTANCE = f"{host}:{os.getpid()}:{secrets.token_hex(3)}"
    return _INSTANCE


class Split:
    """A storage factory for ``backend.open_storage`` (the backend contract's double dispatch):
    ``(in-process state, None)`` on a memory backend, ``(None, script runner)`` on Redis."""

    def __init__(self, kind: str, name: str, make: Any) -> None:
        self.kind = kind
        self.name = name
        self.make = make

    def in_process(self, shared: dict[str, Any]) -> tuple[Any, ScriptRunner | None]:
        if self.name not in shared:
            shared[self.name] = self.make()
        return shared[self.name], None

    def on_scripts(self, runner: ScriptRunner) -> tuple[Any, ScriptRunner | None]:
        return None, runner


def check_backend(backend: object, what: str) -> None:
    """A clear error at construction for anything that is not a backend."""
    if not callable(getattr(backend, "open_storage", None)):
        raise TypeError(
            f"{what}: backend must be a MemoryBackend or a RedisBackend, got {backend!r}"
        )


def now_ms_arg(backend: ScriptRunner) -> str:
    """ARGV "now" of the fleet scripts: ``""`` (Redis ``TIME``) or the test clock's ms."""
    clock = backend.clock
    return "" if clock is None else repr(clock.monotonic() * 1000.0)


def memory_now_ms(clock: Any) -> float:
    """ "now" of the memory stores, in ms on the same rule (the clock's monotonic reading)."""
    return (clock.monotonic() if clock is not None else time.monotonic()) * 1000.0


def text(value: Any) -> str:
    """A Redis reply item as ``str``."""
    return value.decode() if isinstance(value, bytes) else str(value)
