"""Find the Python blocks of README.md and run one as a script with top-level ``await``.

Why our own extractor rather than sybil, pytest-markdown-docs or pytest-examples: what this
README needs is each block in its own interpreter, with top-level ``await`` (compiled with
``ast.PyCF_ALLOW_TOP_LEVEL_AWAIT``), its Redis URL pointed at the test's server, and its stderr
checked: a block that forgets to close a backend shows up as a ``ResourceWarning`` there, and
one that blocks forever is killed by a timeout instead of hanging the suite. Those plugins run
blocks inside the pytest process (where ``filterwarnings = error`` and the shared event loop
would change what a block sees); bending them to the above would take more code than the
~100 lines here, and another test dependency.

The rules (also written in the README's "Development" section):

* Every fenced block whose info string is ``python`` (or ``py``, ``python3``) runs, on its
  own, in a fresh interpreter, inside a running event loop, with top-level ``await``.
* ``python fragment`` marks a block that is deliberately not runnable (few of them): it is
  still compiled, so its syntax is checked. Any other word after ``python`` is an error, so a
  typo never turns a block off silently.
* The only setup is the Redis URL: ``redis://127.0.0.1:6379/0`` in a block is replaced by the
  test server's URL (each block gets its own database number).

``python tests/readme_blocks.py README.md INDEX [REDIS_URL]`` runs block ``INDEX``.
"""

from __future__ import annotations

import ast
import asyncio
import gc
import inspect
import re
import sys
from dataclasses import dataclass
from pathlib import Path

README_URL = "redis://127.0.0.1:6379/0"
RUNNABLE = {"python", "py", "python3"}
FRAGMENT = "fragment"
_FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")


@dataclass(frozen=True)
class Block:
    """One fenced Python block: where it starts, the heading above it, its source."""

    index: int
    line: int  # 1-based line of the first source line
    heading: str
    source: str
    fragment: bool

    @property
    def label(self) -> str:
        return f"README.md:{self.line} ({self.heading})"

    def code(self, redis_url: str | None = None) -> str:
        """The source, padded so tracebacks show README line numbers."""
        source = self.source
        if redis_url is not None:
            source = source.replace(README_URL, redis_url)
        return "\n" * (self.line - 1) + source

    def compile(self, redis_url: str | None = None) -> object:
        return compile(
            self.code(redis_url), "README.md", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
        )

    @property
    def uses_redis(self) -> bool:
        return README_URL in self.source


def python_blocks(text: str) -> list[Block]:
    """Every fenced block tagged as Python, in order; raises on an unknown Python tag."""
    blocks: list[Block] = []
    heading = "top"
    lines = text.splitlines()
    position = 0
    while position < len(lines):
        line = lines[position]
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        match = _FENCE.match(line)
        if match is None:
            position += 1
            continue
        fence, words = match["fence"], match["info"].split()
        end = position + 1
        while end < len(lines) and not (
            lines[end].strip().startswith(fence) and set(lines[end].strip()) == {fence[0]}
        ):
            end += 1
        if words and words[0].lower() in RUNNABLE:
            extra = words[1:]
            if extra not in ([], [FRAGMENT]):
                raise ValueError(
                    f"README.md:{position + 1}: unknown Python fence info {match['info']!r}; "
                    f"use ```python (runs) or ```python {FRAGMENT} (compiled only)"
                )
            blocks.append(
                Block(
                    index=len(blocks),
                    line=position + 2,
                    heading=heading,
                    source="\n".join(lines[position + 1 : end]) + "\n",
                    fragment=bool(extra),
                )
            )
        position = end + 1
    return blocks


async def _run(code: object) -> None:
    namespace: dict[str, object] = {"__name__": "__main__"}
    result = eval(code, namespace)  # running the README is the point
    if inspect.iscoroutine(result):
        await result


def main() -> None:
    readme, index = Path(sys.argv[1]), int(sys.argv[2])
    redis_url = sys.argv[3] if len(sys.argv) > 3 else None
    block = python_blocks(readme.read_text(encoding="utf-8"))[index]
    asyncio.run(_run(block.compile(redis_url)))
    gc.collect()  # an unclosed resource warns now, on this process's stderr


if __name__ == "__main__":
    main()
