"""SemanticSegmentation: strategies, predict at the input's size, checkpoints, plots, CLI, serving, ONNX."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
import textwrap

import httpx
import numpy as np
import pytest
import torch
from PIL import Image
from segmentation_fixtures import arrays, pair, write_dataset

import flash
from flash import cli
from flash.core.deploy.export import read_onnx_metadata
from flash.core.deploy.serve import start_server
from flash.image import SemanticSegmentation, SemanticSegmentationData
from flash.image.segmentation import mask_from_json
from flash.image.segmentation.model import SegmentationLoss, dice_loss


def tiny_data(n_train: int = 8, batch_size: int = 4) -> SemanticSegmentationData:
    images, masks = arrays(n_train)
    val_images, val_masks = arrays(4, seed=100)
    return SemanticSegmentationData.from_numpy(
        images,
        masks,
        val_images,
        val_masks,
        labels_map=["background", "red"],
        batch_size=batch_size,
        image_size=32,
    )


def trainer(epochs: int = 2) -> flash.Trainer:
    return flash.Trainer(
        max_epochs=epochs,
        enable_progress_bar=False,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
    )


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    data = tiny_data()
    task = SemanticSegmentation(num_classes=data.num_classes, learning_rate=1e-2)
    run = trainer(3)
    run.finetune(task, data)
    return task, run, data


@pytest.mark.parametrize("strategy", ["freeze", ("freeze_unfreeze", 1), ("unfreeze_milestones", ((1, 3), 2))])
def test_strategies_freeze_the_encoder_as_for_the_classifier(strategy):
    data = tiny_data(4)
    task = SemanticSegmentation(num_classes=2)
    encoder = {k: v.clone() for k, v in task.backbone.state_dict().items()}
    decoder = {k: v.clone() for k, v in task.head.state_dict().items()}
    run = trainer(2)
    run.finetune(task, data, strategy=strategy)
    after = task.backbone.state_dict()
    changed = [k for k in encoder if not torch.equal(encoder[k], after[k])]
    if strategy == "freeze":
        assert changed == []  # weights and BatchNorm statistics bit-identical
    else:
        assert changed
    if strategy[0] == "unfreeze_milestones":  # after epoch 1 only the last 2 stages train
        first_stages = [k for k in changed if k.startswith(("stages.stem.", "stages.stage1."))]
        assert first_stages == []
    assert any(not torch.equal(decoder[k], task.head.state_dict()[k]) for k in decoder)
    assert {"val_mean_iou", "val_pixel_accuracy", "train_loss"} <= set(run.history[-1])


def test_predict_gives_valid_masks_at_each_input_size(trained):
    task, _, _ = trained
    image, truth = pair(7)
    mask = task.predict(image)
    assert mask.shape == (48, 64) and mask.dtype == np.uint8
    assert set(np.unique(mask)) <= {0, 1}
    assert (mask == truth)[truth != 255].mean() > 0.8
    big = np.asarray(Image.fromarray(image).resize((100, 75)))
    masks = task.predict([image, big, Image.fromarray(big), torch.from_numpy(image).permute(2, 0, 1)])
    assert [m.shape for m in masks] == [(48, 64), (75, 100), (75, 100), (48, 64)]
    probabilities = task.predict(big, output="probabilities")
    assert probabilities.shape == (2, 75, 100)
    np.testing.assert_allclose(probabilities.sum(0), 1.0, atol=1e-4)
    assert (probabilities.argmax(0) == masks[1]).all()


def test_prediction_folders_and_the_data_modules_predict_loader(trained, tmp_path):
    task, run, _ = trained
    for i in range(3):
        Image.fromarray(pair(i)[0]).save(tmp_path / f"{i}.png")
    masks = task.predict(str(tmp_path))
    assert len(masks) == 3 and all(m.shape == (48, 64) for m in masks)
    data = SemanticSegmentationData.from_folders(predict_folder=tmp_path, batch_size=2)
    batches = run.predict(task, datamodule=data)
    assert [m.shape for batch in batches for m in batch] == [(48, 64)] * 3


@pytest.mark.slow
def test_checkpoint_predicts_the_same_in_a_fresh_process(trained, tmp_path):
    task, run, _ = trained
    path = tmp_path / "seg.ckpt"
    run.save_checkpoint(path)
    image, _ = pair(11)
    np.save(tmp_path / "image.npy", image)
    np.save(tmp_path / "expected.npy", task.predict(image))
    script = textwrap.dedent(
        f"""
        import numpy as np
        from flash.core.deploy.checkpoint import load_task
        task = load_task({str(path)!r})
        assert task.labels == ["background", "red"], task.labels
        mask = task.predict(np.load({str(tmp_path / "image.npy")!r}))
        assert (mask == np.load({str(tmp_path / "expected.npy")!r})).all()
        print("same")
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "same" in done.stdout, done.stderr[-2000:]


def test_onnx_export_with_a_dynamic_batch(trained, tmp_path):
    task, _, _ = trained
    path = task.to_onnx(tmp_path / "seg.onnx")  # checked with onnxruntime at two batch sizes
    meta = read_onnx_metadata(path)
    assert meta["domain"] == "segmentation" and meta["labels"] == ["background", "red"]
    assert list(meta["outputs"]) == ["masks", "probabilities"]
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    example = task.example_input(3).numpy()
    masks = session.run(["masks"], {"input": example})[0]
    assert masks.shape == (3, 32, 32)


def test_plots_overlay_masks_and_per_class_iou(trained, tmp_path):
    from flash.image.segmentation.plots import plot_class_iou, plot_predictions

    task, _, data = trained
    assert plot_predictions(task, data, num_images=2, path=tmp_path / "masks.png").is_file()
    figure = plot_class_iou(task, data)
    assert [t.get_text() for t in figure.axes[0].get_xticklabels()] == ["background", "red"]


def test_served_masks_match_predict(trained, tmp_path):
    task, run, _ = trained
    path = tmp_path / "seg.ckpt"
    run.save_checkpoint(path)
    image, _ = pair(5)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    expected = task.predict(image)
    with start_server(path) as server:
        body = {"inputs": [base64.b64encode(buffer.getvalue()).decode()]}
        answer = httpx.post(server.url + "/predict", json=body, timeout=60).json()["predictions"][0]["mask"]
        assert (answer["height"], answer["width"]) == (48, 64)
        assert (mask_from_json(answer) == expected).all()
        assert sum(answer["classes"].values()) == 48 * 64
        uploaded = httpx.post(
            server.url + "/predict", files=[("files", ("a.png", buffer.getvalue()))], timeout=60
        )
        assert (mask_from_json(uploaded.json()["predictions"][0]["mask"]) == expected).all()
        bad = httpx.post(server.url + "/predict", json={"inputs": ["bm90IGFuIGltYWdl"]}, timeout=60)
        assert bad.status_code == 422


@pytest.mark.slow
def test_flash_finetune_and_predict_segmentation(tmp_path):
    root = write_dataset(tmp_path / "data")
    out = tmp_path / "run"
    argv = [
        "finetune", "segmentation", "--train-folder", str(root / "train/images"),
        "--train-target-folder", str(root / "train/masks"), "--val-folder", str(root / "val/images"),
        "--val-target-folder", str(root / "val/masks"), "--image-size", "32", "--batch-size", "4",
        "--epochs", "1", "--out", str(out), "--quiet",
    ]  # fmt: skip
    assert cli.main(argv) == 0
    assert (out / "plots" / "val_masks.png").is_file() and (out / "plots" / "class_iou.png").is_file()
    results = json.loads((out / "results.json").read_text())
    assert "val_mean_iou" in results["final"]
    predictions = tmp_path / "masks.json"
    argv = ["predict", str(out / "model.ckpt"), str(root / "val/images"), "--format", "json"]
    assert cli.main([*argv, "--out", str(predictions), "--quiet", "--accelerator", "cpu"]) == 0
    rows = json.loads(predictions.read_text())
    assert len(rows) == 4 and all(mask_from_json(r["prediction"]).shape == (48, 64) for r in rows)


def test_bad_task_arguments_and_mismatched_data():
    with pytest.raises(ValueError, match="Unknown head 'deeplab'"):
        SemanticSegmentation(num_classes=2, head="deeplab", pretrained=False)
    with pytest.raises(ValueError, match="ignore_index=1 is one of the 2 classes"):
        SemanticSegmentation(num_classes=2, ignore_index=1, pretrained=False)
    with pytest.raises(ValueError, match="no feature maps per stage"):
        SemanticSegmentation(num_classes=2, backbone="torchvision/resnet18", pretrained=False)
    with pytest.raises(ValueError, match="Unknown loss"):
        SemanticSegmentation(num_classes=2, loss="focal", pretrained=False)
    task = SemanticSegmentation(num_classes=3, pretrained=False)
    with pytest.raises(ValueError, match="num_classes=3, but the data has 2"):
        trainer(1).finetune(task, tiny_data(4))


def test_unet_head_and_dice_loss_train():
    data = tiny_data(4)
    task = SemanticSegmentation(num_classes=2, head="unet", loss="cross_entropy+dice", pretrained=False)
    run = trainer(1)
    run.finetune(task, data)
    assert np.isfinite(run.history[-1]["train_loss"])
    logits = torch.zeros(1, 2, 4, 4)
    logits[:, 1] = 10.0
    target = torch.ones(1, 4, 4, dtype=torch.long)
    target[0, 0] = 255
    assert dice_loss(logits, target, 255) < 1e-3
    void = torch.full((1, 4, 4), 255)
    for kind in ("cross_entropy", "dice", "cross_entropy+dice"):
        assert float(SegmentationLoss(kind, 255)(logits, void)) == 0.0  # an all-void crop is no NaN
