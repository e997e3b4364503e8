"""Frozen-backbone features, computed once and reused while the backbone cannot change.

While the backbone is frozen with its BatchNorm layers frozen too (``train_bn=False``) and holds
no active dropout, it is a fixed function: training the head on it is a linear probe. Then the
training images' features (of their evaluation crops: augmenting them would make every epoch's
features new) are computed once and each frozen epoch trains the head on them, and validation
features are computed once per backbone state. The first training step through a trainable
backbone (or training BatchNorm) invalidates everything.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

if TYPE_CHECKING:
    from flash.image.data import ImageClassificationData
    from flash.image.dataset import ImageDataset


def backbone_is_fixed(backbone: nn.Module) -> bool:
    """True when training steps cannot change the backbone or its outputs."""
    if any(p.requires_grad for p in backbone.parameters()):
        return False
    for module in backbone.modules():
        if not module.training:
            continue
        if isinstance(module, _BatchNorm) and module.track_running_stats:
            return False
        if isinstance(module, nn.modules.dropout._DropoutNd) and module.p > 0:
            return False
        if type(module).__name__ == "DropPath" and getattr(module, "drop_prob", 0) > 0:
            return False
    return True


class FeatureCache:
    """Backbone features by item index, for one dataset (``token``) and one backbone state."""

    def __init__(self) -> None:
        self.version = 0
        self._store: dict[str, tuple[int, str, dict[int, torch.Tensor]]] = {}

    def backbone_changed(self) -> None:
        """Call after a training step that may have changed the backbone."""
        self.version += 1
        self._store.clear()

    def clear(self) -> None:
        self._store.clear()

    def _entries(self, stage: str, token: str) -> dict[int, torch.Tensor]:
        version, stored_token, entries = self._store.get(stage, (-1, "", {}))
        if version != self.version or stored_token != token:
            entries = {}
            self._store[stage] = (self.version, token, entries)
        return entries

    def complete(self, stage: str, token: str, size: int) -> bool:
        return len(self._entries(stage, token)) == size

    def get(self, stage: str, token: str, indices: torch.Tensor) -> torch.Tensor | None:
        entries = self._entries(stage, token)
        keys = indices.tolist()
        if not all(k in entries for k in keys):
            return None
        return torch.stack([entries[k] for k in keys])

    def put(self, stage: str, token: str, indices: torch.Tensor, features: torch.Tensor) -> None:
        entries = self._entries(stage, token)
        for key, feature in zip(indices.tolist(), features.detach()):
            entries[key] = feature.clone()

    def fill(self, stage: str, token: str, backbone: nn.Module, loader: Any, device: torch.device) -> None:
        """Compute the features of every item of ``loader`` (batches with ``index`` and ``input``)."""
        modes = [(module, module.training) for module in backbone.modules()]
        backbone.eval()
        try:
            with torch.no_grad():  # not inference_mode: the head's backward saves these features
                for batch in loader:
                    features = backbone(batch["input"].to(device))
                    self.put(stage, token, batch["index"], features.float())
        finally:
            for module, training in modes:
                module.training = training


def backbone_fingerprint(backbone: nn.Module) -> tuple[float, ...]:
    """A summary of the backbone's weights and buffers (sums and sums of squares, in float64)
    that tells two backbones apart unless they hold the same values."""
    with torch.no_grad():
        parts = []
        for tensor in backbone.state_dict().values():
            if tensor.is_floating_point():
                values = tensor.detach().double()
                parts += [float(values.sum()), float(values.square().sum())]
    return tuple(parts)


class SharedFeatures:
    """Evaluation-crop features of the pooled training items of one data module, by pooled
    position, for one backbone and preprocessing at a time: the cross-validation folds of that
    data reuse them, so a frozen backbone sees every image once however many folds there are."""

    def __init__(self) -> None:
        self._key: Any = None
        self._store: dict[int, torch.Tensor] = {}

    def get(self, key: Any, positions: Sequence[int]) -> torch.Tensor | None:
        if key != self._key or not all(int(p) in self._store for p in positions):
            return None
        return torch.stack([self._store[int(p)] for p in positions])

    def put(self, key: Any, positions: Sequence[int], features: torch.Tensor) -> None:
        if key != self._key:
            self._key, self._store = key, {}
        for position, feature in zip(positions, features.detach().cpu()):
            self._store[int(position)] = feature  # rows of a tensor nothing else writes to


class FrozenFeatures(Callback):
    """The frozen-backbone feature cache of one image data module, for the runs it takes part in.

    While the task's backbone is fixed (see :func:`backbone_is_fixed`) and the task has
    ``cache_features``, the training images' features are computed once, at the start of the
    first frozen epoch, and training batches carry them as ``features``; validation features are
    computed at the first validation and reused while the backbone stays fixed. The datasets
    then stop decoding images: their switch lives in shared memory, so loader workers (persistent
    ones included) see it from the next item they make.
    """

    def __init__(
        self,
        data: ImageClassificationData,
        shared: SharedFeatures | None = None,
        positions: dict[str, Sequence[int]] | None = None,
    ) -> None:
        self.data = data
        self.cache = FeatureCache()
        self.shared = shared
        """Features shared with the other cross-validation folds of the same data, if any."""
        self.positions = dict(positions or {})
        """Each stage's items as positions of the pooled data (``shared``'s keys)."""
        self._key: Any = None

    # -- features shared across cross-validation folds ---------------------------------------------
    def _shared_key(self, task: Any) -> Any:
        return (repr(self.data.preprocessing), backbone_fingerprint(task.backbone))

    def _positions(self, stage: str, dataset: ImageDataset) -> Sequence[int] | None:
        positions = self.positions.get(stage)
        if self.shared is None or positions is None or len(positions) != len(dataset):
            return None  # not a fold, or items were dropped (unreadable images)
        return positions

    def _from_shared(self, stage: str, dataset: ImageDataset) -> bool:
        """Fill ``stage``'s cache from the other folds' features; whether it could."""
        positions = self._positions(stage, dataset)
        if positions is None or self._key is None:
            return False
        found = self.shared.get(self._key, positions)  # type: ignore[union-attr]
        if found is None:
            return False
        self.cache.put(stage, dataset.token, torch.arange(len(dataset)), found)
        return True

    def _to_shared(
        self, stage: str, dataset: ImageDataset, indices: torch.Tensor, features: torch.Tensor
    ) -> None:
        positions = self._positions(stage, dataset)
        if positions is not None and self._key is not None:
            self.shared.put(self._key, [positions[i] for i in indices.tolist()], features)  # type: ignore[union-attr]

    # -- which data, which task ------------------------------------------------------------------
    def _dataset(self, stage: str) -> ImageDataset | None:
        from flash.image.dataset import ImageDataset

        if stage in self.data.on_device or self.data.splits.get(stage) is None:
            return None
        dataset = self.data.dataset(stage)
        return dataset if isinstance(dataset, ImageDataset) else None

    @staticmethod
    def _wanted(trainer: pl.Trainer, task: Any) -> bool:
        return trainer.state.fn == "fit" and bool(getattr(task, "cache_features", False))

    def _fixed(self, trainer: pl.Trainer, task: Any) -> bool:
        return self._wanted(trainer, task) and backbone_is_fixed(task.backbone)

    # -- Lightning hooks -------------------------------------------------------------------------
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.cache.backbone_changed()

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        dataset = self._dataset("train")
        if dataset is None:
            return
        if not self._fixed(trainer, pl_module):
            dataset.pixels = True
            return
        self._key = self._shared_key(pl_module) if self.shared is not None else None
        if not self.cache.complete("train", dataset.token, len(dataset)) and not self._from_shared(
            "train", dataset
        ):
            loader = self.data.eval_loader("train")
            self.cache.fill("train", dataset.token, pl_module.backbone, loader, pl_module.device)
            if self._positions("train", dataset) is not None:
                every = torch.arange(len(dataset))
                self._to_shared("train", dataset, every, self.cache.get("train", dataset.token, every))
        dataset.pixels = False
        if trainer.current_epoch == 0:  # so a run resumed from a checkpoint continues as it would have
            self._probe_head(pl_module, dataset)

    def _probe_head(self, task: Any, dataset: ImageDataset) -> None:
        """Fit a linear head to convergence on the cached training features (``linear_probe``)."""
        linear = linear_layer_of(task.head)
        if not getattr(task, "linear_probe", False) or linear is None or dataset.targets is None:
            return
        features = self.cache.get("train", dataset.token, torch.arange(len(dataset)))
        targets = torch.as_tensor(dataset.targets)
        fit_linear_probe(linear, features.to(task.device), targets.to(task.device), bool(task.multi_label))

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if not backbone_is_fixed(pl_module.backbone):
            self.cache.backbone_changed()

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        dataset = self._dataset("val")
        if dataset is not None and self._wanted(trainer, pl_module) and not trainer.sanity_checking:
            fixed = backbone_is_fixed(pl_module.backbone)
            self._key = self._shared_key(pl_module) if fixed and self.shared is not None else None
            if fixed and not self.cache.complete("val", dataset.token, len(dataset)):
                self._from_shared("val", dataset)
            dataset.pixels = not self.cache.complete("val", dataset.token, len(dataset))

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._all_pixels(("val",))

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.cache.backbone_changed()
        self._all_pixels(("train", "val"))

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._all_pixels(("train", "val"))

    def _all_pixels(self, stages: tuple[str, ...]) -> None:
        for stage in stages:
            dataset = self.data._datasets.get(stage)
            if dataset is not None and hasattr(dataset, "pixels"):
                dataset.pixels = True

    # -- batches -----------------------------------------------------------------------------------
    def with_features(self, batch: dict[str, Any], trainer: pl.Trainer, task: Any) -> dict[str, Any]:
        """``batch`` with the backbone's ``features`` of its items where the cache has them (or,
        for validation with a fixed backbone, computes them now and keeps them)."""
        stage = "train" if trainer.training else "val" if trainer.validating else None
        if (
            stage is None
            or "index" not in batch
            or not self._wanted(trainer, task)
            or trainer.sanity_checking
        ):
            return batch
        dataset = self._dataset(stage)
        if dataset is None:
            return batch
        indices = batch["index"].cpu()
        cached = None
        if stage == "val" or backbone_is_fixed(task.backbone):
            cached = self.cache.get(stage, dataset.token, indices)
        if cached is not None:
            return {**batch, "features": cached.to(task.device)}
        if "input" not in batch:  # a worker made it without pixels just before the backbone changed
            batch = {**batch, "input": self.data.pixels_of(stage, indices.tolist()).to(task.device)}
        if stage == "val":
            with torch.no_grad(), trainer.precision_plugin.forward_context():
                features = task.backbone(batch["input"])
            self.cache.put(stage, dataset.token, indices, features.float())
            if backbone_is_fixed(task.backbone):
                self._to_shared(stage, dataset, indices, features.float())
            batch = {**batch, "features": features}
        return batch


def linear_layer_of(head: nn.Module) -> nn.Linear | None:
    """The head's only parameterised layer when it is a linear classifier (optionally after
    dropout), else ``None``."""
    if isinstance(head, nn.Linear):
        return head
    layers = [m for m in head.modules() if any(True for _ in m.parameters(recurse=False))]
    if len(layers) == 1 and isinstance(layers[0], nn.Linear):
        return layers[0]
    return None


def fit_linear_probe(
    linear: nn.Linear,
    features: torch.Tensor,
    targets: torch.Tensor,
    multi_label: bool = False,
    c: float = 1.0,
    max_iter: int = 200,
) -> None:
    """Fit ``linear`` to convergence on fixed ``features``: L2-regularised logistic regression,
    as scikit-learn's ``LogisticRegression(C=c)`` (softmax; one sigmoid per class when
    ``multi_label``), solved by full-batch L-BFGS. The bias is not penalised."""
    features = features.detach().float()
    weight = linear.weight.detach().clone().float().requires_grad_(True)
    bias = (
        linear.bias.detach().clone().float().requires_grad_(True)
        if linear.bias is not None
        else torch.zeros(linear.out_features)
    )
    params = [weight] + ([bias] if linear.bias is not None else [])
    penalty = 1.0 / (2.0 * c * len(features))
    optimizer = torch.optim.LBFGS(
        params, max_iter=max_iter, tolerance_grad=1e-6, line_search_fn="strong_wolfe"
    )
    if multi_label:  # one logistic regression per class: the per-class losses add up
        targets = targets.float()

        def data_loss(logits: torch.Tensor) -> torch.Tensor:
            return nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="sum") / len(
                logits
            )
    else:
        targets = targets.long()

        def data_loss(logits: torch.Tensor) -> torch.Tensor:
            return nn.functional.cross_entropy(logits, targets)

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = data_loss(features @ weight.T + bias) + penalty * weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    with torch.no_grad():
        linear.weight.copy_(weight)
        if linear.bias is not None:
            linear.bias.copy_(bias)
