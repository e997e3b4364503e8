"""README.md is assembled from docs/*.md (tools/build_readme.py) and must not drift from them; every
docs page is reachable from the README, and every link between the pages leads to a heading."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"\]\((?P<target>[^)\s]+)\)")


def _builder():
    spec = importlib.util.spec_from_file_location("build_readme", ROOT / "tools" / "build_readme.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_is_the_docs_assembled():
    assembled = _builder().assemble(ROOT)
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert readme == assembled, "README.md is stale: edit docs/*.md, then run python tools/build_readme.py"


def test_every_doc_is_in_the_readme_or_linked_from_it():
    builder = _builder()
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    linked = {
        Path(m.group("target").split("#")[0]).stem
        for m in LINK.finditer(readme)
        if "docs/" in m.group("target")
    }
    present = {path.stem for path in (ROOT / "docs").glob("*.md")}
    missing = present - set(builder.SECTIONS) - linked
    assert not missing, f"docs pages neither in the README nor linked from it: {sorted(missing)}"


def _pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _anchors(path: Path) -> set[str]:
    builder = _builder()
    return set(builder.anchors(builder.headings(path.read_text(encoding="utf-8"))))


def broken_links(path: Path) -> list[str]:
    """The links of a Markdown file to a local file or heading that does not exist."""
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.DOTALL)
    broken = []
    for match in LINK.finditer(text):
        target = match.group("target")
        if re.match(r"[a-z]+:", target):
            continue  # http:, https:, mailto:
        file, _, anchor = target.partition("#")
        linked = (path.parent / file).resolve() if file else path
        if not linked.exists():
            broken.append(f"{target} (no file {file})")
        elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
            broken.append(f"{target} (no heading with the anchor #{anchor} in {linked.name})")
    return broken


@pytest.mark.parametrize("path", _pages(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_links_lead_to_a_file_and_heading(path):
    assert not broken_links(path), f"{path.name}: broken links {broken_links(path)}"


def test_a_broken_anchor_is_caught(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Title\n\n## The demo\n\nsee [the demo](#the-demo), [gone](#demo), [x](other.md)\n")
    assert broken_links(page) == [
        "#demo (no heading with the anchor #demo in page.md)",
        "other.md (no file other.md)",
    ]
    builder = _builder()
    assert builder.anchors(["Data", "The `flash` command", "Data", "Speed: SST-2 on a CPU"]) == [
        "data",
        "the-flash-command",
        "data-1",
        "speed-sst-2-on-a-cpu",
    ]
