"""Failover: try alternatives in order (model providers, replicas, regions) until one answers.

Why a policy of its own rather than nested ``Fallback``\\ s: an agent with two model providers
wants "the first provider whose circuit is not open, and the next one if it fails", with a
record of which one answered. Nested fallbacks cannot skip an open circuit without calling it,
and they lose the name of the alternative that answered.

Rules:

* Alternatives are tried in the order given. One whose breaker rejects the call
  (:class:`~aioresil.CircuitOpenError`, raised by the alternative's own ``breaker=`` or by
  anything inside the call, e.g. :class:`aioresil.integrations.httpx.ResilientTransport`, also
  when an SDK wrapped it as the ``__cause__`` of its own error) is *skipped*: that costs no call
  to the upstream, and the next alternative runs at once.
* An alternative that fails with a handled error (``on=``, every ``Exception`` by default)
  falls through to the next one. An unhandled error propagates at once; cancellation is never
  handled.
* When every alternative was skipped because its circuit is open, a ``CircuitOpenError``
  named after the failover is raised whose ``retry_after`` is the *soonest* of the
  alternatives' (so a :class:`Retry` around the failover waits exactly until the first one may
  be tried again). When at least one alternative really failed, the last real failure
  propagates unchanged (the earlier ones are listed in its ``__notes__``).
* Every call that an alternative answered emits :class:`~aioresil.FailoverAnswered` naming it
  (and what was skipped or failed before it), logged as ``failover_answered``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from ..core.states import CircuitState
from ..exceptions import CircuitOpenError
from .base import ExceptionFilter, PolicyBase, Statistics, check_name, exception_filter, log
from .events import FailoverAnswered

__all__ = ["Alternative", "Failover", "FailoverStatistics", "circuit_open_error_in"]

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class Alternative(Generic[T]):
    """One alternative of a :class:`Failover`.

    Attributes:
        name: names it in events, logs and statistics (``"openai"``, ``"backup-region"``).
        target: what the call function receives first (a client, a base URL, a model name).
        breaker: optional :class:`~aioresil.CircuitBreaker` the call runs under. Leave it out
            when the target already guards itself (a client on a ``ResilientTransport``):
            its rejections are recognised all the same.
    """

    name: str
    target: T
    breaker: Any = None


@dataclass(frozen=True, slots=True)
class FailoverStatistics(Statistics):
    """``calls`` through the failover; ``answered`` by the first alternative (``primary``) or
    a later one (``failed_over``); ``exhausted`` calls where none answered; ``skipped`` and
    ``failures`` count alternatives passed over (open circuit) or failed, over all calls."""

    name: str
    calls: int
    primary: int
    failed_over: int
    exhausted: int
    skipped: int
    failures: int


def circuit_open_error_in(error: BaseException) -> CircuitOpenError | None:
    """The :class:`CircuitOpenError` ``error`` is, or was raised from (``__cause__`` chain).

    SDKs built on httpx (Anthropic's, OpenAI's older versions) wrap whatever their transport
    raises in their own connection error ``from`` it; the rejection is still in the chain.
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, CircuitOpenError):
            return current
        seen.add(id(current))
        current = current.__cause__
    return None


class Failover(PolicyBase, Generic[T]):
    """Call the first alternative that answers; skip those whose circuit is open.

    Args:
        alternatives: :class:`Alternative` objects or ``(name, target)`` /
            ``(name, target, breaker)`` tuples, tried in this order (at least one).
        on: which failures fall through to the next alternative: an ``Exception`` class, a
            tuple of them, or a predicate. Anything else propagates at once.
        name: for events, logs, statistics and the all-open ``CircuitOpenError``.

    Example::

        providers = Failover([("primary", primary_client), ("backup", backup_client)])

        async def ask(client: openai.AsyncOpenAI, question: str) -> str:
            reply = await client.chat.completions.create(model="m", messages=[...])
            return reply.choices[0].message.content

        answer = await providers.call(ask, "What is a circuit breaker?")
    """

    __slots__ = (
        "_calls",
        "_exhausted",
        "_failed_over",
        "_failures",
        "_handles",
        "_primary",
        "_skipped",
        "alternatives",
    )

    def __init__(
        self,
        alternatives: Sequence[Alternative[T] | tuple[str, T] | tuple[str, T, Any]],
        *,
        on: type[BaseException] | tuple[type[BaseException], ...] | ExceptionFilter = (Exception,),
        name: str = "failover",
    ) -> None:
        super().__init__(name, None)
        built: list[Alternative[T]] = []
        for position, alternative in enumerate(alternatives):
            if isinstance(alternative, tuple) and len(alternative) in (2, 3):
                alternative = Alternative(*alternative)
            if not isinstance(alternative, Alternative):
                raise TypeError(
                    f"Failover {name!r}: alternative {position} must be an Alternative or a "
                    f"(name, target[, breaker]) tuple, got {alternative!r}"
                )
            check_name(alternative.name)
            breaker = alternative.breaker
            if breaker is not None and not callable(getattr(breaker, "call", None)):
                raise TypeError(
                    f"Failover {name!r}: the breaker of {alternative.name!r} has no "
                    f"call(fn, *args), got {breaker!r}"
                )
            built.append(alternative)
        if not built:
            raise ValueError(f"Failover {name!r} needs at least one alternative")
        names = [a.name for a in built]
        if len(set(names)) != len(names):
            raise ValueError(f"Failover {name!r}: alternative names must be unique, got {names}")
        self.alternatives: tuple[Alternative[T], ...] = tuple(built)
        self._handles = exception_filter(on, f"Failover {name!r}")
        self._calls = 0
        self._primary = 0
        self._failed_over = 0
        self._exhausted = 0
        self._skipped = 0
        self._failures = 0

    async def call(
        self, fn: Callable[..., Awaitable[R]], /, *args: Any, **kwargs: Any
    ) -> R:  # the target is prepended to the arguments, so no ParamSpec can describe fn
        """``await fn(alternative.target, *args, **kwargs)`` for each alternative in turn,
        until one returns."""
        self._calls += 1
        skipped: list[str] = []
        failed: list[str] = []
        soonest: float | None = None
        last_error: Exception | None = None
        for alternative in self.alternatives:
            try:
                if alternative.breaker is not None:
                    result: R = await alternative.breaker.call(
                        fn, alternative.target, *args, **kwargs
                    )
                else:
                    result = await fn(alternative.target, *args, **kwargs)
            except Exception as exc:
                rejection = circuit_open_error_in(exc)
                if rejection is not None:
                    skipped.append(alternative.name)
                    self._skipped += 1
                    hint = rejection.retry_after
                    if hint is not None and (soonest is None or hint < soonest):
                        soonest = hint
                    continue
                if not self._handles(exc):
                    raise
                failed.append(alternative.name)
                self._failures += 1
                if last_error is not None:
                    exc.add_note(f"failover {self.name!r}: earlier failure {last_error!r}")
                last_error = exc
                log.info(
                    "failover_fell_through",
                    policy=self.name,
                    alternative=alternative.name,
                    error=repr(exc),
                )
                continue
            self._answered(alternative.name, skipped, failed)
            return result
        self._exhausted += 1
        if last_error is not None:
            raise last_error
        # Every circuit is open: the soonest retry_after tells a caller when to come back
        # (None only when no alternative could say, e.g. all forced open).
        raise CircuitOpenError(self.name, CircuitState.OPEN, soonest)

    def _answered(self, name: str, skipped: list[str], failed: list[str]) -> None:
        if skipped or failed:
            self._failed_over += 1
        else:
            self._primary += 1
        log.info(
            "failover_answered",
            policy=self.name,
            alternative=name,
            skipped=skipped,
            failed=failed,
        )
        if self._listeners:
            self._dispatch(
                FailoverAnswered(self.name, name, tuple(skipped), tuple(failed), self._clock.time())
            )

    def stats(self) -> FailoverStatistics:
        return FailoverStatistics(
            name=self.name,
            calls=self._calls,
            primary=self._primary,
            failed_over=self._failed_over,
            exhausted=self._exhausted,
            skipped=self._skipped,
            failures=self._failures,
        )

    def __repr__(self) -> str:
        names = ", ".join(a.name for a in self.alternatives)
        return f"<Failover {self.name!r}: {names}>"
