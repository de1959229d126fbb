"""README.md is tested: every Python block runs, and its first two commands work (issue 13 item 6).

Each ```python block runs on its own in a fresh interpreter (``tests/readme_blocks.py`` says
why we run them ourselves instead of with sybil, pytest-markdown-docs or pytest-examples),
with top-level ``await``, under a timeout, and must leave stderr empty: no traceback, no
``ResourceWarning`` from an unclosed backend, no task left pending. All blocks start at once
(one subprocess each, launched by a module fixture) so the module takes about as long as its
slowest block. A block that names ``redis://127.0.0.1:6379/0`` runs against a
``redis-server`` this module starts instead, in a database of its own (the server runs with
``--databases 1000``); that URL is the only hidden setup.
New blocks are picked up automatically: a README change that breaks an example fails here.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..readme_blocks import README_URL, Block, python_blocks
from ..servers import RedisServer, free_port

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
RUNNER = ROOT / "tests" / "readme_blocks.py"
BLOCKS = python_blocks(README.read_text(encoding="utf-8"))
RUNNABLE = [block for block in BLOCKS if not block.fragment]
DEADLINE = 120  # seconds for any block; they take about one


def database_url(server: RedisServer, block: Block) -> str:
    return README_URL.replace("127.0.0.1:6379/0", f"127.0.0.1:{server.port}/{block.index}")


@pytest.fixture(scope="module")
def readme_redis() -> Iterator[RedisServer]:
    """A server of our own, a database per block (redis-server defaults to 16 databases)."""
    server = RedisServer(free_port(), extra_args=["--databases", "1000"]).start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="module")
def launched(
    readme_redis: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[int, subprocess.Popen[str]]]:
    assert len(RUNNABLE) < 1000, "one Redis database per block"
    workdir = tmp_path_factory.mktemp("readme")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIORESIL_")}
    processes = {
        block.index: subprocess.Popen(
            [
                sys.executable,
                "-W",
                "default",
                str(RUNNER),
                str(README),
                str(block.index),
                database_url(readme_redis, block),
            ],
            cwd=workdir,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for block in RUNNABLE
    }
    try:
        yield processes
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.communicate()


@pytest.mark.parametrize("block", RUNNABLE, ids=lambda block: f"line{block.line}")
def test_readme_block_runs(block: Block, launched: dict[int, subprocess.Popen[str]]) -> None:
    process = launched[block.index]
    try:
        _, err = process.communicate(timeout=DEADLINE)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        pytest.fail(f"{block.label} did not finish in {DEADLINE} s")
    assert process.returncode == 0, f"{block.label} failed:\n{err[-4000:]}"
    assert err == "", f"{block.label} wrote to stderr (a leak or a warning):\n{err[-4000:]}"


def test_every_python_fence_is_found_and_fragments_are_few() -> None:
    text = README.read_text(encoding="utf-8")
    fences = [line for line in text.splitlines() if line.startswith(("```py", "~~~py"))]
    assert len(BLOCKS) == len(fences) >= 8
    assert sum(block.fragment for block in BLOCKS) <= 2
    assert any(block.uses_redis for block in RUNNABLE)
    for block in BLOCKS:  # fragments are never run, but their syntax is checked
        block.compile()


def test_an_unknown_python_fence_is_an_error_not_a_skip() -> None:
    with pytest.raises(ValueError, match=r"README.md:3: unknown Python fence info"):
        python_blocks("# t\n\n```python norun\nprint(1)\n```\n")
    [block] = python_blocks("# Title\n\n~~~py\nawait x()\n~~~\n")
    assert (block.line, block.heading, block.source, block.fragment) == (
        4,
        "Title",
        "await x()\n",
        False,
    )


def first_commands() -> list[str]:
    """The commands of the README's first ```bash block, without their comments."""
    text = README.read_text(encoding="utf-8")
    start = text.index("```bash\n") + len("```bash\n")
    lines = text[start : text.index("```", start)].splitlines()
    return [line.split("#", 1)[0].strip() for line in lines if line.strip()]


def test_the_readme_test_command_is_the_one_ci_runs() -> None:
    install, test_command = first_commands()
    # From a checkout (aioresil is not on PyPI), with the extra the tour's Redis half needs.
    assert install == "pip install -e '.[redis]' && aioresil demo"
    assert test_command == "pip install -e '.[test]' && python -m pytest"
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert f"python -m {test_command}\n" in ci  # .ci/run spells pip as `python -m pip`


def test_the_readme_demo_command_runs_as_written() -> None:
    install, _ = first_commands()
    command = shlex.split(install.split("&&")[1])
    assert command == ["aioresil", "demo"]
    # `pip install -e .` put the console script beside this interpreter (the same entry point).
    script = shutil.which("aioresil", path=str(Path(sys.executable).parent))
    assert script is not None, "the aioresil console script is not installed"
    result = subprocess.run(
        [script, *command[1:]], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    for change in ("closed -> open", "open -> half_open", "half_open -> closed"):
        assert change in result.stdout
    assert "final stats:" in result.stdout
