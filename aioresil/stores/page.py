"""The one shape of a page of results, shared by every store that lists.

Why one shape: ``DeadLetterQueue.list`` and ``CheckpointStore.list`` page the same way
(``entries``, ``next_cursor``; ``None`` on the last page), so code that walks one walks the
other, and a page is iterable and sized like the tuple it holds.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

__all__ = ["Page"]

T = TypeVar("T")


class Page(Generic[T]):
    """Mixin for the frozen page dataclasses: iterate over and count ``entries``."""

    __slots__ = ()

    entries: tuple[T, ...]
    next_cursor: str | None

    def __iter__(self) -> Iterator[T]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)
