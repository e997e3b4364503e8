import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _quiet_run_dir(tmp_path, monkeypatch):
    """Every test runs in its own folder so logs and checkpoints never collide."""
    monkeypatch.chdir(tmp_path)
    yield
