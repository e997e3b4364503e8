"""Load a benchmark script as a module, for the tests of its parts."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def loaded_script(name: str) -> Iterator[ModuleType]:
    """``benchmarks/<name>.py`` imported under ``<name>_benchmark`` (a fixture body: yields the
    module and removes it from ``sys.modules`` afterwards)."""
    spec = importlib.util.spec_from_file_location(f"{name}_benchmark", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)
