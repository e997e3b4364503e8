"""Lightning Flash 0.8 serving and Flash Zero (items 8 and 16 of the migration page)."""

from __future__ import annotations

import httpx
import pytest
from servable_toy import ServableToy, expected
from tabular_tables import make_table

from flash.cli import main
from flash.cli.flash_zero import translate
from flash.core.classification import ClassesOutput, LabelsOutput, ProbabilitiesOutput
from flash.core.deploy.serve import start_server

ROW = [1.0, 2.0, 0.0, 0.0]


def served(output=None):
    return start_server(ServableToy(), "127.0.0.1", 0, output=output)


# -- 8. serve(output=...) and Flash's request body ----------------------------------------------------
def test_flash_request_body_is_answered_in_flash_shape():
    with served() as server:
        body = {"session": "UUID", "payload": {"inputs": {"data": ROW}}}
        response = httpx.post(f"{server.url}/predict", json=body, timeout=30)
        assert response.status_code == 200
        assert response.json() == {"session": "UUID", "result": {"outputs": expected(ROW)["label"]}}
        # this library's own body is unchanged beside it
        ours = httpx.post(f"{server.url}/predict", json={"inputs": [ROW]}, timeout=30).json()
        assert (
            ours["predictions"][0]["label"] == expected(ROW)["label"]
            and "probabilities" in ours["predictions"][0]
        )
        bad = httpx.post(
            f"{server.url}/predict", json={"session": "UUID", "payload": {"inputs": {}}}, timeout=30
        )
        assert bad.status_code == 422 and "payload.inputs.data" in bad.json()["detail"]


@pytest.mark.parametrize(
    ("output", "field"),
    [
        ("probabilities", "probabilities"),
        (ProbabilitiesOutput(), "probabilities"),
        ("classes", "class"),
        (LabelsOutput(), "label"),
    ],
)
def test_serve_output_chooses_what_a_prediction_holds(output, field):
    with served(output) as server:
        prediction = httpx.post(f"{server.url}/predict", json={"inputs": [ROW]}, timeout=30).json()[
            "predictions"
        ][0]
        assert list(prediction) == [field]
        flash_shape = httpx.post(
            f"{server.url}/predict", json={"session": "s", "payload": {"inputs": {"data": ROW}}}, timeout=30
        ).json()
        assert flash_shape["result"]["outputs"] == prediction[field]


def test_task_serve_passes_output_through(monkeypatch):
    import flash.core.deploy.serve as serve_module

    seen = {}
    monkeypatch.setattr(serve_module, "serve", lambda task, **kwargs: seen.update(kwargs))
    ServableToy().serve(output="probabilities")
    assert seen["output"] == "probabilities"


def test_serve_refuses_outputs_that_need_python_post_processing():
    with pytest.raises(ValueError, match="post-processing"):
        served(ClassesOutput(multi_label=True))
    with pytest.raises(ValueError, match="Unknown output"):
        served("label")


# -- 16. Flash Zero --------------------------------------------------------------------------------
def test_flash_zero_commands_translate_into_flash_finetune():
    assert translate(
        [
            "image_classification",
            "--trainer.max_epochs",
            "3",
            "--trainer.gpus",
            "1",
            "from_folders",
            "--train_folder",
            "data/train",
            "--val_folder",
            "data/val",
        ]
    ) == [
        "finetune",
        "image",
        "--epochs",
        "3",
        "--accelerator",
        "gpu",
        "--train-folder",
        "data/train",
        "--val-folder",
        "data/val",
    ]
    assert translate(
        [
            "text_classification",
            "from_csv",
            "--input_field",
            "review",
            "--target_fields",
            "a",
            "b",
            "--train_file=t.csv",
        ]
    ) == ["finetune", "text", "--input-field", "review", "--target-fields", "a,b", "--train-file", "t.csv"]
    assert translate(["tabular_regression", "from_csv", "--target_fields", "y", "--train_file", "t.csv"])[
        :3
    ] == [
        "finetune",
        "tabular",
        "--regression",
    ]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["object_detection", "from_coco"], "no counterpart here. Tasks here: flash finetune image"),
        (["image_classification"], "flash finetune image --train-folder"),
        (["image_classification", "from_fiftyone"], "from_folders or from_csv"),
        (
            ["image_classification", "from_folders", "--train_folder", "a", "--trainer.precision", "16"],
            "flash finetune image --train-folder a",
        ),
    ],
)
def test_flash_zero_commands_without_counterpart_print_the_equivalent(argv, message, capsys):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    assert message in capsys.readouterr().err


def test_a_flash_zero_tabular_command_trains(tmp_path, capsys):
    make_table(60).to_csv(tmp_path / "train.csv", index=False)
    code = main(
        [
            "tabular_classification",
            "--trainer.max_epochs",
            "1",
            "from_csv",
            "--categorical_fields",
            "color",
            "--numerical_fields",
            "age",
            "fare",
            "--target_fields",
            "label",
            "--train_file",
            str(tmp_path / "train.csv"),
            "--val_split",
            "0.2",
            "--batch_size",
            "16",
        ]
    )
    assert code == 0
    assert (
        "running: flash finetune tabular --epochs 1 --categorical-fields color --numerical-fields age,fare"
        in capsys.readouterr().err
    )
