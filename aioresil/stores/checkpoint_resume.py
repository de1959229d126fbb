"""Resuming a long task: load once, save with the loaded version, throttle, memoize steps.

Why a handle rather than bare ``save``/``load``: a loop that resumes after a crash needs three
things the raw store leaves to the caller, and that callers get wrong:

* **Fencing.** The handle saves with ``expected_version`` = the version it loaded (then the one
  it wrote), so when two workers resume the same task, the second one to save gets
  :class:`~aioresil.exceptions.CheckpointConflictError` instead of forking the task's history.
* **Throttling.** A hot loop should not write on every item. ``cp.every(n=100, seconds=5)``
  makes ``await cp.maybe_save(state)`` write only every 100 calls or when 5 s passed since the
  last write (whichever comes first); a clean exit of the ``async with`` block writes whatever
  is pending. An exit by exception does not: the state passed last may describe work the error
  interrupted, so the last written checkpoint stands and the items after it run again.
* **Step memoization.** ``await cp.step("fetch_docs", fetch)`` runs ``fetch()`` once, stores its
  result with the checkpoint (same atomic save, same version), and on a later resume returns
  the stored result without calling ``fetch`` again.

Example::

    async with store.resume("import-42", initial={"next": 0, "total": 0}).every(n=100) as cp:
        docs = await cp.step("list_files", list_files)           # runs once per task
        for i in range(cp.state["next"], len(docs)):
            total = cp.state["total"] + await process(docs[i])
            await cp.maybe_save({"next": i + 1, "total": total})
    # leaving the block cleanly wrote the last pending state
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, Self

import anyio

from ..exceptions import CheckpointOutcomeUnknownError
from .serialize import dumps_checked

if TYPE_CHECKING:
    from ..clock import Clock
    from .checkpoint_backends import RawCheckpoint
    from .serialize import Serializer


class ResumableStore(Protocol):
    """What a :class:`CheckpointRun` needs from its :class:`~aioresil.CheckpointStore`.

    Why a protocol: ``checkpoint.py`` builds runs (``store.resume()``), so this module must
    not import it back (no import cycles; ``tests/test_layering.py``). The store hands a run
    a small accessor implementing it, not itself: no private attribute crosses modules.
    """

    @property
    def serializer(self) -> Serializer: ...

    @property
    def clock(self) -> Clock: ...

    def task(self, task_id: object) -> str: ...

    def check_size(self, task_id: str, state_bytes: int, step_bytes: int) -> None: ...

    def corrupt(self, task_id: str, why: str) -> Exception: ...

    def decode(self, task_id: str, data: bytes, what: str = "state") -> Any: ...

    async def load_raw(self, task_id: str) -> RawCheckpoint | None: ...

    async def write(
        self, task_id: str, task: str, data: bytes, expected: int | None, steps: bytes | None
    ) -> int: ...


__all__ = ["CheckpointRun"]


class CheckpointRun:
    """One worker's hold on one task, from ``store.resume(task_id, initial=...)``.

    Use it as an async context manager; inside the block:

    Attributes:
        task_id: the task.
        state: the last saved state when the block starts (or ``initial``); after that, the
            state last passed to :meth:`save` or :meth:`maybe_save`.
        version: the version this worker last loaded or wrote (0: none yet).
        resumed: ``True`` when the block started from a stored checkpoint.
    """

    def __init__(self, store: ResumableStore, task_id: str, initial: bytes) -> None:
        self._store = store
        self._task = store.task(task_id)
        self._initial = initial
        self.task_id = task_id
        self.state: Any = None
        self.version = 0
        self.resumed = False
        self._steps: dict[str, Any] = {}
        self._steps_size = 0
        self._steps_dirty = False
        self._unsaved_steps: set[str] = set()
        self._every_n: int | None = None
        self._every_seconds: float | None = None
        self._pending = 0
        self._last_write = 0.0
        self._lock = anyio.Lock()
        self._step_locks: dict[str, anyio.Lock] = {}
        self._open = False
        self._entered = False

    # ------------------------------------------------------------------ lifecycle

    def every(self, *, n: int | None = None, seconds: float | None = None) -> Self:
        """Throttle :meth:`maybe_save`: write every ``n`` calls or ``seconds`` after the last
        write, whichever comes first. With neither (the default) every call writes.

        Returns the handle, so it chains: ``async with store.resume(t).every(n=50) as cp:``.
        Time is the store's clock (``clock.monotonic()``).
        """
        if n is not None:
            if isinstance(n, bool) or not isinstance(n, int):
                raise TypeError(f"n must be an int or None, got {n!r}")
            if n < 1:
                raise ValueError(f"n must be >= 1, got {n}")
        if seconds is not None:
            if isinstance(seconds, bool) or not isinstance(seconds, int | float):
                raise TypeError(f"seconds must be a number or None, got {seconds!r}")
            if not math.isfinite(seconds) or seconds <= 0:
                raise ValueError(f"seconds must be a positive number, got {seconds!r}")
        self._every_n = n
        self._every_seconds = None if seconds is None else float(seconds)
        return self

    async def __aenter__(self) -> Self:
        if self._entered:
            raise RuntimeError(f"resume({self.task_id!r}) can be entered only once")
        self._entered = True
        store = self._store
        raw = await store.load_raw(self.task_id)
        if raw is None:
            self.state = store.serializer.loads(self._initial)
            self.version = 0
        else:
            self.state = store.decode(self.task_id, raw.data)
            self.version = raw.version
            self.resumed = True
            if raw.steps is not None:
                steps = store.decode(self.task_id, raw.steps, "step results")
                if not isinstance(steps, dict):
                    raise store.corrupt(self.task_id, "its step results are not a mapping")
                self._steps = steps
                self._steps_size = len(raw.steps)
        self._last_write = store.clock.monotonic()
        self._open = True
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if exc_type is None and self._pending:
                await self.flush()
        finally:
            self._open = False

    def _check_open(self) -> None:
        if not self._open:
            raise RuntimeError(
                f"checkpoint run {self.task_id!r} is not open: use it inside "
                "'async with store.resume(...) as cp:'"
            )

    # ------------------------------------------------------------------ saving

    @property
    def pending(self) -> bool:
        """Whether :meth:`maybe_save` was given a state that is not written yet."""
        return self._pending > 0

    async def save(self, state: Any) -> int:
        """Write ``state`` now, fenced by the version this worker holds; return the new one.

        Raises:
            CheckpointConflictError: another writer saved this task since this worker loaded
                or wrote it; nothing was written and this handle stays stale (every later save
                conflicts too), so the worker should stop.
            SerializationError, CheckpointTooLargeError: the state was refused; nothing written.
        """
        self._check_open()
        async with self._lock:
            return await self._write(state)

    async def maybe_save(self, state: Any) -> bool:
        """Remember ``state``; write it if the :meth:`every` throttle says it is time.

        Returns whether it wrote. Pass a state that describes completed work only: the state
        is serialized when written, not when passed.
        """
        self._check_open()
        self.state = state
        self._pending += 1
        if not self._due():
            return False
        async with self._lock:
            await self._write(self.state)
        return True

    async def flush(self) -> bool:
        """Write the pending :meth:`maybe_save` state, if any; return whether it wrote."""
        self._check_open()
        async with self._lock:
            if not self._pending:
                return False
            await self._write(self.state)
            return True

    def _due(self) -> bool:
        n, seconds = self._every_n, self._every_seconds
        if n is None and seconds is None:
            return True
        if n is not None and self._pending >= n:
            return True
        return seconds is not None and self._store.clock.monotonic() - self._last_write >= seconds

    async def _write(self, state: Any) -> int:
        store = self._store
        data = dumps_checked(store.serializer, state, f"checkpoint state of {self.task_id!r}")
        steps: bytes | None = None
        steps_size = self._steps_size
        if self._steps_dirty:
            steps = dumps_checked(
                store.serializer, self._steps, f"step results of {self.task_id!r}"
            )
            steps_size = len(steps)
        store.check_size(self.task_id, len(data), steps_size)
        self.version = await store.write(self.task_id, self._task, data, self.version, steps)
        self.state = state
        self._pending = 0
        self._last_write = store.clock.monotonic()
        if steps is not None:
            self._steps_dirty = False
            self._steps_size = steps_size
            self._unsaved_steps.clear()
        return self.version

    # ------------------------------------------------------------------ steps

    @property
    def completed_steps(self) -> frozenset[str]:
        """Names of the steps whose results are stored with this checkpoint."""
        return frozenset(self._steps)

    async def step(self, name: str, fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        """Run ``await fn(*args)`` once per task and return its (JSON) result.

        The first time, the result is stored with the checkpoint in one save (fenced by the
        version, like :meth:`save`; the current :attr:`state` is written with it). Once stored,
        every later call, in this run or any resumed one, returns the stored result without
        calling ``fn``. The value returned is always the stored form (a JSON round trip:
        tuples come back as lists), so a first run and a resumed run see the same value.

        If ``fn`` raises, nothing is stored and the error propagates; if the worker crashes
        after ``fn`` returned but before the save, the step runs again on resume (at least
        once, stored exactly once). If the save's outcome is unknown (a lost reply:
        :class:`~aioresil.exceptions.CheckpointOutcomeUnknownError`), the result is kept and
        calling ``step`` again saves it without calling ``fn`` a second time.

        Example::

            docs = await cp.step("fetch_docs", fetch_docs, query)
        """
        self._check_open()
        if not isinstance(name, str):
            raise TypeError(f"step name must be a str, got {type(name).__name__}")
        if not name:
            raise ValueError("step name must not be empty")
        store = self._store
        if name in self._steps and name not in self._unsaved_steps:
            return self._copy(self._steps[name], name)
        # One run per name even when two tasks of this worker ask at once: the second waits
        # for the first and returns its stored result.
        step_lock = self._step_locks.setdefault(name, anyio.Lock())
        async with step_lock:
            if name in self._unsaved_steps:
                # fn ran and its save's outcome is unknown (lost reply): save again, never
                # run fn twice. The store recognizes its own write if the first one landed.
                async with self._lock:
                    if name in self._unsaved_steps:
                        await self._write(self.state)
            if name in self._steps:
                return self._copy(self._steps[name], name)
            result = await fn(*args)
            encoded = dumps_checked(
                store.serializer, result, f"result of step {name!r} of {self.task_id!r}"
            )
            async with self._lock:
                self._steps[name] = store.serializer.loads(encoded)
                self._steps_dirty = True
                self._unsaved_steps.add(name)
                try:
                    await self._write(self.state)
                except CheckpointOutcomeUnknownError:
                    raise  # keep the result: the retry saves it without calling fn again
                except BaseException:
                    del self._steps[name]
                    self._unsaved_steps.discard(name)
                    raise
            return store.serializer.loads(encoded)

    def _copy(self, value: Any, name: str) -> Any:
        serializer = self._store.serializer
        return serializer.loads(dumps_checked(serializer, value, f"stored step {name!r}"))

    def __repr__(self) -> str:
        return (
            f"CheckpointRun(task_id={self.task_id!r}, version={self.version}, "
            f"steps={len(self._steps)}, pending={self.pending})"
        )
