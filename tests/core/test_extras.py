"""A missing optional extra says what to install; the plain tabular backbones need none."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from flash import cli
from flash.core.utils.extras import EXTRAS, MissingExtraError, require, require_extra


def hide(monkeypatch, *modules):
    for module in modules:
        monkeypatch.setitem(sys.modules, module, None)


def test_require_names_the_extra_to_install(monkeypatch):
    hide(monkeypatch, "tabm")
    with pytest.raises(
        MissingExtraError, match=r'The thing needs tabm, .*pip install "flash-finetune\[tabular\]"'
    ):
        require("tabm", "tabular", "The thing")
    hide(monkeypatch, "uvicorn")
    with pytest.raises(ModuleNotFoundError, match=r"flash-finetune\[serve\]"):  # what callers catch
        require_extra("serve", "The thing")
    with pytest.raises(ValueError, match="not the name of an extra"):
        require("tabm", "Tabular Models", "The thing")
    with pytest.raises(ValueError, match="Unknown extra 'gpu'"):
        require_extra("gpu", "The thing")
    assert require("json", "tabular", "The thing").__name__ == "json"


@pytest.mark.parametrize(("command", "extra"), [("serve", "serve"), ("export", "export")])
def test_flash_serve_and_export_name_their_extra(command, extra, monkeypatch, capsys):
    hide(monkeypatch, EXTRAS[extra][0])
    assert cli.main([command, "model.ckpt"]) == 1
    err = capsys.readouterr().err
    assert f'pip install "flash-finetune[{extra}]"' in err and "Traceback" not in err
    assert err.startswith(f"flash {command}: error: flash {command} needs")


def test_task_serve_and_to_onnx_name_their_extra(monkeypatch):
    from toy import ToyClassifier

    hide(monkeypatch, "fastapi", "onnx")
    task = ToyClassifier()
    with pytest.raises(MissingExtraError, match=r"flash-finetune\[serve\]"):
        task.serve()
    with pytest.raises(MissingExtraError, match=r"flash-finetune\[export\]"):
        task.to_onnx("model.onnx")


def test_tabular_backbones_that_need_the_extra_say_so_and_mlp_does_not_need_it(monkeypatch):
    sys.path.insert(0, str(Path(__file__).parents[1] / "tabular"))
    from tabular_tables import make_table

    from flash.tabular import TabularClassificationData, TabularClassifier

    hide(monkeypatch, "tabm", "rtdl_num_embeddings")
    data = TabularClassificationData.from_data_frame(
        categorical_fields=["color"],
        numerical_fields=["age"],
        target_fields="label",
        train_data_frame=make_table(),
    )
    task = TabularClassifier.from_data(data, backbone="mlp")
    assert task(torch.zeros(2, 2 + 1)).shape == (2, 2)  # age, its missing flag, color
    for backbone in ("tabm", "tabm_pwl", "mlp_plr", "ft_transformer"):
        with pytest.raises(MissingExtraError, match=r'pip install "flash-finetune\[tabular\]"'):
            TabularClassifier.from_data(data, backbone=backbone)


@pytest.mark.slow  # a fresh process that trains: about 30 s on 2 busy cores
def test_tabular_with_the_mlp_backbone_needs_no_extra(tmp_path):
    """In a fresh process where tabm and rtdl_num_embeddings cannot be imported."""
    script = textwrap.dedent(
        """
        import sys
        sys.modules["tabm"] = None
        sys.modules["rtdl_num_embeddings"] = None
        sys.path.insert(0, sys.argv[1])
        import flash
        from flash.tabular import TabularClassificationData, TabularClassifier
        from tabular_tables import make_table

        data = TabularClassificationData.from_data_frame(
            categorical_fields=["color"], numerical_fields=["age", "fare"], target_fields="label",
            train_data_frame=make_table(), val_split=0.25, batch_size=32,
        )
        task = TabularClassifier.from_data(data, backbone="mlp")
        flash.Trainer(max_epochs=1, enable_progress_bar=False, logger=False,
                      enable_checkpointing=False).finetune(task, data)
        print("predicted", task.predict(make_table()[:3])[0] in ("yes", "no"))
        for backbone in ("tabm", "mlp_plr", "ft_transformer"):
            try:
                TabularClassifier.from_data(data, backbone=backbone)
            except ModuleNotFoundError as error:
                print(backbone, error)
        """
    )
    tables = str(Path(__file__).parents[1] / "tabular")
    done = subprocess.run(
        [sys.executable, "-c", script, tables], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "predicted True" in lines
    for backbone in ("tabm", "mlp_plr", "ft_transformer"):
        line = next(line for line in lines if line.startswith(backbone + " "))
        assert 'pip install "flash-finetune[tabular]"' in line, line
