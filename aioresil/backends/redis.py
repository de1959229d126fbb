"""The Redis backend: one connection pool, shared by breakers, the checkpoint store and the DLQ.

Why a blocking pool: redis-py's default async pool *raises* ``MaxConnectionsError`` once its
connections are all busy, so a burst of 200 tasks loses calls. We build a
``BlockingConnectionPool``: a task waits for a free connection, up to ``pool_timeout`` seconds,
and then gets our own :class:`~aioresil.exceptions.PoolTimeoutError`.

Every state change is one ``EVALSHA`` (see :meth:`RedisBackend.run_script`); nothing in aioresil
reads a value, decides in Python, and writes it back in a second round trip.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from ..exceptions import BackendError, BackendUnavailableError, PoolTimeoutError
from .keys import object_key, validate_prefix
from .scripts import LuaScript

try:
    import redis.asyncio as aioredis
    from redis import exceptions as redis_errors
except ImportError:  # pragma: no cover - exercised only without the extra
    aioredis = None  # type: ignore[assignment]
    redis_errors = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["RedisBackend", "map_redis_error"]

_MISSING_EXTRA = "RedisBackend needs the redis extra: pip install 'aioresil[redis]'"

ScriptArg = str | int | float | bytes


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


class RedisBackend:
    """Shared Redis storage for every aioresil object.

    Args:
        client: a ``redis.asyncio.Redis`` (or ``RedisCluster``) you already own. aioresil never
            closes a client it was given.
        prefix: first segment of every key (``[A-Za-z0-9._-:]``, no braces).

    Example::

        async with RedisBackend.from_url("redis://127.0.0.1:6379/0") as backend:
            breaker = CircuitBreaker("payments", backend=backend)
    """

    def __init__(self, client: Redis, *, prefix: str = "aioresil", _owns_client: bool = False):
        if aioredis is None:  # pragma: no cover
            raise ImportError(_MISSING_EXTRA)
        self.client: Redis = client
        self.prefix = validate_prefix(prefix)
        self._owns_client = _owns_client
        self._closed = False
        self._closers: list[Any] = []

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        prefix: str = "aioresil",
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
            # redis-py's message may echo the URL; never repeat a password back.
            raise ValueError(f"invalid Redis URL: {str(exc).split(':')[0]}") from None
        client = aioredis.Redis(connection_pool=pool)
        return cls(client, prefix=prefix, _owns_client=True)

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
        if self._closed:
            return
        self._closed = True
        closers, self._closers = self._closers, []
        for closer in reversed(closers):
            await closer()
        if self._owns_client:
            await self.client.aclose()

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
