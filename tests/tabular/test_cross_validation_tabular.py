"""Cross-validation on tables: each fold's preprocessing is fitted on that fold's training rows only."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import flash
from flash.tabular import TabularClassificationData, TabularClassifier, TabularRegressionData


def _data(table, cls=TabularClassificationData, target="label"):
    return cls.from_data_frame(
        categorical_fields=["color"], numerical_fields=["age", "fare"], target_fields=target,
        train_data_frame=table, val_split=0.25,
    )  # fmt: skip


def test_fold_preprocessing_sees_only_the_folds_training_rows(table):
    data = _data(table)
    pooled = data.pooled_frame()
    held_out = list(range(0, 80, 4))
    fold = data.fold([i for i in range(80) if i not in held_out], held_out)
    kept = pooled.drop(index=held_out)
    assert fold.preprocessor.numerical["age"].fill == pytest.approx(np.nanmedian(kept["age"]))
    assert fold.preprocessor.numerical["age"].fill != pytest.approx(np.nanmedian(pooled["age"]))
    assert fold.frames["val"]["age"].tolist() == pytest.approx(pooled["age"][held_out].tolist(), nan_ok=True)
    regression = _data(table, TabularRegressionData, "amount").fold(list(range(40)), list(range(40, 80)))
    assert regression.target_mean[0] == pytest.approx(regression.frames["train"]["amount"].mean(), rel=1e-5)


def test_a_task_is_rebuilt_per_fold_and_a_factory_runs_too(table, tmp_path):
    data = _data(table)
    trainer = flash.Trainer(default_root_dir=tmp_path, max_epochs=1, enable_progress_bar=False)
    task = TabularClassifier.from_data(data, learning_rate=1e-3, backbone_kwargs={"k": 4})
    fold = data.fold(list(range(40)), list(range(40, 80)))
    rebuilt = task.fresh_for(fold)
    assert rebuilt.hparams["preprocessing"] == fold.preprocessing_state() != task.hparams["preprocessing"]
    assert rebuilt.learning_rate == 1e-3 and rebuilt.hparams["backbone_kwargs"]["k"] == 4
    result = trainer.cross_validate(task, data, folds=2, verbose=False)
    assert result.outputs.shape == (1, 80, 2)
    by_factory = trainer.cross_validate(
        lambda d: TabularClassifier.from_data(d), data, folds=2, verbose=False
    )
    assert len(by_factory.folds) == 2 and "val_accuracy" in by_factory.metrics
    custom = TabularClassifier.from_data(data, optimizer=torch.optim.SGD)
    with pytest.raises(TypeError, match="custom class"):
        trainer.cross_validate(custom, data, folds=2, verbose=False)
