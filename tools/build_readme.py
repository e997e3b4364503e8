"""Assemble README.md from the sections in docs/, so the two never drift apart.

    python tools/build_readme.py           # write README.md
    python tools/build_readme.py --check   # exit 1 if README.md is not what the docs give

Edit the docs/*.md files, then run this; ``tests/test_docs.py`` fails while README.md is stale.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = (
    "intro",
    "image",
    "finetuning",
    "migrating",
    "text",
    "tabular",
    "segmentation",
    "detection",
    "embeddings",
    "cli",
    "serving",
    "download",
    "gpu",
    "architecture",
    "development",
)
"""docs/<name>.md in README order."""


def assemble(root: Path = ROOT) -> str:
    """The README text: every section, stripped of trailing blank lines, separated by one blank line."""
    parts = []
    for name in SECTIONS:
        path = root / "docs" / f"{name}.md"
        if not path.is_file():
            raise FileNotFoundError(f"README section {path} is missing; SECTIONS in {__file__} lists it.")
        parts.append(path.read_text(encoding="utf-8").rstrip() + "\n")
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
