"""A task family defined entirely in tests/contract/template_task.py gets everything flash offers:
every finetuning strategy, predict, checkpoints, ``flash finetune``/``flash predict``,
``flash serve`` and ONNX export, with no edit to flash itself."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from template_task import SignalClassifier, SignalData, make_signals, write_signals_csv

import flash
from flash import cli
from flash.core.deploy.export import read_onnx_metadata
from flash.core.deploy.serve import start_server


@pytest.fixture
def signals_csv(tmp_path):
    return write_signals_csv(tmp_path / "signals.csv", 64, seed=0)


def finetuned(signals_csv, strategy="no_freeze", epochs=3):
    torch.manual_seed(0)
    data = SignalData.from_csv(signals_csv, val_split=0.25, batch_size=16, num_workers=0)
    task = SignalClassifier(num_classes=data.num_classes, learning_rate=0.02)
    trainer = flash.Trainer(
        max_epochs=epochs, enable_progress_bar=False, enable_model_summary=False, logger=False
    )
    trainer.finetune(task, data, strategy=strategy)
    return task, trainer


@pytest.mark.parametrize(
    "strategy", ["no_freeze", "freeze", ("freeze_unfreeze", 1), ("unfreeze_milestones", ((1, 2), 1))]
)
def test_every_strategy_trains_the_new_task(signals_csv, strategy):
    data = SignalData.from_csv(signals_csv, val_split=0.25, batch_size=16, num_workers=0)
    task = SignalClassifier(num_classes=data.num_classes)
    before = {k: v.clone() for k, v in task.backbone.state_dict().items()}
    head_before = task.head.weight.detach().clone()
    flash.Trainer(max_epochs=3, enable_progress_bar=False, logger=False, enable_checkpointing=False).finetune(
        task, data, strategy=strategy, train_bn=False
    )
    after = task.backbone.state_dict()
    frozen_throughout = all(torch.equal(before[k], after[k]) for k in before)
    assert frozen_throughout == (strategy == "freeze")
    assert not torch.equal(head_before, task.head.weight)


def test_predict_checkpoint_and_onnx(signals_csv, tmp_path):
    task, trainer = finetuned(signals_csv)
    signals, labels = make_signals(20, seed=1)
    predicted = task.predict(signals)
    assert np.mean([p == t for p, t in zip(predicted, labels)]) >= 0.8
    top2 = task.predict(signals[0], output="top2")
    assert [entry["label"] for entry in top2] in (["rising", "falling"], ["falling", "rising"])

    path = tmp_path / "signal.ckpt"
    trainer.save_checkpoint(path)
    loaded = SignalClassifier.load_from_checkpoint(path)
    assert loaded.predict(signals) == predicted

    onnx_path = task.to_onnx(tmp_path / "signal.onnx")  # checked with onnxruntime at two batch sizes
    meta = read_onnx_metadata(onnx_path)
    assert meta["domain"] == "signal" and meta["labels"] == ["falling", "rising"]
    assert list(meta["outputs"]) == ["logits", "probabilities"]


def test_flash_finetune_and_predict_commands(signals_csv, tmp_path):
    out = tmp_path / "run"
    argv = ["finetune", "signal", "--train-file", str(signals_csv), "--val-split", "0.25", "--epochs", "3"]
    assert cli.main([*argv, "--lr", "0.02", "--out", str(out), "--quiet"]) == 0
    assert (out / "model.ckpt").is_file()

    signals, labels = make_signals(10, seed=2)
    inputs = tmp_path / "new.txt"
    inputs.write_text("\n".join(" ".join(map(str, s)) for s in signals))
    result = tmp_path / "predictions.json"
    argv = ["predict", str(out / "model.ckpt"), str(inputs), "--output", "top2", "--format", "json"]
    assert cli.main([*argv, "--out", str(result), "--quiet", "--accelerator", "cpu"]) == 0
    rows = json.loads(result.read_text())
    assert [row["input"] for row in rows] == [f"{inputs}:{i}" for i in range(10)]
    assert all(row["prediction"] == row["top2"][0]["label"] for row in rows)
    assert np.mean([row["prediction"] == label for row, label in zip(rows, labels)]) >= 0.7


def test_served_json_and_file_uploads_match_predict(signals_csv, tmp_path):
    task, trainer = finetuned(signals_csv)
    path = tmp_path / "signal.ckpt"
    trainer.save_checkpoint(path)
    signals, _ = make_signals(6, seed=3)
    expected = task.predict(signals)
    with start_server(path) as server:
        health = httpx.get(server.url + "/health").json()
        assert health["domain"] == "signal" and health["labels"] == ["falling", "rising"]
        answer = httpx.post(server.url + "/predict", json={"inputs": signals}).json()["predictions"]
        assert [p["label"] for p in answer] == expected
        assert all(p["top2"][0]["label"] == p["label"] for p in answer)
        files = [("files", (f"s{i}.txt", " ".join(map(str, s)).encode())) for i, s in enumerate(signals)]
        uploaded = httpx.post(server.url + "/predict", files=files).json()["predictions"]
        assert [p["label"] for p in uploaded] == expected
        bad = httpx.post(server.url + "/predict", json={"inputs": [[1.0]]})
        assert bad.status_code == 422 and "at least two numbers" in bad.json()["detail"]
        schema = httpx.get(server.url + "/openapi.json").json()
        body = schema["paths"]["/predict"]["post"]["requestBody"]["content"]
        assert body["application/json"]["schema"]["properties"]["inputs"]["items"]["minItems"] == 2
        assert "multipart/form-data" in body


@pytest.mark.slow
def test_flash_serve_command_serves_the_checkpoint(signals_csv, tmp_path):
    _, trainer = finetuned(signals_csv, epochs=1)
    path = tmp_path / "signal.ckpt"
    trainer.save_checkpoint(path)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # The template's family is installed as a plug-in would be: a distribution on the path whose
    # 'flash.domains' entry point names the module that registers it.
    plugin = tmp_path / "plugin"
    info = plugin / "template_task_plugin-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: template-task-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[flash.domains]\nsignal = template_task\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugin), str(Path(__file__).parent)])}
    command = [
        sys.executable,
        "-m",
        "flash",
        "serve",
        str(path),
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    process = subprocess.Popen(command, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert process.poll() is None, "flash serve exited"
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "flash serve did not come up"
            time.sleep(0.25)
        answer = httpx.post(url + "/predict", json={"inputs": [[0.0, 1.0, 2.0]]}, timeout=60)
        assert answer.status_code == 200 and answer.json()["predictions"][0]["label"] in ("rising", "falling")
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
