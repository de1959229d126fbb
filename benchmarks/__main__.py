"""Run every ``benchmarks/bench_*.py`` and write ``benchmarks/results.md``.

Each module exposes ``async def main(smoke: bool) -> str`` returning a markdown section.
``--smoke`` runs tiny sizes (CI checks the benchmarks still run, not their numbers). Naming
modules (``python -m benchmarks bench_checkpoint``) replaces only their sections of the file.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import importlib
import pkgutil
from pathlib import Path

from ._harness import environment, version
from ._results import merge_results

HERE = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, do not write results")
    parser.add_argument("only", nargs="*", help="module names to run (default: all)")
    args = parser.parse_args()
    names = sorted(m.name for m in pkgutil.iter_modules([str(HERE)]) if m.name.startswith("bench_"))
    if args.only:
        names = [n for n in names if n in args.only or n.removeprefix("bench_") in args.only]
    sections = [
        f"# aioresil benchmarks\n\n{datetime.date.today().isoformat()}, {environment()}, "
        f"aioresil {version('aioresil')}, redis-py {version('redis')}\n"
    ]
    for name in names:
        module = importlib.import_module(f"benchmarks.{name}")
        print(f"== {name}", flush=True)
        section = asyncio.run(module.main(args.smoke))
        print(section, flush=True)
        sections.append(section)
    if not args.smoke:
        out = HERE / "results.md"
        old = out.read_text(encoding="utf-8") if out.exists() else ""
        # A partial run replaces only its own sections: the committed file keeps the rest.
        text = merge_results(old, sections[0], sections[1:], partial=bool(args.only))
        out.write_text(text, encoding="utf-8")
        print(f"wrote {out}" + (f" (sections of {', '.join(names)} only)" if args.only else ""))
    return 0


raise SystemExit(main())
