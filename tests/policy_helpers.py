"""Helpers for the policy tests: run a test on asyncio and trio, a sleep that moves a fake clock.

Why not ``@pytest.mark.anyio`` on ``async def`` tests: with ``asyncio_mode = "auto"``,
pytest-asyncio claims every coroutine test first and runs it on asyncio, even the trio
parametrization (checked: both ids ran under asyncio). So :func:`on_both_backends` turns the
coroutine into a plain test that takes anyio's ``anyio_backend`` fixture (parametrized over
``asyncio`` and ``trio`` in each test module) and runs it with ``anyio.run`` on that backend.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio
import anyio.lowlevel
import sniffio

from aioresil.testing import FakeClock

BACKENDS = ["asyncio", "trio"]


def on_both_backends(test: Callable[[], Awaitable[None]]) -> Callable[[str], None]:
    """Run the coroutine test on the module's ``anyio_backend`` (asyncio and trio)."""

    def run(anyio_backend: str) -> None:
        async def checked() -> None:
            assert sniffio.current_async_library() == anyio_backend
            await test()

        anyio.run(checked, backend=anyio_backend)

    run.__name__ = test.__name__
    run.__qualname__ = test.__qualname__
    run.__doc__ = test.__doc__
    return run


class FakeSleep:
    """An ``async sleep(seconds)`` that records each wait and advances a :class:`FakeClock`."""

    def __init__(self, clock: FakeClock | None = None) -> None:
        self.clock = clock
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        if self.clock is not None:
            self.clock.advance(seconds)
        await anyio.lowlevel.checkpoint()


class Boom(Exception):
    """A retryable failure."""


class Flaky:
    """``await flaky()`` fails ``failures`` times with ``Boom`` (each a new instance), then
    returns ``"ok"``; ``calls`` counts every call, ``errors`` keeps what it raised."""

    def __init__(self, failures: int, error: Callable[[], Exception] = lambda: Boom("down")):
        self.failures = failures
        self.calls = 0
        self.errors: list[Exception] = []
        self._error = error

    async def __call__(self, *args: object, **kwargs: object) -> str:
        self.calls += 1
        await anyio.lowlevel.checkpoint()
        if self.calls <= self.failures:
            error = self._error()
            self.errors.append(error)
            raise error
        return "ok"
