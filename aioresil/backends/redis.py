"""The Redis backend: one connection pool, shared by breakers, the checkpoint store and the DLQ.

Why a blocking pool: redis-py's default async pool *raises* ``MaxConnectionsError`` once its
connections are all busy, so a burst of 200 tasks loses calls. We build a
``BlockingConnectionPool``: a task waits for a free connection, up to ``pool_timeout`` seconds,
and then gets our own :class:`~aioresil.exceptions.PoolTimeoutError`.

Every state change is one ``EVALSHA`` (see :meth:`RedisBackend.run_script`); nothing in aioresil
reads a value, decides in Python, and writes it back in a second round trip.
"""

from __future__ import annotations

import asyncio
import contextlib
import warnings
from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar

import structlog

from ..clock import Clock
from ..core.config import BreakerConfig
from ..core.states import CircuitState
from ..exceptions import (
    BackendError,
    BackendUnavailableError,
    CorruptStateError,
    PoolTimeoutError,
)
from .base import BreakerHandle, BreakerReading, StorageFactory
from .breaker_schema import Field
from .keys import decode_name, object_key, validate_prefix
from .redis_breaker import RedisBreakerHandle
from .scripts import LuaScript, load_script

try:
    import redis.asyncio as aioredis
    from redis import exceptions as redis_errors
except ImportError:  # pragma: no cover - exercised only without the extra
    aioredis = None  # type: ignore[assignment]
    redis_errors = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["RedisBackend", "map_redis_error"]

_log = structlog.get_logger("aioresil")

_MISSING_EXTRA = "RedisBackend needs the redis extra: pip install 'aioresil[redis]'"

ScriptArg = str | int | float | bytes
T = TypeVar("T")

_F_STATE = Field.STATE.encode()
_F_GENERATION = Field.GENERATION.encode()
_F_OPEN_UNTIL = Field.OPEN_UNTIL.encode()


def map_redis_error(exc: BaseException, what: str) -> BackendError:
    """Translate a redis-py exception into our tree (never let a raw one reach the caller)."""
    if redis_errors is not None:
        message = str(exc)
        if isinstance(exc, redis_errors.ConnectionError) and "No connection available" in message:
            return PoolTimeoutError(f"{what}: no pooled Redis connection became free in time")
        if isinstance(exc, redis_errors.ConnectionError | redis_errors.TimeoutError):
            return BackendUnavailableError(f"{what}: Redis unreachable ({type(exc).__name__})")
        if isinstance(exc, redis_errors.BusyLoadingError):
            return BackendUnavailableError(f"{what}: Redis is loading its dataset")
    if isinstance(exc, OSError | TimeoutError):
        return BackendUnavailableError(f"{what}: Redis unreachable ({type(exc).__name__})")
    return BackendError(f"{what}: {type(exc).__name__}: {exc}")


def _raw_view(
    handle: RedisBreakerHandle, state: dict[bytes, bytes], now_us: int
) -> tuple[str, int, int]:
    """``(state, generation, retry_after_us)`` for a local view; never raises.

    An unreadable hash must not stop the listener or a recovery probe for every other
    breaker: it reads as "unknown, ask Redis" (generation 0, OPEN with the timeout elapsed),
    and the next script call resets it.
    """
    if not state.get(_F_STATE):
        return ("closed", 0, -1)
    try:
        st = state[_F_STATE].decode()
        CircuitState(st)
        retry = max(int(float(state.get(_F_OPEN_UNTIL, b"0"))) - now_us, 0) if st == "open" else -1
        return (st, int(state[_F_GENERATION]), retry)
    except (KeyError, ValueError, UnicodeDecodeError):
        _log.warning("circuit_state_unreadable", breaker=handle.name)
        return ("open", 0, 0)


def _without_url(message: str, url: str) -> str:
    """``message`` with ``url`` and its password (if any) blanked out."""
    from urllib.parse import unquote, urlsplit

    message = message.replace(url, "<url>")
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    for secret in (password, unquote(password) if password else None):
        if secret:
            message = message.replace(secret, "***")
    return message


class RedisBackend:
    """Shared Redis storage for every aioresil object.

    Args:
        client: a ``redis.asyncio.Redis`` (or ``RedisCluster``) you already own. aioresil never
            closes a client it was given.
        prefix: first segment of every key (``[A-Za-z0-9._-:]``, no braces).
        clock: for tests only: scripts then take "now" from ``clock.monotonic()`` instead of
            Redis ``TIME`` (so a :class:`~aioresil.testing.FakeClock` drives shared state).
        listen: subscribe to transitions published by other processes (default ``True``).

    Example::

        async with RedisBackend.from_url("redis://127.0.0.1:6379/0") as backend:
            breaker = CircuitBreaker("payments", backend=backend)
    """

    def __init__(
        self,
        client: Redis,
        *,
        prefix: str = "aioresil",
        clock: Clock | None = None,
        listen: bool = True,
        _owns_client: bool = False,
    ):
        if aioredis is None:  # pragma: no cover
            raise ImportError(_MISSING_EXTRA)
        self.client: Redis = client
        self.prefix = validate_prefix(prefix)
        self.clock = clock
        self.events_channel = f"{self.prefix}:breaker-events"
        self._listen = listen
        self._owns_client = _owns_client
        self._closing = False
        self._closed = False
        self._closers: list[Any] = []
        self._breakers: dict[str, RedisBreakerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._listener: asyncio.Task[None] | None = None
        self._stopping = False
        self._cluster = hasattr(client, "get_node_from_key")  # a RedisCluster client
        # A pool that raises when exhausted (redis-py's default) would lose calls under load;
        # bound our own concurrency to its size so callers wait instead. A blocking pool
        # (what from_url builds) already waits, with its own timeout.
        pool = getattr(client, "connection_pool", None)
        limit = getattr(pool, "max_connections", None)
        self._gate: asyncio.Semaphore | None = None
        if (
            aioredis is not None
            and pool is not None
            and not isinstance(pool, aioredis.BlockingConnectionPool)
            and isinstance(limit, int)
            and 0 < limit < 2**31
        ):
            self._gate = asyncio.Semaphore(max(limit - 2, 1))  # keep room for pub/sub

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        prefix: str = "aioresil",
        clock: Clock | None = None,
        listen: bool = True,
        max_connections: int = 64,
        pool_timeout: float = 5.0,
        socket_timeout: float = 5.0,
        socket_connect_timeout: float = 2.0,
        **pool_options: Any,
    ) -> RedisBackend:
        """Create a backend with its own blocking connection pool (closed by :meth:`aclose`).

        Args:
            url: ``redis://[user:password@]host:port/db`` (or ``rediss://``, ``unix://``).
            max_connections: pool size; tasks beyond it wait for a free connection.
            pool_timeout: seconds a task waits for a connection before ``PoolTimeoutError``.
            socket_timeout: seconds one command may take before the call fails.
            pool_options: passed on to ``redis.asyncio.BlockingConnectionPool.from_url``.
        """
        if aioredis is None:  # pragma: no cover
            raise ImportError(_MISSING_EXTRA)
        if max_connections < 1:
            raise ValueError(f"max_connections must be >= 1, got {max_connections}")
        if pool_timeout <= 0:
            raise ValueError(f"pool_timeout must be > 0, got {pool_timeout}")
        try:
            pool = aioredis.BlockingConnectionPool.from_url(
                url,
                max_connections=max_connections,
                timeout=pool_timeout,
                socket_timeout=socket_timeout,
                socket_connect_timeout=socket_connect_timeout,
                **pool_options,
            )
        except ValueError as exc:
            # redis-py's message may echo the URL; never repeat a password back (but keep
            # the rest of the message: cutting it at the first colon cut "redis://" too).
            raise ValueError(f"invalid Redis URL: {_without_url(str(exc), url)}") from None
        client = aioredis.Redis(connection_pool=pool)
        return cls(client, prefix=prefix, clock=clock, listen=listen, _owns_client=True)

    def key(self, kind: str, name: str, part: str) -> str:
        """Key of ``part`` of object ``name`` (see :mod:`aioresil.backends.keys`)."""
        return object_key(self.prefix, kind, name, part)

    async def run_script(
        self, script: LuaScript, keys: Sequence[str], args: Sequence[ScriptArg]
    ) -> Any:
        """Run ``script`` with ``EVALSHA``; on ``NOSCRIPT`` load it and retry once.

        Every redis-py exception is mapped to :class:`BackendError` or
        :class:`BackendUnavailableError`.
        """
        if self._closed:
            raise BackendUnavailableError(f"script {script.name}: this RedisBackend is closed")
        if self._gate is not None:
            async with self._gate:
                return await self._run_script(script, keys, args)
        return await self._run_script(script, keys, args)

    async def _run_script(
        self, script: LuaScript, keys: Sequence[str], args: Sequence[ScriptArg]
    ) -> Any:
        client = self.client
        try:
            try:
                return await client.evalsha(script.sha, len(keys), *keys, *args)
            except redis_errors.NoScriptError:
                await client.script_load(script.source)
                return await client.evalsha(script.sha, len(keys), *keys, *args)
        except BackendError:
            raise
        except Exception as exc:
            raise map_redis_error(exc, f"script {script.name}") from exc

    # ------------------------------------------------------------------ breakers

    def bind_breaker(self, name: str, config: BreakerConfig) -> RedisBreakerHandle:
        """The handle of breaker ``name`` (one per name per backend)."""
        handle = self._breakers.get(name)
        if handle is None:
            handle = self._breakers[name] = RedisBreakerHandle(self, name, config)
        elif handle.config != config:
            raise ValueError(
                f"breaker {name!r} is already bound to this backend with a different config; "
                "use one config per name (a BreakerRegistry does this for you)"
            )
        return handle

    async def read_breakers(
        self, handles: Sequence[BreakerHandle], now: float = 0.0, wall: float = 0.0
    ) -> list[BreakerReading]:
        """Read many breakers in ONE round trip: one ``breaker_read.lua`` call for all of them.

        Batched outcomes are flushed first. The script returns an atomic snapshot with the
        server's time (``now``/``wall`` are not needed: records are in Redis ``TIME``). On
        Redis Cluster, where the breakers live in different slots, it is called once per
        breaker, concurrently.
        """
        own = self._own(handles)
        for handle in own:
            await handle.flush()
        rows = await self._read_rows(own)
        clock = self.clock
        wall_offset = 0.0 if clock is None else clock.time() - clock.monotonic()
        out: list[BreakerReading] = []
        for handle, (now_us, state, live, window) in zip(own, rows, strict=True):
            try:
                record = handle.record_from(state, int(live), window or None, now_us)
            except (KeyError, ValueError) as exc:
                raise CorruptStateError(
                    f"breaker {handle.name!r}: stored state is unreadable ({exc!r}); "
                    "the next state change resets it"
                ) from exc
            now_s = clock.monotonic() if clock is not None else now_us / 1e6
            out.append((record, now_s, wall_offset))
        return out

    async def read_views(self, handles: Sequence[BreakerHandle]) -> list[tuple[str, int, int]]:
        """``(state, generation, retry_after_us)`` per handle, one round trip; never raises on
        an unreadable hash (it reads as "unknown, ask Redis")."""
        own = self._own(handles)
        rows = await self._read_rows(own)
        return [
            _raw_view(handle, state, now_us)
            for handle, (now_us, state, _, _) in zip(own, rows, strict=True)
        ]

    def _own(self, handles: Sequence[BreakerHandle]) -> list[RedisBreakerHandle]:
        """This backend's own handles for ``handles`` (bound here, looked up by name)."""
        own = []
        for handle in handles:
            mine = self._breakers.get(handle.name)
            if mine is not handle:
                raise ValueError(f"breaker {handle.name!r} is not bound to this RedisBackend")
            own.append(mine)
        return own

    async def _read_rows(
        self, handles: Sequence[RedisBreakerHandle]
    ) -> list[tuple[int, dict[bytes, bytes], Any, dict[bytes, bytes]]]:
        if not handles:
            return []
        script = load_script("breaker_read")
        now_arg = "" if self.clock is None else str(round(self.clock.monotonic() * 1e6))

        def timed(handle: RedisBreakerHandle) -> str:
            return "1" if handle.config.window_duration is not None else "0"

        def unpack(reply: list[Any]) -> list[tuple[int, Any, Any, Any]]:
            now_us = int(reply[0])
            return [(now_us, *reply[1 + 3 * i : 4 + 3 * i]) for i in range((len(reply) - 1) // 3)]

        if self._cluster:
            # Breakers live in different slots: one concurrent call per breaker.
            replies = await asyncio.gather(
                *(self.run_script(script, h.keys, [now_arg, timed(h)]) for h in handles)
            )
            rows = [row for reply in replies for row in unpack(reply)]
        else:
            keys = [key for h in handles for key in h.keys]
            rows = unpack(await self.run_script(script, keys, [now_arg, *map(timed, handles)]))
        return [
            (
                now_us,
                dict(zip(flat_state[::2], flat_state[1::2], strict=True)),
                live,
                dict(zip(flat_window[::2], flat_window[1::2], strict=True)),
            )
            for now_us, flat_state, live, flat_window in rows
        ]

    def open_storage(self, factory: StorageFactory[T]) -> T:
        """Storage shared through this backend's scripts (one key space per store)."""
        return factory.on_scripts(self)

    def track(self, task: asyncio.Task[None]) -> None:
        """Keep a background task referenced until it ends; :meth:`aclose` awaits it.

        A task started while the event loop shuts down with this backend open (the listener
        got the shutdown's cancellation, not :meth:`aclose`) is cancelled at once: nothing
        would await it, and the loop would close on it pending.
        """
        listener = self._listener
        if (
            listener is not None
            and not self._stopping
            and (listener.cancelling() or listener.done())
        ):
            task.cancel()
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def ensure_listener(self) -> None:
        """Start the pub/sub listener once, on the running loop (no-op when disabled)."""
        if not self._listen or self._listener is not None or self._closed:
            return
        self._listener = asyncio.get_running_loop().create_task(self._listen_loop())

    async def _listen_loop(self) -> None:
        """Apply transitions other processes publish; resync every view after a reconnect.

        A ``get_message(timeout=...)`` loop with a stop flag, not ``listen()``: cancelling a
        task blocked in ``listen()`` can hang on close.

        Why the loop also checks ``task.cancelling()``: asyncio's shutdown (``asyncio.run``
        returning with this backend still open) cancels this task once, and redis-py can turn
        that cancellation into a connection error or a read timeout; a loop that then
        reconnects would keep the event loop (and the interpreter) from ever exiting.
        """
        task = asyncio.current_task()
        assert task is not None

        def cancelled() -> bool:
            if task.cancelling():
                raise asyncio.CancelledError  # a cancellation redis-py swallowed
            return self._stopping

        delay = 0.05
        while not cancelled():
            initialize = getattr(self.client, "initialize", None)
            if initialize is not None:  # RedisCluster: learn the slots before pub/sub
                try:
                    await initialize()
                except Exception as exc:
                    _log.warning("breaker_listener_reconnecting", error=type(exc).__name__)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 2.0)
                    continue
            pubsub = self.client.pubsub()
            try:
                await pubsub.subscribe(self.events_channel)
                await self._resync_views()
                delay = 0.05
                while not cancelled():
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
                    if message is not None and message.get("type") == "message":
                        self._on_message(message["data"])
            except asyncio.CancelledError:
                if not self._stopping:
                    # Cancelled without aclose(): the event loop is shutting down with this
                    # backend open. A batch timer firing now would start a flush task nobody
                    # awaits ("Task was destroyed but it is pending!"): disarm them.
                    for handle in self._breakers.values():
                        handle.cancel_timers()
                raise
            except Exception as exc:
                if not cancelled():
                    _log.warning("breaker_listener_reconnecting", error=type(exc).__name__)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 2.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call,unused-ignore]

    async def _resync_views(self) -> None:
        handles = list(self._breakers.values())
        if not handles:
            return
        for handle, (state, generation, retry_us) in zip(
            handles, await self.read_views(handles), strict=True
        ):
            handle.apply_view(state, generation, retry_us)

    def _on_message(self, data: bytes | str) -> None:
        text = data.decode() if isinstance(data, bytes) else data
        try:
            encoded, state, generation, retry_us = text.split(" ")
            handle = self._breakers.get(decode_name(encoded))
            if handle is not None:
                handle.apply_view(state, int(generation), int(retry_us))
        except (ValueError, KeyError):
            _log.warning("breaker_event_malformed", message=text[:200])

    async def ping(self) -> None:
        """Round-trip to Redis; raises :class:`BackendUnavailableError` when it fails."""
        try:
            await self.client.ping()
        except Exception as exc:
            raise map_redis_error(exc, "ping") from exc

    def _on_close(self, closer: Any) -> None:
        """Register an ``async`` callable run by :meth:`aclose` (listeners, flushers)."""
        self._closers.append(closer)

    async def aclose(self) -> None:
        """Stop background work and close the pool, if this backend created it."""
        if self._closing:
            return
        self._closing = True
        for handle in list(self._breakers.values()):
            handle.cancel_timers()
            with contextlib.suppress(BackendError):
                # batched outcomes and locally counted rejections survive a clean close
                await handle.flush(rejections=True)
        self._closed = True  # from here on, scripts are refused
        closers, self._closers = self._closers, []
        for closer in reversed(closers):
            await closer()
        self._stopping = True
        if self._listener is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._listener, timeout=2)
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, timeout=2)
        if self._owns_client:
            # A pool passed to Redis() explicitly is not closed by a plain aclose().
            await self.client.aclose(close_connection_pool=True)

    def __del__(self, _warn: Any = warnings.warn) -> None:
        # Like an unclosed aiohttp session: a backend garbage-collected without aclose() left
        # its pool's sockets (and, until the loop cancelled it, its listener) open.
        # ``_warn`` is bound at definition so the warning still works at interpreter exit.
        if getattr(self, "_closing", True):
            return
        if self._owns_client or self._listener is not None:
            _warn(
                f"unclosed {self!r}: call `await backend.aclose()` or use "
                "`async with RedisBackend.from_url(...) as backend:` (it also stops the "
                "listener and flushes batched outcomes)",
                ResourceWarning,
                source=self,
            )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"RedisBackend(prefix={self.prefix!r})"
