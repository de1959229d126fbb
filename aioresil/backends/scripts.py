"""Load the package's ``.lua`` files and run them with ``EVALSHA``.

Why our own runner rather than redis-py's ``register_script``: we need one place that maps every
redis-py exception onto our tree (``BackendUnavailableError`` / ``BackendError``) and that
reloads a script after ``NOSCRIPT`` (Redis restarted, failover, ``SCRIPT FLUSH``) exactly once
per call, without an extra round trip in the common case.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cache
from importlib import resources

__all__ = ["LuaScript", "load_script"]


@dataclass(frozen=True, slots=True)
class LuaScript:
    """A Lua script's source and SHA1 (what ``EVALSHA`` names it by)."""

    name: str
    source: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.source.encode()).hexdigest())


@cache
def load_script(name: str) -> LuaScript:
    """Read ``aioresil/lua/<name>.lua`` from the installed package (cached)."""
    text = resources.files("aioresil.lua").joinpath(f"{name}.lua").read_text(encoding="utf-8")
    return LuaScript(name, text)
