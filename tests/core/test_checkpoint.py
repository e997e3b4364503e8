"""Checkpoints round-trip with classes, load with weights_only, and reject foreign files."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch

import flash
from flash.core.deploy.checkpoint import load_task, read_checkpoint
from toy import ToyClassifier, toy_data


def test_checkpoint_keeps_labels_and_loads_safely(tmp_path):
    pl.seed_everything(0)
    model, data = ToyClassifier(), toy_data()
    trainer = flash.Trainer(max_epochs=1, logger=False, enable_progress_bar=False, default_root_dir=tmp_path)
    trainer.finetune(model, data, strategy="freeze")
    path = tmp_path / "toy.ckpt"
    trainer.save_checkpoint(path)
    raw = torch.load(path, weights_only=True)
    assert raw["hyper_parameters"]["labels"] == ["neg", "pos"]
    loaded = ToyClassifier.load_from_checkpoint(path, device="cpu")  # compared exactly with the CPU model
    assert loaded.labels == ["neg", "pos"]
    x = torch.randn(5, 4)
    model.eval()
    loaded.eval()
    assert torch.equal(loaded(x), model(x))


def test_not_a_checkpoint_is_a_clear_error(tmp_path):
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="not a flash checkpoint"):
        ToyClassifier.load_from_checkpoint(junk)
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, other)
    with pytest.raises(ValueError, match="not a flash checkpoint"):
        read_checkpoint(other)
    with pytest.raises(FileNotFoundError):
        read_checkpoint(tmp_path / "missing.ckpt")


@pytest.fixture
def toy_checkpoint(tmp_path):
    model = ToyClassifier(labels=["neg", "pos"])
    trainer = flash.Trainer(max_epochs=1, logger=False, enable_progress_bar=False, default_root_dir=tmp_path)
    trainer.strategy.connect(model)
    path = tmp_path / "toy.ckpt"
    trainer.save_checkpoint(path)
    return path


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", r"is empty \(0 bytes\)"),
        (b"hello world\nsecond line\n", r"is a text file \(it starts with 'hello world'\)"),
        (b"\x80\x02}q\x00.garbage" + bytes(range(256)), "not a flash checkpoint"),
    ],
)
def test_empty_text_and_damaged_files_say_what_they_are(tmp_path, content, message):
    path = tmp_path / "bad.ckpt"
    path.write_bytes(content)
    for load in (ToyClassifier.load_from_checkpoint, read_checkpoint, load_task):
        with pytest.raises(ValueError, match=message):
            load(path)


def test_crafted_pickle_refusal_is_quoted_in_full(tmp_path):
    import os

    class RunsCode:
        def __reduce__(self):
            return (os.system, ("echo should never run",))

    path = tmp_path / "crafted.ckpt"
    torch.save({"flash": {"task": "toy.ToyClassifier"}, "payload": RunsCode()}, path)
    with pytest.raises(ValueError) as error:
        ToyClassifier.load_from_checkpoint(path)
    message = str(error.value)
    assert "weights_only=True" in message and "cannot run code" in message
    refusal = str(error.value.__cause__)
    reason = next(p.strip() for p in refusal.split("\n\n") if "GLOBAL" in p or "global" in p.lower())
    assert reason in message  # the unpickler's reason, not cut short
    assert "system" in message
    assert "weights_only` set to `False`" not in message  # flash never offers the unsafe load


def test_checkpoint_of_another_task_names_the_class_to_use(toy_checkpoint, tmp_path):
    from flash.image import ImageClassifier

    with pytest.raises(
        ValueError, match=r"saved by a ToyClassifier \(toy\.ToyClassifier\), not by ImageClassifier"
    ) as error:
        ImageClassifier.load_from_checkpoint(toy_checkpoint)
    assert "toy.ToyClassifier.load_from_checkpoint" in str(error.value)

    raw = torch.load(toy_checkpoint, weights_only=True)
    raw["flash"]["task"] = "flash.text.model.TextClassifier"
    text = tmp_path / "text.ckpt"
    torch.save(raw, text)
    with pytest.raises(ValueError, match=r"saved by a TextClassifier") as error:
        ToyClassifier.load_from_checkpoint(text)
    assert (
        "load it with flash.text.TextClassifier.load_from_checkpoint or flash.core.deploy.checkpoint.load_task"
        in str(error.value)
    )
    assert ToyClassifier.load_from_checkpoint(toy_checkpoint).labels == ["neg", "pos"]


def test_marker_without_a_task_class_is_a_clear_error(toy_checkpoint, tmp_path):
    raw = torch.load(toy_checkpoint, weights_only=True)
    raw["flash"] = {"version": "0"}
    path = tmp_path / "edited.ckpt"
    torch.save(raw, path)
    with pytest.raises(ValueError, match="names no task class"):
        ToyClassifier.load_from_checkpoint(path)
    raw["flash"] = {"version": "0", "task": "some_unimported_module.Task"}
    torch.save(raw, path)
    with pytest.raises(ValueError, match="not a flash task"):
        load_task(path)


def test_a_loaded_task_runs_where_device_says(toy_checkpoint):
    from flash.core.utils.device import resolve_device

    assert ToyClassifier.load_from_checkpoint(toy_checkpoint).device == resolve_device("auto")
    assert ToyClassifier.load_from_checkpoint(toy_checkpoint, device="cpu").device.type == "cpu"
    assert load_task(toy_checkpoint, device="cpu").device.type == "cpu"
    assert ToyClassifier.load_from_checkpoint(toy_checkpoint, map_location="cpu").device.type == "cpu"
    with pytest.raises(ValueError, match="Unknown accelerator 'tpu'"):
        ToyClassifier.load_from_checkpoint(toy_checkpoint, device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            ToyClassifier.load_from_checkpoint(toy_checkpoint, device="gpu")
    else:
        loaded = ToyClassifier.load_from_checkpoint(toy_checkpoint, device="gpu")
        assert loaded.device.type == "cuda"
