import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from tabular_tables import SMALL_TABM, make_table

import flash
from flash.core.deploy.checkpoint import load_task
from flash.tabular import (
    TabularClassificationData,
    TabularClassifier,
    TabularRegressionData,
    TabularRegressor,
)

FIELDS = {"categorical_fields": ["color"], "numerical_fields": ["age", "fare"], "target_fields": "label"}
TINY_OPTIONS = {
    "tabm": SMALL_TABM,
    "tabm_pwl": {**SMALL_TABM, "n_bins": 8, "d_embedding": 4},
    "mlp": {"d_block": 16, "n_blocks": 2},
    "mlp_plr": {"d_block": 16, "n_blocks": 1, "d_embedding": 4},
    "ft_transformer": {"d_token": 16, "n_blocks": 1, "n_heads": 2},
}


def trainer(**kwargs):
    return flash.Trainer(
        max_epochs=kwargs.pop("max_epochs", 3),
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        **kwargs,
    )


def classification_data():
    return TabularClassificationData.from_data_frame(
        **FIELDS, train_data_frame=make_table(), val_split=0.25, batch_size=16
    )


@pytest.fixture
def data():
    return classification_data()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One small classifier trained once for the tests that only read it."""
    task = TabularClassifier.from_data(classification_data(), backbone_kwargs=SMALL_TABM, learning_rate=0.01)
    run = trainer(max_epochs=8, default_root_dir=str(tmp_path_factory.mktemp("trained")))
    run.finetune(task, classification_data())
    return task, run


def test_classifier_learns_and_predicts_every_input_kind(trained, table, tmp_path):
    task, run = trained
    assert run.history[-1]["val_accuracy"] > 0.7
    rows = table.drop(columns=["label", "amount"])
    labels = task.predict(rows)
    assert set(labels) <= {"yes", "no"} and len(labels) == len(table)
    assert np.mean(np.asarray(labels) == table["label"].to_numpy()) > 0.75
    rows.to_csv(tmp_path / "rows.csv", index=False)
    assert task.predict(str(tmp_path / "rows.csv")) == labels
    assert task.predict(rows.to_dict("records")) == labels
    assert task.predict(rows.to_dict("list")) == labels
    assert task.predict(rows.iloc[0]) == labels[0]
    single = task.predict(rows.iloc[0].to_dict(), output="probabilities")
    assert set(single) == {"no", "yes"} and sum(single.values()) == pytest.approx(1.0, abs=1e-5)


def test_prediction_handles_missing_and_unseen_values(trained):
    task, _ = trained
    rows = [
        {"age": None, "fare": 10.0, "color": "red"},
        {"age": 30.0, "fare": float("nan"), "color": "purple"},  # never seen in training
        {"age": 50.0, "fare": 5.0, "color": None},
    ]
    probabilities = task.predict(rows, output="probabilities")
    assert all(np.isfinite(list(p.values())).all() for p in probabilities)
    # every category never seen in training goes to the same "unknown" slot
    unseen = [{"age": 30.0, "fare": 10.0, "color": color} for color in ("purple", "teal", 17)]
    first, *others = task.predict(unseen, output="probabilities")
    for other in others:
        assert other == pytest.approx(first, abs=1e-6)


def test_predict_bad_input(trained, table):
    task, _ = trained
    rows = table.drop(columns=["label", "amount"])
    with pytest.raises(
        ValueError,
        match=r"predict data has no column fare.*Its columns are: age, color.*"
        r"trained on the columns age, fare, color: give every one",
    ):
        task.predict(rows.drop(columns=["fare"]))
    with pytest.raises(ValueError, match="predict data has no column color"):
        task.predict([{"age": 3.0, "fare": 1.0}])
    with pytest.raises(ValueError, match=r"'age'.*text that is not a number"):
        task.predict([{"age": "old", "fare": 1.0, "color": "red"}])
    with pytest.raises(ValueError, match=r"'fare'.*infinite"):
        task.predict([{"age": 3.0, "fare": float("inf"), "color": "red"}])
    with pytest.raises(ValueError, match="no rows"):
        task.predict(rows.iloc[:0])
    with pytest.warns(UserWarning, match="ignoring extra, notes"):
        with_extra = task.predict(rows.assign(extra=1, notes="x"))
    assert with_extra == task.predict(rows)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        task.predict(table.drop(columns=["amount"]))  # the target column is expected, not extra


def test_serving_hooks(trained):
    task, _ = trained
    row = task.decode_serve_input({"age": 31, "fare": 7.5, "color": "red", "unused": 1})
    assert row == {"age": 31, "fare": 7.5, "color": "red"}
    assert task.predict(row) in ("yes", "no")
    with pytest.raises(ValueError, match="lacks column fare"):
        task.decode_serve_input({"age": 31, "color": "red"})
    with pytest.raises(ValueError, match="JSON object"):
        task.decode_serve_input([31, 7.5, "red"])
    with pytest.raises(ValueError, match=r"'age'.*not a number"):
        task.decode_serve_input({"age": "x", "fare": 7.5, "color": "red"})
    with pytest.raises(ValueError, match="must hold a number"):
        task.decode_serve_input({"age": [1], "fare": 7.5, "color": "red"})
    assert task.decode_serve_input({"age": None, "fare": 7.5, "color": None})["age"] is None
    example = task.example_input(batch_size=3)
    assert example.shape == (3, 4) and example.dtype == torch.float32
    task.eval()
    assert task(example).shape == (3, 2)


@pytest.mark.slow
def test_checkpoint_is_plain_and_loads_in_a_fresh_process(trained, table, tmp_path):
    task, run = trained
    path = tmp_path / "tabular.ckpt"
    run.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=True)
    assert checkpoint["hyper_parameters"]["labels"] == ["no", "yes"]
    assert checkpoint["hyper_parameters"]["preprocessing"]["categorical_fields"] == ["color"]
    rows = table.drop(columns=["label", "amount"]).head(10)
    rows.to_csv(tmp_path / "rows.csv", index=False)
    expected = task.predict(rows, output="probabilities")
    script = (
        "import json, sys\n"
        "from flash.tabular import TabularClassifier\n"
        "task = TabularClassifier.load_from_checkpoint(sys.argv[1])\n"
        "print(json.dumps(task.predict(sys.argv[2], output='probabilities')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(path), str(tmp_path / "rows.csv")],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    for got, want in zip(loaded, expected):
        assert got["yes"] == pytest.approx(want["yes"], abs=1e-5)
    assert isinstance(load_task(path), TabularClassifier)


def test_loaded_task_brings_its_preprocessing_to_new_data(trained, tmp_path):
    _, run = trained
    run.save_checkpoint(tmp_path / "t.ckpt")
    loaded = TabularClassifier.load_from_checkpoint(tmp_path / "t.ckpt")
    shifted = make_table(40, seed=5)
    shifted["fare"] = shifted["fare"] * 100  # its own statistics would differ
    new_data = TabularClassificationData.from_data_frame(**FIELDS, train_data_frame=shifted, batch_size=8)
    trainer(max_epochs=1).finetune(loaded, new_data, strategy="freeze")
    assert new_data.preprocessor is loaded.preprocessor


@pytest.mark.parametrize("backbone", sorted(TINY_OPTIONS))
def test_every_backbone_trains_and_exports_an_example(backbone, data):
    task = TabularClassifier.from_data(data, backbone=backbone, backbone_kwargs=TINY_OPTIONS[backbone])
    trainer(max_epochs=1, logger=False, enable_checkpointing=False).finetune(task, data)
    task.eval()
    logits = task(task.example_input(2))
    assert logits.shape == (2, 2) and torch.isfinite(logits).all()
    assert len(task.backbone_blocks) >= 2


def test_freeze_keeps_the_backbone_and_trains_the_head(data):
    task = TabularClassifier.from_data(data, backbone_kwargs=SMALL_TABM)
    backbone_before = {k: v.clone() for k, v in task.backbone.state_dict().items()}
    head_before = {k: v.clone() for k, v in task.head.state_dict().items()}
    trainer(max_epochs=2, logger=False, enable_checkpointing=False).finetune(task, data, strategy="freeze")
    for name, value in task.backbone.state_dict().items():
        assert torch.equal(value, backbone_before[name]), name
    assert any(not torch.equal(v, head_before[k]) for k, v in task.head.state_dict().items())


def _regression_data(table, **kwargs):
    return TabularRegressionData.from_data_frame(
        categorical_fields=["color"],
        numerical_fields=["age"],
        target_fields="amount",
        train_data_frame=table,
        batch_size=16,
        **kwargs,
    )


@pytest.mark.parametrize("task_cls", [TabularClassifier, TabularRegressor])
def test_unfreeze_milestones_unfreeze_the_last_backbone_blocks_first(task_cls, data, table):
    if task_cls is TabularRegressor:
        data = _regression_data(table)
    task = task_cls.from_data(data, backbone_kwargs={**SMALL_TABM, "n_blocks": 3})
    blocks = list(task.backbone_blocks)
    assert blocks[0] is task.backbone.encoder and len(blocks) == 4  # the encoder, then TabM's 3 blocks
    before = [{k: v.clone() for k, v in block.state_dict().items()} for block in blocks]
    head_before = {k: v.clone() for k, v in task.head.state_dict().items()}
    strategy = ("unfreeze_milestones", ((1, 9), 1))  # the last block from epoch 1, the rest from epoch 9
    trainer(max_epochs=2, logger=False, enable_checkpointing=False).finetune(task, data, strategy=strategy)
    changed = [
        any(not torch.equal(v, b[k]) for k, v in block.state_dict().items())
        for block, b in zip(blocks, before)
    ]
    assert changed[1:] == [False, False, True]
    assert any(not torch.equal(v, head_before[k]) for k, v in task.head.state_dict().items())


def test_ensemble_members_each_get_a_loss(data):
    task = TabularClassifier.from_data(data, backbone_kwargs=SMALL_TABM)
    batch = next(iter(data.train_dataloader()))
    members = task.members(batch["input"])
    assert members.shape == (16, 4, 2)
    expected = torch.nn.functional.cross_entropy(members.flatten(0, 1), batch["target"].repeat_interleave(4))
    assert float(task.member_loss(members, batch["target"])) == pytest.approx(float(expected))
    mean_probability = members.softmax(-1).mean(1)
    torch.testing.assert_close(task.combine(members).softmax(-1), mean_probability)


def test_regressor_learns_in_original_units_and_reloads(table, tmp_path):
    data = _regression_data(table)
    task = TabularRegressor.from_data(data, backbone_kwargs=SMALL_TABM, learning_rate=0.01)
    run = trainer(max_epochs=15, default_root_dir=".", enable_checkpointing=False)
    run.finetune(task, data)
    predictions = np.asarray(task.predict(table.drop(columns=["amount"])))
    spread = float(table["amount"].std())
    rmse = float(np.sqrt(np.mean((predictions - table["amount"].to_numpy()) ** 2)))
    assert rmse < 0.5 * spread, (rmse, spread)
    run.save_checkpoint(tmp_path / "r.ckpt")
    loaded = TabularRegressor.load_from_checkpoint(tmp_path / "r.ckpt")
    rows = table.drop(columns=["amount"])
    np.testing.assert_allclose(loaded.predict(rows), predictions, rtol=1e-5)
    rows.to_csv(tmp_path / "rows.csv", index=False)
    np.testing.assert_allclose(loaded.predict(str(tmp_path / "rows.csv")), predictions, rtol=1e-5)
    np.testing.assert_allclose(loaded.predict(rows.to_dict("records")), predictions, rtol=1e-5)
    assert isinstance(task.predict({"age": 40.0, "color": "red"}), float)


def test_tasks_refuse_the_wrong_data(table, data):
    regression = TabularRegressionData.from_data_frame(
        numerical_fields=["age"], target_fields="amount", train_data_frame=table
    )
    with pytest.raises(TypeError, match="needs TabularClassificationData"):
        TabularClassifier.from_data(regression)
    with pytest.raises(TypeError, match="needs TabularRegressionData"):
        TabularRegressor.from_data(data)
    regressor = TabularRegressor.from_data(regression, backbone_kwargs=SMALL_TABM)
    with pytest.raises(TypeError, match="trains on TabularRegressionData"):
        trainer(max_epochs=1, logger=False).finetune(regressor, data)
    with pytest.raises(ValueError, match=r"Unknown tabular backbone 'xgboost'\. Choose one of tabm"):
        TabularClassifier.from_data(data, backbone="xgboost")
    with pytest.raises(ValueError, match="Unknown option width for tabular backbone 'tabm'"):
        TabularClassifier.from_data(data, backbone_kwargs={"width": 3})
    with pytest.raises(TypeError, match="from_data"):
        TabularClassifier(num_classes=2, preprocessing=None)


def test_available_backbones():
    assert TabularClassifier.available_backbones()[0] == "tabm"
    assert set(TINY_OPTIONS) <= set(TabularRegressor.available_backbones())
    assert TabularClassifier.domain == TabularRegressor.domain == "tabular"


def test_data_and_task_from_a_csv_with_inferred_fields(tmp_path):
    frame = make_table(60)
    frame.to_csv(tmp_path / "train.csv", index=False)
    with pytest.warns(UserWarning, match="Inferred the column kinds"):
        data = TabularClassificationData.from_csv(
            target_fields="label", train_file=str(Path(tmp_path / "train.csv"))
        )
    task = TabularClassifier.from_data(data, backbone_kwargs=SMALL_TABM)
    assert task.preprocessor.numerical_fields == ["age", "fare", "amount"]
    assert isinstance(pd.DataFrame(task.predict(frame.head(3), output="probabilities")), pd.DataFrame)


@pytest.mark.parametrize("restore", [True, False])
def test_training_ends_on_the_epoch_with_the_lowest_val_loss(data, restore):
    task = TabularClassifier.from_data(
        data, backbone_kwargs=SMALL_TABM, learning_rate=0.05, restore_best_weights=restore
    )
    run = trainer(max_epochs=4, logger=False, enable_checkpointing=False)
    run.finetune(task, data)
    losses = [row["val_loss"] for row in run.history]
    final = run.validate(task, datamodule=data, verbose=False)[0]["val_loss"]
    if restore:
        assert final == pytest.approx(min(losses), rel=1e-5)
    else:
        assert final == pytest.approx(losses[-1], rel=1e-5)


def test_trainer_test_and_predict_on_the_data_module(table):
    data = TabularClassificationData.from_data_frame(
        **FIELDS,
        train_data_frame=table,
        test_data_frame=table.iloc[:20],
        predict_data_frame=table.iloc[:10].drop(columns=["label"]),
        batch_size=8,
    )
    task = TabularClassifier.from_data(data, backbone_kwargs=SMALL_TABM)
    run = trainer(max_epochs=1, logger=False, enable_checkpointing=False)
    run.finetune(task, data)
    assert 0.0 <= run.test(task, datamodule=data, verbose=False)[0]["test_accuracy"] <= 1.0
    predicted = [label for batch in run.predict(task, datamodule=data) for label in batch]
    assert predicted == task.predict(table.iloc[:10])


def test_the_restored_epoch_follows_the_tasks_monitored_metric(data):
    """The same metric and direction ``flash finetune --keep best`` uses (``task.monitor``)."""
    task = TabularClassifier.from_data(data, backbone_kwargs=SMALL_TABM, learning_rate=0.05)
    assert (task.monitor, task.monitor_mode) == ("val_loss", "min")
    task.monitor, task.monitor_mode = "val_loss", "max"  # the worst epoch by loss, to tell it apart
    run = trainer(max_epochs=4, logger=False, enable_checkpointing=False)
    run.finetune(task, data)
    losses = [row["val_loss"] for row in run.history]
    final = run.validate(task, datamodule=data, verbose=False)[0]["val_loss"]
    assert final == pytest.approx(max(losses), rel=1e-5)
