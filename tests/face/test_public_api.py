"""The public surface: ``__all__`` is sorted, complete and importable; the package is typed."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import aioresil


def test_all_is_sorted_and_unique() -> None:
    names = list(aioresil.__all__)
    assert names == sorted(names, key=lambda n: (n.startswith("_"), n))
    assert len(names) == len(set(names))


def test_every_name_in_all_is_importable() -> None:
    for name in aioresil.__all__:
        assert getattr(aioresil, name) is not None, name


def test_public_classes_are_exported() -> None:
    public = {
        name
        for name in dir(aioresil)
        if not name.startswith("_") and isinstance(getattr(aioresil, name), type)
    }
    assert public <= set(aioresil.__all__), public - set(aioresil.__all__)


def test_py_typed_marker_ships() -> None:
    assert (Path(aioresil.__file__).parent / "py.typed").exists()


def test_lua_scripts_ship_as_package_data() -> None:
    lua = importlib.resources.files("aioresil.lua")
    assert lua.is_dir()


def test_importing_does_not_import_redis() -> None:
    code = "import sys, aioresil; print('redis' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(aioresil.__file__).parent.parent,
    )
    assert out.stdout.strip() == "False"


def test_unknown_attribute_is_an_attribute_error() -> None:
    try:
        aioresil.NoSuchThing  # type: ignore[attr-defined]  # noqa: B018
    except AttributeError as error:
        assert "NoSuchThing" in str(error)
    else:  # pragma: no cover
        raise AssertionError("no AttributeError")
