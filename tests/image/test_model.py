"""ImageClassifier: the shipped ImageNet weights, backbones and their blocks, finetuning semantics."""

from __future__ import annotations

import lightning.pytorch as pl
import numpy as np
import pytest
import timm
import torch
from image_fixtures import make_class_folders
from lightning.pytorch.callbacks import Callback
from PIL import Image
from sklearn.datasets import load_sample_image
from timm.data import ImageNetInfo
from torch import nn

import flash
from flash.core.training.finetuning import UnfreezeMilestones
from flash.image import ImageClassificationData, ImageClassifier
from flash.image.backbones import IMAGE_BACKBONES, shipped_efficientnet_lite0_state_dict

TRAINER_ARGS = {"enable_progress_bar": False, "logger": False, "enable_checkpointing": False,
                "enable_model_summary": False}  # fmt: skip


@pytest.fixture(scope="module")
def pretrained():
    return ImageClassifier(num_classes=2)


def _centre_crops(preprocessing) -> torch.Tensor:
    from flash.image.transforms import ImageCollate, ImagePipeline

    pipeline = ImagePipeline(preprocessing, train=False)
    crops = [
        pipeline(pipeline.load(Image.fromarray(load_sample_image(n)))) for n in ("china.jpg", "flower.jpg")
    ]
    return ImageCollate(preprocessing["mean"], preprocessing["std"])(
        [{"index": i, "input": c} for i, c in enumerate(crops)]
    )["input"]


def test_default_backbone_carries_the_shipped_imagenet_weights(pretrained):
    """With its ImageNet classifier, the shipped network names scikit-learn's sample photos."""
    imagenet = timm.create_model("efficientnet_lite0", pretrained=False)
    imagenet.load_state_dict(shipped_efficientnet_lite0_state_dict())
    imagenet.eval()
    images = _centre_crops(pretrained.preprocessing)
    with torch.no_grad():
        top5 = imagenet(images).topk(5).indices.tolist()
    names = [[ImageNetInfo().index_to_description(i) for i in row] for row in top5]
    assert "palace" in names[0][:2], names[0]  # china.jpg: a Chinese palace by a lake
    assert "daisy" in names[1][:3], names[1]  # flower.jpg: a white flower
    # ... and the task's backbone is that network without its classifier.
    pretrained.eval()
    with torch.no_grad():
        expected = imagenet.forward_head(imagenet.forward_features(images), pre_logits=True)
        assert torch.allclose(pretrained.backbone(images), expected, atol=1e-4)
    random = ImageClassifier(num_classes=2, pretrained=False).eval()
    with torch.no_grad():
        assert not torch.allclose(random.backbone(images), expected, atol=1e-2)


def test_default_backbone_blocks_are_its_stages(pretrained):
    names = pretrained._backbone_block_names
    assert names == ["stages.stem"] + [f"stages.stage{i}" for i in range(1, 8)] + ["stages.head_conv"]
    assert pretrained.backbone_blocks[0][0] is pretrained.backbone.stages.stem[0]
    assert pretrained.num_features == 1280 and pretrained.preprocessing["mean"] == [0.5, 0.5, 0.5]


def test_available_and_offline_backbones():
    assert ImageClassifier.available_backbones()[0] == "efficientnet_lite0"
    assert IMAGE_BACKBONES.offline() == ["efficientnet_lite0"]


@pytest.mark.parametrize("name", ["resnet18", "resnet10t"])
def test_offline_error_names_the_backbone_and_the_offline_ones(name):
    with pytest.raises(RuntimeError) as info:  # tests run with HF_HUB_OFFLINE=1
        ImageClassifier(num_classes=2, backbone=name)
    assert repr(name) in str(info.value) and "efficientnet_lite0" in str(info.value)


def test_unknown_backbone_suggests_names():
    with pytest.raises(ValueError, match=r"did you mean resnet18"):
        ImageClassifier(num_classes=2, backbone="resnet181")
    with pytest.raises(ValueError, match="Unknown torchvision model 'resnet181'"):
        ImageClassifier(num_classes=2, backbone="torchvision/resnet181")


@pytest.mark.parametrize(
    ("name", "blocks"),
    [
        ("resnet10t", 5),
        ("torchvision/resnet18", 6),
        ("torchvision/mobilenet_v3_small", 14),
        ("vit_tiny_patch16_224", 14),
    ],
)
def test_timm_and_torchvision_backbones(name, blocks):
    task = ImageClassifier(num_classes=3, backbone=name, pretrained=False)
    assert len(task.backbone_blocks) == blocks
    size = task.preprocessing["image_size"] if name.startswith("vit") else 64
    assert task(torch.randn(2, 3, size, size)).shape == (2, 3)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({}, ValueError, "num_classes"),
        ({"num_classes": 2, "head": "mlpp"}, ValueError, "linear, mlp"),
        ({"num_classes": 2, "dropout": 1.0}, ValueError, "dropout"),
        ({"num_classes": 2, "optimizer": "adamm"}, ValueError, "adamw"),
        ({"num_classes": 1}, ValueError, "num_classes >= 2"),
        ({"num_classes": 2, "labels": ["a", "b", "c"]}, ValueError, "3 labels"),
    ],
)
def test_bad_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        ImageClassifier(pretrained=False, **kwargs)


def test_heads():
    mlp = ImageClassifier(num_classes=4, head="mlp", pretrained=False)
    assert mlp.head[0].in_features == 1280 and mlp.head[-1].out_features == 4
    custom = ImageClassifier(num_classes=4, head=lambda n, k: nn.Linear(n, k), pretrained=False)
    assert isinstance(custom.head, nn.Linear) and custom.hparams["head"] == "custom"


# -- finetuning semantics on the real network ---------------------------------------------------
class StageSnapshots(Callback):
    def __init__(self) -> None:
        self.by_epoch: dict[int, dict[str, torch.Tensor]] = {}

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.by_epoch[trainer.current_epoch] = {
            k: v.clone() for k, v in pl_module.backbone.state_dict().items()
        }


@pytest.fixture(scope="module")
def tiny_folders(tmp_path_factory):
    return make_class_folders(tmp_path_factory.mktemp("tiny"), per_class=4)


def _tiny_data(root):
    return ImageClassificationData.from_folders(root / "train", root / "val", batch_size=4, image_size=32)


def _is_norm(task, key):
    return isinstance(task.backbone.get_submodule(key.rsplit(".", 1)[0]), nn.BatchNorm2d)


@pytest.mark.parametrize("train_bn", [False, True])
def test_freeze_keeps_the_backbone_bit_identical(tiny_folders, train_bn):
    pl.seed_everything(0)
    task = ImageClassifier(num_classes=2)
    before = {k: v.clone() for k, v in task.backbone.state_dict().items()}
    head = {k: v.clone() for k, v in task.head.state_dict().items()}
    flash.Trainer(max_epochs=2, **TRAINER_ARGS).finetune(
        task, _tiny_data(tiny_folders), "freeze", train_bn=train_bn
    )
    after = task.backbone.state_dict()
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert not any(torch.equal(head[k], v) for k, v in task.head.state_dict().items())
    if train_bn:
        assert moved and all(_is_norm(task, k) for k in moved)
    else:
        assert moved == set()
        assert all(p.grad is None for p in task.backbone.parameters()), (
            "no backward through the frozen backbone"
        )


def test_milestones_unfreeze_the_last_stages_first(tiny_folders):
    pl.seed_everything(0)
    task = ImageClassifier(num_classes=2, learning_rate=1e-2)
    initial = {k: v.clone() for k, v in task.backbone.state_dict().items()}
    snaps = StageSnapshots()
    strategy = UnfreezeMilestones(unfreeze_milestones=(1, 2), num_layers=2, train_bn=False)
    flash.Trainer(max_epochs=3, callbacks=[snaps], **TRAINER_ARGS).finetune(
        task, _tiny_data(tiny_folders), strategy
    )
    names = task._backbone_block_names

    def block_changed(epoch, block):
        keys = [k for k in initial if k.startswith(names[block] + ".")]
        return any(not torch.equal(initial[k], snaps.by_epoch[epoch][k]) for k in keys)

    assert [block_changed(0, b) for b in range(9)] == [False] * 9
    assert [block_changed(1, b) for b in range(9)] == [False] * 7 + [True, True]
    assert [block_changed(2, b) for b in range(9)] == [True] * 9


def test_checkpoint_hyperparameters_are_plain_values(tiny_folders, tmp_path):
    task = ImageClassifier(num_classes=2, pretrained=False)
    trainer = flash.Trainer(max_epochs=1, **TRAINER_ARGS)
    trainer.finetune(task, _tiny_data(tiny_folders), "freeze")
    trainer.save_checkpoint(tmp_path / "task.ckpt")
    checkpoint = torch.load(tmp_path / "task.ckpt", weights_only=True)
    hparams = checkpoint["hyper_parameters"]
    assert hparams["labels"] == ["blue", "red"] and hparams["preprocessing"]["image_size"] == 32
    assert hparams["backbone"] == "efficientnet_lite0"
    assert np.isclose(hparams["learning_rate"], task.learning_rate)
