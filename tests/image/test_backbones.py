"""Image backbones from timm: preprocessing from timm's data config, ``local-dir:`` and
``hf-hub:`` names, and the shipped default's own preprocessing."""

from __future__ import annotations

import json
import socket

import pytest
import timm
import torch
from timm.data import resolve_model_data_config

from flash.image import ImageClassifier
from flash.image.backbones import IMAGE_BACKBONES, preprocessing


def test_the_shipped_default_keeps_its_own_preprocessing():
    # EfficientNet-Lite0's shipped weights were trained on [-1, 1] inputs, unlike timm's config
    built = IMAGE_BACKBONES.build("efficientnet_lite0", pretrained=False)
    assert built.preprocessing == {
        "image_size": 224,
        "mean": [0.5, 0.5, 0.5],
        "std": [0.5, 0.5, 0.5],
        "crop_pct": 0.875,
        "interpolation": "bilinear",
    }


@pytest.mark.parametrize("name", ["resnet18", "test_vit", "test_efficientnet"])
def test_timm_backbones_take_timms_data_config(name):
    config = resolve_model_data_config(timm.create_model(name, pretrained=False))
    built = IMAGE_BACKBONES.build(name, pretrained=False)
    assert built.preprocessing == preprocessing(
        config["input_size"][-1], config["mean"], config["std"], config["crop_pct"], config["interpolation"]
    )


def _saved_timm_model(folder, **pretrained_cfg) -> torch.nn.Module:
    model = timm.create_model("test_resnet", pretrained=False, num_classes=4)
    timm.models.save_for_hf(model, folder)
    config_file = folder / "config.json"
    config = json.loads(config_file.read_text())
    config["pretrained_cfg"].update(pretrained_cfg)
    config["pretrained_cfg"].pop("interpolation")  # left to timm's default
    config_file.write_text(json.dumps(config))
    return model


def test_local_dir_backbone_loads_the_folders_weights_and_preprocessing(tmp_path):
    folder = tmp_path / "my model"
    saved = _saved_timm_model(folder, input_size=[3, 96, 96], mean=[0.1, 0.2, 0.3], std=[0.9, 0.8, 0.7])
    task = ImageClassifier(num_classes=2, backbone=f"local-dir:{folder}")
    assert task.preprocessing == {
        "image_size": 96,
        "mean": pytest.approx([0.1, 0.2, 0.3]),
        "std": pytest.approx([0.9, 0.8, 0.7]),
        "crop_pct": 0.95,
        "interpolation": "bicubic",  # timm's default where the config names none
    }
    saved.reset_classifier(0)
    saved.eval()
    task.eval()
    images = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        assert torch.allclose(task.backbone(images), saved(images), atol=1e-5)


def test_local_dir_without_a_timm_config_is_refused_by_name(tmp_path):
    with pytest.raises(ValueError, match=r"local-dir:.*config\.json does not exist.*save_for_hf"):
        ImageClassifier(num_classes=2, backbone=f"local-dir:{tmp_path}")


def test_a_hub_repo_id_without_prefix_suggests_the_prefixes():
    with pytest.raises(ValueError, match=r"'hf-hub:timm/resnet18'.*'local-dir:timm/resnet18'"):
        ImageClassifier(num_classes=2, backbone="timm/resnet18")


@pytest.fixture
def unreachable_network(monkeypatch, tmp_path):
    """No socket can connect; the Hugging Face cache is empty; hub retries do not wait."""
    import huggingface_hub.constants
    import huggingface_hub.utils._http

    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError(101, "Network is unreachable")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    monkeypatch.setattr(huggingface_hub.utils._http.time, "sleep", lambda seconds: None)
    return monkeypatch, attempts


@pytest.mark.parametrize("offline_mode", [True, False], ids=["HF_HUB_OFFLINE", "no-network"])
def test_hf_hub_backbone_without_network_names_it_and_the_offline_ones(unreachable_network, offline_mode):
    import huggingface_hub.constants

    monkeypatch, attempts = unreachable_network
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", offline_mode)
    name = "hf-hub:timm/resnet18.a1_in1k"
    with pytest.raises(RuntimeError) as raised:
        ImageClassifier(num_classes=2, backbone=name)
    message = str(raised.value)
    assert f"image backbone {name!r}" in message
    assert "Backbones that work offline: efficientnet_lite0." in message
    assert "local-dir:<folder>" in message
    assert bool(attempts) != offline_mode  # without offline mode the hub was tried, and unreachable
