"""A seeded run leaves the process's global random generators as it found them."""

from __future__ import annotations

import random

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback

import flash
from toy import ToyClassifier, toy_data


def _states() -> tuple:
    return random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state()


def _assert_same(before: tuple, after: tuple) -> None:
    assert after[0] == before[0], "Python's random state changed"
    assert np.array_equal(after[1], before[1]), "NumPy's global state changed"
    assert torch.equal(after[2], before[2]), "torch's global state changed"


def _trainer(**kwargs) -> flash.Trainer:
    return flash.Trainer(
        max_epochs=2, enable_progress_bar=False, logger=False, enable_checkpointing=False, **kwargs
    )


def test_seeded_fit_restores_the_global_generators():
    pl.seed_everything(3, verbose=False)
    model, data = ToyClassifier(), toy_data()
    before = _states()
    _trainer().finetune(model, data, strategy="no_freeze")
    _assert_same(before, _states())


def test_generators_are_restored_when_fit_fails():
    class Boom(Callback):
        def on_train_epoch_end(self, trainer, pl_module) -> None:
            raise RuntimeError("boom")

    pl.seed_everything(3, verbose=False)
    model, data = ToyClassifier(), toy_data()
    before = _states()
    with pytest.raises(RuntimeError, match="boom"):
        _trainer(callbacks=[Boom()]).finetune(model, data, strategy="no_freeze")
    _assert_same(before, _states())


def test_epochs_still_draw_from_seed_and_epoch():
    """Dropout in epoch e sees torch's generator seeded from (seed, e), whatever ran before."""
    seen: list[torch.Tensor] = []

    class Peek(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            if batch_idx == 0:
                seen.append(torch.get_rng_state())

    for warmup in (0, 5):
        pl.seed_everything(3, verbose=False)
        torch.rand(warmup)  # what ran before fit must not matter
        _trainer(callbacks=[Peek()]).finetune(ToyClassifier(), toy_data(), strategy="no_freeze")
    assert torch.equal(seen[0], seen[2]) and torch.equal(seen[1], seen[3])
    assert not torch.equal(seen[0], seen[1])
