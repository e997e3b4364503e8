"""README.md is assembled from docs/*.md (tools/build_readme.py) and must not drift from them."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _builder():
    spec = importlib.util.spec_from_file_location("build_readme", ROOT / "tools" / "build_readme.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_is_the_docs_assembled():
    assembled = _builder().assemble(ROOT)
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert readme == assembled, "README.md is stale: edit docs/*.md, then run python tools/build_readme.py"


def test_every_doc_is_in_the_readme():
    listed = set(_builder().SECTIONS)
    present = {path.stem for path in (ROOT / "docs").glob("*.md")}
    assert present <= listed, f"docs not in the README: {sorted(present - listed)}"
