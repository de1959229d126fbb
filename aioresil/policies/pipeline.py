"""``pipeline()``: compose policies and breakers, outermost first, optionally into a DLQ.

Why outermost first: it reads like the nesting it builds (Polly v8's convention).
``pipeline(a, b, c).call(fn)`` is ``a.call(b.call, c.call, fn)``: ``a`` sees what ``b`` makes
of what ``c`` makes of the call. The recommended order::

    pipeline(
        Fallback(...),        # sees only the final failure
        Timeout(total),       # bounds the whole call, retries and waits included
        Retry(...),           # retries what the inner stages raise (honours retry_after)
        breaker,              # a rejection (CircuitOpenError.retry_after) is retried after the hint
        Bulkhead(...),        # or RateLimiter(...): a slot per attempt, not held while waiting
        Timeout(per_attempt), # bounds one attempt, the breaker counts it as a failure
    )

Order changes behaviour, and the tests pin it: a ``Timeout`` outside ``Retry`` cancels the
retries when its time is up; inside, each attempt gets its own time and a timeout is retried.
A breaker outside the retry counts one failure per call; inside, one per attempt.

``to_dlq=(dlq, "task_type")`` sends a call's final failure (an ``Exception``, never a
cancellation) to a dead letter queue, with the number of attempts the outermost ``Retry``
made, and re-raises it: the caller still sees the error.

A pipeline is a stage of another pipeline the way it is a decorator: the call's own function
and arguments travel through both (each run carries the rest of the outer chain as its
"tail"), so ``pipeline(Fallback(...), guarded)`` dead-letters the caller's arguments, not our
internals. Orders that cannot work are refused when the pipeline is built, naming the order to
use: a ``Fallback`` that handles every ``Exception`` inside a ``Retry`` (never retried), inside
a breaker (never opens) or inside a pipeline with ``to_dlq`` (nothing reaches the queue); a
pipeline with ``to_dlq`` inside a ``Retry`` (every failed attempt dead-lettered, even those a
retry then recovers) or inside another one with ``to_dlq`` (dead-lettered twice).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, ParamSpec, Protocol, TypeVar, runtime_checkable

from ..core.config import BreakerConfig
from .base import Statistics, StatsAlias, check_name, log
from .fallback import Fallback
from .retry import Retry

__all__ = ["Pipeline", "PipelineStatistics", "SupportsPush", "pipeline"]

P = ParamSpec("P")
R = TypeVar("R")


@runtime_checkable
class SupportsPush(Protocol):
    """What ``to_dlq`` needs: ``aioresil``'s dead letter queue (or anything with ``push``)."""

    async def push(
        self,
        task_type: str,
        payload: Any,
        error: BaseException | str,
        *,
        attempts: int = 1,
        task_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Any: ...


@dataclass(frozen=True, slots=True)
class PipelineStatistics(Statistics):
    """``calls`` through the pipeline, ``failures`` that escaped it, ``dead_lettered`` of
    them pushed to the DLQ and ``dlq_errors`` whose push failed (logged)."""

    name: str
    calls: int
    failures: int
    dead_lettered: int
    dlq_errors: int


class _Run:
    """One call travelling through the stages.

    ``tail`` is set when this pipeline runs as a stage of another one: the outer pipeline's
    remaining layers and its own run, called where this chain would call the function.
    """

    __slots__ = ("args", "attempts", "fn", "kwargs", "tail")

    def __init__(
        self,
        fn: Callable[..., Awaitable[Any]],
        args: Any,
        kwargs: Any,
        tail: tuple[Layer, _Run] | None = None,
    ) -> None:
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.attempts = 0
        self.tail = tail


Layer = Callable[[_Run], Awaitable[Any]]


async def _innermost(run: _Run) -> Any:
    tail = run.tail
    if tail is None:
        return await run.fn(*run.args, **run.kwargs)
    rest, outer = tail
    return await rest(outer)


def _wrap(call: Callable[..., Awaitable[Any]], inner: Layer) -> Layer:
    async def layer(run: _Run) -> Any:
        return await call(inner, run)

    return layer


def _nest(nested: Pipeline, inner: Layer) -> Layer:
    async def layer(run: _Run) -> Any:
        return await nested._run(_Run(run.fn, run.args, run.kwargs, (inner, run)))

    return layer


def _describe(stage: Any) -> str:
    if isinstance(stage, Pipeline):
        return f"pipeline {stage.name!r}"
    return type(stage).__name__


def _check_order(stages: tuple[Any, ...], enclosing: list[tuple[str, str]], dlq: bool) -> None:
    """Refuse an order that cannot work, naming the order to use.

    ``enclosing`` holds ``(kind, description)`` of the Retry stages, breakers and
    dead-lettering pipelines around ``stages``, outermost first; nested pipelines are
    checked with their own stages in the context of everything around them.
    """
    around = list(enclosing)
    if dlq:
        around.append(("dlq", "a pipeline with to_dlq"))
    for stage in stages:
        if isinstance(stage, Fallback) and stage.handles_every_error:
            for kind, outer in around:
                if kind == "retry":
                    raise ValueError(
                        f"pipeline order: Fallback {stage.name!r} is inside {outer}, which "
                        "then never sees a failure to retry; put the Fallback outside it, "
                        "first: pipeline(Fallback(...), Retry(...), ...) (or narrow its on=)"
                    )
                if kind == "breaker":
                    raise ValueError(
                        f"pipeline order: Fallback {stage.name!r} is inside {outer}, which "
                        "then never sees a failure and never opens; put the Fallback outside "
                        "it, first: pipeline(Fallback(...), breaker, ...) (or narrow its on=)"
                    )
                if kind == "dlq":
                    raise ValueError(
                        f"pipeline order: Fallback {stage.name!r} is inside {outer}, so "
                        "nothing would ever reach the dead letter queue; put the Fallback "
                        "outside the pipeline that dead-letters: "
                        "pipeline(Fallback(...), pipeline(..., to_dlq=(dlq, 'task')))"
                    )
        if isinstance(stage, Pipeline):
            if stage._dlq is not None:
                for kind, outer in around:
                    if kind == "retry":
                        raise ValueError(
                            f"pipeline order: {_describe(stage)} dead-letters but is inside "
                            f"{outer}: every failed attempt would be dead-lettered, even one "
                            "the retry then recovers; give to_dlq to the pipeline around the "
                            "Retry: pipeline(Retry(...), ..., to_dlq=(dlq, 'task'))"
                        )
                    if kind == "dlq":
                        raise ValueError(
                            f"pipeline order: {_describe(stage)} dead-letters inside "
                            f"{outer}: each failure would be dead-lettered twice; keep "
                            "to_dlq on one of them (the outer one sees the final failure)"
                        )
            _check_order(stage.stages, around, stage._dlq is not None)
        elif isinstance(stage, Retry):
            around.append(("retry", f"Retry {stage.name!r}"))
        elif isinstance(getattr(stage, "config", None), BreakerConfig):
            around.append(("breaker", f"breaker {getattr(stage, 'name', '?')!r}"))


def _counting(inner: Layer) -> Layer:
    async def counted(run: _Run) -> Any:
        run.attempts += 1
        return await inner(run)

    return counted


PayloadBuilder = Callable[..., Any]


class Pipeline(StatsAlias):
    """Stages composed outermost first; build it with :func:`pipeline`."""

    __slots__ = (
        "_calls",
        "_chain",
        "_dead_lettered",
        "_dlq",
        "_dlq_errors",
        "_failures",
        "_payload",
        "_task_type",
        "name",
        "stages",
    )

    def __init__(
        self,
        stages: tuple[Any, ...],
        *,
        to_dlq: tuple[SupportsPush, str] | None,
        dlq_payload: PayloadBuilder | None,
        name: str,
    ) -> None:
        self.name = check_name(name)
        if not stages:
            raise ValueError("pipeline() needs at least one stage")
        for position, stage in enumerate(stages):
            if not callable(getattr(stage, "call", None)):
                raise TypeError(
                    f"pipeline stage {position} ({stage!r}) has no call(fn, *args, **kwargs)"
                )
        self.stages = stages
        self._dlq: SupportsPush | None = None
        self._task_type = ""
        if to_dlq is not None:
            if not isinstance(to_dlq, tuple) or len(to_dlq) != 2:
                raise TypeError("to_dlq must be a (dlq, task_type) pair")
            dlq, task_type = to_dlq
            if not isinstance(dlq, SupportsPush):
                raise TypeError(f"to_dlq: {dlq!r} has no async push(task_type, payload, error)")
            if not isinstance(task_type, str) or not task_type:
                raise ValueError(f"to_dlq: task_type must be a non-empty str, got {task_type!r}")
            self._dlq, self._task_type = dlq, task_type
        if dlq_payload is not None and not callable(dlq_payload):
            raise TypeError(f"dlq_payload must be callable, got {dlq_payload!r}")
        self._payload = dlq_payload
        chain: Layer = _innermost
        retries = [i for i, stage in enumerate(stages) if isinstance(stage, Retry)]
        count_at = retries[0] if retries and self._dlq is not None else -1
        _check_order(stages, [], self._dlq is not None)
        for position in reversed(range(len(stages))):
            if position == count_at:
                chain = _counting(chain)
            stage = stages[position]
            nested = isinstance(stage, Pipeline)
            chain = _nest(stage, chain) if nested else _wrap(stage.call, chain)
        self._chain = chain
        self._calls = 0
        self._failures = 0
        self._dead_lettered = 0
        self._dlq_errors = 0

    async def call(self, fn: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run ``await fn(*args, **kwargs)`` through every stage, outermost first."""
        result: R = await self._run(_Run(fn, args, kwargs))
        return result

    async def _run(self, run: _Run) -> Any:
        self._calls += 1
        try:
            return await self._chain(run)
        except Exception as exc:
            self._failures += 1
            if self._dlq is not None:
                await self._dead_letter(run, exc)
            raise

    def __call__(self, fn: Callable[P, Awaitable[R]]) -> Callable[P, Coroutine[Any, Any, R]]:
        """Decorate an ``async def`` so that every call runs through the pipeline."""
        if not inspect.iscoroutinefunction(fn):
            raise TypeError(f"@pipeline decorates async functions; {fn!r} is not one")
        call = self.call

        @functools.wraps(fn)
        async def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
            return await call(fn, *args, **kwargs)

        return guarded

    async def _dead_letter(self, run: _Run, error: Exception) -> None:
        # The user's error always propagates; a failing push is logged and counted, never
        # raised in its place.
        dlq = self._dlq
        assert dlq is not None
        attempts = max(run.attempts, 1)
        try:
            if self._payload is not None:
                payload = self._payload(*run.args, **run.kwargs)
            else:
                payload = {"args": list(run.args), "kwargs": dict(run.kwargs)}
            await dlq.push(
                self._task_type,
                payload,
                error,
                attempts=attempts,
                metadata={
                    "pipeline": self.name,
                    "function": getattr(run.fn, "__qualname__", repr(run.fn)),
                },
            )
        except Exception as push_error:
            self._dlq_errors += 1
            log.error(
                "dlq_push_failed",
                pipeline=self.name,
                task_type=self._task_type,
                error=repr(error),
                push_error=repr(push_error),
            )
            return
        self._dead_lettered += 1
        log.warning(
            "dead_lettered",
            pipeline=self.name,
            task_type=self._task_type,
            attempts=attempts,
            error=repr(error),
        )

    def stats(self) -> PipelineStatistics:
        return PipelineStatistics(
            name=self.name,
            calls=self._calls,
            failures=self._failures,
            dead_lettered=self._dead_lettered,
            dlq_errors=self._dlq_errors,
        )

    def __repr__(self) -> str:
        inner = ", ".join(repr(stage) for stage in self.stages)
        return f"<Pipeline {self.name!r}: {inner}>"


def pipeline(
    *stages: Any,
    to_dlq: tuple[SupportsPush, str] | None = None,
    dlq_payload: PayloadBuilder | None = None,
    name: str = "pipeline",
) -> Pipeline:
    """Compose policies and breakers, outermost first.

    Args:
        stages: objects with ``async call(fn, *args, **kwargs)``: :class:`Retry`,
            :class:`Timeout`, :class:`Bulkhead`, :class:`RateLimiter`, :class:`Fallback`,
            :class:`~aioresil.CircuitBreaker`, another pipeline, or your own.
        to_dlq: ``(dlq, task_type)``: push the final failure there (then re-raise it).
        dlq_payload: builds the DLQ payload from the call's arguments (it must be
            JSON-serializable); ``{"args": [...], "kwargs": {...}}`` by default.
        name: for logs and statistics.

    Example::

        guarded = pipeline(Timeout(10), Retry(3), breaker, Bulkhead(20), Timeout(2),
                           to_dlq=(dlq, "charge"))

        @guarded
        async def charge(card_id: str, cents: int) -> str: ...
    """
    return Pipeline(stages, to_dlq=to_dlq, dlq_payload=dlq_payload, name=name)
