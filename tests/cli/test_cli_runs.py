"""``flash finetune`` runs on Lightning's rails: resumable after a kill or Ctrl-C, the best epoch
kept, early stopping, loggers, precision and devices, and output without Lightning's chatter."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
from toy_cli import TOY

import flash.core.utils.progress
from flash import cli
from flash.cli.domains import DOMAINS

TOY_CLI = Path(__file__).with_name("toy_cli.py")
ARGV = ["finetune", "toy", "--rows", "48", "--epochs", "3", "--strategy", "freeze_unfreeze:1", "--quiet"]


@pytest.fixture(autouse=True)
def toy_domain(monkeypatch):
    monkeypatch.setitem(DOMAINS, "toy", TOY)
    yield
    flash.core.utils.progress._QUIET = None


def read_metrics(path):
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def weights(path):
    return torch.load(path, map_location="cpu", weights_only=False)["state_dict"]


def _default_ctrl_c():
    """In the child: Ctrl-C as a shell gives it, whatever this test process inherited or was left with
    (a child inherits an ignored or blocked SIGINT, and Python then never raises KeyboardInterrupt)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def start_hanging_run(tmp_path, out, hang_at=1, extra=()):
    """``flash finetune toy`` in a subprocess that waits at the start of epoch ``hang_at``
    (``SIGABRT`` makes it print every thread's stack: ``PYTHONFAULTHANDLER``)."""
    marker = tmp_path / f"{out}.marker"
    marker.unlink(missing_ok=True)
    env = {
        **os.environ,
        "TOY_HANG_AT_EPOCH": str(hang_at),
        "TOY_MARKER": str(marker),
        "PYTHONFAULTHANDLER": "1",
    }
    env["PYTHONPATH"] = os.pathsep.join([str(Path(flash.__file__).parents[1]), env.get("PYTHONPATH", "")])
    process = subprocess.Popen(
        [sys.executable, str(TOY_CLI), *ARGV, "--out", str(out), *extra],
        preexec_fn=_default_ctrl_c,
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not marker.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"the run did not reach epoch {hang_at}: {process.communicate()[1]}")
        time.sleep(0.1)
    time.sleep(0.5)  # the marker is written just before the wait: signal the run inside it
    return process


@pytest.mark.slow  # two runs and a subprocess: about 30 s
def test_a_run_killed_after_its_first_epoch_resumes_to_the_same_result(tmp_path):
    assert cli.main([*ARGV, "--out", "whole"]) == 0

    process = start_hanging_run(tmp_path, "killed")
    process.kill()  # SIGKILL: no chance to clean up
    process.communicate()
    last = tmp_path / "killed" / "checkpoints" / "last.ckpt"
    assert last.is_file() and torch.load(last, weights_only=False)["epoch"] == 0
    assert not (tmp_path / "killed" / "model.ckpt").exists()
    assert json.loads((tmp_path / "killed" / "config.json").read_text())["options"]["epochs"] == 3

    assert cli.main(["finetune", "--resume", "killed", "--quiet"]) == 0
    assert read_metrics(tmp_path / "killed" / "metrics.csv") == read_metrics(
        tmp_path / "whole" / "metrics.csv"
    )
    whole, resumed = weights(tmp_path / "whole" / "model.ckpt"), weights(tmp_path / "killed" / "model.ckpt")
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)
    assert not (tmp_path / "killed" / "checkpoints").exists()  # removed once the run has finished


@pytest.mark.slow  # a subprocess: about 30 s
def test_ctrl_c_stops_cleanly_keeps_the_last_finished_epoch_and_says_how_to_resume(tmp_path, capsys):
    process = start_hanging_run(tmp_path, "stopped", hang_at=2)
    process.send_signal(signal.SIGINT)
    inherited = (signal.getsignal(signal.SIGINT), signal.pthread_sigmask(signal.SIG_BLOCK, set()))
    try:
        _, err = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGABRT)  # faulthandler: where every thread of the run waits
        pytest.fail(f"the run ignored Ctrl-C (this process's SIGINT handler and mask: {inherited}):\n"
                    f"{process.communicate(timeout=60)[1][-8000:]}")  # fmt: skip
    assert process.returncode == 130, err
    assert "interrupted" in err and "flash finetune --resume stopped" in err
    assert "Traceback" not in err
    last = tmp_path / "stopped" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=False)["epoch"] == 1  # epochs 1 and 2 finished
    assert "after epoch 2" in err

    capsys.readouterr()
    assert cli.main(["finetune", "--resume", "stopped", "--quiet"]) == 0
    assert [row["epoch"] for row in read_metrics(tmp_path / "stopped" / "metrics.csv")] == ["1", "2", "3"]


def test_an_unfinished_run_is_resumed_not_replaced_and_a_resumed_run_keeps_its_options(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main([*ARGV, "--epochs", "1", "--out", "run"]) == 0
    (out / "results.json").unlink()  # as if it had been killed
    assert cli.main([*ARGV, "--out", "run"]) == 1
    assert "flash finetune --resume run" in capsys.readouterr().err

    assert cli.main(["finetune", "--resume", "run", "--lr", "0.5", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "--lr differ" in err and "--config" in err

    (out / "results.json").write_text("{}")
    assert cli.main(["finetune", "--resume", "run", "--quiet"]) == 1
    assert "has finished" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["finetune", "--resume", "nowhere"])
    assert "not the folder of a flash finetune run" in capsys.readouterr().err


def test_the_best_epoch_is_kept_by_default_and_both_are_reported(tmp_path, capsys):
    # A learning rate this high makes the validation accuracy move between epochs.
    argv = ["finetune", "toy", "--rows", "64", "--epochs", "4", "--lr", "0.3", "--quiet"]
    assert cli.main([*argv, "--out", "best"]) == 0
    printed = capsys.readouterr().out
    assert cli.main([*argv, "--out", "last", "--keep", "last"]) == 0
    results = json.loads((tmp_path / "best" / "results.json").read_text())
    rows = read_metrics(tmp_path / "best" / "metrics.csv")
    scores = [(float(r["val_accuracy"]), -float(r["val_loss"])) for r in rows]
    best_epoch = max(range(len(rows)), key=lambda i: (scores[i], -i)) + 1
    assert results["kept"] == "best" and results["monitor"] == "val_accuracy"
    assert results["best"]["epoch"] == best_epoch
    assert results["best"]["metrics"]["val_accuracy"] == pytest.approx(
        float(rows[best_epoch - 1]["val_accuracy"])
    )
    assert results["final"]["val_accuracy"] == pytest.approx(float(rows[-1]["val_accuracy"]))
    if best_epoch == 4:
        assert "model.ckpt: the best epoch, which is the last (4): val_accuracy" in printed
    else:
        assert f"best epoch {best_epoch}: val_accuracy" in printed and "last epoch 4: val_accuracy" in printed
    last = json.loads((tmp_path / "last" / "results.json").read_text())
    assert last["kept"] == "last" and last["best"] is None
    if best_epoch != 4:
        assert not all(
            torch.equal(a, b)
            for a, b in zip(
                weights(tmp_path / "best" / "model.ckpt").values(),
                weights(tmp_path / "last" / "model.ckpt").values(),
            )
        )


def test_best_checkpoint_breaks_ties_on_the_monitored_metric_by_validation_loss():
    from types import SimpleNamespace

    from flash.cli.rails import run_callbacks

    (best, _), _ = run_callbacks(Path("ck"), "val_accuracy", "max", None)
    best.best_k_models = {"best.ckpt": torch.tensor(0.9)}
    best.best_model_path = best.kth_best_model_path = "best.ckpt"
    best.best_tiebreak = 0.5
    trainer = SimpleNamespace(callback_metrics={"val_loss": torch.tensor(0.4)})
    assert best.check_monitor_top_k(trainer, torch.tensor(0.9))  # same accuracy, lower loss
    trainer.callback_metrics["val_loss"] = torch.tensor(0.6)
    assert not best.check_monitor_top_k(trainer, torch.tensor(0.9))


def test_early_stopping_stops_once_the_metric_stops_improving(tmp_path, capsys):
    argv = ["finetune", "toy", "--rows", "32", "--epochs", "8", "--lr", "1e-9", "--early-stopping", "1"]
    assert cli.main([*argv, "--out", "early", "--quiet"]) == 0
    assert len(read_metrics(tmp_path / "early" / "metrics.csv")) == 2  # no improvement after epoch 1
    assert cli.main([*argv, "--no-val", "--out", "noval", "--quiet"]) == 1
    assert "--early-stopping watches a validation metric" in capsys.readouterr().err
    assert not (tmp_path / "noval").exists()


def test_without_validation_data_the_run_says_so_and_suggests_val_split(tmp_path, capsys):
    assert cli.main(["finetune", "toy", "--rows", "32", "--epochs", "1", "--no-val", "--out", "r"]) == 0
    printed = capsys.readouterr()
    assert "no validation data was given" in printed.err and "--val-split" in printed.err
    assert "across ranks is zero" not in printed.err
    assert "no validation data, so no best epoch" in printed.out
    assert json.loads((tmp_path / "r" / "results.json").read_text())["kept"] == "last"


CHATTER = ("💡", "Tip:", "GPU available", "TPU available", "eval mode", "log_every_n_steps", "FLOPs", "v_num")


def test_a_run_prints_no_lightning_chatter(tmp_path, capsys):
    argv = ["finetune", "toy", "--rows", "32", "--epochs", "2", "--strategy", "freeze", "--train-bn", "false"]
    assert cli.main([*argv, "--out", "r", "--logger", "csv"]) == 0
    printed = capsys.readouterr()
    for chatter in CHATTER:
        assert chatter not in printed.err, chatter
    assert "Epoch 1" in printed.err  # the progress bar is still there
    assert (tmp_path / "r" / "lightning_logs").is_dir() and not (tmp_path / "lightning_logs").exists()


def test_flash_trainer_is_quiet_too_and_leaves_lightning_as_it_was(tmp_path, caplog):
    import logging

    import flash
    from toy import ToyClassifier, toy_data

    filters_before = list(warnings.filters)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with caplog.at_level(logging.INFO):
            trainer = flash.Trainer(max_epochs=1, enable_progress_bar=False)
            task = ToyClassifier()
            trainer.lr_find(task, toy_data(32), num_training=5)
            trainer.finetune(task, toy_data(32), strategy="freeze", train_bn=False)
    shown = [record.getMessage() for record in caplog.records] + [str(w.message) for w in caught]
    assert any("`max_epochs=1` reached" in line for line in shown)  # the user's run still reports
    for chatter in (*CHATTER, "Restor", "weights_only", "max_steps=", "val_dataloader"):
        assert not any(chatter in line for line in shown), (chatter, shown)
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    assert not rank_zero.filters  # the filters are on only while flash runs
    assert warnings.filters == filters_before
    with caplog.at_level(logging.INFO):
        rank_zero.info("GPU available: outside a flash run")
    assert "GPU available: outside a flash run" in caplog.text


def test_loggers_precision_and_devices(tmp_path, capsys, monkeypatch):
    argv = ["finetune", "toy", "--rows", "32", "--epochs", "1", "--quiet"]
    assert cli.main([*argv, "--out", "r", "--precision", "bf16-mixed", "--devices", "1", "--seed", "3"]) == 0
    options = json.loads((tmp_path / "r" / "config.json").read_text())["options"]
    assert (options["precision"], options["devices"], options["seed"]) == ("bf16-mixed", 1, 3)
    monkeypatch.setitem(sys.modules, "mlflow", None)
    assert cli.main([*argv, "--out", "m", "--logger", "mlflow"]) == 1
    err = capsys.readouterr().err
    assert "--logger mlflow needs the mlflow package" in err and "pip install mlflow" in err
    assert not (tmp_path / "m").exists()  # refused before any work
    with pytest.raises(SystemExit):
        cli.main([*argv, "--devices", "0"])
    assert "a number of devices >= 1" in capsys.readouterr().err


def test_strategy_auto_cross_validates_then_trains_the_chosen_setting(tmp_path, capsys):
    out = tmp_path / "auto"
    argv = [a for a in ARGV if a != "--quiet"]
    argv[argv.index("freeze_unfreeze:1")] = "auto"
    argv += ["--folds", "2"]
    assert cli.main([*argv, "--out", str(out)]) == 0
    printed = capsys.readouterr()
    results = json.loads((out / "results.json").read_text())
    board = results["auto"]["leaderboard"]
    assert board[0]["candidate"] == "linear probe (freeze)" and len(board) == 3
    assert sum(row["chosen"] for row in board) == 1 and results["auto"]["chosen"] in printed.out
    assert "<- chosen" in printed.err and "fold 2/2" in printed.err
    assert (out / "model.ckpt").is_file() and not list((out / "cross_validation").rglob("*.ckpt"))
    assert results["epochs"] == 3
    assert cli.main([*argv, "--out", str(tmp_path / "other"), "--lr", "auto"]) != 0
    assert "drop --lr auto" in capsys.readouterr().err
    assert not (tmp_path / "other").exists()
