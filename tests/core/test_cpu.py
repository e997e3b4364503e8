"""glibc keeps freed activation-sized blocks for reuse once ``reuse_freed_memory`` is on."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = """
import sys
import numpy as np
from flash.core.utils.cpu import reuse_freed_memory

def resident_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20

if sys.argv[1] == "on":
    assert reuse_freed_memory() and reuse_freed_memory()  # idempotent
block = np.ones(200 * 2**20, dtype=np.uint8)  # 200 MiB, every page touched
del block
print(resident_mb())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator settings")
def test_freed_blocks_stay_in_the_process_only_when_asked():
    def resident_after_free(mode: str) -> float:
        done = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
        return float(done.stdout.strip().splitlines()[-1])

    default, reusing = resident_after_free("off"), resident_after_free("on")
    assert reusing - default > 150  # by default the 200 MiB go back to the kernel at once
