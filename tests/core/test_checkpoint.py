"""Checkpoints round-trip with classes, load with weights_only, and reject foreign files."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch

import flash
from flash.core.deploy.checkpoint import read_checkpoint
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
    loaded = ToyClassifier.load_from_checkpoint(path)
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
