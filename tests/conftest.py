import os
import sys
from pathlib import Path

import pytest

# Test files import helpers beside them (toy.py, image_fixtures.py, ...); test modules are
# imported by path (--import-mode=importlib), so folders may reuse names like test_data.py.
_TESTS = Path(__file__).parent
for _folder in [
    _TESTS,
    *sorted(p for p in _TESTS.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))),
]:
    sys.path.insert(0, str(_folder))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _quiet_run_dir(tmp_path, monkeypatch):
    """Every test runs in its own folder so logs and checkpoints never collide."""
    monkeypatch.chdir(tmp_path)
    yield
