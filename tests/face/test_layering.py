"""The import rules of ARCHITECTURE.md, checked on the source (issue 12, item 6).

Every ``import`` counts, wherever it stands (module level, inside a function, under
``TYPE_CHECKING``): a type-only cycle is still a cycle a reader has to untangle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import aioresil

PACKAGE = Path(aioresil.__file__).parent

# layer -> the layers of ours it may import (besides itself). Top-level modules and folders
# not listed here are the "face" (health, dashboard, cli, integrations, testing, ...): they
# may import anything, and nothing listed here may import them.
ALLOWED: dict[str, set[str]] = {
    "exceptions": set(),
    "_version": set(),
    "_log": set(),
    "clock": set(),
    "_ready": set(),
    "core": {"exceptions"},
    "events": {"core", "exceptions"},
    "backends": {"core", "events", "clock", "exceptions", "_log"},
    "breaker": {"backends", "core", "events", "clock", "exceptions", "_log", "_ready"},
    "stores": {"backends", "core", "clock", "exceptions", "_log"},
    "policies": {"backends", "core", "events", "clock", "exceptions", "_log"},
    "registry": {"breaker", "backends", "core", "events", "clock", "exceptions", "_log"},
    "fleet": {"breaker", "policies", "backends", "core", "events", "clock", "exceptions", "_log"},
}

# Outside libraries a layer must not touch: the core never does I/O or waits.
FORBIDDEN_THIRD_PARTY: dict[str, set[str]] = {
    "core": {"asyncio", "anyio", "redis", "structlog", "time"},
    "exceptions": {"asyncio", "anyio", "redis", "structlog"},
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _imports(name: str) -> tuple[set[str], set[str]]:
    """``(our modules, outside top-level packages)`` imported by module ``name``."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    ours: set[str] = set()
    outside: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                candidate = f"{target}.{alias.name}"
                (ours if candidate in MODULES else outside).add(
                    candidate if candidate in MODULES else target
                )
        elif isinstance(node, ast.Import):
            outside.update(alias.name for alias in node.names)
    ours |= {m for m in outside if m in MODULES}
    outside = {m.split(".")[0] for m in outside if m not in MODULES}
    ours = {m for m in ours if m in MODULES and m != name}
    return ours, outside


GRAPH = {name: _imports(name) for name in MODULES}


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "aioresil"


def test_every_layer_imports_only_the_layers_below_it() -> None:
    broken = []
    for module, (ours, _) in GRAPH.items():
        layer = _layer(module)
        if layer not in ALLOWED:
            continue  # the face may import anything
        for target in ours:
            other = _layer(target)
            if other != layer and other not in ALLOWED[layer]:
                broken.append(f"{module} imports {target}")
    assert broken == [], "see ARCHITECTURE.md, 'Code map':\n" + "\n".join(sorted(broken))


def test_the_core_does_no_io() -> None:
    broken = [
        f"{module} imports {lib}"
        for module, (_, outside) in GRAPH.items()
        for lib in outside & FORBIDDEN_THIRD_PARTY.get(_layer(module), set())
    ]
    assert broken == []


def test_no_import_cycles() -> None:
    # The package's facade (aioresil/__init__.py) imports everything; every other edge counts.
    edges = {m: {t for t in ours if t != "aioresil"} for m, (ours, _) in GRAPH.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(edges):
        if module not in index:
            visit(module)
    assert cycles == []


def test_the_rules_see_the_known_edges() -> None:
    # Guards the parser itself: if it stopped resolving imports, every rule would pass.
    assert "aioresil.exceptions" in GRAPH["aioresil.core.states"][0]
    assert "aioresil.backends.base" in GRAPH["aioresil.breaker"][0]
    assert "aioresil.core.config" in GRAPH["aioresil.backends.memory"][0]
    assert "redis" in GRAPH["aioresil.backends.redis"][1]


def test_architecture_md_names_every_layer() -> None:
    text = (PACKAGE.parent / "ARCHITECTURE.md").read_text(encoding="utf-8")
    for layer in ALLOWED:
        assert f"`{layer}" in text, layer
