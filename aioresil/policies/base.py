"""What every policy shares: the ``Policy`` protocol, the decorator, listeners, input checks.

Why a protocol rather than a base class users must inherit: a :class:`~aioresil.CircuitBreaker`
already has ``await breaker.call(fn, ...)`` and ``@breaker``, so it is a pipeline stage as it
is; so is any object of yours with that one method.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import warnings
from collections.abc import Awaitable, Callable, Coroutine
from contextvars import ContextVar
from typing import Any, Generic, ParamSpec, Protocol, TypeVar, runtime_checkable

import structlog

from ..backends.base import ScriptRunner
from ..clock import Clock, SystemClock
from .events import PolicyEvent, PolicyListener

__all__ = [
    "ExceptionFilter",
    "Policy",
    "PolicyBase",
    "ScriptBackend",
    "Statistics",
    "check_name",
    "check_seconds",
    "exception_filter",
    "script_backend",
]

P = ParamSpec("P")
R = TypeVar("R")

log = structlog.get_logger("aioresil")

ExceptionFilter = Callable[[BaseException], bool]


T = TypeVar("T")


class ContextStack(Generic[T]):
    """Per-task values an ``async with`` policy keeps from ``__aenter__`` to ``__aexit__``.

    ``__aexit__`` receives nothing from ``__aenter__`` and one policy object serves many tasks
    at once (and nests), so the value travels in a ``ContextVar`` as a linked stack.
    """

    __slots__ = ("_var",)

    def __init__(self, name: str) -> None:
        self._var: ContextVar[tuple[T, Any] | None] = ContextVar(name, default=None)

    def push(self, value: T) -> None:
        self._var.set((value, self._var.get()))

    def pop(self, owner: object) -> T:
        """The value of the innermost open block of this task; an error if there is none."""
        stack = self._var.get()
        if stack is None:
            raise RuntimeError(f"{owner!r}: __aexit__ without a matching __aenter__")
        value, parent = stack
        self._var.set(parent)
        return value


class Statistics:
    """Base of every policy's frozen statistics dataclass: ``to_dict()`` for JSON and health."""

    __slots__ = ()

    def to_dict(self) -> dict[str, Any]:
        """Every field by name, JSON-ready (the fields are plain numbers and strings)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}  # type: ignore[arg-type]


class StatsAlias:
    """The pre-0.x name ``statistics()``, kept one release as a deprecated alias of ``stats()``.

    Why ``stats()`` won: breakers, the registry and the stores already used it; one word per
    idea across the API (``tests/test_api_conventions.py`` checks it).
    """

    __slots__ = ()

    def statistics(self) -> Any:
        """Deprecated: use ``stats()`` (same result)."""
        warnings.warn(
            f"{type(self).__name__}.statistics() is deprecated; use .stats()",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.stats()  # type: ignore[attr-defined]


@runtime_checkable
class Policy(Protocol):
    """Anything that can run a coroutine function under some rule.

    ``pipeline()`` accepts every object with this method: the policies of this package and
    :class:`~aioresil.CircuitBreaker`.
    """

    async def call(self, fn: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run ``await fn(*args, **kwargs)`` under the policy."""
        ...


ScriptBackend = ScriptRunner
"""What a fleet-wide policy needs from a backend: keys and Lua scripts (``RedisBackend``)."""


class _ScriptsOrNone:
    """``open_storage`` factory: ``None`` for in-process state, else the script runner."""

    kind = "policy"

    def in_process(self, shared: dict[str, Any]) -> ScriptRunner | None:
        return None

    def on_scripts(self, runner: ScriptRunner) -> ScriptRunner | None:
        return runner


def script_backend(backend: object, what: str) -> ScriptRunner | None:
    """``None`` for in-process state (no backend, or a ``MemoryBackend``), else the backend.

    The backend decides (``open_storage``), so any backend of the contract works; anything
    else is refused early.
    """
    if backend is None:
        return None
    open_storage = getattr(backend, "open_storage", None)
    if not callable(open_storage):
        raise TypeError(
            f"{what}: backend must be a MemoryBackend or a RedisBackend, got {backend!r}"
        )
    runner: ScriptRunner | None = open_storage(_ScriptsOrNone())
    return runner


class PolicyBase(StatsAlias):
    """Decorator, listeners and clock for the policies; subclasses implement :meth:`call`."""

    __slots__ = ("_clock", "_listeners", "name")

    def __init__(self, name: str, clock: Clock | None) -> None:
        self.name = check_name(name)
        if clock is not None and not isinstance(clock, Clock):
            raise TypeError(f"clock must implement aioresil.Clock, got {clock!r}")
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._listeners: list[PolicyListener] = []

    async def call(self, fn: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs) -> R:
        raise NotImplementedError  # pragma: no cover

    def __call__(self, fn: Callable[P, Awaitable[R]]) -> Callable[P, Coroutine[Any, Any, R]]:
        """Decorate an ``async def`` so that every call runs under this policy."""
        if not inspect.iscoroutinefunction(fn):
            raise TypeError(f"@{type(self).__name__} decorates async functions; {fn!r} is not one")
        call = self.call

        @functools.wraps(fn)
        async def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
            return await call(fn, *args, **kwargs)

        return guarded

    def add_listener(self, listener: PolicyListener) -> None:
        """Call ``listener(event)`` for every event of this policy (inline: keep it quick)."""
        if not callable(listener):
            raise TypeError(f"listener must be callable, got {listener!r}")
        self._listeners.append(listener)

    def remove_listener(self, listener: PolicyListener) -> None:
        """Stop calling ``listener``; a ``ValueError`` if it was not added."""
        self._listeners.remove(listener)

    def _dispatch(self, event: PolicyEvent) -> None:
        for listener in tuple(self._listeners):
            try:
                listener(event)
            except Exception:
                log.exception("listener_failed", policy=self.name, listener=repr(listener))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


def check_name(name: object) -> str:
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty str, got {name!r}")
    return name


def check_seconds(what: str, value: object, *, allow_zero: bool = False) -> float:
    """``value`` as a finite float > 0 (or >= 0), else a ``ValueError`` naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{what} must be a number of seconds, got {value!r}")
    seconds = float(value)
    if not math.isfinite(seconds) or seconds < 0 or (seconds == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{what} must be finite and {bound}, got {value!r}")
    return seconds


def exception_filter(
    on: type[BaseException] | tuple[type[BaseException], ...] | ExceptionFilter, what: str
) -> ExceptionFilter:
    """Turn ``on=`` (a class, a tuple of classes, or a predicate) into a predicate.

    Classes must derive from ``Exception``: cancellation (``CancelledError``, trio's
    ``Cancelled``, ``KeyboardInterrupt``) is never retried or replaced by a fallback, and
    saying otherwise is refused here rather than ignored later. A predicate only ever sees
    ``Exception`` instances.
    """
    if isinstance(on, type):
        on = (on,)
    if isinstance(on, tuple):
        if not on:
            raise ValueError(f"{what}: on= must name at least one exception class")
        for cls in on:
            if not isinstance(cls, type) or not issubclass(cls, BaseException):
                raise TypeError(f"{what}: on= holds {cls!r}, which is not an exception class")
            if not issubclass(cls, Exception):
                raise ValueError(
                    f"{what}: on= holds {cls.__name__}, a BaseException that is not an "
                    "Exception; cancellation and interrupts are never handled"
                )
        classes = on

        def matches(exc: BaseException) -> bool:
            return isinstance(exc, classes)

        return matches
    if callable(on):
        predicate = on

        def checked(exc: BaseException) -> bool:
            return isinstance(exc, Exception) and bool(predicate(exc))

        return checked
    raise TypeError(f"{what}: on= must be an exception class, a tuple of them or a predicate")
