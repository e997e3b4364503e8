"""Assemble README.md from the sections in docs/, so the two never drift apart.

    python tools/build_readme.py           # write README.md
    python tools/build_readme.py --check   # exit 1 if README.md is not what the docs give

Edit the docs/*.md files, then run this; ``tests/test_docs.py`` fails while README.md is stale.

The README is the user's path (SECTIONS); the other pages of docs/ (serving, benchmarks, studies,
architecture, ...) stay pages of their own, linked from it. A docs page links to another as
``[text](page.md#anchor)``; in the README such a link becomes ``#anchor`` when that page is one of
its sections, and ``docs/page.md#anchor`` when it is not.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = (
    "intro",
    "image",
    "text",
    "tabular",
    "segmentation",
    "detection",
    "embeddings",
    "finetuning",
    "cli",
)
"""docs/<name>.md in README order."""

LINK = re.compile(r"\]\((?P<page>[a-z0-9_-]+)\.md(?:#(?P<anchor>[^)\s]*))?\)")
"""A Markdown link from one docs page to another: ``](page.md)`` or ``](page.md#anchor)``."""


def heading_anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def headings(text: str) -> list[str]:
    """The headings of a Markdown text, in order (lines in code blocks are not headings)."""
    found, fenced = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and re.match(r"#{1,6} ", line):
            found.append(line.lstrip("#").strip())
    return found


def anchors(names: list[str], seen: dict[str, int] | None = None) -> list[str]:
    """The anchors of these headings in one page: a repeated one gets ``-1``, ``-2``, ... as on GitHub."""
    seen = {} if seen is None else seen
    result = []
    for name in names:
        base = heading_anchor(name)
        count = seen.get(base, 0)
        result.append(base if count == 0 else f"{base}-{count}")
        seen[base] = count + 1
    return result


def readme_anchor_map(root: Path = ROOT) -> dict[str, dict[str, str]]:
    """For each README section page: its own anchor of each heading -> that heading's README anchor.
    The key ``""`` is the page itself (its first heading)."""
    seen: dict[str, int] = {}
    mapping: dict[str, dict[str, str]] = {}
    for name in SECTIONS:
        names = headings(_read_section(root, name))
        in_readme = anchors(names, seen)
        mapping[name] = dict(zip(anchors(names), in_readme, strict=True))
        mapping[name][""] = in_readme[0] if in_readme else ""
    return mapping


def readme_links(text: str, mapping: dict[str, dict[str, str]]) -> str:
    """A docs section's links to other docs pages, as they must read inside the README."""

    def rewrite(match: re.Match[str]) -> str:
        page, anchor = match.group("page"), match.group("anchor") or ""
        if page in mapping:
            return f"](#{mapping[page].get(anchor, anchor)})"
        return f"](docs/{page}.md{'#' + anchor if anchor else ''})"

    return LINK.sub(rewrite, text)


def _read_section(root: Path, name: str) -> str:
    path = root / "docs" / f"{name}.md"
    if not path.is_file():
        raise FileNotFoundError(f"README section {path} is missing; SECTIONS in {__file__} lists it.")
    return path.read_text(encoding="utf-8")


def assemble(root: Path = ROOT) -> str:
    """The README text: every section, stripped of trailing blank lines, separated by one blank line."""
    mapping = readme_anchor_map(root)
    parts = [readme_links(_read_section(root, name), mapping).rstrip() + "\n" for name in SECTIONS]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only check that README.md is up to date")
    args = parser.parse_args(argv)
    text, readme = assemble(), ROOT / "README.md"
    if args.check:
        if readme.read_text(encoding="utf-8") != text:
            print("README.md is stale: run python tools/build_readme.py", file=sys.stderr)
            return 1
        return 0
    readme.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
