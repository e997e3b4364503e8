"""Ctrl-C during a run: Lightning ignores SIGINT while it shuts down; flash.Trainer puts the handler back."""

from __future__ import annotations

import signal

import pytest
from lightning.pytorch.callbacks import Callback

import flash
from toy import ToyClassifier, toy_data


class CtrlC(Callback):
    def on_train_epoch_start(self, trainer, pl_module):
        raise KeyboardInterrupt


def test_the_ctrl_c_handler_is_as_before_after_an_interrupted_fit(tmp_path):
    before = signal.getsignal(signal.SIGINT)
    trainer = flash.Trainer(
        max_epochs=1, callbacks=[CtrlC()], enable_progress_bar=False, default_root_dir=tmp_path
    )
    with pytest.raises(SystemExit):
        trainer.fit(ToyClassifier(), toy_data())
    assert trainer.interrupted
    assert signal.getsignal(signal.SIGINT) == before  # not SIG_IGN, which later subprocesses would inherit
