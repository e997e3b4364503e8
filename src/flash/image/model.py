"""``ImageClassifier``: a pretrained image backbone with a new classification head."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset
from typing_extensions import Unpack

from flash.core.model.classification import ClassificationTask, check_num_classes
from flash.core.model.task import Optimization, base_task_arguments
from flash.core.utils.cpu import FreedMemoryReuse
from flash.core.utils.validation import check_bool, check_optional_int, check_probability
from flash.image.backbones import DEFAULT_BACKBONE, IMAGE_BACKBONES
from flash.image.preprocessing import ImagePreprocessing
from flash.image.task_inputs import PipelineImageInputs
from flash.image.transforms import UserTransform

HEADS = ("linear", "mlp")

HeadSpec = str | nn.Module | Callable[[int, int], nn.Module]


def build_head(head: HeadSpec, num_features: int, num_classes: int, dropout: float) -> nn.Module:
    """``"linear"``: dropout then one linear layer. ``"mlp"``: a hidden layer of 512 units with
    ReLU and dropout. A module is used as is; a callable gets ``(num_features, num_classes)``."""
    if isinstance(head, nn.Module):
        return head
    if isinstance(head, str):
        if head == "linear":
            return nn.Sequential(nn.Dropout(dropout), nn.Linear(num_features, num_classes))
        if head == "mlp":
            return nn.Sequential(
                nn.Linear(num_features, 512), nn.ReLU(), nn.Dropout(dropout), nn.Linear(512, num_classes)
            )
        raise ValueError(
            f"Unknown head {head!r}. Choose one of {', '.join(HEADS)}, an nn.Module, or a callable "
            "(num_features, num_classes) -> nn.Module."
        )
    if callable(head):
        module = head(num_features, num_classes)
        if not isinstance(module, nn.Module):
            raise TypeError(f"The head callable returned a {type(module).__name__}, not an nn.Module.")
        return module
    raise TypeError(f"head must be a name, an nn.Module or a callable, got {type(head).__name__}.")


class ImageClassifier(PipelineImageInputs, ClassificationTask):
    """Classify images with a pretrained backbone and a new head.

    Args:
        num_classes: number of classes (default: ``len(labels)``).
        backbone: ``"efficientnet_lite0"`` (ImageNet weights shipped with flash's dependencies,
            works offline), any timm model name, or ``"torchvision/<name>"``; see
            :meth:`available_backbones` and :mod:`flash.image.backbones`.
        pretrained: load the backbone's pretrained weights.
        head: ``"linear"``, ``"mlp"``, an ``nn.Module`` or a callable ``(num_features, num_classes)``.
            A module or callable is not saved in checkpoints' hyperparameters: pass it again to
            ``load_from_checkpoint(path, head=...)``.
        dropout: dropout before the head's last layer.
        multi_label: each image may carry several classes (sigmoid outputs).
        labels: class names; filled from the data at training time and saved in checkpoints.
        learning_rate: the head's learning rate.
        optimizer, optimizer_kwargs, lr_scheduler, lr_scheduler_kwargs: see :mod:`flash.core.training.optimizers`.
        backbone_lr_factor: the backbone's learning rate as a fraction of ``learning_rate``.
        layer_lr_decay: each backbone stage below the top one gets this factor more.
        label_smoothing: for single-label training.
        image_size: crop size (default: the backbone's); a data module's ``image_size`` overrides it.
        cache_features: while the backbone is frozen with ``train_bn=False``, compute its features
            of the (unaugmented) training and validation images once and train the head on them.
        unfreeze_warmup: warm each backbone stage's learning rate up linearly over its first steps
            of training (one epoch, at most 1,000 steps; ``False``: none). Adam's first steps move
            every newly trained weight by the full rate at once, which knocked validation accuracy
            down by 5-30 points in the epoch after unfreezing (measured on two data sets).
        linear_probe: when the features are cached and the head is linear, first fit the head to
            convergence on them (L2-regularised logistic regression by L-BFGS, as scikit-learn's
            ``LogisticRegression``), then train on as usual: linear-probe-then-finetune.
        channels_last: keep the network and batches in NHWC layout (faster on CPUs and GPUs).
        preprocessing: the backbone's input description (set from checkpoints; leave it out).
    """

    domain = "image"

    default_train_bn = False
    """BatchNorm layers of a frozen backbone stay frozen (eval mode) unless ``train_bn=True`` is passed.

    A frozen backbone whose BatchNorm layers train is neither frozen nor cheap: batch statistics
    of small batches shift its features every step (and differ from the running statistics used
    at evaluation), and their affine weights need a backward pass through the whole backbone.
    Frozen, the backbone is a fixed feature extractor: its features are computed once and the
    head fits them as a linear probe (see ``cache_features``, ``linear_probe``); after unfreezing,
    the convolutions train around the pretrained statistics, which suits small data sets.
    """

    no_freeze_train_bn = False
    """Under ``no_freeze`` too, the backbone's BatchNorm layers keep their pretrained statistics and
    weights (eval mode) while every other weight trains, as after unfreezing in the other strategies;
    ``finetune(..., train_bn=True)`` lets them train.

    Trained, they normalise with the statistics of the new images' batches, and their running
    statistics follow within the first epoch: on a domain far from the backbone's pretraining data
    that changes every layer's output at once, and at the backbone's learning rate (a tenth of the
    head's) six epochs did not recover from it. On scikit-learn's digits at 64 px
    (``benchmarks/far_domain.py``) ``no_freeze`` reached 0.80 to 0.85 with trained BatchNorm and 0.965
    with the pretrained statistics; see docs/studies.md.
    """

    optimization_defaults = {
        **ClassificationTask.optimization_defaults,
        **{"lr_scheduler": "cosine", "backbone_lr_factor": 0.1},
    }

    def __init__(
        self,
        num_classes: int | None = None,
        backbone: str = DEFAULT_BACKBONE,
        pretrained: bool = True,
        head: HeadSpec = "linear",
        dropout: float = 0.0,
        multi_label: bool = False,
        labels: Sequence[str] | None = None,
        label_smoothing: float = 0.0,
        multi_label_threshold: float = 0.5,
        image_size: int | None = None,
        cache_features: bool = True,
        linear_probe: bool = True,
        unfreeze_warmup: bool = True,
        channels_last: bool = True,
        preprocessing: dict[str, Any] | None = None,
        **optimization: Unpack[Optimization],
    ) -> None:
        num_classes = check_num_classes(num_classes, labels)
        check_probability(dropout, "dropout", high_open=True)
        check_optional_int(image_size, "image_size", 8, "pixels")
        check_bool(pretrained, "pretrained")
        built = IMAGE_BACKBONES.build(backbone, pretrained=pretrained)
        head_module = build_head(head, built.num_features, num_classes, float(dropout))
        super().__init__(
            built.module,
            head_module,
            backbone_blocks=built.blocks,
            **base_task_arguments(ImageClassifier, locals()),
            **optimization,
        )
        self.preprocessing = ImagePreprocessing.from_dict(preprocessing or built.preprocessing)
        if image_size is not None:
            self.preprocessing = self.preprocessing.replace(image_size=image_size)
        self.num_features = built.num_features
        self.cache_features = bool(cache_features)
        self.linear_probe = bool(linear_probe)
        self.unfreeze_warmup = bool(unfreeze_warmup)
        self._warmup_steps_done: dict[str, int] = {}
        self.channels_last = bool(channels_last)
        if self.channels_last:
            self.to(memory_format=torch.channels_last)
        self._eval_transform: UserTransform | None = None
        self.save_hyperparameters(
            {
                "num_classes": num_classes,
                "backbone": backbone,
                "pretrained": pretrained,
                "head": head if isinstance(head, str) else "custom",
                "dropout": float(dropout),
                "multi_label": bool(multi_label),
                "labels": list(labels) if labels is not None else None,
                **self.optimization_hyperparameters(),
                "label_smoothing": float(label_smoothing),
                "multi_label_threshold": float(multi_label_threshold),
                "image_size": image_size,
                "cache_features": self.cache_features,
                "linear_probe": self.linear_probe,
                "unfreeze_warmup": self.unfreeze_warmup,
                "channels_last": self.channels_last,
                "preprocessing": self.preprocessing.to_dict(),
            }
        )

    # -- backbones ------------------------------------------------------------------------------
    @classmethod
    def available_backbones(cls) -> list[str]:
        """Named backbones; any other timm name or ``torchvision/<name>`` works too (downloading
        its weights). ``IMAGE_BACKBONES.offline()`` lists those that need no network."""
        return IMAGE_BACKBONES.available()

    # -- what the data module hands over (in its setup hook) -----------------------------------
    def use_eval_transform(self, transform: UserTransform | None) -> None:
        """The data's custom evaluation transform, used by :meth:`predict` in this process (it is
        not saved in checkpoints)."""
        self._eval_transform = transform

    def auto_candidates(self) -> tuple[Any, ...]:
        """What ``strategy="auto"`` tries: the default candidates, then ``no_freeze`` with the
        backbone at the head's rate. Data far from the backbone's pretraining photos want that
        (handwritten digits: 0.967 with the default backbone rate, a tenth of the head's, 0.989 at
        the head's rate); photos close to them do not (ants and bees, ``freeze_unfreeze``: 0.928
        against 0.902); see docs/studies.md."""
        from flash.core.training.auto import DEFAULT_CANDIDATES, Candidate

        return (*DEFAULT_CANDIDATES, Candidate("no_freeze", backbone_lr_factor=1.0))

    def configure_callbacks(self) -> list[FreedMemoryReuse]:
        """Glibc keeps freed activation memory for reuse during a fit on the CPU, and only then."""
        return [FreedMemoryReuse()]

    # -- warm-up of newly trained stages ------------------------------------------------------
    def _warmup_length(self) -> int:
        batches = getattr(self.trainer, "num_training_batches", 1)
        batches = int(batches) if isinstance(batches, int | float) and math.isfinite(batches) else 1000
        accumulate = max(1, int(getattr(self.trainer, "accumulate_grad_batches", 1)))
        return max(1, min(1000, batches // accumulate))

    def optimizer_step(
        self, epoch: int, batch_idx: int, optimizer: Any, optimizer_closure: Any = None
    ) -> None:
        scaled: list[tuple[dict[str, Any], float]] = []
        if self.unfreeze_warmup:
            length = self._warmup_length()
            for group in optimizer.param_groups:
                name = str(group.get("name", ""))
                if not name.startswith("backbone") or not any(p.requires_grad for p in group["params"]):
                    continue
                done = self._warmup_steps_done.get(name, 0)
                if done < length:
                    scaled.append((group, group["lr"]))
                    group["lr"] = group["lr"] * (done + 1) / length
                self._warmup_steps_done[name] = done + 1
        try:
            super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        finally:
            for group, lr in scaled:
                group["lr"] = lr

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["flash_unfreeze_warmup"] = dict(self._warmup_steps_done)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        self._warmup_steps_done = dict(checkpoint.get("flash_unfreeze_warmup", {}))

    # -- prediction -----------------------------------------------------------------------------
    def predict_dataset(self, inputs: Any) -> tuple[Dataset, bool]:
        """Images for :meth:`predict`: a path (file or folder), PIL image, array or tensor, or a list.

        Arrays: ``(H, W)``, ``(H, W, C)`` one image, ``(N, H, W, C)`` several. Tensors: ``(C, H, W)``
        one image, ``(N, C, H, W)`` several. A folder gives every image in it (sorted).
        """
        return self.pipeline_dataset(inputs)


ImageClassification = ImageClassifier
"""The name the finetuning page uses for :class:`ImageClassifier`."""
