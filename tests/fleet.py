"""Drive fleet worker processes (``tests/workers/fleet_worker.py``) from a test or benchmark.

A :class:`Worker` is one separate Python process with its own ``RedisBackend`` and its own
copy of a breaker; the only thing it shares with the others is the Redis server. Commands go
as JSON lines on its stdin, answers come back as ``@@ <json>`` lines on its stdout (read by a
thread, so a slow worker never blocks the caller's event loop when :meth:`Worker.areceive`
is used). ``tests/integration/test_fleet.py`` and ``benchmarks/bench_redis_breaker.py`` both use it.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
WORKER = ROOT / "tests" / "workers" / "fleet_worker.py"
REPLY_TIMEOUT = 30.0


class Worker:
    """One fleet member process: send a JSON command, await its one-line JSON answer."""

    def __init__(self, spec: dict[str, Any], log: Path) -> None:
        self.log = log
        self._stderr = log.open("wb")
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.process = subprocess.Popen(
            [sys.executable, str(WORKER), json.dumps(spec)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            env=env,
            cwd=ROOT,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith("@@ "):
                self._lines.put(line[3:])
        self._lines.put(None)

    def send(self, op: str, **fields: Any) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"op": op, **fields}) + "\n")
        self.process.stdin.flush()

    def receive(self, timeout: float = REPLY_TIMEOUT) -> dict[str, Any]:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"worker {self.pid} did not answer: {self.stderr()}") from None
        if line is None:
            raise AssertionError(f"worker {self.pid} exited: {self.stderr()}")
        answer: dict[str, Any] = json.loads(line)
        assert answer.get("failovers", 0) == 0, f"worker {self.pid} lost Redis: {answer}"
        return answer

    async def areceive(self) -> dict[str, Any]:
        """:meth:`receive` without blocking the test's event loop."""
        return await asyncio.to_thread(self.receive)

    @property
    def pid(self) -> int:
        return self.process.pid

    def stderr(self) -> str:
        self._stderr.flush()
        return self.log.read_text(errors="replace")[-2000:]

    def stop(self) -> None:
        """Ask politely, then SIGKILL by PID."""
        if self.process.poll() is None:
            try:
                self.send("exit")
                self.process.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                os.kill(self.pid, signal.SIGKILL)
                self.process.wait(timeout=5)
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()
        self._stderr.close()
