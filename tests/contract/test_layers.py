"""The layering the architecture page describes: core names no task family, families plug in."""

from __future__ import annotations

import ast
import re
import warnings
from pathlib import Path

import pytest
import torch

import flash
from flash.cli.domains import DOMAINS, DomainSpec, register_domain
from flash.core.utils.device import resolve_device

CORE = Path(flash.__file__).parent / "core"
FAMILIES = ("image", "text", "tabular", "vision")


def test_core_neither_imports_nor_names_a_task_family():
    for path in CORE.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom | ast.Import):
                names = (
                    [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
                )
                assert not any(re.match(rf"flash\.({'|'.join(FAMILIES)})\b", n) for n in names), path
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                assert node.value not in FAMILIES, f"{path.name} names the family {node.value!r}"


def test_built_in_families_register_themselves_in_listing_order():
    assert list(DOMAINS)[:3] == ["image", "text", "tabular"]
    assert all(DOMAINS[name].package == f"flash.{name}" for name in ("image", "text", "tabular"))


def test_registering_a_family_twice_warns_and_the_later_wins(monkeypatch):
    monkeypatch.setattr("flash.cli.domains.DOMAINS", dict(DOMAINS))
    from flash.cli import domains

    first = DomainSpec("twice", "x", "pkg", "b", "no_freeze", (), lambda o: None, lambda o, d: None)
    second = DomainSpec("twice", "y", "pkg", "b", "no_freeze", (), lambda o: None, lambda o, d: None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        register_domain(first)
    with pytest.warns(UserWarning, match="registered twice"):
        register_domain(second)
    assert domains.DOMAINS["twice"] is second
    with pytest.raises(TypeError, match="DomainSpec"):
        register_domain("twice")


def test_accelerator_names_resolve_to_devices():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device(None) == resolve_device("auto")
    with pytest.raises(ValueError, match="Unknown accelerator 'tpu'"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            resolve_device("gpu")
