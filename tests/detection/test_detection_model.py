"""ObjectDetector: strategies, predictions in the input image's pixels, checkpoints, export, CLI, serving."""

from __future__ import annotations

import base64
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from detection_fixtures import make_images, write_voc
from PIL import Image

import flash
from flash import cli
from flash.image import ObjectDetectionData, ObjectDetector
from flash.image.detection.model import HEADS

TINY = {"fpn_channels": 64, "head_convs": 1}


def tiny_data(tmp_path, n=8, **kwargs):
    root = write_voc(tmp_path / "train", n)
    return ObjectDetectionData.from_voc(
        train_folder=root, val_split=0.25, batch_size=4, image_size=64, **kwargs
    )


def trainer(epochs=1):
    return flash.Trainer(
        max_epochs=epochs,
        enable_progress_bar=False,
        enable_model_summary=False,
        logger=False,
        enable_checkpointing=False,
    )


def test_bad_arguments_are_refused():
    with pytest.raises(
        ValueError, match="Unknown detection head 'yolo'. Choose one of fcos, retinanet, faster_rcnn"
    ):
        ObjectDetector(num_classes=2, head="yolo", pretrained=False)
    with pytest.raises(ValueError, match="num_classes"):
        ObjectDetector(pretrained=False)
    with pytest.raises(ValueError, match="multiple of 32 and >= 64"):
        ObjectDetector(num_classes=2, fpn_channels=32, pretrained=False)
    with pytest.raises(ValueError, match="score_threshold"):
        ObjectDetector(num_classes=2, score_threshold=2, pretrained=False)


@pytest.mark.parametrize(
    "strategy", ["no_freeze", "freeze", ("freeze_unfreeze", 1), ("unfreeze_milestones", ((1, 1), 1))]
)
def test_every_strategy_trains_the_heads_and_freezes_as_on_the_classifier(tmp_path, strategy):
    data = tiny_data(tmp_path)
    task = ObjectDetector(num_classes=data.num_classes, pretrained=False, **TINY)
    before = {k: v.clone() for k, v in task.backbone.state_dict().items()}
    head_before = task.head.head.classification_head.cls_logits.weight.detach().clone()
    trainer(2).finetune(task, data, strategy=strategy)
    after = task.backbone.state_dict()
    frozen_throughout = all(torch.equal(before[k], after[k]) for k in before)
    assert frozen_throughout == (strategy == "freeze")
    assert not torch.equal(head_before, task.head.head.classification_head.cls_logits.weight)
    if strategy != "no_freeze":  # frozen stages keep their BatchNorm statistics, also once unfrozen
        running = [k for k in before if k.endswith("running_mean")]
        assert all(torch.equal(before[k], after[k]) for k in running)


@pytest.mark.parametrize("head", HEADS)
def test_each_head_trains_validates_and_logs_map(tmp_path, head):
    data = tiny_data(tmp_path)
    task = ObjectDetector(num_classes=data.num_classes, head=head, pretrained=False, **TINY)
    run = trainer(1)
    run.finetune(task, data, strategy="no_freeze")
    last = run.history[-1]
    assert {"train_loss", "val_map", "val_map_50"} <= set(last)
    assert 0 <= last["val_map_50"] <= 1 and np.isfinite(last["train_loss"])


def test_predictions_are_in_the_pixels_of_each_input_image(tmp_path, monkeypatch):
    """A box the network finds at (8, 4)-(24, 20) of its 32-pixel input is at that place scaled
    to each original image, whatever its size and aspect."""
    task = ObjectDetector(num_classes=2, labels=["blue", "red"], image_size=32, pretrained=False, **TINY)

    def fixed(output, threshold):
        n = len(output["image_sizes"])
        box = torch.tensor([[8.0, 4.0, 24.0, 20.0]])
        return [(box, torch.tensor([0.9]), torch.tensor([1]))] * n

    monkeypatch.setattr(task, "detections", fixed)
    images = [np.zeros((64, 128, 3), np.uint8), np.zeros((300, 100, 3), np.uint8), Image.new("RGB", (32, 32))]
    results = task.predict(images)
    # 128 x 64 -> 32 x 16 (x4); 100 x 300 -> 11 x 32 (x 100/11 across, x 300/32 down); 32 x 32 -> itself
    assert results[0]["boxes"] == [[32.0, 16.0, 96.0, 64.0]]
    assert results[1]["boxes"] == [[round(8 * 100 / 11, 2), 37.5, 100.0, 187.5]]  # clipped to the width
    assert results[2]["boxes"] == [[8.0, 4.0, 24.0, 20.0]]
    assert results[0]["labels"] == ["red"] and results[0]["scores"] == [0.9]


@pytest.mark.parametrize("head", ["fcos", "faster_rcnn"])
def test_boxes_are_clipped_to_each_images_part_of_the_padded_batch_before_evaluation(head):
    """Two images in one 32 x 32 batch: a 32 x 16 one (padded below) and a 32 x 32 one. A box
    reaching past an image's edge is scored as its visible part, as torchvision's detectors do."""
    task = ObjectDetector(num_classes=2, head=head, image_size=32, pretrained=False, **TINY)
    sizes = torch.tensor([[64, 128], [32, 32]])  # originals: 128 x 64 -> 32 x 16; 32 x 32 -> itself
    box = torch.tensor([[-4.0, 8.0, 20.0, 30.0]])
    if head == "fcos":
        boxes = box.expand(2, 1, 4)
        scores = torch.tensor([[[0.9, 0.0]], [[0.9, 0.0]]])
        output = {"boxes": boxes, "scores": scores, "image_sizes": sizes}
    else:
        found = {"boxes": box, "scores": torch.tensor([0.9]), "labels": torch.tensor([1])}
        output = {"detections": [found, found], "image_sizes": sizes}
    first, second = task.detections(output, 0.5)
    assert first[0].tolist() == [[0.0, 8.0, 20.0, 16.0]]  # the first image ends at row 16
    assert second[0].tolist() == [[0.0, 8.0, 20.0, 30.0]]
    del output["image_sizes"]  # no sizes: the input's pixels as they are
    assert task.detections(output, 0.5)[0][0].tolist() == box.tolist()


def test_predict_format_threshold_and_input_forms(tmp_path):
    task = ObjectDetector(num_classes=2, labels=["blue", "red"], image_size=64, pretrained=False, **TINY)
    items = make_images(tmp_path / "img", 2)
    one = task.predict(items[0][0], score_threshold=0.0)
    assert set(one) == {"boxes", "labels", "scores"} and len(one["boxes"]) == len(one["scores"]) <= 100
    assert one["scores"] == sorted(one["scores"], reverse=True) and set(one["labels"]) <= {"blue", "red"}
    width, height = Image.open(items[0][0]).size
    assert all(0 <= x0 <= x1 <= width and 0 <= y0 <= y1 <= height for x0, y0, x1, y1 in one["boxes"])
    assert task.predict(items[0][0], score_threshold=1.0)["boxes"] == []
    folder = task.predict(str(tmp_path / "img"))
    assert isinstance(folder, list) and len(folder) == 2
    with pytest.raises(ValueError, match="score_threshold"):
        task.predict(items[0][0], score_threshold=-1)


@pytest.mark.parametrize("head", ["fcos", "retinanet"])
def test_dense_heads_export_to_onnx(tmp_path, head):
    from flash.core.deploy.export import read_onnx_metadata

    task = ObjectDetector(
        num_classes=2, labels=["blue", "red"], head=head, image_size=64, pretrained=False, **TINY
    )
    path = task.to_onnx(tmp_path / "detector.onnx")  # checked with onnxruntime at two batch sizes
    meta = read_onnx_metadata(path)
    assert list(meta["outputs"]) == ["boxes", "scores"] and meta["labels"] == ["blue", "red"]
    assert meta["head"] == head and meta["score_threshold"] == 0.5


def test_faster_rcnn_export_is_refused_with_the_reason(tmp_path):
    task = ObjectDetector(num_classes=2, head="faster_rcnn", image_size=64, pretrained=False, **TINY)
    with pytest.raises(TypeError, match="Faster R-CNN detector cannot be exported.*varies per image"):
        task.to_onnx(tmp_path / "detector.onnx")


@pytest.mark.slow
def test_a_checkpoint_predicts_the_same_in_a_fresh_process(tmp_path):
    data = tiny_data(tmp_path)
    task = ObjectDetector(num_classes=data.num_classes, pretrained=False, **TINY)
    run = trainer(1)
    run.finetune(task, data, strategy="no_freeze")
    path = tmp_path / "detector.ckpt"
    run.save_checkpoint(path)
    image = data.splits["val"].inputs[0]
    expected = task.predict(image, score_threshold=0.0)
    code = (
        "import json, sys\nfrom flash.core.deploy.checkpoint import load_task\n"
        f"task = load_task({str(path)!r})\n"
        f"print(json.dumps(task.predict({image!r}, score_threshold=0.0)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["labels"] == expected["labels"]
    assert np.allclose(got["boxes"], expected["boxes"], atol=0.05)
    assert np.allclose(got["scores"], expected["scores"], atol=1e-3)


@pytest.mark.slow
def test_flash_finetune_predict_and_serve(tmp_path):
    import httpx

    from flash.core.deploy.serve import start_server

    root = write_voc(tmp_path / "train", 8)
    out = tmp_path / "run"
    argv = ["finetune", "detection", "--train-folder", str(root), "--val-split", "0.25", "--image-size", "64"]
    assert cli.main([*argv, "--epochs", "1", "--batch-size", "4", "--out", str(out), "--quiet"]) == 0
    assert (out / "model.ckpt").is_file() and (out / "plots" / "val_detections.png").is_file()
    # the heads start untrained: by default one epoch on the frozen backbone, then everything trains
    assert json.loads((out / "config.json").read_text())["options"]["strategy"] == "freeze_unfreeze:1"

    result = tmp_path / "predictions.json"
    argv = [
        "predict",
        str(out / "model.ckpt"),
        str(root / "images"),
        "--format",
        "json",
        "--out",
        str(result),
    ]
    assert cli.main([*argv, "--quiet", "--accelerator", "cpu"]) == 0
    rows = json.loads(result.read_text())
    assert len(rows) == 8 and set(rows[0]["prediction"]) == {"boxes", "labels", "scores"}

    task = ObjectDetector.load_from_checkpoint(out / "model.ckpt")
    image = str(root / "images" / "img_000.png")
    expected = task.predict(image)
    with open(image, "rb") as handle:
        raw = handle.read()
    with start_server(out / "model.ckpt") as server:
        encoded = base64.b64encode(raw).decode()
        answer = httpx.post(server.url + "/predict", json={"inputs": [encoded]}).json()["predictions"]
        assert answer[0]["detections"]["labels"] == expected["labels"]
        uploaded = httpx.post(server.url + "/predict", files=[("files", ("a.png", raw))])
        assert uploaded.json()["predictions"][0]["detections"]["boxes"] == answer[0]["detections"]["boxes"]
        bad = httpx.post(server.url + "/predict", json={"inputs": ["not base64!"]})
        assert bad.status_code == 422 and "base64" in bad.json()["detail"]


def test_a_torchvision_coco_detector_can_be_named_and_gets_new_class_layers():
    task = ObjectDetector(
        num_classes=3,
        backbone="torchvision/fasterrcnn_mobilenet_v3_large_fpn",
        pretrained=False,
        image_size=64,
    )
    assert task.head_name == "faster_rcnn" and task.head.roi_heads.box_predictor.cls_score.out_features == 4
    found = task.predict(np.zeros((50, 70, 3), np.uint8), score_threshold=0.0)
    assert all(0 <= x0 <= x1 <= 70 and 0 <= y0 <= y1 <= 50 for x0, y0, x1, y1 in found["boxes"])
    with pytest.raises(
        ValueError, match="Unknown torchvision detector 'fcos_yolo_v8'. Choose one of .*fcos_resnet50_fpn"
    ):
        ObjectDetector(num_classes=3, backbone="torchvision/fcos_yolo_v8", pretrained=False)
