"""Writing ``benchmarks/results.md`` without losing sections a run did not produce.

Why: ``python -m benchmarks bench_checkpoint`` used to overwrite the committed file with that
one section. Each module's section starts with its own ``## `` heading, so a partial run
replaces the sections with the same heading and keeps every other one, in place.
"""

from __future__ import annotations

__all__ = ["merge_results", "split_sections"]


def split_sections(text: str) -> tuple[str, list[str]]:
    """``(preamble, sections)``: each section starts at a line beginning with ``## ``."""
    preamble: list[str] = []
    sections: list[list[str]] = []
    for line in text.splitlines():
        if line.startswith("## "):
            sections.append([line])
        elif sections:
            sections[-1].append(line)
        else:
            preamble.append(line)
    return "\n".join(preamble).strip(), ["\n".join(s).strip() for s in sections]


def merge_results(old: str, preamble: str, new_sections: list[str], *, partial: bool) -> str:
    """The new ``results.md``: everything new when ``partial`` is false; otherwise ``old``
    with the sections of the same heading replaced (new headings appended, the old preamble
    kept since the other sections were measured then)."""
    fresh = [s.strip() for s in new_sections]
    if not partial or not old.strip():
        return "\n\n".join([preamble.strip(), *fresh]) + "\n"
    old_preamble, old_sections = split_sections(old)
    by_heading = {s.splitlines()[0]: s for s in fresh}
    merged: list[str] = []
    for section in old_sections:
        merged.append(by_heading.pop(section.splitlines()[0], section))
    merged.extend(s for s in fresh if s.splitlines()[0] in by_heading)
    return "\n\n".join([old_preamble or preamble.strip(), *merged]) + "\n"
