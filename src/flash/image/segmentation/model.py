"""``SemanticSegmentation``: an image backbone's stages as an encoder, and a light decoder.

The encoder is a backbone of :data:`flash.image.IMAGE_BACKBONES` (the shipped EfficientNet-Lite0
by default, so it works offline) cut into its stages; the decoder reads the feature maps at
strides 4, 8, 16 and 32. The encoder's stages are the task's ``backbone_blocks``, so every
finetuning strategy (``freeze``, ``freeze_unfreeze``, ``unfreeze_milestones``, custom callbacks)
works on it as on the classifier.

Decoders (``head=``):

- ``"fpn"`` (default): a feature pyramid (Lin et al. 2017) of ``decoder_channels`` channels:
  1x1 lateral convolutions, a top-down pathway, one 3x3 convolution per level, the levels
  summed at stride 4 and classified there.
- ``"unet"``: U-Net style upsampling from stride 32 to 4, each step concatenating the encoder's
  map of that stride and applying two 3x3 convolutions.

Both end with a 1x1 classifier at stride 4, upsampled bilinearly to the input's size.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torchmetrics
from PIL import Image
from torch import nn
from torch.nn import functional as F
from torch.utils.data import Dataset
from typing_extensions import Unpack

from flash.core.model.classification import check_num_classes, take_data_labels
from flash.core.model.task import Optimization, Task, base_task_arguments
from flash.core.utils.cpu import reuse_freed_memory
from flash.image.backbones import DEFAULT_BACKBONE, IMAGE_BACKBONES, StagedBackbone
from flash.image.segmentation.data import (
    DEFAULT_IGNORE_INDEX,
    SegmentationCollate,
    SegmentationDataset,
    SegmentationPipeline,
)
from flash.image.task_inputs import ImageTaskInputs, predict_items

HEADS = ("fpn", "unet")
LOSSES = ("cross_entropy", "dice", "cross_entropy+dice")
STRIDES = (4, 8, 16, 32)
_PROBE_SIZE = 64

HeadSpec = str | nn.Module | Callable[[list[int], int], nn.Module]


# -- the encoder ------------------------------------------------------------------------------------
class StageEncoder(nn.Module):
    """A backbone's stages run in order; returns the maps of the stages listed in ``taps``."""

    def __init__(self, stages: nn.Sequential, taps: Sequence[int], channels: Sequence[int]) -> None:
        super().__init__()
        self.stages = stages
        self.taps = [int(t) for t in taps]
        self.channels = [int(c) for c in channels]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for index, stage in enumerate(self.stages):
            x = stage(x)
            if index in self.taps:
                features.append(x)
        return features


def build_encoder(backbone: str, pretrained: bool) -> tuple[StageEncoder, dict[str, Any]]:
    """The stages of ``backbone`` up to stride 32 (a classifier's head convolution is dropped),
    tapped at the last stage of each stride in :data:`STRIDES`; and its preprocessing."""
    built = IMAGE_BACKBONES.build(backbone, pretrained=pretrained)
    module = built.module
    if not isinstance(module, StagedBackbone):
        raise ValueError(
            f"Backbone {backbone!r} gives flash no feature maps per stage, which segmentation needs. Use a "
            "convolutional backbone flash splits into stages: efficientnet_lite0 (offline), resnet18, "
            "resnet50, efficientnet_b0, or another timm EfficientNet or ResNet."
        )
    stages = nn.Sequential()
    for name, stage in module.stages.named_children():
        if name != "head_conv":
            stages.add_module(name, stage)
    was_training = stages.training
    stages.eval()
    strides, channels = [], []
    with torch.no_grad():
        x = torch.zeros(1, 3, _PROBE_SIZE, _PROBE_SIZE)
        for stage in stages:
            x = stage(x)
            strides.append(round(_PROBE_SIZE / x.shape[-1]))
            channels.append(int(x.shape[1]))
    stages.train(was_training)
    taps = []
    for stride in STRIDES:
        matching = [i for i, s in enumerate(strides) if s == stride]
        if not matching:
            raise ValueError(
                f"Backbone {backbone!r} has no stage at stride {stride} (its stages' strides: {strides}); "
                "segmentation needs maps at strides 4, 8, 16 and 32."
            )
        taps.append(matching[-1])
    for name in [n for n, _ in stages.named_children()][taps[-1] + 1 :]:
        delattr(stages, name)  # stages after stride 32's last one add nothing the decoder reads
    return StageEncoder(stages, taps, [channels[i] for i in taps]), dict(built.preprocessing)


# -- decoders ---------------------------------------------------------------------------------------
def _conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class FPNDecoder(nn.Module):
    """A feature pyramid over maps at strides 4-32, summed at stride 4 and classified there."""

    def __init__(
        self, in_channels: Sequence[int], num_classes: int, channels: int = 64, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, channels, 1) for c in in_channels)
        self.smooth = nn.ModuleList(_conv_bn_relu(channels, channels) for _ in in_channels)
        self.classifier = nn.Sequential(nn.Dropout2d(dropout), nn.Conv2d(channels, num_classes, 1))

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        maps = [lateral(f) for lateral, f in zip(self.lateral, features)]
        for i in range(len(maps) - 2, -1, -1):
            maps[i] = maps[i] + F.interpolate(maps[i + 1], size=maps[i].shape[-2:], mode="nearest")
        size = maps[0].shape[-2:]
        merged = self.smooth[0](maps[0])
        for smooth, level in zip(self.smooth[1:], maps[1:]):
            merged = merged + F.interpolate(smooth(level), size=size, mode="bilinear", align_corners=False)
        return self.classifier(merged)


class UNetDecoder(nn.Module):
    """Upsampling from stride 32 to 4, concatenating the encoder's map at each stride."""

    def __init__(
        self, in_channels: Sequence[int], num_classes: int, channels: int = 64, dropout: float = 0.0
    ) -> None:
        super().__init__()
        widths = [channels * 2**i for i in range(len(in_channels) - 1)]  # stride 4, 8, 16
        self.blocks = nn.ModuleList()
        below = in_channels[-1]
        for skip, width in zip(reversed(in_channels[:-1]), reversed(widths)):
            self.blocks.append(nn.Sequential(_conv_bn_relu(below + skip, width), _conv_bn_relu(width, width)))
            below = width
        self.classifier = nn.Sequential(nn.Dropout2d(dropout), nn.Conv2d(below, num_classes, 1))

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = features[-1]
        for block, skip in zip(self.blocks, reversed(features[:-1])):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], dim=1))
        return self.classifier(x)


def build_decoder(
    head: HeadSpec, in_channels: list[int], num_classes: int, channels: int, dropout: float
) -> nn.Module:
    """``"fpn"`` or ``"unet"``; an ``nn.Module`` (taking the list of encoder maps) is used as is; a
    callable gets ``(encoder channels per map, num_classes)``."""
    if isinstance(head, nn.Module):
        return head
    if isinstance(head, str):
        if head == "fpn":
            return FPNDecoder(in_channels, num_classes, channels, dropout)
        if head == "unet":
            return UNetDecoder(in_channels, num_classes, channels, dropout)
        raise ValueError(
            f"Unknown head {head!r}. Choose one of {', '.join(HEADS)}, an nn.Module taking the list of encoder "
            "maps, or a callable (encoder_channels, num_classes) -> nn.Module."
        )
    if callable(head):
        module = head(list(in_channels), num_classes)
        if not isinstance(module, nn.Module):
            raise TypeError(f"The head callable returned a {type(module).__name__}, not an nn.Module.")
        return module
    raise TypeError(f"head must be a name, an nn.Module or a callable, got {type(head).__name__}.")


# -- losses -----------------------------------------------------------------------------------------
def dice_loss(
    logits: torch.Tensor, target: torch.Tensor, ignore_index: int, eps: float = 1.0
) -> torch.Tensor:
    """One minus the soft Dice coefficient averaged over the classes present in the batch's
    targets or predictions; pixels of ``ignore_index`` are left out."""
    valid = target != ignore_index
    probabilities = torch.softmax(logits.float(), dim=1) * valid.unsqueeze(1)
    one_hot = F.one_hot(target.where(valid, 0), logits.shape[1]).permute(
        0, 3, 1, 2
    ).float() * valid.unsqueeze(1)
    dims = (0, 2, 3)
    intersection = (probabilities * one_hot).sum(dims)
    total = probabilities.sum(dims) + one_hot.sum(dims)
    present = one_hot.sum(dims) > 0
    dice = (2 * intersection + eps) / (total + eps)
    return 1 - dice[present].mean() if present.any() else logits.sum() * 0


class SegmentationLoss(nn.Module):
    """Cross-entropy, Dice, or their sum; pixels of ``ignore_index`` count for nothing."""

    def __init__(self, kind: str, ignore_index: int) -> None:
        super().__init__()
        if kind not in LOSSES:
            raise ValueError(f"Unknown loss {kind!r}. Choose one of {', '.join(LOSSES)}.")
        self.kind = kind
        self.ignore_index = int(ignore_index)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = logits.sum() * 0.0  # keeps the graph when every pixel of the batch is void
        if not (target != self.ignore_index).any():
            return loss
        if "cross_entropy" in self.kind:
            loss = loss + F.cross_entropy(logits.float(), target, ignore_index=self.ignore_index)
        if "dice" in self.kind:
            loss = loss + dice_loss(logits, target, self.ignore_index)
        return loss


# -- the task ---------------------------------------------------------------------------------------
class SemanticSegmentation(ImageTaskInputs, Task):
    """Label every pixel of an image with a class.

    Args:
        num_classes: number of classes (default: ``len(labels)``).
        backbone: the encoder: ``"efficientnet_lite0"`` (ImageNet weights shipped with flash's
            dependencies, works offline) or another convolutional backbone of
            :data:`flash.image.IMAGE_BACKBONES` flash splits into stages (``resnet18``,
            ``resnet50``, ``efficientnet_b0``, other timm EfficientNets and ResNets).
        pretrained: load the encoder's pretrained weights.
        head: the decoder: ``"fpn"``, ``"unet"``, an ``nn.Module`` taking the list of encoder maps
            (strides 4, 8, 16, 32) and returning logits at stride 4, or a callable
            ``(encoder_channels, num_classes) -> nn.Module``. A module or callable is not saved in
            checkpoints: pass it again to ``load_from_checkpoint(path, head=...)``.
        decoder_channels: width of the decoder (the FPN's pyramid; the U-Net's at stride 4).
        dropout: dropout before the classifier.
        loss: ``"cross_entropy"``, ``"dice"`` or ``"cross_entropy+dice"``.
        ignore_index: the void label; a data module's ``ignore_index`` overrides it.
        labels: class names; filled from the data at training time and saved in checkpoints.
        learning_rate: the decoder's learning rate.
        optimizer, optimizer_kwargs, lr_scheduler, lr_scheduler_kwargs: see :mod:`flash.core.training.optimizers`.
        backbone_lr_factor: the encoder's learning rate as a fraction of ``learning_rate``.
        layer_lr_decay: each encoder stage below the top one gets this factor more.
        image_size: the short side images are resized to (default: the backbone's, 224); a data
            module's ``image_size`` overrides it.
        channels_last: keep the network and batches in NHWC layout (faster on CPUs and GPUs).
        preprocessing: the backbone's input description (set from checkpoints; leave it out).

    Metrics: ``mean_iou`` (the mean over classes of intersection over union) and
    ``pixel_accuracy``, logged per stage (``val_mean_iou``, ...); void pixels are left out.
    """

    monitor = "val_mean_iou"
    monitor_mode = "max"

    domain = "segmentation"
    outputs = ("masks", "probabilities")
    serve_outputs = ("masks",)
    output_fields = {"masks": "mask", "probabilities": "probabilities"}

    default_train_bn = False
    """BatchNorm layers of a frozen encoder stay frozen, as for the image classifier."""

    optimization_defaults = {**Task.optimization_defaults, **{"lr_scheduler": "onecycle"}}

    def __init__(
        self,
        num_classes: int | None = None,
        backbone: str = DEFAULT_BACKBONE,
        pretrained: bool = True,
        head: HeadSpec = "fpn",
        decoder_channels: int = 64,
        dropout: float = 0.0,
        loss: str = "cross_entropy",
        ignore_index: int = DEFAULT_IGNORE_INDEX,
        labels: Sequence[str] | None = None,
        image_size: int | None = None,
        channels_last: bool = True,
        preprocessing: dict[str, Any] | None = None,
        **optimization: Unpack[Optimization],
    ) -> None:
        num_classes = check_num_classes(num_classes, labels, minimum=2)
        if isinstance(ignore_index, bool) or not isinstance(ignore_index, int) or ignore_index < 0:
            raise ValueError(f"ignore_index must be a whole number >= 0, got {ignore_index!r}.")
        if 0 <= ignore_index < num_classes:
            raise ValueError(
                f"ignore_index={ignore_index} is one of the {num_classes} classes; the void label must be another value."
            )
        if (
            isinstance(decoder_channels, bool)
            or not isinstance(decoder_channels, int)
            or decoder_channels < 1
        ):
            raise ValueError(f"decoder_channels must be a whole number >= 1, got {decoder_channels!r}.")
        if not isinstance(dropout, int | float) or not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}.")
        if image_size is not None and (
            isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 32
        ):
            raise ValueError(f"image_size must be a whole number of pixels >= 32, got {image_size!r}.")
        if not isinstance(pretrained, bool):
            raise TypeError(f"pretrained must be True or False, got {pretrained!r}.")
        encoder, backbone_preprocessing = build_encoder(backbone, pretrained)
        decoder = build_decoder(head, encoder.channels, num_classes, decoder_channels, float(dropout))
        metrics = {
            "mean_iou": torchmetrics.classification.MulticlassJaccardIndex(
                num_classes=num_classes, average="macro"
            ),
            "pixel_accuracy": torchmetrics.classification.MulticlassAccuracy(
                num_classes=num_classes, average="micro"
            ),
        }
        super().__init__(
            encoder,
            decoder,
            backbone_blocks=list(encoder.stages),
            loss_fn=SegmentationLoss(loss, ignore_index),
            **base_task_arguments(SemanticSegmentation, locals()),
            **optimization,
        )
        self.num_classes = num_classes
        self.labels = list(labels) if labels is not None else None
        self.ignore_index = ignore_index
        self.keep_pixel_settings(preprocessing or backbone_preprocessing, image_size, channels_last)
        self.save_hyperparameters(
            {
                "num_classes": num_classes,
                "backbone": backbone,
                "pretrained": pretrained,
                "head": head if isinstance(head, str) else "custom",
                "decoder_channels": decoder_channels,
                "dropout": float(dropout),
                "loss": loss,
                "ignore_index": ignore_index,
                "labels": self.labels,
                **self.optimization_hyperparameters(),
                "image_size": image_size,
                "channels_last": self.channels_last,
                "preprocessing": self.preprocessing,
            }
        )

    @classmethod
    def available_backbones(cls) -> list[str]:
        """Named image backbones; those that are not split into stages are refused with a message."""
        return IMAGE_BACKBONES.available()

    # -- what the data module hands over ------------------------------------------------------
    def attach_data(self, num_classes: int | None, labels: Sequence[Any] | None, ignore_index: int) -> None:
        """Check the data's classes against the task's, keep their names and take its void label."""
        if num_classes is not None and num_classes != self.num_classes:
            raise ValueError(
                f"The task was built with num_classes={self.num_classes}, but the data has {num_classes} "
                "classes. Build it with num_classes=data.num_classes."
            )
        if labels is not None:
            take_data_labels(self, [str(x) for x in labels])
        if ignore_index != self.ignore_index:
            if 0 <= ignore_index < self.num_classes:
                raise ValueError(f"The data's ignore_index={ignore_index} is one of the task's classes.")
            self.ignore_index = int(ignore_index)
            self.loss_fn.ignore_index = self.ignore_index
            self.hparams["ignore_index"] = self.ignore_index

    def set_image_size(self, image_size: int) -> None:
        """Resize images to a short side of ``image_size`` (called by a data module built with it)."""
        self.preprocessing["image_size"] = int(image_size)
        self.hparams["preprocessing"] = dict(self.preprocessing)

    # -- the network ----------------------------------------------------------------------------
    def forward(self, x: Any) -> Any:
        """Logits ``(N, classes, H, W)`` at the input's size. A prediction batch (a dict with
        ``pixels`` and ``sizes``) gives ``{"logits", "sizes"}``, which :meth:`format_output` crops
        and resizes back to each image's own size."""
        if isinstance(x, dict):
            return {"logits": self(x["pixels"]), "sizes": x["sizes"]}
        logits = self.head(self.backbone(x))
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)

    def on_fit_start(self) -> None:
        if self.device.type == "cpu":
            reuse_freed_memory()

    def _shared_step(self, batch: dict[str, Any], stage: str) -> torch.Tensor:
        output = self(batch["input"])
        target = batch["target"].long()
        loss = self.loss_fn(output, target)
        batch_size = int(target.shape[0])
        self.log(f"{stage}_loss", loss, prog_bar=True, on_step=False, on_epoch=True, batch_size=batch_size)
        with torch.no_grad():
            valid = target != self.ignore_index
            predictions = output.detach().argmax(dim=1)[valid]
            target = target[valid]
        for name, metric in getattr(self, f"{stage}_metrics").items():
            metric.update(predictions, target)
            self.log(
                f"{stage}_{name}", metric, prog_bar=True, on_step=False, on_epoch=True, batch_size=batch_size
            )
        return loss

    # -- prediction -----------------------------------------------------------------------------
    def predict_dataset(self, inputs: Any) -> tuple[Dataset, bool]:
        """Images for :meth:`predict`: a path (file or folder), PIL image, array or tensor, or a list
        of them (see :meth:`flash.image.ImageClassifier.predict_dataset`)."""
        items, single = predict_items(inputs)
        pipeline = SegmentationPipeline(self.preprocessing["image_size"], False, self.ignore_index)
        return SegmentationDataset(items, None, pipeline, cache=None, stage="predict"), single

    def collate_fn(self) -> Callable[[list[Any]], Any]:
        return SegmentationCollate(
            self.preprocessing["mean"], self.preprocessing["std"], self.ignore_index, self.channels_last
        )

    def _per_image_logits(self, output: Any) -> list[torch.Tensor]:
        if not isinstance(output, dict):
            return list(output.float())
        logits, sizes = output["logits"].float(), output["sizes"].tolist()
        resized = []
        for item, (height, width, original_height, original_width) in zip(logits, sizes):
            item = item[:, :height, :width]
            if (height, width) != (original_height, original_width):
                item = F.interpolate(
                    item[None], size=(original_height, original_width), mode="bilinear", align_corners=False
                )[0]
            resized.append(item)
        return resized

    def format_output(self, output: Any, kind: str) -> list[Any]:
        """``"masks"``: an ``(H, W)`` array of class indices per image, at the image's own size
        (uint8, int32 beyond 256 classes). ``"probabilities"``: a ``(classes, H, W)`` float32 array."""
        dtype = np.uint8 if self.num_classes <= 256 else np.int32
        results = []
        for logits in self._per_image_logits(output):
            if kind == "probabilities":
                results.append(torch.softmax(logits, dim=0).cpu().numpy())
            else:
                results.append(logits.argmax(dim=0).cpu().numpy().astype(dtype))
        return results

    def class_name(self, index: int) -> str:
        return str(self.labels[index]) if self.labels is not None else str(index)

    def output_to_json(self, result: Any, kind: str) -> Any:
        """A mask as ``{"height", "width", "classes": {name: pixel count}, "png"}``: ``png`` is
        the base64 of a grayscale PNG (8-bit; 16-bit beyond 256 classes) whose pixel values are
        the class indices. Probabilities as nested lists ``[class][row][column]``."""
        if kind != "masks":
            return np.asarray(result).round(4).tolist()
        return mask_to_json(np.asarray(result), self.class_name)

    def export_outputs(self, output: torch.Tensor) -> dict[str, torch.Tensor]:
        output = output.float()
        return {"masks": output.argmax(dim=1), "probabilities": torch.softmax(output, dim=1)}

    def export_output_descriptions(self) -> dict[str, str]:
        return {
            "masks": "the class index of every pixel, (batch, height, width), class i named labels[i]",
            "probabilities": "softmax over the classes per pixel, (batch, classes, height, width)",
        }

    def export_metadata(self) -> dict[str, Any]:
        return {
            **super().export_metadata(),
            "labels": self.labels,
            "num_classes": self.num_classes,
            "ignore_index": self.ignore_index,
        }


def mask_to_json(mask: np.ndarray, name_of: Callable[[int], str] = str) -> dict[str, Any]:
    """A class-index mask as the JSON object served predictions hold (see
    :meth:`SemanticSegmentation.output_to_json`)."""
    if mask.ndim != 2:
        raise ValueError(f"A mask is (H, W), got shape {mask.shape}.")
    values, counts = np.unique(mask, return_counts=True)
    if mask.max(initial=0) < 256:
        image = Image.fromarray(mask.astype(np.uint8), mode="L")
    else:
        image = Image.fromarray(mask.astype(np.uint16))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return {
        "height": int(mask.shape[0]),
        "width": int(mask.shape[1]),
        "classes": {name_of(int(v)): int(c) for v, c in zip(values, counts)},
        "png": base64.b64encode(buffer.getvalue()).decode("ascii"),
    }


def mask_from_json(value: dict[str, Any]) -> np.ndarray:
    """The class-index mask of a served prediction's ``mask`` object."""
    if not isinstance(value, dict) or "png" not in value:
        raise ValueError("A served mask is an object with a base64 'png' field.")
    with Image.open(io.BytesIO(base64.b64decode(value["png"]))) as image:
        return np.array(image)


__all__ = ["FPNDecoder", "SemanticSegmentation", "UNetDecoder", "mask_from_json", "mask_to_json"]
