"""Small helpers shared by the breaker tests."""

from __future__ import annotations

from aioresil import CircuitBreaker, CircuitOpenError


class Boom(Exception):
    """The failure our fake upstream raises."""


async def fail(breaker: CircuitBreaker, exc: BaseException | None = None) -> None:
    """Run one failing call through ``breaker`` (the error must propagate unchanged)."""
    error = exc if exc is not None else Boom("upstream down")
    try:
        async with breaker:
            raise error
    except BaseException as caught:
        assert caught is error, f"expected the user's own exception, got {caught!r}"
    else:  # pragma: no cover - the block always raises
        raise AssertionError("no exception")


async def succeed(breaker: CircuitBreaker) -> None:
    async with breaker:
        pass


async def rejected(breaker: CircuitBreaker) -> CircuitOpenError:
    """Assert that ``breaker`` rejects a call without running its block; return the error."""
    ran = False
    try:
        async with breaker:
            ran = True
    except CircuitOpenError as error:
        assert not ran
        return error
    raise AssertionError(f"call was not rejected (state {breaker.state.value})")
