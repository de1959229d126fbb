"""What every HTTP integration shares: status classification, ``Retry-After``, hint book,
and running a breaker's enter and exit in a context of their own.

Why a private context per request: a breaker keeps each call's permit in a ``ContextVar``
between ``__aenter__`` and ``__aexit__``. An HTTP response is judged when its body has been
read, after the transport returned, possibly while the same task has other responses of the
same breaker open. Running enter and exit of one request inside one ``contextvars.Context``
of its own keeps each request's permit apart, with nothing but the breaker's public
``async with`` protocol (and it works on asyncio and trio alike).
"""

from __future__ import annotations

import asyncio
import contextvars
import math
import sys
import time
import weakref
from collections.abc import Awaitable, Callable, Generator
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

import structlog

from ..breaker import CircuitBreaker
from ..core.config import BreakerConfig
from ..exceptions import BulkheadFullError, CircuitOpenError, RateLimitExceededError
from ..policies.bulkhead import Bulkhead
from ..policies.ratelimit import RateLimiter
from ..policies.retry import Retry
from ..policies.timeout import Timeout
from ..registry import BreakerRegistry

__all__ = [
    "RETRY_AFTER_STATUSES",
    "Breakers",
    "Classify",
    "FailedResponse",
    "GuardCore",
    "HintBook",
    "Judgement",
    "Policies",
    "UpstreamFailure",
    "breaker_config_check",
    "default_classify",
    "parse_retry_after",
    "release_when_collected",
]

T = TypeVar("T")

_log = structlog.get_logger("aioresil")

RETRY_AFTER_STATUSES = frozenset({429, 503})
"""Statuses whose ``Retry-After`` header is honoured (RFC 9110 names 503 and 3xx; RFC 6585
names 429)."""

Classify = Callable[[int], bool]
"""``status -> True`` when the answer counts as a failure of the upstream."""


def default_classify(status: int) -> bool:
    """5xx and 429 are failures; every other status (4xx included) is the upstream answering.

    A 429 counts because a rate-limited upstream is, for this caller, unavailable; a 404 or
    a 422 is a bug or a bad request of the caller, and must never open a circuit.
    """
    return status >= 500 or status == 429


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP-date), or ``None``.

    Unreadable, negative or non-finite values are ``None`` (ignored), never an error: a header
    from the network must not break the call.
    """
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
        return max(seconds, 0.0) if math.isfinite(seconds) else None
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return seconds


class UpstreamFailure(Exception):
    """Raised inside a breaker to record a failure the integration classified.

    Never seen by callers: the integration catches it outside the breaker and re-raises the
    original error, or hands back the response. A breaker config whose ``record_exceptions``
    does not include it could not count HTTP failures, so integrations refuse such a config
    (see :func:`breaker_config_check`).
    """


class FailedResponse(Exception):
    """An answer that counts as a failure (5xx, 429), travelling through a :class:`Retry`.

    ``retry_after`` is the ``Retry-After`` header's seconds (429/503), so the retry waits at
    least that long. When retries are exhausted the integration returns ``response`` to the
    caller (the upstream's own answer, not an exception of ours).
    """

    def __init__(self, response: Any, status: int, retry_after: float | None) -> None:
        super().__init__(f"upstream answered {status}")
        self.response = response
        self.status = status
        self.retry_after = retry_after


def breaker_config_check(config: BreakerConfig, what: str) -> None:
    """Refuse a config under which the integration's classification could not work."""
    if not issubclass(UpstreamFailure, config.record_exceptions) or issubclass(
        UpstreamFailure, config.ignore_exceptions
    ):
        raise ValueError(
            f"{what}: the breaker config must record Exception (the default "
            "record_exceptions): the integration classifies HTTP outcomes itself and records "
            "failures as exceptions; narrow what counts with classify= instead"
        )


class HintBook:
    """Per-key ``Retry-After`` deadlines: the longer of them and a breaker's own retry_after
    is what a rejection reports.

    Per process, on the monotonic clock. Entries are dropped when read after they passed, so
    the book holds at most the keys that recently answered with ``Retry-After``.
    """

    __slots__ = ("_until",)

    def __init__(self) -> None:
        self._until: dict[str, float] = {}

    def note(self, key: str, seconds: float) -> None:
        until = time.monotonic() + seconds
        if until > self._until.get(key, 0.0):
            self._until[key] = until

    def remaining(self, key: str) -> float | None:
        until = self._until.get(key)
        if until is None:
            return None
        left = until - time.monotonic()
        if left <= 0:
            del self._until[key]
            return None
        return left

    def rejection(self, key: str, error: CircuitOpenError) -> CircuitOpenError:
        """``error``, or a copy whose ``retry_after`` is the longer upstream hint."""
        hint = self.remaining(key)
        if hint is None or (error.retry_after is not None and error.retry_after >= hint):
            return error
        return CircuitOpenError(error.name, error.state, hint)


class _InContext:
    """Call ``method(*args)`` and await what it returns, every step run inside ``context``
    (see the module docstring).

    The call itself runs inside the context too: a breaker's ``__aenter__`` and ``__aexit__``
    are plain methods that do their work when called and return an awaitable (often a ready
    one, see ``aioresil/_ready.py``), not coroutines that start when first awaited.
    """

    __slots__ = ("_args", "_context", "_method")

    def __init__(
        self, context: contextvars.Context, method: Callable[..., Awaitable[T]], *args: Any
    ) -> None:
        self._context = context
        self._method = method
        self._args = args

    def __await__(self) -> Generator[Any, Any, Any]:
        run = self._context.run
        steps = run(self._method, *self._args).__await__()
        send: Any = None
        error: BaseException | None = None
        while True:
            try:
                yielded = run(steps.send, send) if error is None else run(steps.throw, error)
            except StopIteration as stop:
                return stop.value
            try:
                send = yield yielded
                error = None
            except BaseException as exc:  # delivered into the coroutine (e.g. cancellation)
                send = None
                error = exc


class NotJudged(BaseException):
    """The call never reached the upstream (the bulkhead or rate limiter refused it).

    Passed to the breaker's ``__aexit__`` as a ``BaseException`` that is not an ``Exception``:
    the breaker then treats the call like a cancelled one (a trial permit is given back,
    nothing is counted), which is exactly right for a call that never happened.
    """


class Judgement:
    """One request's permit: the breaker (and bulkhead) entered in a private context, and
    exited exactly once with the verdict."""

    __slots__ = ("_bulkhead", "_context", "_done", "breaker")

    def __init__(self, breaker: CircuitBreaker) -> None:
        self.breaker = breaker
        self._context = contextvars.copy_context()
        self._bulkhead: Bulkhead | None = None
        self._done = False

    async def enter(self) -> None:
        """Take the breaker's permit; ``CircuitOpenError`` when it rejects."""
        await _InContext(self._context, self.breaker.__aenter__)

    async def enter_bulkhead(self, bulkhead: Bulkhead) -> None:
        await _InContext(self._context, bulkhead.__aenter__)
        self._bulkhead = bulkhead

    async def success(self) -> None:
        await self._exit(None)

    async def failure(self) -> None:
        await self._exit(UpstreamFailure)

    async def not_judged(self) -> None:
        await self._exit(NotJudged)

    async def cancelled(self, exc_type: type[BaseException]) -> None:
        await self._exit(exc_type)

    @property
    def done(self) -> bool:
        return self._done

    async def _exit(self, exc_type: type[BaseException] | None) -> None:
        if self._done:
            return
        self._done = True
        # Only the type matters to a breaker's verdict (and trio's Cancelled cannot be built).
        try:
            bulkhead = self._bulkhead
            if bulkhead is not None:
                await _InContext(self._context, bulkhead.__aexit__, exc_type, None, None)
        finally:
            await _InContext(self._context, self.breaker.__aexit__, exc_type, None, None)


_UNJUDGED: set[asyncio.Task[None]] = set()
"""Release tasks of collected bodies, kept until done (a task nobody holds may be collected)."""


def release_when_collected(body: object, judgement: Judgement) -> None:
    """When ``body`` is garbage-collected before it was judged, give back what its request
    holds (bulkhead slot, half-open trial permit), counting neither success nor failure.

    Why: a response dropped without being read or closed ends no stream and calls no
    ``aclose()``, so nothing would ever judge it; with a ``Bulkhead(2)``, two such responses
    would hold both slots forever. The upstream's verdict is unknown, so the request exits
    the breaker like a call that never happened (:class:`NotJudged`). Exiting may need I/O (a
    Redis breaker or bulkhead), and a finalizer may run in any thread in the middle of any
    code, so it only schedules the release on the request's event loop (asyncio's, or trio's
    through its token); a loop that has ended has nothing left to release.
    """
    try:
        loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    token: Any = None
    if loop is None:
        trio = sys.modules.get("trio")
        if trio is None:
            return
        try:
            token = trio.lowlevel.current_trio_token()
        except RuntimeError:
            return
    finalizer = weakref.finalize(body, _collected, judgement, loop, token)
    finalizer.atexit = False  # at interpreter exit there is no loop left to release on


def _collected(judgement: Judgement, loop: asyncio.AbstractEventLoop | None, token: Any) -> None:
    if judgement.done:
        return
    try:
        if loop is not None:
            loop.call_soon_threadsafe(_release_on_asyncio, judgement)
        else:
            token.run_sync_soon(_release_on_trio, judgement)
    except RuntimeError:  # the loop is closed (trio: RunFinishedError is a RuntimeError)
        pass


def _release_on_asyncio(judgement: Judgement) -> None:
    task = asyncio.get_running_loop().create_task(_release(judgement))
    _UNJUDGED.add(task)
    task.add_done_callback(_UNJUDGED.discard)


def _release_on_trio(judgement: Judgement) -> None:
    trio: Any = sys.modules["trio"]
    trio.lowlevel.spawn_system_task(_release, judgement)


async def _release(judgement: Judgement) -> None:
    try:
        await judgement.not_judged()
    except Exception as exc:  # the backend failed: a fleet lease expires on its own
        _log.warning("unjudged_release_failed", breaker=judgement.breaker.name, error=repr(exc))


class Policies:
    """The optional policies of an integration, checked once."""

    __slots__ = ("bulkhead", "rate_limiter", "retry", "timeout")

    def __init__(
        self,
        *,
        retry: Retry | None,
        timeout: Timeout | float | None,
        bulkhead: Bulkhead | None,
        rate_limiter: RateLimiter | None,
        what: str,
    ) -> None:
        if retry is not None and not isinstance(retry, Retry):
            raise TypeError(f"{what}: retry must be an aioresil.Retry, got {retry!r}")
        if timeout is not None and not isinstance(timeout, Timeout):
            timeout = Timeout(timeout, name=f"{what} timeout")
        if bulkhead is not None and not isinstance(bulkhead, Bulkhead):
            raise TypeError(f"{what}: bulkhead must be an aioresil.Bulkhead, got {bulkhead!r}")
        if rate_limiter is not None and not isinstance(rate_limiter, RateLimiter):
            raise TypeError(
                f"{what}: rate_limiter must be an aioresil.RateLimiter, got {rate_limiter!r}"
            )
        self.retry = retry
        self.timeout = timeout
        self.bulkhead = bulkhead
        self.rate_limiter = rate_limiter

    async def admit(self, judgement: Judgement) -> None:
        """Rate limit, then bulkhead; a refusal exits the breaker unjudged and propagates."""
        try:
            if self.rate_limiter is not None:
                await self.rate_limiter.acquire()
            if self.bulkhead is not None:
                await judgement.enter_bulkhead(self.bulkhead)
        except (BulkheadFullError, RateLimitExceededError):
            await judgement.not_judged()
            raise

    async def send(self, send: Callable[[Any], Awaitable[T]], request: Any) -> T:
        if self.timeout is None:
            return await send(request)
        return await self.timeout.call(send, request)


class Breakers:
    """The breakers of one integration by key, taken from its registry once each (and each
    one's config checked then, not on every request)."""

    __slots__ = ("_by_key", "_config", "_what", "registry")

    def __init__(
        self, registry: BreakerRegistry | None, config: BreakerConfig | None, what: str
    ) -> None:
        if registry is None:
            registry = BreakerRegistry()
        elif not isinstance(registry, BreakerRegistry):
            raise TypeError(f"{what}: registry must be a BreakerRegistry, got {registry!r}")
        if config is not None and not isinstance(config, BreakerConfig):
            raise TypeError(f"{what}: config must be a BreakerConfig, got {config!r}")
        breaker_config_check(config or registry.default_config, what)
        self.registry = registry
        self._config = config
        self._what = what
        self._by_key: dict[str, CircuitBreaker] = {}

    def get(self, key: str) -> CircuitBreaker:
        breaker = self._by_key.get(key)
        if breaker is None:
            if not isinstance(key, str) or not key:
                raise TypeError(f"{self._what}: key must be a non-empty str, got {key!r}")
            breaker = self.registry.get(key, self._config)
            breaker_config_check(breaker.config, self._what)
            self._by_key[key] = breaker
        return breaker


class GuardCore:
    """What ``ResilientTransport`` (httpx, httpx2) and ``ResilientMiddleware`` (aiohttp) share:
    the checks of their arguments, the breaker of a key, and one guarded attempt up to the
    verdict its status gives.

    Why one piece: the path of an attempt (breaker, rate limit and bulkhead, timeout, the
    status rule, ``Retry-After``) is the same whatever library sends; only how a response is
    sent, how its status is read and how its body is judged at the end differ, and those stay
    in the subclasses.
    """

    def __init__(
        self,
        *,
        registry: BreakerRegistry | None,
        config: BreakerConfig | None,
        key: Callable[[Any], str] | None,
        default_key: Callable[[Any], str],
        retry: Retry | None,
        timeout: Timeout | float | None,
        bulkhead: Bulkhead | None,
        rate_limiter: RateLimiter | None,
        classify: Classify | None,
    ) -> None:
        what = type(self).__name__
        self._breakers = Breakers(registry, config, what)
        if key is not None and not callable(key):
            raise TypeError(f"{what}: key must be a callable request -> str, got {key!r}")
        if classify is not None and not callable(classify):
            raise TypeError(f"{what}: classify must be a callable status -> bool")
        self.registry = self._breakers.registry
        self._key = key or default_key
        self._policies = Policies(
            retry=retry, timeout=timeout, bulkhead=bulkhead, rate_limiter=rate_limiter, what=what
        )
        self._classify = classify or default_classify
        self._hints = HintBook()

    def breaker_for(self, request_or_key: Any) -> CircuitBreaker:
        """The breaker that guards a request (or a key, e.g. ``"https://api.example:443"``)."""
        key = request_or_key if isinstance(request_or_key, str) else self._key(request_or_key)
        return self._breakers.get(key)

    async def _guarded(
        self,
        breaker: CircuitBreaker,
        key: str,
        send: Callable[[Any], Awaitable[Any]],
        request: Any,
        status_of: Callable[[Any], int],
        previous: list[Any] | None,
    ) -> tuple[Any, Judgement]:
        """Send ``request`` once through the breaker and the policies; return the response
        whose status is not a failure, with the judgement its body's end will give, or raise
        :class:`FailedResponse` (the failed answer is appended to ``previous`` for a retry
        to release) after recording the failure and any ``Retry-After`` hint."""
        judgement = Judgement(breaker)
        try:
            await judgement.enter()
        except CircuitOpenError as error:
            raise self._hints.rejection(key, error) from None
        policies = self._policies
        await policies.admit(judgement)
        try:
            response = await policies.send(send, request)
        except Exception:
            await judgement.failure()
            raise
        except BaseException as exc:
            await judgement.cancelled(type(exc))
            raise
        status = status_of(response)
        if not self._classify(status):
            return response, judgement
        hint = None
        if status in RETRY_AFTER_STATUSES:
            hint = parse_retry_after(response.headers.get("retry-after"))  # case-insensitive
            if hint is not None:
                self._hints.note(key, hint)
        await judgement.failure()
        if previous is not None:
            previous.append(response)
        raise FailedResponse(response, status, hint)
