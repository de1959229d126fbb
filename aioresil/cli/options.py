"""Checks of single command-line values, run by argparse while it parses (``type=``).

Why at parse time: a bad value is the user's mistake, so it is reported before anything is
imported, bound or connected, as a usage error (exit 2) that names the option the user typed
(``--dlq must not be empty``), never as the library's own message about a parameter the user
never saw (``recovery_timeout must be a finite number > 0, got nan``), nor after a Redis
round trip. Rules that involve two options (``--dlq-warning <= --dlq-critical``) are checked
by the command right after parsing, still before connecting.

Each factory takes the option's name, so its message is whole on its own;
:class:`OneLineParser` prints it as the only line on stderr.
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable
from typing import NoReturn

from ..stores.dlq_codec import check_task_type

__all__ = [
    "OneLineParser",
    "cursor",
    "duration",
    "integer",
    "name",
    "seconds",
    "task_type",
    "text",
]

_ARGUMENT = re.compile(r"argument ([^:]+): (.*)", re.DOTALL)


class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line on stderr and exit 2.

    ``aioresil dlq list: error: --limit must be an integer in 1..1000, got 0`` rather than
    argparse's usage block followed by ``argument --limit: ...``: one line is what the CLI
    promises for every mistake (``--help`` shows the usage). Subparsers inherit the class.
    """

    def error(self, message: str) -> NoReturn:
        found = _ARGUMENT.fullmatch(message)
        if found is not None:
            options, detail = found.groups()
            # our checks name the option themselves; argparse's own messages do not
            if any(detail.startswith(option) for option in options.split("/")):
                message = detail
            else:
                message = f"{options}: {detail}"
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _fail(message: str) -> NoReturn:
    raise argparse.ArgumentTypeError(message)


def integer(option: str, low: int, high: int | None = None) -> Callable[[str], int]:
    """An ``int`` in ``low..high`` (no upper bound when ``high`` is ``None``)."""
    span = f">= {low}" if high is None else f"in {low}..{high}"

    def check(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            _fail(f"{option} must be an integer {span}, got {value!r}")
        if number < low or (high is not None and number > high):
            _fail(f"{option} must be an integer {span}, got {number}")
        return number

    return check


def seconds(option: str, *, zero: bool = True, most: float | None = None) -> Callable[[str], float]:
    """A finite number of seconds: ``>= 0`` (``> 0`` without ``zero``), at most ``most``."""

    def check(value: str) -> float:
        low = ">= 0" if zero else "> 0"
        span = low if most is None else f"{low} and <= {most:g}"
        try:
            number = float(value)
        except ValueError:
            _fail(f"{option} must be a number of seconds {span}, got {value!r}")
        if (
            not math.isfinite(number)
            or number < 0
            or (number == 0 and not zero)
            or (most is not None and number > most)
        ):
            _fail(f"{option} must be a number of seconds {span}, got {value!r}")
        return number

    return check


def text(option: str) -> Callable[[str], str]:
    """Any text that is not empty or blank (a service name)."""

    def check(value: str) -> str:
        if not value.strip():
            _fail(f"{option} must not be empty")
        return value

    return check


def name(option: str, what: str) -> Callable[[str], str]:
    """A queue or breaker name: any non-empty text (the library encodes it inside keys)."""

    def check(value: str) -> str:
        if not value:
            _fail(f"{option} must not be empty (a {what} name)")
        return value

    return check


def task_type(option: str) -> Callable[[str], str]:
    """A task type as :class:`~aioresil.DeadLetterQueue` accepts it (its own rule)."""

    def check(value: str) -> str:
        try:
            return check_task_type(value)
        except ValueError as exc:
            detail = str(exc).removeprefix("task_type ")
            _fail(f"{option} {detail}, got {value!r}")

    return check


def duration(option: str) -> Callable[[str], str]:
    """A duration ``parse_duration`` reads (``7d``, ``90s``, ``0``); the text is kept."""

    def check(value: str) -> str:
        from ..health.admin import parse_duration

        try:
            parse_duration(value)
        except ValueError as exc:
            _fail(f"{option}: {exc}")
        return value

    return check


def cursor(option: str) -> Callable[[str], str]:
    """A page cursor as ``dlq list`` printed it (``next_cursor``); the queue's own rule."""

    def check(value: str) -> str:
        from ..stores.dlq import _CURSOR_RE  # the rule DeadLetterQueue.list applies

        if not _CURSOR_RE.match(value):
            _fail(f"{option} must be a next_cursor that 'dlq list' printed, got {value!r}")
        return value

    return check
