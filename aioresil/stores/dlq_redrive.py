"""Scheduled redrive of a dead letter queue: retried on a schedule, parked when hopeless.

Why: a DLQ that only an operator drains fills up overnight; one retried in a tight loop
hammers a dependency that is still down. Here each task type gets a :class:`RedrivePolicy`
(a first delay, exponential backoff with jitter, a maximum of redrive attempts) and any number
of :class:`RedriveWorker` processes run it together:

* entries are **scheduled** in a sorted set ``rd:due`` (id -> due time), admitted from the
  queue's time index as workers see them (``redrive_admit.lua``);
* a worker **claims** a due entry with the queue's own lease and fencing token
  (``redrive_claim.lua``), so no entry is retried by two workers at once, nor by a worker and
  a manual ``dlq retry``; the claim moves the entry's due time to the lease's end, so a
  worker killed with ``-9`` mid-handler loses nothing: the entry is due again when the lease
  expires;
* while the handler runs, the worker **renews** the lease every third of it
  (``redrive_renew.lua``, fenced by the same token), so a slow handler keeps its entry; when a
  renewal finds the token gone, or cannot reach Redis before the lease ends, the handler is
  cancelled and settles nothing (another worker may hold the entry by then);
* the handler's outcome **settles** it in one step (``redrive_settle.lua``): deleted when
  handled; rescheduled with the next backoff when it failed; **parked** (out of the schedule,
  still in the queue, counted) when its redrive attempts are used up, for an operator to
  inspect, fix and :meth:`Redrive.unpark`.

Every key is under the queue's hash tag (``<prefix>:{dlq:<name>}:rd:*``), next to the queue's
own keys, so each script stays in one Redis Cluster slot. Redrive needs a shared store: it
runs on a :class:`~aioresil.RedisBackend` queue only (a memory queue has one process, which
can call ``dlq.retry_all`` itself).

The handler must be idempotent (``letter.idempotency_key``): a worker killed after the
handler's side effect but before the settle leaves the entry to be redriven again.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
import traceback
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import structlog

from ..backends.base import ScriptRunner
from ..backends.keys import encode_name
from ..backends.scripts import load_script
from ..exceptions import AioresilError
from .dlq_records import DeadLetter, RawFields

if TYPE_CHECKING:
    from .dlq import DeadLetterQueue

__all__ = ["Redrive", "RedrivePolicy", "RedriveStats", "RedriveWorker", "RedriveWorkerStats"]

_log = structlog.get_logger("aioresil")

RedriveHandler = Callable[[DeadLetter], Awaitable[object]]


@dataclass(frozen=True, slots=True, kw_only=True)
class RedrivePolicy:
    """When a task type's dead letters are redriven, and when they are given up on.

    The wait before redrive attempt ``n`` (0-based, counted from the entry's latest failure)
    is ``min(max_delay, delay * multiplier ** n)``, shortened by up to ``jitter`` of itself at
    random so entries that failed together do not come back together. After
    ``max_attempts`` failed redrives the entry is parked.

    Example::

        RedrivePolicy(delay=30, multiplier=2, max_delay=3600, jitter=0.2, max_attempts=6)
    """

    delay: float = 60.0
    multiplier: float = 2.0
    max_delay: float = 3600.0
    jitter: float = 0.1
    max_attempts: int = 5

    def __post_init__(self) -> None:
        for name in ("delay", "max_delay"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not (0 <= value < 1e9)
            ):
                raise ValueError(f"{name} must be a number of seconds >= 0, got {value!r}")
        if self.max_delay < self.delay:
            raise ValueError(f"max_delay ({self.max_delay}) must be >= delay ({self.delay})")
        m = self.multiplier
        if isinstance(m, bool) or not isinstance(m, int | float) or not 1 <= m < 1e6:
            raise ValueError(f"multiplier must be a number >= 1, got {m!r}")
        j = self.jitter
        if isinstance(j, bool) or not isinstance(j, int | float) or not 0 <= j <= 1:
            raise ValueError(f"jitter must be a fraction in 0..1, got {j!r}")
        n = self.max_attempts
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"max_attempts must be an int >= 1, got {n!r}")

    def wait(self, runs: int, rand: float) -> float:
        """Seconds before redrive attempt ``runs`` (0-based); ``rand`` uniform in [0, 1)."""
        try:
            base = self.delay * self.multiplier**runs
        except OverflowError:
            base = self.max_delay
        base = min(self.max_delay, base)
        return base * (1.0 - self.jitter * rand)

    @classmethod
    def parse(cls, text: str) -> RedrivePolicy:
        """``"delay=30,multiplier=2,max_delay=600,jitter=0.1,max_attempts=5"`` (any subset)."""
        values: dict[str, Any] = {}
        for item in text.split(","):
            if not item.strip():
                continue
            key, sep, raw = item.partition("=")
            key = key.strip()
            if not sep or key not in cls.__dataclass_fields__:
                raise ValueError(
                    f"redrive policy items are name=value with names "
                    f"{', '.join(cls.__dataclass_fields__)}; got {item!r}"
                )
            try:
                values[key] = int(raw) if key == "max_attempts" else float(raw)
            except ValueError:
                raise ValueError(f"redrive policy {key} must be a number, got {raw!r}") from None
        return cls(**values)


@dataclass(frozen=True, slots=True, kw_only=True)
class RedriveStats:
    """A queue's redrive schedule at one moment (shared by every worker)."""

    queue: str
    scheduled: int
    due: int
    leased: int
    parked: int
    claimed: int
    handled: int
    failed: int
    parked_total: int
    lease_expired: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "queue": self.queue,
            "scheduled": self.scheduled,
            "due": self.due,
            "leased": self.leased,
            "parked": self.parked,
            "claimed": self.claimed,
            "handled": self.handled,
            "failed": self.failed,
            "parked_total": self.parked_total,
            "lease_expired": self.lease_expired,
        }


@dataclass(frozen=True, slots=True)
class RedriveWorkerStats:
    """What one worker did since it started (``RedriveWorker.stats()``).

    ``errors`` counts unexpected exceptions outside the handler (reading the entry, for
    example); each is settled as a failed redrive so the entry does not come back every lease.
    """

    claimed: int = 0
    handled: int = 0
    failed: int = 0
    parked: int = 0
    lost_leases: int = 0
    admitted: int = 0
    errors: int = 0

    def to_dict(self) -> dict[str, int]:
        return {
            "claimed": self.claimed,
            "handled": self.handled,
            "failed": self.failed,
            "parked": self.parked,
            "lost_leases": self.lost_leases,
            "admitted": self.admitted,
            "errors": self.errors,
        }


class _Shared:
    """``backend.open_storage`` answers: ``None`` in one process, the script runner on Redis."""

    kind = "dlq-redrive"

    def in_process(self, shared: dict[str, Any]) -> None:
        return None

    def on_scripts(self, runner: ScriptRunner) -> ScriptRunner:
        return runner


@dataclass(slots=True)
class _Keys:
    base: str
    due: str = field(init=False)
    parked: str = field(init=False)
    stats: str = field(init=False)

    def __post_init__(self) -> None:
        self.due = self.base + "rd:due"
        self.parked = self.base + "rd:parked"
        self.stats = self.base + "rd:stats"

    def entry(self, entry_id: str) -> str:
        return self.base + "e:" + entry_id


class Redrive:
    """The redrive schedule of one Redis-backed queue: admit, claim, settle, park, unpark.

    Args:
        dlq: a :class:`~aioresil.DeadLetterQueue` on a ``RedisBackend``.
        policies: a :class:`RedrivePolicy` per task type.
        default: the policy of every other task type.

    Example::

        redrive = Redrive(dlq, policies={"send_email": RedrivePolicy(delay=10)})
        print((await redrive.stats()).to_dict())
    """

    def __init__(
        self,
        dlq: DeadLetterQueue,
        *,
        policies: Mapping[str, RedrivePolicy] | None = None,
        default: RedrivePolicy | None = None,
    ) -> None:
        runner = dlq.backend.open_storage(_Shared())
        if runner is None:
            raise TypeError(
                "scheduled redrive needs a DeadLetterQueue on a RedisBackend (workers in many "
                f"processes share its schedule); got a queue on {dlq.backend!r}"
            )
        policies = dict(policies or {})
        for task_type, policy in policies.items():
            if not isinstance(policy, RedrivePolicy):
                raise TypeError(f"policy of {task_type!r} must be a RedrivePolicy, got {policy!r}")
        if default is None:
            default = RedrivePolicy()
        elif not isinstance(default, RedrivePolicy):
            raise TypeError(f"default must be a RedrivePolicy, got {default!r}")
        self.dlq = dlq
        self.backend: ScriptRunner = runner
        self.policies = policies
        self.default = default
        self.keys = _Keys(runner.key("dlq", dlq.name, ""))
        self._random = random.random

    @staticmethod
    def available(dlq: DeadLetterQueue) -> bool:
        """Whether ``dlq`` can be redriven on a schedule (its backend shares scripts)."""
        return dlq.backend.open_storage(_Shared()) is not None

    def policy(self, task_type: str) -> RedrivePolicy:
        """The policy of ``task_type``."""
        return self.policies.get(task_type, self.default)

    def _now(self) -> str:
        # The queue's lease time base (see stores/dlq.py): Redis TIME, or the test clock's
        # wall time when the backend has one (ScriptRunner.clock, part of the contract).
        clock = self.backend.clock
        return "" if clock is None else str(int(clock.time() * 1000))

    def _wall(self) -> float:
        clock = self.backend.clock
        return clock.time() if clock is not None else time.time()

    # ------------------------------------------------------------------ admission

    async def admit(self, letters: list[DeadLetter]) -> int:
        """Schedule entries not scheduled yet (already scheduled or parked ones are skipped)."""
        if not letters:
            return 0
        wall = self._wall()
        keys = [self.keys.due, self.keys.parked, self.keys.base + "lease"]
        args: list[str | int] = [self._now()]
        for letter in letters:
            policy = self.policy(letter.task_type)
            runs = 0  # a fresh entry: the first redrive
            wait = policy.wait(runs, self._random())
            remaining = max(0.0, letter.failed_at.timestamp() + wait - wall)
            keys.append(self.keys.entry(letter.id))
            args += [letter.id, round(remaining * 1000)]
        admitted: Any = await self.backend.run_script(load_script("redrive_admit"), keys, args)
        return int(admitted)

    async def admit_since(self, since: datetime | None) -> tuple[int, datetime | None]:
        """Scan the queue (entries failed at or after ``since``; all when ``None``) and admit.

        Returns ``(admitted, newest failed_at seen)``: the next scan can start there.
        """
        total = 0
        newest: datetime | None = None
        cursor: str | None = None
        while True:
            page = await self.dlq.list(since=since, limit=500, cursor=cursor)
            if page.entries and newest is None:
                newest = page.entries[0].failed_at  # pages are newest first
            total += await self.admit(list(page.entries))
            cursor = page.next_cursor
            if cursor is None:
                return total, newest

    # ------------------------------------------------------------------ claims

    async def candidates(self, count: int) -> list[tuple[str, float]]:
        """The ``count`` entries due soonest, ``(id, due_ms)`` (a plain read; claims recheck)."""
        rows = await self.backend.client.zrange(self.keys.due, 0, count - 1, withscores=True)
        return [(_text(member), float(score)) for member, score in rows]

    async def claim(self, entry_id: str, lease: float) -> tuple[int, int, RawFields | None]:
        """``(status, token or ms to wait, fields)``; status as in ``redrive_claim.lua``."""
        keys = self.keys
        reply: list[Any] = await self.backend.run_script(
            load_script("redrive_claim"),
            [
                keys.due,
                keys.base + "lease",
                keys.base + "tok",
                keys.base + "seq",
                keys.stats,
                keys.entry(entry_id),
            ],
            [entry_id, self._now(), max(int(lease * 1000), 1)],
        )
        status = int(reply[0])
        if status != 1:
            return status, int(reply[1]) if len(reply) > 1 else 0, None
        fields: RawFields = {}
        for i in range(3, len(reply) - 1, 2):
            name = _text(reply[i])
            value = reply[i + 1]
            fields[name] = value if name == "p" else _text(value)
        return 1, int(reply[1]), fields

    async def renew(self, entry_id: str, token: int, lease: float) -> float:
        """Extend a claim to ``lease`` seconds from now; the new deadline (ms) or 0 if lost."""
        keys = self.keys
        result: Any = await self.backend.run_script(
            load_script("redrive_renew"),
            [keys.base + "tok", keys.base + "lease", keys.due],
            [entry_id, token, self._now(), max(int(lease * 1000), 1)],
        )
        return float(result)

    async def settle(
        self,
        letter: DeadLetter,
        fields: RawFields,
        token: int,
        op: str,
        error: BaseException | None = None,
    ) -> int:
        """Handled (``"ok"``), failed (``"fail"``: rescheduled or parked) or ``"release"``."""
        return await self._settle(letter.id, letter.task_type, fields, token, op, error)

    async def _settle(
        self,
        entry_id: str,
        task_type: str,
        fields: RawFields,
        token: int,
        op: str,
        error: BaseException | None = None,
    ) -> int:
        # By id and type, not a DeadLetter: an entry that cannot be read back is settled too.
        keys = self.keys
        tk = _text(fields.get("tk", encode_name(task_type)))
        script_keys = [
            keys.base + "tok",
            keys.base + "lease",
            keys.due,
            keys.parked,
            keys.stats,
            keys.base + "idx",
            keys.base + "counts",
            keys.entry(entry_id),
            keys.base + "t:" + tk,
        ]
        args: list[str | int] = [op, entry_id, token, self._now()]
        if op == "fail":
            runs = int(_text(fields.get("rn", "0")) or 0)
            policy = self.policy(task_type)
            if runs + 1 >= policy.max_attempts:
                next_due = "park"
            else:
                next_due = str(round(policy.wait(runs + 1, self._random()) * 1000))
            error_type, message, text = _error_fields(error, self.dlq.max_traceback_chars)
            wall_ms = int(self._wall() * 1000)
            args += [next_due, f"{max(wall_ms, 0):013d}", error_type, message, text]
        result: Any = await self.backend.run_script(
            load_script("redrive_settle"), script_keys, args
        )
        return int(result)

    # ------------------------------------------------------------------ operators

    async def parked(self, limit: int = 100) -> list[DeadLetter]:
        """Parked entries (oldest parking first) that still exist."""
        ids = await self.backend.client.zrange(self.keys.parked, 0, limit - 1)
        out: list[DeadLetter] = []
        for raw in ids:
            letter = await self.dlq.get(_text(raw))
            if letter is not None:
                out.append(letter)
        return out

    async def unpark(self, entry_id: str) -> bool:
        """Put a parked entry back in the schedule, due now, with its redrive count reset."""
        keys = self.keys
        result: Any = await self.backend.run_script(
            load_script("redrive_unpark"),
            [keys.parked, keys.due, keys.entry(entry_id)],
            [entry_id, self._now()],
        )
        return bool(int(result))

    async def stats(self) -> RedriveStats:
        """The schedule and the fleet's counters (one script call)."""
        keys = self.keys
        reply: list[Any] = await self.backend.run_script(
            load_script("redrive_stats"),
            [keys.due, keys.parked, keys.base + "lease", keys.stats],
            [self._now()],
        )
        counters = {_text(reply[i]): int(reply[i + 1]) for i in range(4, len(reply) - 1, 2)}
        return RedriveStats(
            queue=self.dlq.name,
            scheduled=int(reply[0]),
            due=int(reply[1]),
            leased=int(reply[2]),
            parked=int(reply[3]),
            claimed=counters.get("claimed", 0),
            handled=counters.get("handled", 0),
            failed=counters.get("failed", 0),
            parked_total=counters.get("parked", 0),
            lease_expired=counters.get("lease_expired", 0),
        )


class RedriveWorker:
    """Runs the schedule: admits new entries, claims due ones, runs the handler, settles.

    Any number of workers (in any number of processes) can run on one queue at once.

    Args:
        redrive: the queue's :class:`Redrive` (its policies).
        handler: ``async handler(letter)``; an exception is a failed redrive.
        lease: seconds a claim lasts without news from its worker; while the handler runs
            the worker renews it every ``lease / 3``. A handler whose lease is lost anyway
            (renewal refused, or Redis unreachable until the lease ends) is cancelled and
            settles nothing: the entry may be redriven by another worker.
        concurrency: handlers running at once in this worker.
        poll: the longest idle wait between looks at the schedule (seconds).
        rescan: seconds between full scans of the queue for entries to admit; between them
            a round scans only entries that failed at or after the newest one it saw (an
            entry pushed with a clock behind that is admitted by the next full scan).

    Example::

        worker = RedriveWorker(Redrive(dlq), handler=resend, concurrency=8)
        await worker.run()              # until cancelled (or worker.stop())
    """

    def __init__(
        self,
        redrive: Redrive,
        handler: RedriveHandler,
        *,
        lease: float = 30.0,
        concurrency: int = 4,
        poll: float = 0.5,
        rescan: float = 60.0,
    ) -> None:
        if not callable(handler):
            raise TypeError(f"handler must be an async callable, got {handler!r}")
        if not lease > 0 or not poll > 0 or not rescan > 0:
            raise ValueError("lease, poll and rescan must be > 0 seconds")
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError(f"concurrency must be an int >= 1, got {concurrency!r}")
        self.redrive = redrive
        self.handler = handler
        self.lease = float(lease)
        self.concurrency = concurrency
        self.poll = float(poll)
        self.rescan = float(rescan)
        self._counts: dict[str, int] = dict.fromkeys(RedriveWorkerStats().to_dict(), 0)
        self.rounds = 0
        self._stopping = asyncio.Event()
        self._last_full = -math.inf
        self._newest: datetime | None = None

    def stats(self) -> RedriveWorkerStats:
        """This worker's counters so far."""
        return RedriveWorkerStats(**self._counts)

    @property
    def busy(self) -> bool:
        """Whether handlers are running now."""
        return bool(getattr(self, "_tasks", None))

    def stop(self) -> None:
        """Finish the handlers in flight, then return from :meth:`run`."""
        self._stopping.set()

    async def _admit(self) -> None:
        now = time.monotonic()
        since: datetime | None = self._newest
        if now - self._last_full >= self.rescan:
            self._last_full = now
            since = None
        admitted, newest = await self.redrive.admit_since(since)
        self._counts["admitted"] += admitted
        if newest is not None and (self._newest is None or newest > self._newest):
            self._newest = newest

    async def run_once(self) -> float:
        """One round: admit, then claim and handle what is due. Returns seconds to idle."""
        await self._admit()
        self.rounds += 1
        idle = self.poll
        handled_any = False
        for entry_id, _ in await self.redrive.candidates(self.concurrency * 4):
            if self._stopping.is_set():
                break
            # A free slot first: a lease must not tick while its entry waits for a handler.
            await self._slots.acquire()
            # Measured before the claim: our lease ends no later than this plus the lease.
            asked = asyncio.get_running_loop().time()
            try:
                status, value, fields = await self.redrive.claim(entry_id, self.lease)
            except BaseException:
                self._slots.release()
                raise
            if status != 1 or fields is None:
                self._slots.release()
                if status == -2:
                    idle = min(idle, value / 1000.0)
                    break  # ordered by due time: the rest are later still
                continue
            handled_any = True
            task = asyncio.get_running_loop().create_task(
                self._handle(entry_id, value, fields, asked + self.lease)
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return 0.0 if handled_any else max(idle, 0.01)

    async def run(self) -> RedriveWorkerStats:
        """Work until :meth:`stop` (or cancellation); handlers in flight finish first."""
        self._slots = asyncio.Semaphore(self.concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        try:
            while not self._stopping.is_set():
                try:
                    idle = await self.run_once()
                except AioresilError as error:
                    _log.warning(
                        "dlq_redrive_round_failed", queue=self.redrive.dlq.name, error=str(error)
                    )
                    idle = self.poll
                if idle > 0:
                    try:
                        await asyncio.wait_for(self._stopping.wait(), timeout=idle)
                    except TimeoutError:
                        pass
        finally:
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
        return self.stats()

    async def _handle(self, entry_id: str, token: int, fields: RawFields, expires: float) -> None:
        redrive = self.redrive
        try:
            await self._redrive(entry_id, token, fields, expires)
        except AioresilError as error:
            # The lease expires on its own: the entry is due again then.
            _log.warning(
                "dlq_redrive_settle_failed",
                queue=redrive.dlq.name,
                entry_id=entry_id,
                error=str(error),
            )
        except Exception as error:
            # Not the handler's failure but ours (reading the entry back, an unexpected
            # reply): settled as a failed redrive by the policy, so the entry backs off and is
            # parked in the end instead of coming back every lease, unnoticed, forever.
            self._counts["errors"] += 1
            _log.exception(
                "dlq_redrive_error", queue=redrive.dlq.name, entry_id=entry_id, error=repr(error)
            )
            task_type = _text(fields.get("ty", ""))
            try:
                result = await redrive._settle(entry_id, task_type, fields, token, "fail", error)
            except Exception as settle_error:
                _log.warning(
                    "dlq_redrive_settle_failed",
                    queue=redrive.dlq.name,
                    entry_id=entry_id,
                    error=repr(settle_error),
                )
            else:
                self._count_failure(entry_id, task_type, result)
        finally:
            self._slots.release()

    async def _redrive(self, entry_id: str, token: int, fields: RawFields, expires: float) -> None:
        redrive = self.redrive
        letter = await redrive.dlq.get(entry_id)
        if letter is None:
            return  # removed meanwhile (an operator): nothing to redrive
        self._counts["claimed"] += 1
        try:
            kept = await self._run_leased(letter, token, expires)
        except Exception as exc:
            result = await redrive.settle(letter, fields, token, "fail", exc)
            self._count_failure(entry_id, letter.task_type, result)
            return
        except BaseException:
            await asyncio.shield(redrive.settle(letter, fields, token, "release"))
            raise
        if not kept:
            # Another worker may run the entry now: its outcome is theirs to settle.
            self._counts["lost_leases"] += 1
            _log.warning("dlq_lease_lost", queue=redrive.dlq.name, entry_id=entry_id)
            return
        if await redrive.settle(letter, fields, token, "ok"):
            self._counts["handled"] += 1
        else:
            self._counts["lost_leases"] += 1
            _log.warning("dlq_lease_lost", queue=redrive.dlq.name, entry_id=entry_id)

    async def _run_leased(self, letter: DeadLetter, token: int, expires: float) -> bool:
        """Run the handler, renewing its lease every third of it; ``False`` if it was lost.

        Why: a handler slower than the lease would otherwise lose its entry to another worker
        while still running it (two runs at once). ``expires`` is a loop-clock bound on the
        lease, taken before the claim or renewal was sent, so it is never later than Redis's
        deadline. A lost lease (the token is gone, or no renewal got through before
        ``expires``) cancels the handler. Its exception, if any, is raised.
        """
        loop = asyncio.get_running_loop()
        run = asyncio.ensure_future(self.handler(letter))
        warned = False
        try:
            while not run.done():
                left = expires - loop.time()
                if left > 0:
                    await asyncio.wait({run}, timeout=min(self.lease / 3, left))
                    if run.done():
                        break
                    left = expires - loop.time()
                if left <= 0:
                    await _cancel(run)
                    return False
                asked = loop.time()
                try:
                    async with asyncio.timeout(left):
                        deadline = await self.redrive.renew(letter.id, token, self.lease)
                except (AioresilError, TimeoutError) as error:
                    if not warned:  # retried until the lease ends; one line per run
                        warned = True
                        _log.warning(
                            "dlq_redrive_renew_failed",
                            queue=self.redrive.dlq.name,
                            entry_id=letter.id,
                            error=str(error) or type(error).__name__,
                        )
                    continue
                if not deadline:
                    await _cancel(run)
                    return False
                expires = asked + self.lease
        except BaseException:
            run.cancel()  # we are cancelled: the handler stops too, its outcome unread
            run.add_done_callback(_retrieve)
            raise
        run.result()
        return True

    def _count_failure(self, entry_id: str, task_type: str, result: int) -> None:
        if result == 0:
            self._counts["lost_leases"] += 1
        elif result < 0:
            self._counts["parked"] += 1
            _log.warning(
                "dlq_redrive_parked",
                queue=self.redrive.dlq.name,
                entry_id=entry_id,
                task_type=task_type,
                runs=-result,
            )
        else:
            self._counts["failed"] += 1


def _retrieve(run: asyncio.Future[object]) -> None:
    if not run.cancelled():
        run.exception()  # retrieved: not "Task exception was never retrieved"


async def _cancel(run: asyncio.Future[object]) -> None:
    """Cancel a handler whose lease is lost and wait until it has stopped (whatever it raised:
    its outcome no longer counts)."""
    run.cancel()
    await asyncio.wait({run})
    _retrieve(run)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _error_fields(error: BaseException | None, max_traceback: int) -> tuple[str, str, str]:
    """``(type, message, traceback)`` of a failed redrive, cut as the queue cuts them."""
    if error is None:
        return "", "redrive failed", ""
    text = "".join(traceback.format_exception(error)) if error.__traceback__ else ""
    if len(text) > max_traceback:
        text = "...\n" + text[len(text) - max_traceback :]
    return type(error).__qualname__, str(error)[:4096], text
