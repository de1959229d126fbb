"""The backend contract (issue 12, item 2): everything the layers above need is a method of
``backends/base.py``'s protocols, both backends and the test fakes implement all of it, and
nothing above reaches past it (no ``isinstance`` on a concrete backend, no private attribute
of another module)."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path
from typing import Any

import pytest

import aioresil
from aioresil import BreakerConfig, BreakerRegistry, CircuitBreaker, MemoryBackend
from aioresil.backends.base import BreakerBackend, BreakerHandle, ScriptRunner
from aioresil.backends.memory import MemoryBreakerHandle
from aioresil.backends.redis import RedisBackend
from aioresil.backends.redis_breaker import RedisBreakerHandle
from aioresil.exceptions import BackendUnavailableError
from aioresil.testing import FakeClock, FaultyBackend

PACKAGE = Path(aioresil.__file__).parent


def _members(protocol: type) -> set[str]:
    names = {n for n in vars(protocol) if not n.startswith("_") or n in ("__aenter__", "__aexit__")}
    names |= set(getattr(protocol, "__annotations__", {}))
    return names - {"__annotations__"}


@pytest.mark.parametrize("cls", [MemoryBackend, RedisBackend, FaultyBackend])
def test_backends_implement_the_whole_contract(cls: type) -> None:
    attributes = set(BreakerBackend.__annotations__)
    methods = _members(BreakerBackend) - attributes
    missing = {m for m in methods if not callable(getattr(cls, m, None))}
    assert missing == set(), f"{cls.__name__} lacks {missing}"


async def test_bound_backends_carry_the_contract_attributes(backend: Any) -> None:
    for name in BreakerBackend.__annotations__:
        assert hasattr(backend, name), name
    assert (backend.health is None) == isinstance(backend, MemoryBackend)


def test_the_contract_covers_what_the_layers_above_use() -> None:
    assert {
        "read_breakers",
        "open_storage",
        "ping",
        "check_writable",
        "add_drain",
        "discard_drain",
        "aclose",
        "bind_breaker",
        "health",
        "clock",
    } <= _members(BreakerBackend)
    assert {"flush", "refresh", "name", "config", "view"} <= _members(BreakerHandle)


@pytest.mark.parametrize("cls", [MemoryBreakerHandle, RedisBreakerHandle])
def test_handles_implement_the_whole_contract(cls: type) -> None:
    methods = {m for m in _members(BreakerHandle) if m not in BreakerHandle.__annotations__}
    missing = {m for m in methods if not callable(getattr(cls, m, None))}
    assert missing == set(), f"{cls.__name__} lacks {missing}"


async def test_bound_handles_carry_the_contract_attributes(backend: Any) -> None:
    breaker = CircuitBreaker("contract", backend=backend)
    handle = breaker.handle
    assert isinstance(handle, BreakerHandle)
    assert handle.name == "contract" and handle.config == breaker.config
    assert isinstance(backend, BreakerBackend)


async def test_read_breakers_agrees_with_each_breaker(backend: Any, clock: FakeClock) -> None:
    registry = BreakerRegistry(backend=backend, clock=clock)
    a, b = registry.get("a"), registry.get("b", BreakerConfig(failure_threshold=1))
    async with a:
        pass
    with pytest.raises(RuntimeError):
        async with b:
            raise RuntimeError("down")
    readings = await backend.read_breakers([a.handle, b.handle], clock.monotonic(), clock.time())
    assert [r.successes for r, _, _ in readings] == [1, 0]
    assert [r.state.value for r, _, _ in readings] == ["closed", "open"]
    together = await registry.stats()
    assert together == {"a": await a.stats(), "b": await b.stats()}


class _Probe:
    kind = "probe"

    def in_process(self, shared: dict[str, Any]) -> tuple[str, Any]:
        return ("in_process", shared)

    def on_scripts(self, runner: ScriptRunner) -> tuple[str, Any]:
        return ("on_scripts", runner)


async def test_open_storage_lets_the_backend_choose(backend: Any) -> None:
    where, target = backend.open_storage(_Probe())
    if isinstance(backend, MemoryBackend):
        assert where == "in_process"
        assert target is backend.open_storage(_Probe())[1]  # one namespace per kind
    else:
        assert (where, target) == ("on_scripts", backend)
        assert isinstance(target, ScriptRunner)


async def test_the_faulty_fake_fails_operator_reads_like_a_backend() -> None:
    backend = FaultyBackend()
    registry = BreakerRegistry(backend=backend)
    registry.get("x")
    backend.failing = True
    with pytest.raises(BackendUnavailableError):
        await backend.read_breakers([registry.get("x").handle], 0.0, 0.0)
    with pytest.raises(BackendUnavailableError):
        await registry.stats()  # each breaker then answers by its own policy: an error here
    backend.failing = False
    assert (await registry.stats())["x"].state.value == "closed"


def _sources() -> list[tuple[Path, ast.Module]]:
    return [(p, ast.parse(p.read_text(encoding="utf-8"))) for p in sorted(PACKAGE.rglob("*.py"))]


def test_no_layer_tests_for_a_concrete_backend() -> None:
    concrete = {"MemoryBackend", "RedisBackend", "MemoryBreakerHandle", "RedisBreakerHandle"}
    found = []
    for path, tree in _sources():
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "isinstance"
                and len(node.args) == 2
                and concrete & {n.id for n in ast.walk(node.args[1]) if isinstance(n, ast.Name)}
            ):
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert found == []


NAMEDTUPLE_API = {"_asdict", "_field_defaults", "_fields", "_make", "_replace"}
STDLIB_PRIVATE = {"sys._getframe"}
"""Underscored by the standard library, documented and relied on: the breaker finds where an
``async with`` is written with it (``inspect.currentframe()`` costs twice as much there)."""


def test_no_private_attribute_crosses_a_module() -> None:
    # ``obj._x`` is fine on ``self``/``cls`` and on objects of a class defined in the same
    # module; the classes whose privates we read that way are listed per module.
    found = []
    for path, tree in _sources():
        local_classes = {n.name for n in ast.walk(tree) if isinstance(n, ast.ClassDef)}
        local_attrs = {
            t.attr
            for n in ast.walk(tree)
            if isinstance(n, ast.Assign | ast.AnnAssign)
            for t in (n.targets if isinstance(n, ast.Assign) else [n.target])
            if isinstance(t, ast.Attribute)
        }
        local_defs = {
            n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
        }
        for node in ast.walk(tree):
            if not isinstance(node, ast.Attribute):
                continue
            attr = node.attr
            if not attr.startswith("_") or attr.startswith("__"):
                continue
            if isinstance(node.value, ast.Name) and node.value.id in {"self", "cls"}:
                continue
            if attr in NAMEDTUPLE_API or ast.unparse(node) in STDLIB_PRIVATE:
                continue  # public despite the underscore
            if attr in local_attrs or attr in local_defs or local_classes & {attr}:
                continue  # a private of something this module defines
            found.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {ast.unparse(node)}")
    assert found == []


def test_registry_reads_through_the_contract_only() -> None:
    source = inspect.getsource(aioresil.registry)
    assert "b._handle" not in source and "read_breakers(" in source


async def test_memory_backend_runs_its_drains_on_close() -> None:
    backend = MemoryBackend()
    ran: list[str] = []

    async def drain() -> None:
        ran.append("drained")

    owner, other = object(), object()
    backend.add_drain(owner, drain)
    backend.add_drain(other, drain)
    backend.discard_drain(other)
    await backend.aclose()
    assert ran == ["drained"]


def test_no_layer_duck_types_the_backend() -> None:
    # getattr(backend, "health") and friends reach past the contract: use the protocol.
    found = []
    for path, tree in _sources():
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "getattr"
                and len(node.args) >= 2
                and isinstance(node.args[0], ast.Attribute | ast.Name)
                and "backend" in ast.unparse(node.args[0])
                and isinstance(node.args[1], ast.Constant)
                and node.args[1].value in _members(BreakerBackend)
            ):
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {ast.unparse(node)}")
    assert found == []


async def test_a_close_error_never_replaces_the_blocks_own() -> None:
    """``__aexit__`` of a failing block: the close error rides along as a note; of a clean
    block: it is raised (never silent)."""

    async def unsent() -> None:
        raise BackendUnavailableError("3 entries were not sent")

    backend = MemoryBackend()
    backend.add_drain("queue", unsent)
    mine = KeyError("mine")

    async def failing_block() -> None:
        async with backend:
            raise mine

    with pytest.raises(KeyError) as raised:
        await failing_block()
    assert raised.value is mine
    assert raised.value.__notes__ == [
        f"aioresil: closing {backend!r} while this exception propagated also failed: "
        "BackendUnavailableError: 3 entries were not sent"
    ]
    clean = MemoryBackend()
    clean.add_drain("queue", unsent)
    with pytest.raises(BackendUnavailableError, match="3 entries were not sent"):
        await clean.__aexit__(None, None, None)
