"""Cross-validation on texts: out-of-fold outputs come back in the items' own order."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flash.core.training.cross_validation import _held_out_outputs
from flash.text import TextClassificationData, TextClassifier
from text.conftest import sentiment_frame


def test_held_out_outputs_follow_the_items_order_although_batches_are_sorted_by_length():
    frame = sentiment_frame()
    data = TextClassificationData.from_data_frame("sentence", "label", train_data_frame=frame, batch_size=3)
    held_out = [0, 7, 2, 9, 4]
    fold = data.fold([i for i in range(len(frame)) if i not in held_out], held_out)
    task = TextClassifier(num_classes=2, max_length=24)
    fold.attach_task(task)
    outputs = _held_out_outputs(task, fold)
    expected = task.predict([frame["sentence"][i] for i in held_out], output="logits")
    assert np.allclose(outputs, np.asarray(expected), atol=1e-4)
    lengths = [len(frame["sentence"][i]) for i in held_out]
    assert lengths != sorted(lengths)  # the check means something: the loader reorders these


def test_text_cross_validation_runs_end_to_end(tmp_path):
    import flash

    data = TextClassificationData.from_data_frame(
        "sentence", "label", train_data_frame=sentiment_frame(), batch_size=4
    )
    trainer = flash.Trainer(default_root_dir=tmp_path, max_epochs=1, enable_progress_bar=False)
    result = trainer.cross_validate(
        lambda: TextClassifier(num_classes=2, max_length=24), data, folds=2, strategy="freeze", verbose=False
    )
    assert result.outputs.shape == (1, 12, 2) and result.labels == ["neg", "pos"]
    assert torch.isfinite(torch.as_tensor(result.outputs)).all()
    assert 0.0 <= result.mean() <= 1.0
    with pytest.raises(KeyError, match="val_accuracy"):
        result.values("val_auroc")
