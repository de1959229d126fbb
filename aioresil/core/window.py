"""Sliding windows of call outcomes, for the failure-rate and slow-call rules.

Both windows keep running sums, so adding an outcome and reading a rate are O(1) (the time
window evicts whole buckets, amortised O(1)). The Lua scripts keep the same sums in a hash with
the same bucket arithmetic, so the model-based test can compare them step for step.
"""

from __future__ import annotations

import math
from collections import deque

__all__ = ["TIME_WINDOW_BUCKETS", "CountWindow", "TimeWindow", "Window"]

TIME_WINDOW_BUCKETS = 10
"""A time-based window of D seconds is kept as this many buckets of D/10 seconds."""


class CountWindow:
    """The last ``size`` outcomes, in a ring buffer."""

    __slots__ = ("_pos", "_ring", "calls", "failures", "size", "slow", "spotless")

    def __init__(self, size: int) -> None:
        self.size = size
        self._ring = [-1] * size  # bit 0: failure, bit 1: slow; -1: empty slot
        self._pos = 0
        self.calls = 0
        self.failures = 0
        self.slow = 0
        self.spotless = False
        """Full, of successes only: one more success changes nothing (every slot holds the
        same value, so where the ring's position stands does not matter), and the breaker's
        hot path skips the add. Set only by :meth:`add_success`; a window whose sums were
        written from outside (a snapshot read from Redis) keeps it ``False``."""

    def add(self, failed: bool, slow: bool, now: float = 0.0) -> None:
        value = int(failed) | (int(slow) << 1)
        if value == 0:
            self.add_success()
            return
        self.spotless = False
        ring = self._ring
        pos = self._pos
        old = ring[pos]
        ring[pos] = value
        pos += 1
        self._pos = 0 if pos == self.size else pos
        if old < 0:
            self.calls += 1
        else:
            self.failures += (value & 1) - (old & 1)
            self.slow += (value >> 1) - (old >> 1)
            return
        self.failures += value & 1
        self.slow += value >> 1

    def add_success(self) -> None:
        """``add(False, False)``, the hot path's case, in as few steps as possible."""
        ring = self._ring
        pos = self._pos
        old = ring[pos]
        ring[pos] = 0
        pos += 1
        self._pos = 0 if pos == self.size else pos
        if old:
            if old < 0:
                self.calls += 1
            else:
                self.failures -= old & 1
                self.slow -= old >> 1
            # A window becomes spotless only here: by its last empty slot filled, or its last
            # failing or slow outcome overwritten, by a success.
            self.spotless = self.calls == self.size and not self.failures and not self.slow

    def expire(self, now: float) -> None:
        """Count windows do not age."""

    def clear(self) -> None:
        self.__init__(self.size)  # type: ignore[misc]


class TimeWindow:
    """Outcomes of the last ``duration`` seconds, in ``TIME_WINDOW_BUCKETS`` buckets."""

    __slots__ = (
        "_buckets",
        "bucket_width",
        "calls",
        "duration",
        "edge",
        "failures",
        "newest",
        "slow",
    )

    def __init__(self, duration: float) -> None:
        self.duration = duration
        self.bucket_width = duration / TIME_WINDOW_BUCKETS
        # Each bucket: [index, calls, failures, slow], oldest first.
        self._buckets: deque[list[int]] = deque()
        self.edge = -math.inf
        """Until this time, an add lands in :attr:`newest` and nothing can expire (what
        :meth:`expire` drops depends only on the bucket index, and time only moves forward):
        a success is ``newest[1] += 1; calls += 1`` (:meth:`add_success_at`, and its
        documented twin in the breaker's hot exit)."""
        self.newest: list[int] = []  # the newest bucket while ``edge`` is finite
        self.calls = 0
        self.failures = 0
        self.slow = 0

    def _index(self, now: float) -> int:
        return math.floor(now / self.bucket_width)

    def add_success(self) -> None:
        raise TypeError("a time window needs the time: use add(False, False, now)")

    def expire(self, now: float) -> None:
        """Drop buckets that fell out of the window at ``now``."""
        oldest_kept = self._index(now) - TIME_WINDOW_BUCKETS + 1
        buckets = self._buckets
        while buckets and buckets[0][0] < oldest_kept:
            _, calls, failures, slow = buckets.popleft()
            self.calls -= calls
            self.failures -= failures
            self.slow -= slow

    def add(self, failed: bool, slow: bool, now: float = 0.0) -> None:
        buckets = self._buckets
        if now < self.edge:
            last = buckets[-1]  # fast path: same bucket as the last add, nothing to expire
        else:
            self.expire(now)
            index = self._index(now)
            if not buckets or buckets[-1][0] < index:
                buckets.append([index, 0, 0, 0])
            last = buckets[-1]
            if last[0] == index:
                # A hair early, so floating-point rounding can never keep an add in a bucket
                # that floor(now / width) would already have moved past.
                self.edge = (index + 1 - 1e-9) * self.bucket_width
                self.newest = last
        last[1] += 1
        last[2] += failed
        last[3] += slow
        self.calls += 1
        self.failures += failed
        self.slow += slow

    def add_success_at(self, now: float) -> None:
        """``add(False, False, now)``, the hot path's case, in as few steps as possible."""
        if now < self.edge:
            self.newest[1] += 1
            self.calls += 1
            return
        self.add(False, False, now)

    def restore_bucket(self, index: int, calls: int, failures: int, slow: int) -> None:
        """Append a bucket read back from storage (oldest first); sums are the caller's."""
        self._buckets.append([index, calls, failures, slow])

    def clear(self) -> None:
        self.edge = -math.inf
        self.newest = []
        self._buckets.clear()
        self.calls = self.failures = self.slow = 0


Window = CountWindow | TimeWindow
