"""One naming scheme across the public API (issue 12, item 4), checked by walking ``__all__``.

- exceptions end in ``Error``; the old names are deprecated aliases of the same classes;
- statistics are read with ``stats()`` and are frozen dataclasses with ``to_dict()``;
- every page has ``entries`` and ``next_cursor``, iterates over its entries and has ``len()``.
"""

from __future__ import annotations

import dataclasses
import importlib

import pytest

import aioresil
from aioresil import exceptions

PUBLIC = {name: getattr(aioresil, name) for name in aioresil.__all__}
CLASSES = {name: obj for name, obj in PUBLIC.items() if isinstance(obj, type)}


def test_every_public_exception_ends_in_error() -> None:
    errors = [n for n, c in CLASSES.items() if issubclass(c, BaseException)]
    assert errors  # the walk found the exception tree
    assert [n for n in errors if not n.endswith("Error")] == []


def test_every_exception_of_the_tree_is_public() -> None:
    tree = set(exceptions.__all__)
    assert tree <= set(aioresil.__all__)


@pytest.mark.parametrize("module", ["aioresil", "aioresil.exceptions"])
@pytest.mark.parametrize("old", sorted(exceptions.DEPRECATED_NAMES))
def test_old_exception_names_are_deprecated_aliases(module: str, old: str) -> None:
    new = exceptions.DEPRECATED_NAMES[old]
    assert new.endswith("Error") and new in aioresil.__all__
    assert old not in aioresil.__all__
    with pytest.warns(DeprecationWarning, match=f"{old} is deprecated; use {new}"):
        alias = getattr(importlib.import_module(module), old)
    assert alias is getattr(aioresil, new)


def test_statistics_are_read_with_stats() -> None:
    with_stats = [n for n, c in CLASSES.items() if hasattr(c, "stats")]
    assert {"CircuitBreaker", "BreakerRegistry", "Retry", "DeadLetterQueue"} <= set(with_stats)
    for name, cls in CLASSES.items():
        if hasattr(cls, "statistics"):
            # only the deprecated alias may keep the old name, next to stats()
            assert hasattr(cls, "stats"), name
            assert "deprecated" in (cls.statistics.__doc__ or "").lower(), name


def test_statistics_classes_are_frozen_dataclasses_with_to_dict() -> None:
    stats_classes = [
        c for n, c in CLASSES.items() if n.endswith(("Stats", "Statistics")) and n != "Statistics"
    ]
    assert len(stats_classes) >= 7
    for cls in stats_classes:
        assert dataclasses.is_dataclass(cls), cls
        assert cls.__dataclass_params__.frozen, cls  # type: ignore[attr-defined]
        assert callable(getattr(cls, "to_dict", None)), cls


def test_deprecated_statistics_alias_warns_and_answers() -> None:
    retry = aioresil.Retry(attempts=2)
    with pytest.warns(DeprecationWarning, match=r"statistics\(\) is deprecated"):
        old = retry.statistics()
    assert old == retry.stats()


def test_pages_share_one_shape() -> None:
    pages = {n: c for n, c in CLASSES.items() if n.endswith("Page")}
    assert set(pages) >= {"CheckpointPage", "DeadLetterPage"}
    for name, cls in pages.items():
        fields = [f.name for f in dataclasses.fields(cls)]
        assert fields == ["entries", "next_cursor"], name
        page = cls(entries=("a", "b"), next_cursor=None)
        assert list(page) == ["a", "b"] and len(page) == 2, name


def test_checkpoint_page_cursor_is_a_deprecated_alias() -> None:
    page = aioresil.CheckpointPage(entries=(), next_cursor="c")
    with pytest.warns(DeprecationWarning, match="next_cursor"):
        assert page.cursor == "c"
