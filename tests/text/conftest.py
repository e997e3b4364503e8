"""Tiny sentiment data and one small trained TextClassifier shared by the text tests."""

from __future__ import annotations

import lightning.pytorch as pl
import pandas as pd
import pytest

import flash
from flash.text import TextClassificationData, TextClassifier

POSITIVE = [
    "a wonderful, moving film",
    "great acting and a lovely story",
    "i loved every minute",
    "brilliant, funny and warm",
    "a delightful surprise from start to finish",
    "beautifully shot and superbly acted",
]
NEGATIVE = [
    "a dull, boring mess",
    "terrible acting",
    "i hated every minute of it",
    "awful and tedious",
    "a lifeless, clumsy script",
    "painfully slow and badly acted",
]
QUIET = {"enable_progress_bar": False, "enable_model_summary": False, "logger": False}


def sentiment_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {"sentence": POSITIVE + NEGATIVE, "label": ["pos"] * len(POSITIVE) + ["neg"] * len(NEGATIVE)}
    )


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """A TextClassifier finetuned for a few epochs on the tiny data, and its checkpoint."""
    root = tmp_path_factory.mktemp("trained_text")
    frame = sentiment_frame()
    frame.to_csv(root / "train.csv", index=False)
    pl.seed_everything(0)
    data = TextClassificationData.from_csv(
        "sentence", "label", train_file=root / "train.csv", val_file=root / "train.csv", batch_size=4
    )
    task = TextClassifier(num_classes=data.num_classes, max_length=24, learning_rate=3e-3)
    trainer = flash.Trainer(max_epochs=4, default_root_dir=root, **{**QUIET, "enable_checkpointing": True})
    trainer.finetune(task, data, strategy="freeze")
    checkpoint = root / "text.ckpt"
    trainer.save_checkpoint(checkpoint)
    return task, checkpoint, trainer
