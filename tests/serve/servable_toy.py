"""The toy classifier with the serving and export hooks, wired so its answers are known exactly."""

from __future__ import annotations

import math
from typing import Any

import torch

from toy import ToyClassifier


class ServableToy(ToyClassifier):
    """Predicts ``"pos"`` when ``x[0] + x[1] > 0``; inputs are lists of four numbers."""

    domain = "toy"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(num_classes=2, labels=["neg", "pos"], **kwargs)
        wire_sum_rule(self)
        self.eval()

    def predict_dataset(self, inputs: Any):
        single = isinstance(inputs, torch.Tensor) and inputs.ndim == 1
        rows = [inputs] if single else list(inputs)
        return [{"input": torch.as_tensor(row, dtype=torch.float32)} for row in rows], single

    def decode_serve_input(self, value: Any) -> torch.Tensor:
        if (
            not isinstance(value, list)
            or len(value) != 4
            or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
        ):
            raise ValueError(f"expected a list of 4 numbers, got {str(value)[:40]}")
        return torch.tensor(value, dtype=torch.float32)

    def example_input(self, batch_size: int = 2) -> torch.Tensor:
        return torch.randn(batch_size, 4)


@torch.no_grad()
def wire_sum_rule(model: ToyClassifier) -> None:
    """Set the weights so that logit(pos) = -logit(neg) = (x0 + x1) * s, s = BatchNorm's 1/sqrt(1+eps)."""
    first, *rest = [block[0] for block in model.backbone.blocks]
    first.weight.zero_()
    first.bias.zero_()
    for row, (col, sign) in enumerate([(0, 1.0), (0, -1.0), (1, 1.0), (1, -1.0)]):
        first.weight[row, col] = sign
    for linear in rest:
        linear.weight.copy_(torch.eye(linear.out_features, linear.in_features))
        linear.bias.zero_()
    head = model.head[-1]
    head.weight.zero_()
    head.bias.zero_()
    head.weight[1, :4] = torch.tensor([1.0, -1.0, 1.0, -1.0])
    head.weight[0, :4] = -head.weight[1, :4]


def expected(row: list[float], depth: int = 3) -> dict[str, Any]:
    """The exact answer of a wired toy for ``row``."""
    scale = (1 / math.sqrt(1 + 1e-5)) ** depth
    z = (row[0] + row[1]) * scale
    p_pos = 1 / (1 + math.exp(-2 * z))
    return {"label": "pos" if z > 0 else "neg", "probabilities": {"neg": 1 - p_pos, "pos": p_pos}}
