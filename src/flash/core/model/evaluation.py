"""Running a task over a loader outside a Lightning loop: for the features a head is fitted on,
the logits a temperature is fitted on, and the out-of-fold outputs of a cross-validation."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from lightning.pytorch import LightningModule

from flash.core.model.task import predict_input
from flash.core.utils.progress import progress


def outputs_over(
    task: LightningModule,
    loader: Any,
    compute: Callable[[Any], torch.Tensor] | None = None,
    desc: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``compute(inputs)`` (default: the task's ``forward``) for every batch of ``loader``.

    The task runs in eval mode without gradients (its modes are restored afterwards); each batch
    passes through the task's batch-transfer hooks first, as in training. Returns the outputs as
    float tensors on the task's device and the batches' targets (``None`` when they have none),
    each concatenated in the loader's order. ``desc`` shows a progress bar.
    """
    compute = compute or task
    modes = [(module, module.training) for module in task.modules()]
    task.eval()
    outputs: list[torch.Tensor] = []
    targets: list[torch.Tensor] = []
    batches = progress(loader, desc=desc) if desc else loader
    try:
        with torch.no_grad():  # not inference_mode: fitted heads take these as constants in autograd
            for batch in batches:
                batch = task.on_before_batch_transfer(batch, 0)
                batch = task.transfer_batch_to_device(batch, task.device, 0)
                batch = task.on_after_batch_transfer(batch, 0)
                outputs.append(compute(predict_input(batch)).float())
                target = _target(batch)
                if target is not None:
                    targets.append(torch.as_tensor(target))
    finally:
        for module, training in modes:
            module.training = training
    if not outputs:
        raise ValueError("The loader gave no batches.")
    return torch.cat(outputs), (torch.cat(targets) if len(targets) == len(outputs) else None)


def _target(batch: Any) -> Any:
    if isinstance(batch, Mapping):
        return batch.get("target")
    if isinstance(batch, list | tuple) and len(batch) == 2:
        return batch[1]
    return None
