"""The package's structlog logger, imported on first use.

Why lazy: structlog pulls in asyncio, logging and more (tens of ms); a breaker only logs on
transitions and failures, so ``import aioresil`` should not pay for it up front.
"""

from __future__ import annotations

from typing import Any

__all__ = ["LazyLogger", "get_logger"]


class LazyLogger:
    """Forwards every attribute to ``structlog.get_logger(name)``, created on first access."""

    __slots__ = ("_logger", "_name")

    def __init__(self, name: str) -> None:
        self._name = name
        self._logger: Any = None

    def __getattr__(self, attr: str) -> Any:
        logger = self._logger
        if logger is None:
            import structlog

            logger = self._logger = structlog.get_logger(self._name)
        return getattr(logger, attr)


def get_logger(name: str = "aioresil") -> Any:
    """A logger usable like ``structlog.get_logger(name)``; structlog loads on first call."""
    return LazyLogger(name)
