"""``import aioresil`` loads what a breaker needs and nothing else (issue 12, item 5).

The rest (policies, stores, registry, health app, dashboard, Redis) loads on first access
through the package's module ``__getattr__``. Checked in a fresh interpreter: this process
has long imported everything.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import aioresil

ROOT = Path(aioresil.__file__).parent.parent

NOT_LOADED_BY_IMPORT = (
    "aioresil.cli",
    "aioresil.dashboard",
    "aioresil.health",
    "aioresil.policies",
    "aioresil.registry",
    "aioresil.stores",
    "aioresil.backends.redis",
    "aioresil.backends.scripts",
    "aioresil.backends.backend_health",
    "anyio",
    "redis",
    "structlog",
)


def _modules_after(code: str) -> set[str]:
    script = f"import json, sys\n{code}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=ROOT
    )
    return set(json.loads(out.stdout))


def _loaded(modules: set[str], prefix: str) -> list[str]:
    return sorted(m for m in modules if m == prefix or m.startswith(prefix + "."))


def test_import_loads_only_the_breaker_side() -> None:
    modules = _modules_after("import aioresil")
    assert "aioresil.breaker" in modules
    assert "aioresil.backends.memory" in modules
    for name in NOT_LOADED_BY_IMPORT:
        assert _loaded(modules, name) == [], f"`import aioresil` loaded {name}"


def test_a_guarded_call_loads_nothing_more() -> None:
    code = (
        "import asyncio, aioresil\n"
        "async def main():\n"
        "    breaker = aioresil.CircuitBreaker('db')\n"
        "    async with breaker:\n"
        "        pass\n"
        "    assert (await breaker.stats()).success_count == 1\n"
        "asyncio.run(main())"
    )
    modules = _modules_after(code)
    for name in ("aioresil.health", "aioresil.stores", "aioresil.policies", "redis"):
        assert _loaded(modules, name) == [], f"a guarded call loaded {name}"


def test_first_access_loads_the_lazy_names() -> None:
    modules = _modules_after("import aioresil\naioresil.Retry\naioresil.health_app")
    assert "aioresil.policies.retry" in modules
    assert "aioresil.health.app" in modules
    assert _loaded(modules, "aioresil.dashboard") == []


def test_lazy_names_are_the_defining_modules_objects() -> None:
    from aioresil import health, policies, registry
    from aioresil.stores import checkpoint, dlq

    assert aioresil.Retry is policies.Retry
    assert aioresil.health_app is health.health_app
    assert aioresil.BreakerRegistry is registry.BreakerRegistry
    assert aioresil.CheckpointStore is checkpoint.CheckpointStore
    assert aioresil.DeadLetterQueue is dlq.DeadLetterQueue
