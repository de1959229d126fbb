"""Developer sessions: ``nox`` runs tests, lint and typecheck; ``nox -s bench`` the benchmarks."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True

PYTHON = "3.11"


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """The whole suite (the README's test command), with real Redis when available."""
    session.install("-e", ".[test]")
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff lint and format check."""
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", "aioresil")


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the package."""
    session.install("-e", ".[test]", "mypy")
    session.run("mypy", "--strict", "aioresil")


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Every benchmark in one run; writes benchmarks/results.md (ratios, not absolute times)."""
    session.install(
        "-e",
        ".[test]",
        "pybreaker",
        "aiobreaker",
        "purgatory",  # not purgatory[redis]: that pins redis<6; its Redis storage works on 8
        "circuitbreaker",
        "interlock-cb",
        "tenacity",  # bench_pipeline: Retry vs tenacity and stamina
        "stamina",
    )
    session.run("python", "-m", "benchmarks", *session.posargs)
