"""Checkpoints rebuild the saved network, whatever the backbone defaults are when they load."""

import numpy as np
import pytest
import torch
from tabular_tables import make_table

import flash
from flash.tabular import (
    TabularClassificationData,
    TabularClassifier,
    TabularRegressionData,
    TabularRegressor,
    backbones,
)

CASES = {
    # task, data, backbone, the defaults it reads, the options given (the width left to its default)
    "classifier-tabm": (
        TabularClassifier,
        TabularClassificationData,
        "tabm",
        backbones._TABM,
        {"k": 2, "n_blocks": 1},
    ),
    "regressor-mlp": (TabularRegressor, TabularRegressionData, "mlp", backbones._MLP, {"n_blocks": 1}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_checkpoint_keeps_the_backbone_options_it_was_built_with(case, tmp_path, monkeypatch):
    task_cls, data_cls, backbone, defaults, given = CASES[case]
    target = "label" if task_cls is TabularClassifier else "amount"
    table = make_table(40)
    data = data_cls.from_data_frame(
        categorical_fields=["color"],
        numerical_fields=["age", "fare"],
        target_fields=target,
        train_data_frame=table,
        batch_size=16,
    )
    task = task_cls.from_data(data, backbone=backbone, backbone_kwargs=given)
    assert task.hparams["backbone_kwargs"] == {**defaults, **given}  # every option, defaults filled in
    run = flash.Trainer(
        max_epochs=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        logger=False,
        enable_checkpointing=False,
    )
    run.finetune(task, data)
    path = tmp_path / "task.ckpt"
    run.save_checkpoint(path)
    saved = torch.load(path, weights_only=True)["hyper_parameters"]["backbone_kwargs"]
    assert saved["d_block"] == defaults["d_block"] and saved == {**defaults, **given}
    rows = table.drop(columns=["label", "amount"])
    task.eval()
    expected = task.predict(rows, output="probabilities" if task_cls is TabularClassifier else "values")

    monkeypatch.setitem(defaults, "d_block", defaults["d_block"] // 2)  # the default width changes
    assert (
        task_cls.from_data(data, backbone=backbone, backbone_kwargs=given).hparams["backbone_kwargs"][
            "d_block"
        ]
        == defaults["d_block"]
    )
    loaded = task_cls.load_from_checkpoint(path, device="cpu")  # compared with the CPU model at 1e-6
    assert loaded.hparams["backbone_kwargs"]["d_block"] == saved["d_block"]
    got = loaded.predict(rows, output="probabilities" if task_cls is TabularClassifier else "values")
    if task_cls is TabularClassifier:
        got = [[p[c] for c in sorted(p)] for p in got]
        expected = [[p[c] for c in sorted(p)] for p in expected]
    np.testing.assert_allclose(np.asarray(got), np.asarray(expected), rtol=1e-6, atol=1e-7)
