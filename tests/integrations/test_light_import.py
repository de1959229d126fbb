"""``import aioresil`` never imports an HTTP library or the integrations."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_import_aioresil_imports_no_http_library() -> None:
    code = (
        "import sys, aioresil\n"
        "aioresil.Failover, aioresil.BreakerRegistry\n"
        "heavy = ('httpx', 'httpx2', 'aiohttp', 'starlette', 'openai', 'anthropic',\n"
        "         'aioresil.integrations')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.strip() == "[]"
