"""Regression on top of :class:`~flash.core.model.task.Task`: one or more real-valued targets."""

from __future__ import annotations

from typing import Any

import torch
import torchmetrics
from torch import nn

from flash.core.model.task import Task


class RegressionTask(Task):
    """A task whose head outputs ``num_targets`` real values, trained with mean squared error.

    Targets are standardised by the data module; ``target_mean``/``target_std`` undo that in
    predictions and travel in checkpoints.
    """

    outputs = ("values",)
    output_fields = {"values": "value"}

    def __init__(
        self,
        backbone: nn.Module,
        head: nn.Module,
        *,
        num_targets: int = 1,
        target_mean: list[float] | None = None,
        target_std: list[float] | None = None,
        **kwargs: Any,
    ) -> None:
        metrics = {
            "mae": torchmetrics.MeanAbsoluteError(),
            "rmse": torchmetrics.MeanSquaredError(squared=False),
        }
        super().__init__(backbone, head, loss_fn=nn.MSELoss(), metrics=metrics, **kwargs)
        self.num_targets = num_targets
        mean = torch.tensor(
            target_mean if target_mean is not None else [0.0] * num_targets, dtype=torch.float32
        )
        std = torch.tensor(target_std if target_std is not None else [1.0] * num_targets, dtype=torch.float32)
        self.register_buffer("target_mean", mean.view(1, -1), persistent=True)
        self.register_buffer("target_std", std.view(1, -1), persistent=True)

    def step_output(self, batch: dict[str, Any], stage: str) -> torch.Tensor:
        return super().step_output(batch, stage).float()

    def step_target(self, target: torch.Tensor) -> torch.Tensor:
        return target.float().view(target.shape[0], -1)

    def step_loss(self, output: torch.Tensor, target: torch.Tensor, stage: str) -> torch.Tensor:
        return self.loss_fn(output, (target - self.target_mean) / self.target_std)

    def metric_input(self, output: torch.Tensor) -> torch.Tensor:
        """Predictions in the targets' units (the head predicts standardised values)."""
        return output * self.target_std + self.target_mean

    def format_output(self, output: torch.Tensor, kind: str) -> list[Any]:
        values = (output.float() * self.target_std + self.target_mean).cpu()
        if self.num_targets == 1:
            return values[:, 0].tolist()
        return values.tolist()

    def export_outputs(self, output: torch.Tensor) -> dict[str, torch.Tensor]:
        output = output.float()
        return {"output": output, "values": output * self.target_std + self.target_mean}

    def export_output_descriptions(self) -> dict[str, str]:
        return {
            "output": "standardised predictions, (batch, targets)",
            "values": "predictions, (batch, targets)",
        }
