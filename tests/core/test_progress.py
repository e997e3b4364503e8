"""Progress bars on stderr during training and long predictions, and a quiet mode that hides them."""

from __future__ import annotations

import logging
import warnings

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import TensorDataset

import flash
import flash.core.utils.progress as progress_module
from flash.core.utils.progress import FlashProgressBar, is_quiet, progress, quiet, set_quiet
from toy import ToyClassifier, toy_data


class PredictingToy(ToyClassifier):
    def predict_dataset(self, inputs):
        return TensorDataset(torch.as_tensor(inputs)), False

    def collate_fn(self):
        return lambda items: {"input": torch.stack([item[0] for item in items])}


LIGHTNING_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning")


@pytest.fixture(autouse=True)
def reset_quiet(monkeypatch):
    monkeypatch.delenv("FLASH_QUIET", raising=False)
    levels = {name: logging.getLogger(name).level for name in LIGHTNING_LOGGERS}
    yield
    progress_module._QUIET = None
    progress_module._saved_levels = None
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def test_training_bar_shows_epoch_loss_and_metrics_on_stderr(capsys):
    pl.seed_everything(0)
    trainer = flash.Trainer(
        max_epochs=1, logger=True, enable_checkpointing=False, enable_model_summary=False,
        callbacks=[FlashProgressBar(refresh_rate=1)],
    )  # fmt: skip
    trainer.finetune(ToyClassifier(), toy_data(n=32), strategy="no_freeze")
    captured = capsys.readouterr()
    assert "Epoch 0" not in captured.out
    assert "Epoch 0" in captured.err
    for shown in ("train_loss=", "val_loss=", "val_accuracy="):
        assert shown in captured.err
    assert "v_num" not in captured.err


def test_long_predictions_show_a_bar_short_ones_do_not(monkeypatch, capsys):
    task = PredictingToy()
    inputs = torch.randn(64, 4).numpy()
    task.predict(inputs, batch_size=8)
    assert "Predicting" not in capsys.readouterr().err  # faster than the delay: silent
    monkeypatch.setattr(progress_module, "PROGRESS_DELAY_S", 0.0)
    labels = task.predict(inputs, batch_size=8)
    assert len(labels) == 64
    err = capsys.readouterr().err
    # tqdm redraws at most every 0.1 s, so a fast machine may only ever draw "0/8" before closing
    assert "Predicting" in err and "/8 " in err


def test_quiet_mode_hides_bars_from_code_and_environment(monkeypatch, capsys):
    monkeypatch.setattr(progress_module, "PROGRESS_DELAY_S", 0.0)
    with quiet():
        assert is_quiet()
        list(progress(range(5), desc="counting"))
    assert not is_quiet()
    assert "counting" not in capsys.readouterr().err
    monkeypatch.setenv("FLASH_QUIET", "1")
    assert is_quiet()
    list(progress(range(5), desc="counting"))
    assert "counting" not in capsys.readouterr().err
    set_quiet(False)  # an explicit choice wins over the environment
    list(progress(range(5), desc="counting"))
    assert "counting" in capsys.readouterr().err


class WarningToy(ToyClassifier):
    def training_step(self, batch, batch_idx):
        warnings.warn("the user's own warning", UserWarning, stacklevel=2)
        return super().training_step(batch, batch_idx)


def test_quiet_hides_only_the_known_noisy_warnings_and_puts_the_filters_back():
    filters = list(warnings.filters)

    def trainer() -> flash.Trainer:
        return flash.Trainer(max_epochs=1, logger=True, enable_checkpointing=False, enable_progress_bar=False)

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        filters_before_block = list(warnings.filters)
        with quiet():
            trainer().finetune(WarningToy(), toy_data(n=16), strategy="no_freeze")
            warnings.warn("another library's warning", RuntimeWarning, stacklevel=2)
        assert warnings.filters == filters_before_block
    messages = [str(w.message) for w in seen]
    assert "the user's own warning" in messages and "another library's warning" in messages
    assert not any("smaller than the logging interval" in m for m in messages)  # Lightning's, 1 batch < 50
    assert warnings.filters == filters  # (flash.Trainer hides that Lightning warning in its runs anyway)


def test_quiet_mode_puts_back_the_users_own_logger_levels():
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    logging.getLogger("lightning.fabric").setLevel(logging.DEBUG)
    levels = {name: logging.getLogger(name).level for name in LIGHTNING_LOGGERS}
    with quiet():
        assert logging.getLogger("lightning.pytorch").level == logging.ERROR  # never made louder
        assert logging.getLogger("lightning.fabric").level == logging.WARNING
    assert {name: logging.getLogger(name).level for name in LIGHTNING_LOGGERS} == levels
    set_quiet(True)
    assert logging.getLogger("lightning.fabric").level == logging.WARNING
    set_quiet(False)
    assert {name: logging.getLogger(name).level for name in LIGHTNING_LOGGERS} == levels
    with pytest.raises(TypeError, match="True or False"):
        set_quiet("yes")
