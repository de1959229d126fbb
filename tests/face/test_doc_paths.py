"""Every file the README and ARCHITECTURE.md point to exists (issue: a newcomer's report).

A doc that cites ``test_survival.py`` for a guarantee is only as good as the reader's ability
to open that file; renames and moves rot such references silently. This pins them: each
``tests/``, ``benchmarks/``, ``examples/`` or ``aioresil/`` path must exist in the checkout,
each ``python -m benchmarks NAME`` must name a benchmark module, and a test file is never
cited by its bare name (the reader cannot tell which of ``tests/*/`` holds it).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ["README.md", "ARCHITECTURE.md"]

# A repository path: one of our top-level folders, not preceded by a URL or another path.
_PATH = re.compile(r"(?<![\w./-])(?:tests|benchmarks|examples|aioresil)/[\w./-]*")
# A test module named without its folder: `test_x.py` or `checkpoint/test_x.py`.
_BARE_TEST = re.compile(r"(?<![\w./-])(?!tests/)(?:[\w-]+/)*test_\w+\.py")
_BENCH = re.compile(r"python -m benchmarks ((?:[\w]+ ?)+)")


def cited_paths(text: str) -> set[str]:
    """The repository paths a document names, trailing punctuation removed."""
    return {match.rstrip(".-") for match in _PATH.findall(text)}


def bare_test_names(text: str) -> set[str]:
    return set(_BARE_TEST.findall(text))


def benchmark_names(text: str) -> set[str]:
    return {name for match in _BENCH.findall(text) for name in match.split()}


def test_the_extractors_find_what_they_should() -> None:
    text = (
        "see `tests/stores/test_dlq.py`, tests/integrations and examples/agent.py's run; "
        "https://example.com/aioresil/x is a URL; `test_survival.py` and "
        "`checkpoint/test_x.py` are bare; `python -m benchmarks dlq bench_fleet`."
    )
    assert cited_paths(text) == {
        "tests/stores/test_dlq.py",
        "tests/integrations",
        "examples/agent.py",
    }
    assert bare_test_names(text) == {"test_survival.py", "checkpoint/test_x.py"}
    assert benchmark_names(text) == {"dlq", "bench_fleet"}


@pytest.mark.parametrize("doc", DOCS)
def test_every_cited_path_exists(doc: str) -> None:
    text = (ROOT / doc).read_text(encoding="utf-8")
    paths = cited_paths(text)
    assert paths, f"{doc} cites no path: the pattern broke"
    missing = sorted(path for path in paths if not (ROOT / path).exists())
    assert not missing, f"{doc} names paths that do not exist: {missing}"


@pytest.mark.parametrize("doc", DOCS)
def test_test_files_are_cited_by_their_full_path(doc: str) -> None:
    bare = sorted(bare_test_names((ROOT / doc).read_text(encoding="utf-8")))
    assert not bare, f"{doc} names test files without their tests/... folder: {bare}"


def test_every_benchmark_the_readme_names_exists() -> None:
    modules = {path.stem for path in (ROOT / "benchmarks").glob("bench_*.py")}
    names = benchmark_names((ROOT / "README.md").read_text(encoding="utf-8"))
    assert names
    unknown = sorted(n for n in names if n not in modules and f"bench_{n}" not in modules)
    assert not unknown, f"README.md runs benchmarks that do not exist: {unknown}"
