"""The one-cycle schedule on runs of a handful of steps (tiny data sets, tests, smoke runs)."""

from __future__ import annotations

import pytest
import torch

from flash.core.training.optimizers import build_scheduler


@pytest.mark.parametrize("total_steps", [1, 2, 4, 7])
def test_onecycle_builds_and_steps_on_a_few_steps(total_steps):
    weight = torch.nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.AdamW([weight], lr=1e-3)
    scheduler = build_scheduler("onecycle", optimizer, total_steps, None)["scheduler"]
    for _ in range(total_steps):
        optimizer.step()
        scheduler.step()
    assert all(0 < group["lr"] <= 1e-3 for group in optimizer.param_groups)
