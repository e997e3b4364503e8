"""What the distribution declares: licence, typing marker, one version, extras."""

from __future__ import annotations

import ast
import re
from importlib.metadata import version
from pathlib import Path

import tomllib

import flash

ROOT = Path(__file__).parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def test_the_licence_is_apache_2_in_full_and_declared_as_spdx():
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text and len(text) > 11000  # the full text, not a notice
    assert PYPROJECT["license"] == "Apache-2.0"
    assert PYPROJECT["license-files"] == ["LICENSE"]
    assert not any(c.startswith("License ::") for c in PYPROJECT["classifiers"])  # the SPDX field says it


def test_the_package_is_marked_typed():
    assert (Path(flash.__file__).parent / "py.typed").is_file()
    assert "Typing :: Typed" in PYPROJECT["classifiers"]


def test_the_version_is_written_once_in_pyproject():
    assert flash.__version__ == version("flash-finetune") == PYPROJECT["version"]
    source = (Path(flash.__file__).parent / "__init__.py").read_text(encoding="utf-8")
    assert PYPROJECT["version"] not in source


def test_serving_needs_no_http_client():
    extras = PYPROJECT["optional-dependencies"]
    assert not any(r.startswith("httpx") for r in extras["serve"])
    assert any(r.startswith("httpx") for r in extras["dev"])  # the tests use it
    for path in Path(flash.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            assert not any(n.split(".")[0] == "httpx" for n in names), path


def test_requires_python_excludes_the_releases_without_tar_extraction_filters():
    spec = PYPROJECT["requires-python"]
    assert ">=3.10.12" in spec
    assert all(f"!=3.11.{n}" in spec for n in range(4))
    assert re.search(r"Programming Language :: Python :: 3\.10", " ".join(PYPROJECT["classifiers"]))
