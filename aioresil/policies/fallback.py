"""Fallback: when the call fails with a handled error, answer with something else.

Why it is usually the outermost stage of a pipeline: it should see the *final* failure (after
retries, the breaker's rejection, the total timeout), not each attempt's. Cancellation is
never handled: a cancelled task must stop, not return a default.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar, cast

from ..clock import Clock
from .base import ExceptionFilter, PolicyBase, Statistics, exception_filter, log

__all__ = ["Fallback", "FallbackStatistics"]

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class FallbackStatistics(Statistics):
    """``calls`` that ran, and how many of them were answered by the handler."""

    name: str
    calls: int
    fallbacks: int


class Fallback(PolicyBase):
    """Replace a handled failure by the handler's answer.

    Args:
        handler: called with the exception; returns the value to use (or an awaitable of
            it). It may raise, e.g. to translate the error.
        on: which failures are handled: an ``Exception`` class, a tuple of them, or a
            predicate ``exc -> bool``. Anything else propagates unchanged.
        name: for logs and statistics.

    Example::

        cached = Fallback(lambda error: CACHE.get("rates"), on=(CircuitOpenError, OSError))

        @cached
        async def rates() -> dict[str, float]: ...
    """

    __slots__ = ("_calls", "_fallbacks", "_handler", "_handles", "handles_every_error")

    def __init__(
        self,
        handler: Callable[[Exception], Any],
        *,
        on: type[BaseException] | tuple[type[BaseException], ...] | ExceptionFilter = (Exception,),
        name: str = "fallback",
        clock: Clock | None = None,
    ) -> None:
        super().__init__(name, clock)
        if not callable(handler):
            raise TypeError(f"handler must be callable, got {handler!r}")
        self._handler = handler
        self._handles = exception_filter(on, f"Fallback {name!r}")
        # Whether no ``Exception`` can get past this fallback: then a Retry, a breaker or a
        # dead letter queue placed outside it would never see a failure, and ``pipeline()``
        # refuses that order. A predicate's coverage is unknowable, so it never counts.
        classes = (on,) if isinstance(on, type) else on
        self.handles_every_error: bool = isinstance(classes, tuple) and any(
            issubclass(Exception, cls) for cls in classes
        )
        self._calls = 0
        self._fallbacks = 0

    async def call(self, fn: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run ``await fn(*args, **kwargs)``; on a handled error return ``handler(error)``."""
        self._calls += 1
        try:
            return await fn(*args, **kwargs)
        except Exception as exc:
            if not self._handles(exc):
                raise
            error = exc
        self._fallbacks += 1
        log.info("fallback_used", policy=self.name, error=repr(error))
        result = self._handler(error)
        if inspect.isawaitable(result):
            result = await result
        return cast(R, result)

    def stats(self) -> FallbackStatistics:
        return FallbackStatistics(name=self.name, calls=self._calls, fallbacks=self._fallbacks)
