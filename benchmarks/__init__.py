"""Benchmarks, run together by ``nox -s bench`` (``python -m benchmarks``)."""
