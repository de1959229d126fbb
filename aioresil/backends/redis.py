"""The Redis backend: one connection pool, shared by breakers, the checkpoint store and the DLQ.

Why a blocking pool: redis-py's default async pool *raises* ``MaxConnectionsError`` once its
connections are all busy, so a burst of 200 tasks loses calls. We build a
``BlockingConnectionPool``: a task waits for a free connection, up to ``pool_timeout`` seconds,
and then gets our own :class:`~aioresil.exceptions.PoolTimeoutError`.

Every state change is one ``EVALSHA`` (see :meth:`RedisBackend.run_script`); nothing in aioresil
reads a value, decides in Python, and writes it back in a second round trip. On a plain client
that ``EVALSHA`` is packed by us and sent on a pooled connection (:mod:`~aioresil.backends.wire`):
on a strict breaker's path redis-py's command machinery cost more than our rules.

Why a deadline of our own (``operation_timeout``, 1 s by default) on every operation: a client
built without ``socket_timeout`` (redis-py's default) waits forever on a black-holed host, and
redis-py 6+ retries a timed-out command three times with a backoff of seconds. Whatever client
the user passed in, no aioresil operation waits on Redis longer than ``operation_timeout``.
All operations of a backend share that one length, so one timer cuts them all in start order
(:mod:`~aioresil.backends.deadlines`) instead of a ``TimerHandle`` per operation.

Why a health state machine (:mod:`~aioresil.backends.backend_health`): the first operation that
learns Redis cannot serve us (no reply in time, refused or reset, ``OOM``, ``READONLY``,
``LOADING``, ``MASTERDOWN``, ``CLUSTERDOWN``, ``TRYAGAIN``, ``BUSY``, ``MISCONF``,
``NOREPLICAS``, pool exhausted) marks the whole backend unavailable; every later operation is
refused at once without a socket wait until one background probe (a small ``SET`` with a
TTL: it fails on ``OOM`` and ``READONLY`` too, where a ``PING`` would pass) reaches it again.
Errors that are the caller's fault (bad arguments, a script bug) are raised as
:class:`~aioresil.exceptions.BackendError` and never mark an outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import math
import struct
import warnings
from collections.abc import Awaitable, Callable, Iterable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, NamedTuple, Self, TypeVar

import structlog

from ..clock import Clock
from ..core.config import FINGERPRINT_LENGTH, BreakerConfig
from ..core.states import CircuitState
from ..exceptions import (
    BackendError,
    BackendUnavailableError,
    CorruptStateError,
    PoolTimeoutError,
    ReplicaAckTimeoutError,
)
from .backend_health import BackendHealth, BackendState, BackendStateChanged
from .base import BreakerHandle, BreakerReading, StorageFactory, close_on_exit
from .breaker_schema import (
    HALF_OPEN_CODE,
    NO_STATE,
    READ_CONFIG,
    READ_ROW,
    ROW_FORMAT,
    ROW_NUMBERS,
    ROW_SIZE,
    STATES_BY_CODE,
    Field,
    read_script,
)
from .deadlines import SharedDeadline
from .keys import decode_name, object_key, validate_prefix
from .redis_breaker import RedisBreakerHandle
from .scripts import LuaScript
from .sentinel_url import check_sentinels, is_sentinel_url, parse_sentinel_url
from .wire import DirectScripts, PackedKeys, pack_key

try:
    import redis.asyncio as aioredis
    from redis import exceptions as redis_errors
    from redis.asyncio.connection import parse_url as _parse_redis_url
except ImportError:  # pragma: no cover - exercised only without the extra
    aioredis = None  # type: ignore[assignment]
    redis_errors = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["BlockingSentinelConnectionPool", "RedisBackend", "map_redis_error"]

_log = structlog.get_logger("aioresil")

_MISSING_EXTRA = (
    "RedisBackend needs the redis extra: pip install 'aioresil[redis]' "
    "(in a checkout: pip install -e '.[redis]')"
)

ScriptArg = str | int | float | bytes
T = TypeVar("T")


DEFAULT_OPERATION_TIMEOUT = 1.0
"""Seconds any one aioresil operation may wait on Redis (see the module docstring)."""

_OUTAGE_CODES = frozenset(
    ("OOM", "READONLY", "LOADING", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "BUSY", "MISCONF")
) | {"NOREPLICAS"}
"""Error replies meaning "Redis cannot serve us now", not "your command is wrong"."""

_OUTAGE_CLASSES = (
    "OutOfMemoryError",
    "ReadOnlyError",
    "BusyLoadingError",
    "ClusterDownError",
    "MasterDownError",
    "TryAgainError",
)
"""redis-py strips the code from these replies: recognise them by class."""


def map_redis_error(exc: BaseException, what: str) -> BackendError:
    """Translate a redis-py exception into our tree (never let a raw one reach the caller).

    :class:`BackendUnavailableError` for an outage (the backend is marked unavailable), plain
    :class:`BackendError` for the caller's fault (bad arguments, a script bug).
    """
    name = type(exc).__name__
    if redis_errors is not None:
        message = str(exc)
        if isinstance(exc, redis_errors.MaxConnectionsError) or (
            isinstance(exc, redis_errors.ConnectionError) and "No connection available" in message
        ):
            return PoolTimeoutError(f"{what}: no pooled Redis connection became free in time")
        if any(cls.__name__ in _OUTAGE_CLASSES for cls in type(exc).__mro__):
            return BackendUnavailableError(f"{what}: Redis cannot serve writes ({name}: {exc})")
        if isinstance(exc, redis_errors.ResponseError):
            code = message.split(" ", 1)[0]
            if code in _OUTAGE_CODES:
                return BackendUnavailableError(f"{what}: Redis refused ({message[:200]})")
            return BackendError(f"{what}: {name}: {exc}")
        if isinstance(exc, redis_errors.ConnectionError | redis_errors.TimeoutError):
            return BackendUnavailableError(f"{what}: Redis unreachable ({name})")
    if isinstance(exc, OSError | TimeoutError):
        return BackendUnavailableError(f"{what}: Redis unreachable ({name})")
    return BackendError(f"{what}: {name}: {exc}")


def _raw_view(handle: RedisBreakerHandle, row: ReadRow, now_us: int) -> tuple[str, int, int]:
    """``(state, generation, retry_after_us)`` for a local view from a ``breaker_read.lua``
    row; never raises.

    An unreadable hash must not stop the listener or a recovery probe for every other
    breaker: it reads as "unknown, ask Redis" (generation 0, OPEN with the timeout elapsed),
    and the next script call resets it.
    """
    code, generation = row[0], row[1]
    if code == NO_STATE:
        return ("closed", 0, -1)
    state = STATES_BY_CODE[code] if code < len(STATES_BY_CODE) else None
    if state is None:
        _log.warning("circuit_state_unreadable", breaker=handle.name)
        return ("open", 0, 0)
    retry = max(row[_OPEN_UNTIL] - now_us, 0) if state is CircuitState.OPEN else -1
    return (state.value, generation, retry)


ReadRow = tuple[Any, ...]
"""One breaker's stored row, unpacked (:data:`~aioresil.backends.breaker_schema.ROW_FORMAT`):
the state's code, the integers of ``ROW_NUMBERS`` (the success counter last), the
fingerprint."""
_OPEN_UNTIL = 1 + ROW_NUMBERS.index(Field.OPEN_UNTIL)
_unpack_rows = struct.Struct(ROW_FORMAT).iter_unpack
_Extras = dict[int, tuple[bytes | None, dict[bytes, bytes] | None]]


class _Rows(NamedTuple):
    """A ``breaker_read.lua`` reply, read (see its header)."""

    now_us: list[int]
    """Redis' time of each row's read (one read: the same for all; on Cluster, one each)."""
    rows: Iterable[ReadRow]
    """Unpacked as they are iterated (one call's rows: each tuple freed once its record is
    built, so 1,000 of them never live at once for the garbage collector to count)."""
    leases: dict[int, int]
    """Row index -> trial leases alive (only rows holding some)."""
    extras: _Extras
    """Row index -> (the stored config, the time window's buckets), where the script sent
    either."""
    built: list[int]
    """Indexes of the rows the script packed: from their hashes' fields, or as breakers no
    script wrote (their hashes are gone)."""
    missing: list[int]
    """Indexes of the rows asked for alone whose key held no row (read as
    :data:`_EMPTY_ROW` here: the reader asks again for them)."""


_EMPTY_ROW = struct.pack(ROW_FORMAT, NO_STATE, *(0 for _ in ROW_NUMBERS), b" " * FINGERPRINT_LENGTH)
"""What a row key holding no row reads as until the breaker is read again (a new breaker's
row; see :meth:`RedisBackend._complete`)."""
_EMPTY_READ: ReadRow = struct.unpack(ROW_FORMAT, _EMPTY_ROW)


def _read(count: int, reply: Any, offset: int = 0) -> _Rows:
    """A ``breaker_read.lua`` reply for ``count`` breakers, read: the rows unpacked in C, one
    call for all of them; indexes of the sparse parts start at ``offset``."""
    try:
        now, rows, leases, flat, made = reply
        if len(rows) != count:
            raise BackendError(f"breaker_read.lua answered {len(rows)} rows for {count} breakers")
        missing: list[int] = []
        try:
            blob = b"".join(rows)
        except TypeError:  # a key holding no row (nil)
            blob = b""
        if len(blob) != ROW_SIZE * count:  # ... or not a row: found one by one
            rows = list(rows)
            for i, row in enumerate(rows):
                if row is None or len(row) != ROW_SIZE:
                    missing.append(i)
                    rows[i] = _EMPTY_ROW
            blob = b"".join(rows)
    except (TypeError, ValueError):
        raise BackendError("breaker_read.lua answered an unexpected reply") from None
    first = offset - 1  # the script's indexes start at 1
    extras: _Extras = {}
    for index, stored, buckets in flat:
        window = None if buckets is None else dict(zip(buckets[::2], buckets[1::2], strict=True))
        extras[first + index] = (stored or None, window)
    alive = {first + leases[i]: leases[i + 1] for i in range(0, len(leases), 2)}
    built = [first + i for i in made]
    missing = [offset + i for i in missing]
    return _Rows([int(now)] * count, _unpack_rows(blob), alive, extras, built, missing)


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


def _invalid_url(exc: ValueError, url: str) -> ValueError:
    # redis-py's message may echo the URL; never repeat a password back (but keep the rest
    # of the message: cutting it at the first colon cut "redis://" too).
    return ValueError(f"invalid Redis URL: {_without_url(str(exc), url)}")


def _parse_url_strictly(url: str) -> dict[str, Any]:
    """redis-py's ``parse_url``, and what it lets pass silently refused: a path that is not a
    database number (``/abc``, ``/1x`` read as db 0), and a ``db`` in the query that
    contradicts the path's (the query won)."""
    from urllib.parse import parse_qs, urlsplit

    options: dict[str, Any] = dict(_parse_redis_url(url))
    parts = urlsplit(url)
    if parts.scheme in ("redis", "rediss"):
        path = parts.path.strip("/")
        if path and not path.isdigit():
            raise ValueError(f"the database number is {path!r}: the URL's path is /<db number>")
        if path and "db" in parse_qs(parts.query) and options.get("db") != int(path):
            raise ValueError(
                "the database is given both in the URL's path and in its query, with "
                "different values: give it once"
            )
    return options


_ACCEPTED_BY: dict[type, frozenset[str]] = {}


def _unknown_connection_options(connection_class: type, kwargs: dict[str, Any]) -> list[str]:
    """The options no ``__init__`` of ``connection_class`` takes (redis-py passes unknown URL
    query items through, and fails with a ``TypeError`` on the first connection)."""
    accepted = _ACCEPTED_BY.get(connection_class)
    if accepted is None:
        names: set[str] = set()
        for klass in connection_class.__mro__:
            init = vars(klass).get("__init__")
            if init is not None and klass is not object:
                names.update(
                    name
                    for name, param in inspect.signature(init).parameters.items()
                    if param.kind not in (param.VAR_KEYWORD, param.VAR_POSITIONAL)
                )
        accepted = _ACCEPTED_BY[connection_class] = frozenset(names)
    return sorted(name for name in kwargs if name not in accepted)


_URL_OPTIONS = ("db", "username", "password")
"""Connection options a URL may carry; as keywords of ``from_url`` they fill what it leaves out."""


def _seconds(name: str, value: object) -> float:
    """``value`` as a float, or a ``ValueError`` naming ``name`` unless it is a finite
    number of seconds > 0 (redis-py takes -1, 0, NaN or ``None`` silently)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"{name} must be a finite number of seconds > 0, got {value!r}")
    return float(value)


def _check_pool(max_connections: object, pool_timeout: object) -> float:
    """Validate the pool options both URL forms share; ``pool_timeout`` as a float."""
    if (
        isinstance(max_connections, bool)
        or not isinstance(max_connections, int)
        or max_connections < 1
    ):
        raise ValueError(f"max_connections must be an int >= 1, got {max_connections!r}")
    return _seconds("pool_timeout", pool_timeout)


def _check_socket_timeouts(socket_timeout: object, socket_connect_timeout: object) -> None:
    """Both URL forms refuse a socket timeout that is not a finite number of seconds > 0 (a
    client without one waits forever on a black-holed server)."""
    _seconds("socket_timeout", socket_timeout)
    _seconds("socket_connect_timeout", socket_connect_timeout)


def _check_pool_options(options: dict[str, Any]) -> None:
    if "timeout" in options:
        raise ValueError(
            "pass pool_timeout=, not timeout=: the seconds a task waits for a pooled connection"
        )


def _with_url_options(named: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """``options`` completed with the :data:`_URL_OPTIONS` the URL ``named``.

    A keyword fills what the URL leaves out (a password kept out of a URL that gets logged);
    a keyword that contradicts the URL is an error on both URL forms. Why not let the URL win,
    as redis-py's ``from_url`` does: a keyword silently ignored is the bug this check exists
    for (``redis+sentinel://`` used to drop ``pool_timeout``). Never echoes a value.
    """
    merged = dict(options)
    for name in _URL_OPTIONS:
        if name not in named:
            continue
        if name in options and options[name] != named[name]:
            raise ValueError(
                f"{name} is given both in the URL and as a keyword argument, with different "
                "values: give it once"
            )
        merged[name] = named[name]
    return merged


if aioredis is not None:

    class BlockingSentinelConnectionPool(
        aioredis.SentinelConnectionPool, aioredis.BlockingConnectionPool
    ):
        """redis-py's Sentinel pool (it asks the sentinels for the master on each new
        connection) with the blocking pool's wait for a free connection.

        Why: redis-py's Sentinel pool *raises* ``MaxConnectionsError`` the moment its
        connections are all busy, and has no wait to bound; ``from_url`` builds a
        ``BlockingConnectionPool`` for ``redis://``, so ``max_connections`` and
        ``pool_timeout`` meant something else for ``redis+sentinel://``. Both parents are
        redis-py's: the Sentinel one finds the master and drops connections to an old one,
        the blocking one waits (``get_connection``/``release``), and they override disjoint
        methods.
        """


#: A deadline that fires later than this fraction of ``operation_timeout`` after it was due
#: means the event loop was stalled, not that Redis stopped answering (see ``_bounded``).
_STALL_FRACTION = 0.1


class RedisBackend:
    """Shared Redis storage for every aioresil object.

    Args:
        client: a ``redis.asyncio.Redis`` (or ``RedisCluster``) you already own. aioresil never
            closes a client it was given.
        prefix: first segment of every key (``[A-Za-z0-9._-:]``, no braces).
        clock: for tests only: scripts then take "now" from ``clock.monotonic()`` instead of
            Redis ``TIME`` (so a :class:`~aioresil.testing.FakeClock` drives shared state).
        listen: subscribe to transitions published by other processes (default ``True``).
        wait_replicas: replicated acknowledgement for the writes that must survive a failover
            (a DLQ push, a checkpoint save): each one is followed by ``WAIT wait_replicas``
            on the same connection, in the same round trip, and counts as done only once that
            many replicas hold it. ``0`` (the default): the master's reply is enough. Breakers
            never wait (see the README, "What survives what").
        wait_timeout: seconds a write waits for its replicas; past it the write raises
            :class:`~aioresil.ReplicaAckTimeoutError` (the DLQ spools the entry and pushes it
            again; a checkpoint save raises :class:`~aioresil.CheckpointOutcomeUnknownError`).
        operation_timeout: seconds any one operation (script, read, ping) may wait on Redis,
            whatever the client's own socket timeout and retries; past it the operation
            fails with :class:`~aioresil.exceptions.BackendUnavailableError` and the backend
            is marked unavailable (default 1 s).

    The backend's own health is :attr:`health` (``HEALTHY`` / ``UNAVAILABLE`` /
    ``RECOVERING``, shared by everything on this backend; see
    :mod:`aioresil.backends.backend_health`).

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
        wait_replicas: int = 0,
        wait_timeout: float = 0.5,
        operation_timeout: float = DEFAULT_OPERATION_TIMEOUT,
        _owns_client: bool = False,
    ):
        if aioredis is None:  # pragma: no cover
            raise ImportError(_MISSING_EXTRA)
        if isinstance(wait_replicas, bool) or not isinstance(wait_replicas, int):
            raise TypeError(f"wait_replicas must be an int, got {wait_replicas!r}")
        if wait_replicas < 0:
            raise ValueError(f"wait_replicas must be >= 0, got {wait_replicas}")
        if isinstance(wait_timeout, bool) or not isinstance(wait_timeout, int | float):
            raise TypeError(f"wait_timeout must be seconds (a number), got {wait_timeout!r}")
        if not 0 < wait_timeout < float("inf"):
            raise ValueError(
                f"wait_timeout must be a positive number of seconds, got {wait_timeout!r}"
            )
        get_encoder = getattr(client, "get_encoder", None)
        if get_encoder is not None and getattr(get_encoder(), "decode_responses", False):
            # Scripts answer bytes (breaker rows are binary): a decoding client would fail on
            # the first read, far from here, with a UnicodeDecodeError.
            raise ValueError(
                "RedisBackend needs a client made with decode_responses=False (the default): "
                "aioresil's scripts answer bytes"
            )
        if wait_replicas and hasattr(client, "get_node_from_key"):
            raise ValueError(
                "wait_replicas is not supported on Redis Cluster: WAIT acknowledges the writes "
                "of one connection to one shard"
            )
        self.wait_replicas = wait_replicas
        self.wait_timeout = float(wait_timeout)
        if (
            isinstance(operation_timeout, bool)
            or not isinstance(operation_timeout, int | float)
            or not math.isfinite(operation_timeout)
            or operation_timeout <= 0
        ):
            raise ValueError(
                f"operation_timeout must be a finite number > 0, got {operation_timeout!r}"
            )
        self._deadlines = SharedDeadline(float(operation_timeout))  # every operation's cut
        if wait_replicas and self.wait_timeout >= self.operation_timeout:
            raise ValueError(
                f"wait_timeout ({self.wait_timeout:g}s) must be below operation_timeout "
                f"({self.operation_timeout:g}s), which bounds the write and its WAIT together"
            )
        self.client: Redis = client
        self.prefix = validate_prefix(prefix)
        self.clock = clock
        self.events_channel = f"{self.prefix}:breaker-events"
        self._listen = listen
        self._owns_client = _owns_client
        self._closing = False
        self._closed = False
        self._breakers: dict[str, RedisBreakerHandle] = {}
        # name -> its keys encoded, and packed as RESP; the handles read last with their
        # keys packed for the script (see _pack_keys)
        self._encoded_keys: dict[str, tuple[list[bytes], bytes, bytes, bytes]] = {}
        """name -> its keys encoded; packed as RESP: its row key, its state hash, its lease
        and window keys."""
        self._read_plan: tuple[list[RedisBreakerHandle], bytes, PackedKeys] = (
            [],
            b"",
            PackedKeys([], b""),
        )
        """The handles read last (a registry's), what was asked for each and the keys that
        sends (see :meth:`_read_rows`)."""
        self._tasks: set[asyncio.Task[None]] = set()
        self._listener: asyncio.Task[None] | None = None
        # Set once the listener has subscribed and resynced every view; cleared while it
        # reconnects. Tests wait on it before a fault, so the resync's own reply cannot land
        # inside the operation the fault cuts (which would read as contention, not an outage).
        self._views_synced = asyncio.Event()
        self._stopping = False
        self._cluster = hasattr(client, "get_node_from_key")  # a RedisCluster client
        self._sentinel: Any = None  # the Sentinel manager from_sentinel made (closed with us)
        self._sentinel_watch: asyncio.Task[None] | None = None
        self._drains: dict[int, Callable[[], Awaitable[None]]] = {}
        self.health = BackendHealth(f"redis:{self.prefix}", self._probe)
        self._replies = 0  # operations answered so far (see execute: contention vs. outage)
        self._direct = DirectScripts.for_client(client)  # EVALSHA packed by us (see wire)
        self.health.on_recover(self._resume_breakers)
        self.health.subscribe(self._on_health_change)
        # A pool that raises when exhausted (redis-py's default) would lose calls under load;
        # bound our own concurrency to its size so callers wait instead (for a blocking pool,
        # what from_url builds, up to its own timeout, then PoolTimeoutError).
        pool = getattr(client, "connection_pool", None)
        limit = getattr(pool, "max_connections", None)
        # The gate also keeps the pool wait out of ``operation_timeout``: a task waits for a
        # connection (up to the blocking pool's own timeout) before its deadline starts, so a
        # burst of 1,000 calls on 8 connections queues instead of timing out.
        self._gate: asyncio.Semaphore | None = None
        self._gate_deadlines: SharedDeadline | None = None  # the pool's timeout, if it has one
        if pool is not None and isinstance(limit, int) and 0 < limit < 2**31:
            self._gate = asyncio.Semaphore(max(limit - 2, 1))  # keep room for pub/sub
            if aioredis is not None and isinstance(pool, aioredis.BlockingConnectionPool):
                timeout = getattr(pool, "timeout", None)
                if timeout is not None:
                    self._gate_deadlines = SharedDeadline(float(timeout))

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        prefix: str = "aioresil",
        clock: Clock | None = None,
        listen: bool = True,
        wait_replicas: int = 0,
        wait_timeout: float = 0.5,
        operation_timeout: float = DEFAULT_OPERATION_TIMEOUT,
        max_connections: int = 64,
        pool_timeout: float = 5.0,
        socket_timeout: float = 5.0,
        socket_connect_timeout: float = 2.0,
        **pool_options: Any,
    ) -> RedisBackend:
        """Create a backend with its own blocking connection pool (closed by :meth:`aclose`).

        Args:
            url: ``redis://[user:password@]host:port/db`` (or ``rediss://``, ``unix://``), or
                a Sentinel deployment,
                ``redis+sentinel://[:password@]host1:26379,host2:26379/service_name/db``
                (see :meth:`from_sentinel` and :mod:`aioresil.backends.sentinel_url`).
            wait_replicas, wait_timeout: replicated acknowledgement, see the class.
            operation_timeout: see the class; the deadline of one whole operation.
            max_connections: pool size; tasks beyond it wait for a free connection.
            pool_timeout: seconds a task waits for a connection before ``PoolTimeoutError``.
            socket_timeout: seconds one command may take before the call fails.
            pool_options: passed on to the pool (``redis.asyncio.BlockingConnectionPool.from_url``
                for one server, the Sentinel pool otherwise). ``db``, ``username`` and
                ``password`` fill what the URL leaves out; one that contradicts the URL
                raises ``ValueError``, as does ``timeout`` (that is ``pool_timeout``) and
                ``ssl`` with a ``redis://`` URL (use ``rediss://``).

        Every option means the same for both URL forms: a ``redis+sentinel://`` URL gets a
        blocking pool as well, waiting up to ``pool_timeout`` for one of its
        ``max_connections`` (``tests/backends/test_sentinel_failover.py`` runs the same pool
        tests on both).
        """
        if aioredis is None:  # pragma: no cover
            raise ImportError(_MISSING_EXTRA)
        timeout = _check_pool(max_connections, pool_timeout)
        _check_socket_timeouts(socket_timeout, socket_connect_timeout)
        _check_pool_options(pool_options)
        if is_sentinel_url(url):
            target = parse_sentinel_url(url)
            named: dict[str, Any] = {
                name: value
                for name, value in (
                    ("db", target.db),
                    ("username", target.username),
                    ("password", target.password),
                )
                if value is not None
            }
            options = _with_url_options(named, pool_options)
            return cls.from_sentinel(
                target.sentinels,
                target.service_name,
                db=options.pop("db", 0),
                username=options.pop("username", None),
                password=options.pop("password", None),
                sentinel_password=target.sentinel_password,
                prefix=prefix,
                clock=clock,
                listen=listen,
                wait_replicas=wait_replicas,
                wait_timeout=wait_timeout,
                operation_timeout=operation_timeout,
                max_connections=max_connections,
                pool_timeout=timeout,
                socket_timeout=socket_timeout,
                socket_connect_timeout=socket_connect_timeout,
                **options,
            )
        if "ssl" in pool_options:
            raise ValueError(
                "ssl= applies only to redis+sentinel:// URLs (they have no TLS scheme): "
                "for TLS to one server, use a rediss:// URL"
            )
        try:
            named = {k: v for k, v in _parse_url_strictly(url).items() if k in _URL_OPTIONS}
        except ValueError as exc:
            raise _invalid_url(exc, url) from None
        options = _with_url_options(named, pool_options)
        try:
            pool = aioredis.BlockingConnectionPool.from_url(
                url,
                max_connections=max_connections,
                timeout=timeout,
                socket_timeout=socket_timeout,
                socket_connect_timeout=socket_connect_timeout,
                **options,
            )
        except ValueError as exc:
            raise _invalid_url(exc, url) from None
        unknown = _unknown_connection_options(pool.connection_class, pool.connection_kwargs)
        if unknown:
            raise ValueError(
                f"unknown Redis connection option(s) {', '.join(map(repr, unknown))} (in the "
                "URL's query or as keyword arguments); redis-py would fail on the first "
                "connection instead"
            )
        client = aioredis.Redis(connection_pool=pool)
        return cls(
            client,
            prefix=prefix,
            clock=clock,
            listen=listen,
            wait_replicas=wait_replicas,
            wait_timeout=wait_timeout,
            operation_timeout=operation_timeout,
            _owns_client=True,
        )

    @classmethod
    def from_sentinel(
        cls,
        sentinels: Sequence[tuple[str, int]],
        service_name: str,
        *,
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
        sentinel_password: str | None = None,
        prefix: str = "aioresil",
        clock: Clock | None = None,
        listen: bool = True,
        wait_replicas: int = 0,
        wait_timeout: float = 0.5,
        operation_timeout: float = DEFAULT_OPERATION_TIMEOUT,
        max_connections: int = 64,
        pool_timeout: float = 5.0,
        socket_timeout: float = 5.0,
        socket_connect_timeout: float = 2.0,
        **pool_options: Any,
    ) -> RedisBackend:
        """Create a backend that follows the master of a Sentinel-monitored service.

        Every new connection asks the sentinels where the master is; a connection that meets
        ``READONLY`` (the old master, demoted) is dropped and the next one finds the new
        master. The breakers' pub/sub listener reconnects the same way, resubscribes and
        resyncs every breaker's local view from the new master; scripts are reloaded on
        ``NOSCRIPT``. Writes that must survive the failover itself need ``wait_replicas``.

        Args:
            sentinels: ``[(host, port), ...]`` of the sentinels (any reachable one will do).
            service_name: the name the sentinels monitor (``sentinel monitor <name> ...``).
            db: the database number on the master.
            username, password: the master's (and replicas') ACL user and password.
            sentinel_password: the sentinels' own ``requirepass``, if they have one.
            max_connections: connections to the master; tasks beyond it wait for a free one.
            pool_timeout: seconds a task waits for a connection before ``PoolTimeoutError``
                (the pool is a :class:`BlockingSentinelConnectionPool`, as blocking as the
                one :meth:`from_url` builds for ``redis://``).
            socket_timeout: seconds one command may take (sentinel queries included).
            pool_options: passed on to the Sentinel-managed connection pool.

        Example::

            backend = RedisBackend.from_sentinel(
                [("10.0.0.1", 26379), ("10.0.0.2", 26379)], "mymaster", wait_replicas=1
            )
        """
        if aioredis is None:  # pragma: no cover
            raise ImportError(_MISSING_EXTRA)
        _check_socket_timeouts(socket_timeout, socket_connect_timeout)
        from redis.asyncio.sentinel import Sentinel

        nodes = check_sentinels(sentinels)
        if not isinstance(service_name, str) or not service_name:
            raise ValueError(f"service_name must be a non-empty str, got {service_name!r}")
        if isinstance(db, bool) or not isinstance(db, int) or db < 0:
            raise ValueError(f"db must be an int >= 0, got {db!r}")
        timeout = _check_pool(max_connections, pool_timeout)
        _check_pool_options(pool_options)
        sentinel_kwargs: dict[str, Any] = {
            "socket_timeout": socket_timeout,
            "socket_connect_timeout": socket_connect_timeout,
        }
        if sentinel_password is not None:
            sentinel_kwargs["password"] = sentinel_password
        manager = Sentinel(nodes, sentinel_kwargs=sentinel_kwargs)
        client = manager.master_for(
            service_name,
            connection_pool_class=BlockingSentinelConnectionPool,
            db=db,
            username=username,
            password=password,
            max_connections=max_connections,
            timeout=timeout,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_connect_timeout,
            **pool_options,
        )
        backend = cls(
            client,
            prefix=prefix,
            clock=clock,
            listen=listen,
            wait_replicas=wait_replicas,
            wait_timeout=wait_timeout,
            operation_timeout=operation_timeout,
            _owns_client=True,
        )
        backend._sentinel = manager
        return backend

    def key(self, kind: str, name: str, part: str) -> str:
        """Key of ``part`` of object ``name`` (see :mod:`aioresil.backends.keys`)."""
        return object_key(self.prefix, kind, name, part)

    async def run_script(
        self, script: LuaScript, keys: Sequence[str | bytes], args: Sequence[ScriptArg]
    ) -> Any:
        """Run ``script`` with ``EVALSHA``; on ``NOSCRIPT`` load it and retry once.

        Runs under :meth:`execute`: bounded by ``operation_timeout``, refused at once while the
        backend is unavailable, every redis-py exception mapped to :class:`BackendError` or
        :class:`BackendUnavailableError`.
        """
        client = self.client
        direct = self._direct
        packed = None if direct is None else direct.pack(script.sha, keys, args)

        async def run() -> Any:
            if direct is not None and packed is not None:
                try:
                    return await direct.call(packed)
                except redis_errors.NoScriptError:
                    await client.script_load(script.source)
            try:
                return await client.evalsha(script.sha, len(keys), *keys, *args)
            except redis_errors.NoScriptError:
                await client.script_load(script.source)
                return await client.evalsha(script.sha, len(keys), *keys, *args)

        return await self.execute(f"script {script.name}", run)

    async def execute(self, what: str, operation: Callable[[], Awaitable[T]]) -> T:
        """Run one Redis operation under our deadline and the backend's health.

        * refused at once (no socket touched) while :attr:`health` is ``UNAVAILABLE``;
        * cut at ``operation_timeout`` seconds, whatever the client's socket timeout and
          retries (the client drops the connection of a cancelled command);
        * an outage error marks the backend unavailable and raises
          :class:`BackendUnavailableError`; any other error raises :class:`BackendError`.

        Args:
            what: names the operation in errors and logs.
            operation: makes the redis-py call(s); called once.
        """
        if self._closed:
            raise BackendUnavailableError(f"{what}: this RedisBackend is closed")
        if self._sentinel_watch is None and self._sentinel is not None:
            self._start_sentinel_watch()
        self.health.check(what)
        gate = self._gate
        if gate is None:
            return await self._bounded(what, operation)
        waits = self._gate_deadlines
        try:
            if waits is None or not gate.locked():
                await gate.acquire()  # a free slot is taken at once, without a timer
            else:  # queue for a slot, up to the pool's own timeout
                await waits.run(gate.acquire, waits.start())
        except TimeoutError:
            assert waits is not None  # only a timed wait times out
            error = PoolTimeoutError(
                f"{what}: no pooled Redis connection became free within {waits.timeout:g}s"
            )
            self.health.outage(error)
            raise error from None
        try:
            self.health.check(what)  # the outage may have been found while we queued
            return await self._bounded(what, operation)
        finally:
            gate.release()

    async def _bounded(self, what: str, operation: Callable[[], Awaitable[T]]) -> T:
        deadlines = self._deadlines
        flight = deadlines.start()
        replies = self._replies
        try:
            result = await deadlines.run(operation, flight)
            self._replies += 1
            return result
        except BackendError as error:
            if isinstance(error, BackendUnavailableError):
                self.health.outage(error)
            raise
        except Exception as exc:
            if flight.expired:
                mapped: BackendError = BackendUnavailableError(
                    f"{what}: no reply from Redis within operation_timeout="
                    f"{self.operation_timeout:g}s"
                )
                if self._replies != replies:
                    # Redis answered other operations meanwhile: this one waited in a queue
                    # (ours, the pool's, a busy event loop), which fails this operation but
                    # is not an outage of the whole backend.
                    raise mapped from exc
                late = asyncio.get_running_loop().time() - flight.due
                if late > _STALL_FRACTION * self.operation_timeout:
                    # The deadline fired late: the event loop itself was stalled (a blocking
                    # call, a long GC pause, a starved CPU) and the reply may well be waiting
                    # in the socket. That fails this operation, but blaming Redis would
                    # switch every breaker on this backend to its outage policy.
                    raise mapped from exc
            else:
                mapped = map_redis_error(exc, what)
            if isinstance(mapped, BackendUnavailableError):
                self.health.outage(mapped)
            raise mapped from exc

    @property
    def operation_timeout(self) -> float:
        """Seconds any one operation may wait on Redis (see the class); assignable. One
        value, held by the timer that enforces it."""
        return self._deadlines.timeout

    @operation_timeout.setter
    def operation_timeout(self, seconds: float) -> None:
        self._deadlines.timeout = _seconds("operation_timeout", seconds)

    @property
    def closing(self) -> bool:
        """True from the moment :meth:`aclose` starts: background work should wind down."""
        return self._closing

    @property
    def state(self) -> BackendState:
        """The backend's health state (a shortcut for ``health.state``)."""
        return self.health.state

    async def _probe(self) -> None:
        """Can Redis serve us? A small write with a TTL (fails on OOM and READONLY too).

        Never through :meth:`execute` (it refuses while unavailable): its own deadline.
        """
        key = self.key("health", "probe", "w")
        try:
            async with asyncio.timeout(self.operation_timeout):
                await self.client.set(key, b"1", px=10_000)
        except Exception as exc:
            mapped = map_redis_error(exc, "probe")
            if isinstance(mapped, BackendUnavailableError) or isinstance(exc, TimeoutError):
                raise mapped from exc
            # An ACL that forbids the write is not an outage: fall back to a PING.
            async with asyncio.timeout(self.operation_timeout):
                await self.client.ping()

    def _on_health_change(self, change: BackendStateChanged) -> None:
        """Every breaker applies its policy as soon as any operation finds an outage."""
        if change.new is BackendState.UNAVAILABLE:
            for handle in list(self._breakers.values()):
                handle.backend_down(change.reason)

    async def _resume_breakers(self) -> None:
        """Recovery hook: breakers on their local fallback re-read Redis now."""
        handles = list(self._breakers.values())
        if handles:
            await asyncio.gather(*(h.backend_back() for h in handles))

    async def run_script_staged(
        self,
        script: LuaScript,
        keys: Sequence[str],
        args: Sequence[ScriptArg],
        *,
        stage: tuple[str, bytes, int] | None = None,
        replicated: bool = False,
    ) -> Any:
        """Run ``script`` in one pipelined round trip on one connection, with extras around it.

        Args:
            stage: ``(key, value, ttl_ms)``: ``SET key value PX ttl_ms`` first, so the script
                can ``RENAME`` a large value into place instead of receiving it in ``ARGV``
                (Redis copies every ``ARGV`` string into Lua: about 120 us per 100 KB).
            replicated: follow the script with ``WAIT wait_replicas wait_timeout`` (when the
                backend has ``wait_replicas``) and raise
                :class:`~aioresil.ReplicaAckTimeoutError` when fewer replicas confirmed it.

        ``NOSCRIPT`` loads the script and sends the whole pipeline again (the staged value too).
        """
        wait = self.wait_replicas if replicated else 0
        if stage is None and not wait:
            return await self.run_script(script, keys, args)
        what = f"script {script.name}"
        wait_ms = max(int(self.wait_timeout * 1000), 1)
        direct = self._direct
        chunks = (
            None
            if direct is None
            else direct.pack_staged(
                stage, direct.pack(script.sha, keys, args), (wait, wait_ms) if wait else None
            )
        )

        async def run() -> tuple[Any, int]:
            for attempt in (1, 2):
                if direct is not None and chunks is not None:
                    # Our own packing (wire.py): the staged value goes out as it is, once.
                    results = await direct.call_many(chunks, 1 + (stage is not None) + bool(wait))
                else:
                    pipe = self.client.pipeline(transaction=False)
                    if stage is not None:
                        pipe.set(stage[0], stage[1], px=stage[2])
                    pipe.evalsha(script.sha, len(keys), *keys, *args)
                    if wait:
                        pipe.wait(wait, wait_ms)
                    results = await pipe.execute(raise_on_error=False)
                offset = 1 if stage is not None else 0
                for result in results[:offset]:
                    if isinstance(result, Exception):
                        raise result
                reply = results[offset]
                if isinstance(reply, redis_errors.NoScriptError) and attempt == 1:
                    await self.client.script_load(script.source)
                    continue
                if isinstance(reply, Exception):
                    raise reply
                # WAIT itself can fail (a demoted master refuses it): nothing confirmed.
                acked = results[offset + 1] if wait else 0
                return reply, acked if isinstance(acked, int) else 0
            raise AssertionError("unreachable")  # pragma: no cover

        reply, acked = await self.execute(what, run)
        if acked < wait:
            # Not an outage of this backend (the master answered): the caller decides, so
            # the health state stays as it is.
            raise ReplicaAckTimeoutError(what, acked, wait)
        return reply

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
        """Read many breakers in ONE round trip: one ``breaker_read.lua`` call for all of them
        (a second one for the breakers whose rows need more than the first asked for; see
        :meth:`_complete`).

        Batched outcomes are flushed first. The script returns an atomic snapshot with the
        server's time (``now``/``wall`` are not needed: records are in Redis ``TIME``). On
        Redis Cluster, where the breakers live in different slots, it is called once per
        breaker, concurrently.
        """
        own = self._own(handles)
        # Every handle, strict ones too: a strict breaker's rejection flush (while it is
        # OPEN) holds the flush lock with its count already taken from the local tally, and a
        # read that did not wait for it would miss those rejections.
        for handle in own:
            if handle.may_flush and handle.needs_flush:
                await handle.flush()
        asks, read = await self._read_rows(own)
        odd: dict[int, ReadRow] = {}  # the rows the fast check did not settle (_complete)
        out = self._readings(own, read, odd)
        if odd:
            await self._complete(own, asks, read, out, odd)
        return out

    def _readings(
        self, own: list[RedisBreakerHandle], read: _Rows, odd: dict[int, ReadRow]
    ) -> list[BreakerReading]:
        """The readings of ``read``'s rows, and in ``odd`` (by index) those the fast check
        did not settle: rows not read alone (the handle's ``read_fp``
        is None then), or whose fingerprint changed, or HALF_OPEN ones.

        Why the check is made here, in the loop that builds the records: it reads each
        handle's ``read_fp``, and the records read each handle too; a loop of its own over
        1,000 handles cost 0.3 ms more (their attributes fetched from memory twice)."""
        clock = self.clock
        wall_offset = 0.0 if clock is None else clock.time() - clock.monotonic()
        now_s = clock.monotonic() if clock is not None else 0.0
        nows, rows, leases, extras = read.now_us, read.rows, read.leases, read.extras
        half_open = HALF_OPEN_CODE
        out: list[BreakerReading] = []
        add = out.append
        try:
            if not (leases or extras or self._cluster):
                # The common read: one time for all, no trial leases, no config sent. A
                # loop of its own: the general one's per-row lookups and times cost ~0.1 ms
                # of a 1,000-breaker read (measured), in a budget of 5 ms.
                if clock is None:
                    now_s = nows[0] / 1e6 if nows else 0.0
                for handle, row in zip(own, rows, strict=True):
                    if row[0] == half_open or row[-1] != handle.read_fp:
                        odd[len(out)] = row
                    add((handle.record_from(row, 0, None, None), now_s, wall_offset))
            else:
                plain = (None, None)
                for i, (handle, now_us, row) in enumerate(zip(own, nows, rows, strict=True)):
                    if row[0] == half_open or row[-1] != handle.read_fp:
                        odd[i] = row
                    stored, window = extras.get(i, plain)
                    record = handle.record_from(row, leases.get(i, 0), stored, window)
                    add((record, now_s if clock is not None else now_us / 1e6, wall_offset))
        except (KeyError, ValueError) as exc:
            # the row being read when it was found unreadable (KeyError: a time window's
            # bucket field written as no aioresil writes it)
            name = own[len(out)].name if len(out) < len(own) else "?"
            raise CorruptStateError(
                f"breaker {name!r}: stored state is unreadable ({exc}); "
                "the next state change resets it"
            ) from exc
        for i in read.missing:  # read as a new breaker's row: never settled here
            odd[i] = _EMPTY_READ
        return out

    async def _complete(
        self,
        own: list[RedisBreakerHandle],
        asks: bytes,
        read: _Rows,
        out: list[BreakerReading],
        odd: dict[int, ReadRow],
    ) -> None:
        """Read again, asking for everything (``READ_CONFIG``), the breakers among ``odd``
        whose rows lack what their records need (a row key holding no row, or
        :meth:`~RedisBreakerHandle.needs_more`: a row read alone that turned HALF_OPEN, a
        fingerprint no read decoded, a time window's buckets not read), and put their
        readings in ``out``; then tell every ``odd`` handle what its next read asks for.

        So a read takes one round trip when the registry's breakers kept their configs and
        did not enter HALF_OPEN since its previous read, and two when some did (only those
        read again: a snapshot of its own, at a later time)."""
        missing, built = set(read.missing), set(read.built)
        again = [
            i
            for i, row in odd.items()
            if i in missing or own[i].needs_more(row[0], row[-1], asks[i : i + 1])
        ]
        if again:
            handles, more = await self._read_again(own, again)
            more_rows = list(more.rows)
            more = more._replace(rows=more_rows)
            for j, reading in enumerate(self._readings(handles, more, {})):
                out[again[j]] = reading
                odd[again[j]] = more_rows[j]
            built.difference_update(again)
            built.update(again[j] for j in more.built)
        changed = False
        for i, row in odd.items():
            handle = own[i]
            before = handle.read_ask
            handle.learn_ask(row[0], row[-1], built=i in built)
            changed = changed or handle.read_ask != before
        if changed:
            # The plan's asks are asked afresh from its handles next time, whichever read
            # changed one (a breaker's own refresh reads it alone, and may learn first).
            self._read_plan = (self._read_plan[0], b"", PackedKeys([], b""))

    async def read_views(self, handles: Sequence[BreakerHandle]) -> list[tuple[str, int, int]]:
        """``(state, generation, retry_after_us)`` per handle, one round trip (two when a row
        key asked for alone held no row); never raises on an unreadable hash (it reads as
        "unknown, ask Redis"). Views need only the rows: only a row asked for alone whose key
        held none is read again (from its hash), not what :meth:`_complete` reads again for
        records."""
        own = self._own(handles)
        _, read = await self._read_rows(own)
        views = [
            _raw_view(handle, row, now_us)
            for handle, now_us, row in zip(own, read.now_us, read.rows, strict=True)
        ]
        if read.missing:  # row keys lost alone: their rows packed from their hashes
            lost, more = await self._read_again(own, read.missing)
            for i, handle, now_us, row in zip(
                read.missing, lost, more.now_us, more.rows, strict=True
            ):
                views[i] = _raw_view(handle, row, now_us)
        return views

    async def _read_again(
        self, own: list[RedisBreakerHandle], indexes: list[int]
    ) -> tuple[list[RedisBreakerHandle], _Rows]:
        """The breakers ``own[i]`` for ``i`` in ``indexes``, and their rows read again in one
        call asking for everything (``READ_CONFIG``): what a read does for the rows that
        needed more than it asked for."""
        handles = [own[i] for i in indexes]
        return handles, await self._read_once(handles, READ_CONFIG * len(handles))

    def _own(self, handles: Sequence[BreakerHandle]) -> list[RedisBreakerHandle]:
        """This backend's own handles for ``handles`` (bound here, looked up by name)."""
        checked = self._read_plan[0]
        if handles is checked or handles == checked:  # the registry's: each bound here already
            return checked
        own = []
        for handle in handles:
            mine = self._breakers.get(handle.name)
            if mine is not handle:
                raise ValueError(f"breaker {handle.name!r} is not bound to this RedisBackend")
            own.append(mine)
        return own

    async def _read_rows(self, handles: list[RedisBreakerHandle]) -> tuple[bytes, _Rows]:
        """What was asked for ``handles`` (a byte each: their :attr:`read_ask`), and their
        rows from one ``breaker_read.lua`` call (see its header and :func:`_read`).

        The asks and the keys they send are kept for the next read of the same handles
        (a registry reads the same 1,000 breakers on every scrape, most of them asked for
        the same: no handle visited to ask, no key packed again), until any read changes
        what a handle asks for (:meth:`_complete`); they are then asked afresh. A read in
        flight keeps the asks it was sent with, and its rows are checked against those."""
        if not handles:
            return b"", _Rows([], [], {}, {}, [], [])
        plan_handles, asks, keys = self._read_plan
        if handles is not plan_handles or not asks:
            asks = b"".join([h.read_ask for h in handles])
            if self._cluster:  # one call per breaker: no keys packed for all
                return asks, await self._read_once(handles, asks)
            keys = self._pack_keys(handles, asks)
            if len(handles) > 1:  # a read of one breaker would evict the registry's plan
                self._read_plan = (handles, asks, keys)
        return asks, await self._read_once(handles, asks, keys)

    async def _read_once(
        self, handles: list[RedisBreakerHandle], asks: bytes, keys: PackedKeys | None = None
    ) -> _Rows:
        """One ``breaker_read.lua`` call for ``handles`` (one per breaker on Cluster, where
        they live in different slots), breaker ``i`` asked for ``asks[i]``."""
        script = read_script()
        now_arg = "" if self.clock is None else str(round(self.clock.monotonic() * 1e6))
        if self._cluster:
            replies = await asyncio.gather(
                *(
                    self.run_script(
                        script, self._pack_keys([h], asks[i : i + 1]), [now_arg, asks[i : i + 1]]
                    )
                    for i, h in enumerate(handles)
                )
            )
            rows: list[ReadRow] = []
            read = _Rows([], rows, {}, {}, [], [])
            for i, reply in enumerate(replies):
                one = _read(1, reply, offset=i)
                read.now_us.extend(one.now_us)
                rows.extend(one.rows)
                read.leases.update(one.leases)
                read.extras.update(one.extras)
                read.built.extend(one.built)
                read.missing.extend(one.missing)
            return read
        if keys is None:
            keys = self._pack_keys(handles, asks)
        return _read(len(handles), await self.run_script(script, keys, [now_arg, asks]))

    def _pack_keys(self, handles: list[RedisBreakerHandle], asks: bytes) -> PackedKeys:
        """The keys ``asks`` sends for ``handles`` (see ``breaker_read.lua``: every row key,
        every state hash, then the lease zset and window key of each breaker asked for more
        than its row), each breaker's encoded and packed as RESP once (kept by name),
        joined."""
        encoded = self._encoded_keys
        alone = READ_ROW[0]
        rows: list[bytes] = []
        states: list[bytes] = []
        more: list[bytes] = []
        pieces: list[bytes] = []
        state_pieces: list[bytes] = []
        more_pieces: list[bytes] = []
        for h, ask in zip(handles, asks, strict=True):
            mine = encoded.get(h.name)
            if mine is None:
                state, trials, window, row = raw = [key.encode() for key in h.keys]
                mine = encoded[h.name] = (
                    raw,
                    pack_key(row),
                    pack_key(state),
                    pack_key(trials) + pack_key(window),
                )
            raw = mine[0]
            rows.append(raw[3])
            states.append(raw[0])
            pieces.append(mine[1])
            state_pieces.append(mine[2])
            if ask != alone:
                more += raw[1:3]
                more_pieces.append(mine[3])
        return PackedKeys(rows + states + more, b"".join(pieces + state_pieces + more_pieces))

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
            self._views_synced.clear()
            pubsub = self.client.pubsub()
            try:
                async with asyncio.timeout(self.operation_timeout):
                    await pubsub.subscribe(self.events_channel)
                await self._resync_views()
                self._views_synced.set()
                delay = 0.05
                while not cancelled():
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
                    if message is not None and message.get("type") == "message":
                        self._on_message(message["data"])
                    if self._master_moved(pubsub):
                        # Sentinel named a new master: the old one may stay up (and silent to
                        # us) for seconds before it is demoted. Follow the master now.
                        _log.info("breaker_listener_following_new_master")
                        break
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

    def _start_sentinel_watch(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # pragma: no cover - operations run on a loop
            return
        self._sentinel_watch = loop.create_task(self._watch_sentinels())

    async def _watch_sentinels(self) -> None:
        """Follow Sentinel's ``+switch-master`` announcement: leave the old master at once.

        Why: redis-py asks the sentinels for the master only when it opens a connection, and
        a demoted master keeps its clients (and accepts their writes, which it later drops)
        until Sentinel reconfigures it, 10 s or more after the switch. Subscribed to the
        sentinels, the backend drops every connection to the old master within a few ms of
        the announcement; the next operation connects to the new one.
        """
        pool: Any = self.client.connection_pool
        service = getattr(pool, "service_name", None)
        delay = 0.05
        while not self._stopping and not self._closing:
            for sentinel in self._sentinel.sentinels:
                pubsub = sentinel.pubsub()
                try:
                    await pubsub.subscribe("+switch-master")
                    delay = 0.05
                    while not self._stopping and not self._closing:
                        message = await pubsub.get_message(
                            ignore_subscribe_messages=True, timeout=0.2
                        )
                        if message is None or message.get("type") != "message":
                            continue
                        data = message["data"]
                        fields = (data.decode() if isinstance(data, bytes) else str(data)).split()
                        if fields and fields[0] == service:
                            _log.warning("redis_master_switched", service=service, to=fields[-2:])
                            with contextlib.suppress(Exception):
                                await pool.get_master_address()
                            await pool.disconnect(inuse_connections=True)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    _log.debug("sentinel_watch_reconnecting", error=type(exc).__name__)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 2.0)
                finally:
                    with contextlib.suppress(Exception):
                        await pubsub.aclose()  # type: ignore[no-untyped-call,unused-ignore]
                if self._stopping or self._closing:
                    return

    def _master_moved(self, pubsub: Any) -> bool:
        """Whether a Sentinel-managed pool now names another master than ``pubsub`` uses."""
        master = getattr(self.client.connection_pool, "master_address", None)
        connection = getattr(pubsub, "connection", None)
        if master is None or connection is None:
            return False
        return (connection.host, connection.port) != tuple(master)

    async def _resync_views(self) -> None:
        """Every breaker's local view := what Redis holds now, even an older generation
        (Redis lost transitions in a failover), but never rolled back over what a reply or a
        message applied while the read was in flight (see
        :meth:`RedisBreakerHandle.apply_read_view`)."""
        handles = list(self._breakers.values())
        if not handles:
            return
        asked_at = [handle.view.generation for handle in handles]
        for handle, before, (state, generation, retry_us) in zip(
            handles, asked_at, await self.read_views(handles), strict=True
        ):
            handle.apply_read_view(state, generation, retry_us, asked_at=before)

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
        """Round-trip to Redis; raises :class:`BackendUnavailableError` when it fails.

        Refused at once while the backend is unavailable (its probe decides when it is back).
        """
        client = self.client

        async def ping() -> None:
            await client.ping()

        await self.execute("ping", ping)

    async def check_writable(self) -> None:
        """Can Redis take our writes? Raises :class:`BackendUnavailableError` when not.

        A small ``SET`` with a TTL under :meth:`execute`: fails on ``OOM``, ``READONLY``,
        ``MISCONF``... where a ``PING`` passes (what ``/health/ready`` asks). Refused at once
        while the backend is unavailable.
        """
        await self.execute("write check", self._probe)

    def add_drain(self, owner: object, drain: Callable[[], Awaitable[None]]) -> None:
        """Have :meth:`aclose` await ``drain()`` first, while Redis is still usable.

        For state that must not vanish at shutdown: a DLQ with spooled entries registers
        its ``aclose`` here (and withdraws it with :meth:`discard_drain` once the spool is
        empty, so queues without spooled entries are not kept alive by the backend).
        """
        self._drains[id(owner)] = drain

    def discard_drain(self, owner: object) -> None:
        """Withdraw what :meth:`add_drain` registered for ``owner`` (no-op if nothing)."""
        self._drains.pop(id(owner), None)

    async def aclose(self) -> None:
        """Stop background work and close the pool, if this backend created it."""
        if self._closing:
            return
        self._closing = True
        # Spooled DLQ entries first, while Redis (if reachable) still accepts them. A failure
        # is raised once everything else is closed: never silent, never a leaked pool.
        drain_errors: list[BaseException] = []
        for drain in list(self._drains.values()):
            try:
                await drain()
            except Exception as exc:
                drain_errors.append(exc)
        self._drains.clear()
        for handle in list(self._breakers.values()):
            handle.cancel_timers()
            with contextlib.suppress(BackendError):
                # batched outcomes and locally counted rejections survive a clean close
                await handle.flush(rejections=True)
        self._closed = True  # from here on, scripts are refused
        await self.health.aclose()
        self._stopping = True
        if self._sentinel_watch is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._sentinel_watch, timeout=2)
        if self._listener is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._listener, timeout=2)
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, timeout=2)
        if self._owns_client:
            # A pool passed to Redis() explicitly is not closed by a plain aclose().
            await self.client.aclose(close_connection_pool=True)
        if self._sentinel is not None:
            with contextlib.suppress(Exception):
                await self._sentinel.aclose()
        if drain_errors:
            for extra in drain_errors[1:]:
                _log.error("backend_close_drain_failed", error=str(extra))
            raise drain_errors[0]

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
        await close_on_exit(self.aclose, self, exc)  # the block's own exception goes first

    def __repr__(self) -> str:
        return f"RedisBackend(prefix={self.prefix!r})"
