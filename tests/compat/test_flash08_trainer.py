"""Lightning Flash 0.8 / PyTorch Lightning 1.x Trainer spellings (items 1, 2, 3 and 9 of the
migration page), written as Flash's documentation writes them."""

from __future__ import annotations

import warnings

import pytest
import torch
from lightning.pytorch.accelerators import CPUAccelerator
from servable_toy import ServableToy, expected
from torch.utils.data import DataLoader

import flash
from flash.core.training.legacy import map_legacy_trainer_arguments
from flash.core.utils.deprecation import FlashDeprecationWarning
from toy import Split, ToyClassifier, ToyData, toy_data

ROWS = [
    [1.0, 1.0, 0.0, 0.0],
    [-1.0, -2.0, 0.0, 0.0],
    [0.5, 0.1, 3.0, 3.0],
    [-0.3, -0.1, 1.0, 1.0],
    [2.0, -1.0, 0, 0],
]


def quiet(**kwargs) -> dict:
    return dict(
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        **kwargs,
    )


# -- 1. flash.Trainer(gpus=N), tpu_cores=... ---------------------------------------------------------
def test_gpus_from_torch_device_count_runs_on_the_cpu_with_a_deprecation_warning():
    with pytest.warns(FlashDeprecationWarning, match=r'gpus=0.*accelerator="cpu"') as caught:
        trainer = flash.Trainer(max_epochs=1, gpus=0)
    assert isinstance(trainer.accelerator, CPUAccelerator)
    assert caught[0].filename == __file__  # the warning points at the user's line


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ({"gpus": 2}, {"accelerator": "gpu", "devices": 2}),
        ({"gpus": -1}, {"accelerator": "gpu", "devices": -1}),
        ({"gpus": "0,1"}, {"accelerator": "gpu", "devices": "0,1"}),
        ({"tpu_cores": 8}, {"accelerator": "tpu", "devices": 8}),
        ({"num_processes": 2}, {"accelerator": "cpu", "devices": 2}),
        ({"checkpoint_callback": False}, {"enable_checkpointing": False}),
        ({"weights_summary": None}, {"enable_model_summary": False}),
        ({"progress_bar_refresh_rate": 0}, {"enable_progress_bar": False}),
        ({"replace_sampler_ddp": False}, {"use_distributed_sampler": False}),
    ],
)
def test_pl1_arguments_map_to_lightning_2(old, new):
    with pytest.warns(FlashDeprecationWarning):
        assert map_legacy_trainer_arguments({"max_epochs": 3, **old}) == {"max_epochs": 3, **new}


def test_gpus_none_is_simply_dropped_and_current_arguments_pass_untouched():
    current = {"accelerator": "cpu", "devices": 1, "max_epochs": 3, "precision": "32-true"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert map_legacy_trainer_arguments({**current, "gpus": None}) == current
        assert map_legacy_trainer_arguments(current) == current


def test_gpus_together_with_accelerator_is_refused():
    with pytest.raises(ValueError, match="gpus= .*accelerator"):
        flash.Trainer(gpus=1, accelerator="cpu")


def test_resume_from_checkpoint_becomes_fit_ckpt_path(tmp_path):
    model, data = ToyClassifier(), toy_data()
    first = flash.Trainer(max_epochs=1, default_root_dir=tmp_path, **quiet())
    first.fit(model, datamodule=data)
    first.save_checkpoint(tmp_path / "one.ckpt")
    with pytest.warns(FlashDeprecationWarning, match="ckpt_path"):
        second = flash.Trainer(max_epochs=2, resume_from_checkpoint=str(tmp_path / "one.ckpt"), **quiet())
    second.fit(ToyClassifier(), datamodule=toy_data())
    assert second.current_epoch == 2 and second.global_step == 2 * first.global_step


# -- 9. trainer.fit(model, train_dataloader=...) ----------------------------------------------------
def test_fit_takes_the_pl1_train_dataloader_keyword():
    data = toy_data()
    loader = DataLoader(data.dataset("train"), batch_size=16)
    trainer = flash.Trainer(max_epochs=1, **quiet())
    with pytest.warns(FlashDeprecationWarning, match="train_dataloaders"):
        trainer.fit(ToyClassifier(), train_dataloader=loader)
    assert trainer.global_step == len(loader)
    with pytest.raises(ValueError, match="not both"):
        trainer.fit(ToyClassifier(), loader, train_dataloader=loader)


# -- 3. trainer.predict(model, datamodule=..., output=...) ------------------------------------------
def predict_data() -> ToyData:
    return ToyData(predict=Split([torch.tensor(r) for r in ROWS]), batch_size=2, num_workers=0)


def flat(batches: list) -> list:
    return [item for batch in batches for item in batch]


@pytest.fixture
def trainer():
    return flash.Trainer(max_epochs=1, **quiet())


def test_predict_output_names(trainer):
    from flash.core.classification import (
        ClassesOutput,
        LabelsOutput,
        LogitsOutput,
        PredsOutput,
        ProbabilitiesOutput,
    )

    model = ServableToy()
    want = [expected(r) for r in ROWS]
    labels = flat(trainer.predict(model, datamodule=predict_data(), output="labels"))
    assert labels == [w["label"] for w in want]
    assert flat(trainer.predict(model, datamodule=predict_data(), output=LabelsOutput())) == labels
    assert flat(trainer.predict(model, datamodule=predict_data(), output=LabelsOutput(["no", "yes"]))) == [
        {"neg": "no", "pos": "yes"}[x] for x in labels
    ]
    classes = flat(trainer.predict(model, datamodule=predict_data(), output="classes"))
    assert classes == [["neg", "pos"].index(x) for x in labels]
    assert flat(trainer.predict(model, datamodule=predict_data(), output=ClassesOutput())) == classes
    probabilities = flat(trainer.predict(model, datamodule=predict_data(), output="probabilities"))
    for got, w in zip(probabilities, want, strict=True):
        assert got == pytest.approx(w["probabilities"], abs=1e-5)
    assert (
        flat(trainer.predict(model, datamodule=predict_data(), output=ProbabilitiesOutput())) == probabilities
    )
    logits = flat(trainer.predict(model, datamodule=predict_data(), output="logits"))
    assert flat(trainer.predict(model, datamodule=predict_data(), output="preds")) == logits
    assert flat(trainer.predict(model, datamodule=predict_data(), output=PredsOutput())) == logits
    assert flat(trainer.predict(model, datamodule=predict_data(), output=LogitsOutput())) == logits
    raw = flat(trainer.predict(model, datamodule=predict_data(), output="raw"))
    assert torch.allclose(torch.stack(raw), torch.tensor(logits))
    # no output: the task's default, as before; and output= does not stick to the model
    assert flat(trainer.predict(model, datamodule=predict_data())) == labels
    assert "predict_output" not in model.__dict__


def test_multi_label_settings_of_an_output_object(trainer):
    from flash.core.classification import ClassesOutput, LabelsOutput

    model = ServableToy()
    high = flat(
        trainer.predict(
            model, datamodule=predict_data(), output=ClassesOutput(multi_label=True, threshold=0.0)
        )
    )
    assert high == [[0, 1]] * len(ROWS)
    named = flat(
        trainer.predict(
            model, datamodule=predict_data(), output=LabelsOutput(multi_label=True, threshold=0.0)
        )
    )
    assert named == [["neg", "pos"]] * len(ROWS)


def test_custom_output_subclass_transforms_each_item(trainer):
    from flash.core.classification import LabelsOutput

    class Shout(LabelsOutput):
        def transform(self, result):
            return result.upper()

    got = flat(trainer.predict(ServableToy(), datamodule=predict_data(), output=Shout()))
    assert got == [expected(r)["label"].upper() for r in ROWS]


def test_a_bad_output_fails_before_any_batch(trainer):
    from flash.core.classification import LabelsOutput

    with pytest.raises(ValueError, match="Unknown output 'label'.*labels"):
        trainer.predict(ServableToy(), datamodule=predict_data(), output="label")
    with pytest.raises(TypeError, match=r"LabelsOutput\(\)"):
        trainer.predict(ServableToy(), datamodule=predict_data(), output=LabelsOutput)
    with pytest.raises(ValueError, match="Unknown output 'values'"):
        trainer.predict(ServableToy(), datamodule=predict_data(), output="values")


# -- 2. the import paths Flash's documentation uses ------------------------------------------------
def test_flash_import_paths():
    from flash.core.classification import (  # noqa: F401
        ClassesOutput,
        ClassificationTask,
        LabelsOutput,
        LogitsOutput,
        PredsOutput,
        ProbabilitiesOutput,
    )
    from flash.core.data.io.input import DataKeys
    from flash.core.data.io.output import Output  # noqa: F401
    from flash.core.data.utils import download_data
    from flash.core.finetuning import (  # noqa: F401
        FlashBaseFinetuning,
        Freeze,
        FreezeUnfreeze,
        NoFreeze,
        UnfreezeMilestones,
    )
    from flash.image import ImageClassificationData, ImageClassifier  # noqa: F401
    from flash.tabular import (  # noqa: F401
        TabularClassificationData,
        TabularClassifier,
        TabularRegressionData,
        TabularRegressor,
    )
    from flash.text import TextClassificationData, TextClassifier  # noqa: F401

    assert download_data is flash.core.data.download.download_data
    assert flash.Task is flash.core.model.task.Task and flash.DataModule is flash.core.DataModule
    assert (DataKeys.INPUT, DataKeys.TARGET) == ("input", "target")
