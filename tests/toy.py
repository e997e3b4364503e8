"""A tiny task and data module with BatchNorm, for testing core behaviour fast."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from flash.core.data.datamodule import DataModule, Split
from flash.core.model.classification import ClassificationTask


class ToyBackbone(nn.Module):
    def __init__(self, width: int = 8, depth: int = 3) -> None:
        super().__init__()
        layers = []
        in_features = 4
        for _ in range(depth):
            layers.append(nn.Sequential(nn.Linear(in_features, width), nn.BatchNorm1d(width), nn.ReLU()))
            in_features = width
        self.blocks = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


class ToyClassifier(ClassificationTask):
    def __init__(self, num_classes: int = 2, depth: int = 3, labels=None, **kwargs) -> None:
        self_hparams = {"num_classes": num_classes, "depth": depth, "labels": labels, **kwargs}
        backbone = ToyBackbone(depth=depth)
        head = nn.Sequential(nn.Dropout(0.1), nn.Linear(8, num_classes))
        super().__init__(
            backbone,
            head,
            num_classes=num_classes,
            labels=labels,
            backbone_blocks=list(backbone.blocks),
            **kwargs,
        )
        self.save_hyperparameters(self_hparams)


class _TensorItems(Dataset):
    def __init__(self, split: Split) -> None:
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int):
        item = {"input": torch.as_tensor(self.split.inputs[i])}
        if self.split.targets is not None:
            item["target"] = torch.as_tensor(self.split.targets[i])
        return item


class ToyData(DataModule):
    def make_dataset(self, split: Split, stage: str) -> Dataset:
        return _TensorItems(split)


def toy_data(n: int = 64, batch_size: int = 16, seed: int = 0) -> ToyData:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    xv = rng.normal(size=(n // 2, 4)).astype(np.float32)
    yv = (xv[:, 0] + xv[:, 1] > 0).astype(np.int64)
    return ToyData(
        Split(list(x), y), Split(list(xv), yv), labels=["neg", "pos"], batch_size=batch_size, num_workers=0
    )
