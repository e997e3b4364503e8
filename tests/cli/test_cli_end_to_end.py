"""End to end through real processes: finetune, predict from the saved checkpoint in a new
process, then replay the saved config, on tiny generated data of each domain."""

from __future__ import annotations

import csv
import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from flash import cli
from flash.cli.domains import DOMAINS

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def flash_command(*args: str, cwd: Path, expect: int = 0) -> subprocess.CompletedProcess:
    """``python -m flash ARGS`` in a fresh process."""
    done = subprocess.run(
        [sys.executable, "-m", "flash", *args], cwd=cwd, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == expect, (
        f"flash {' '.join(args)} exited {done.returncode}:\n{done.stderr[-3000:]}"
    )
    return done


def read_csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 5000, path


def assert_run_folder(out: Path, plots: tuple[str, ...]) -> None:
    for name in ("model.ckpt", "config.json", "results.json", "metrics.csv"):
        assert (out / name).is_file(), name
    for plot in plots:
        assert_png(out / "plots" / plot)


def assert_replay_matches(run: Path, replay: Path) -> None:
    assert (
        json.loads((run / "config.json").read_text())["options"]
        == json.loads((replay / "config.json").read_text())["options"]
    )
    first, second = read_csv_rows(run / "metrics.csv"), read_csv_rows(replay / "metrics.csv")
    assert [r.keys() for r in first] == [r.keys() for r in second]
    for a, b in zip(first, second):
        for key in a:
            assert float(a[key]) == pytest.approx(float(b[key]), rel=1e-4, abs=1e-5), key


# -- tabular ------------------------------------------------------------------------------------
def write_passengers(folder: Path) -> None:
    rng = np.random.default_rng(0)
    n = 60
    sex = rng.choice(["male", "female"], n)
    frame = pd.DataFrame(
        {
            "Age": rng.uniform(1, 80, n).round(1),
            "Fare": rng.exponential(30, n).round(2),
            "Sex": sex,
            "Embarked": rng.choice(["S", "C", "Q"], n),
            "Survived": ((sex == "female") ^ (rng.random(n) < 0.1)).astype(int),
        }
    )
    frame.iloc[:40].to_csv(folder / "train.csv", index=False)
    frame.iloc[40:].to_csv(folder / "val.csv", index=False)
    frame.iloc[40:].drop(columns="Survived").to_csv(folder / "new.csv", index=False)


@pytest.mark.slow
def test_tabular_finetune_predict_replay(tmp_path):
    write_passengers(tmp_path)
    flash_command(
        "finetune", "tabular", "--train-file", "train.csv", "--val-file", "val.csv", "--target-field", "Survived",
        "--categorical-fields", "Sex,Embarked", "--numerical-fields", "Age,Fare", "--epochs", "2",
        "--out", "run", "--quiet", cwd=tmp_path,
    )  # fmt: skip
    assert_run_folder(tmp_path / "run", ("curves.png", "confusion_matrix.png"))

    done = flash_command(
        "predict", "run/model.ckpt", "new.csv", "--output", "probabilities", "--format", "json", cwd=tmp_path
    )
    rows = json.loads(done.stdout)
    assert [row["input"] for row in rows] == [f"new.csv:{i}" for i in range(20)]
    for row in rows:
        assert set(row["probabilities"]) == {"0", "1"}
        assert sum(row["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
        assert str(row["prediction"]) == max(row["probabilities"], key=row["probabilities"].get)

    flash_command("finetune", "--config", "run/config.json", "--out", "replay", "--quiet", cwd=tmp_path)
    assert_replay_matches(tmp_path / "run", tmp_path / "replay")


def test_tabular_regression_in_process(tmp_path, capsys):
    write_passengers(tmp_path)
    argv = ["finetune", "tabular", "--regression", "--train-file", "train.csv", "--val-file", "val.csv"]
    argv += ["--target-field", "Fare", "--numerical-fields", "Age", "--categorical-fields", "Sex,Embarked"]
    assert cli.main([*argv, "--epochs", "2", "--out", "reg", "--quiet"]) == 0
    assert "val_mae" in read_csv_rows(tmp_path / "reg" / "metrics.csv")[0]
    assert (tmp_path / "reg" / "plots" / "curves.png").is_file()
    assert not (tmp_path / "reg" / "plots" / "confusion_matrix.png").exists()  # no classes
    capsys.readouterr()
    assert cli.main(["predict", "reg/model.ckpt", "new.csv", "--format", "json", "--quiet"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 20 and all(isinstance(row["prediction"], float) for row in rows)

    assert cli.main(["export", "reg/model.ckpt", "--format", "onnx"]) == 0
    assert "checked against PyTorch" in capsys.readouterr().out
    assert (tmp_path / "reg" / "model.onnx").stat().st_size > 10_000
    assert cli.main(["export", "reg/model.ckpt"]) == 1  # never overwrites without --force
    assert "exists; pass --force" in capsys.readouterr().err


def test_serve_and_export_name_a_missing_checkpoint(capsys):
    assert cli.main(["serve", "nothing.ckpt", "--port", "8123"]) == 1
    assert "No checkpoint at nothing.ckpt" in capsys.readouterr().err
    assert cli.main(["export", "nothing.ckpt"]) == 1
    assert "No checkpoint at nothing.ckpt" in capsys.readouterr().err


# -- text ---------------------------------------------------------------------------------------
POSITIVE = ["a wonderful film", "great acting and a lovely story", "I loved it", "brilliant and moving"]
NEGATIVE = ["a dreadful film", "boring and far too long", "I hated it", "awful acting"]


def write_reviews(folder: Path) -> None:
    rng = random.Random(0)
    for name, n in (("train.csv", 12), ("val.csv", 6)):
        with (folder / name).open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["sentence", "label"])
            for i in range(n):
                good = i % 2 == 1
                writer.writerow(
                    [f"{rng.choice(POSITIVE if good else NEGATIVE)} {i}", "pos" if good else "neg"]
                )


@pytest.mark.slow
def test_text_finetune_predict_replay(tmp_path):
    write_reviews(tmp_path)
    done = flash_command(
        "finetune", "text", "--train-file", "train.csv", "--val-file", "val.csv", "--input-field", "sentence",
        "--target-field", "label", "--epochs", "1", "--batch-size", "4", "--out", "run", cwd=tmp_path,
    )  # fmt: skip
    assert "val_accuracy" in done.stdout.splitlines()[0]
    assert "Loading text data" in done.stderr  # not quiet: progress lines on stderr
    assert_run_folder(tmp_path / "run", ("curves.png", "confusion_matrix.png"))

    done = flash_command(
        "predict",
        "run/model.ckpt",
        "I loved this film",
        "val.csv",
        "--format",
        "csv",
        "--quiet",
        cwd=tmp_path,
    )
    rows = list(csv.DictReader(done.stdout.splitlines()))
    assert [row["input"] for row in rows] == ["I loved this film"] + [f"val.csv:{i}" for i in range(6)]
    assert {row["prediction"] for row in rows} <= {"pos", "neg"}

    flash_command("finetune", "--config", "run/config.json", "--out", "replay", "--quiet", cwd=tmp_path)
    assert_replay_matches(tmp_path / "run", tmp_path / "replay")


def test_text_few_shot_from_zero_shot_with_the_contrastive_strategy(tmp_path, monkeypatch, capsys):
    write_reviews(tmp_path)
    monkeypatch.chdir(tmp_path)
    argv = [
        "finetune", "text", "--train-file", "train.csv", "--input-field", "sentence", "--target-field",
        "label", "--epochs", "2", "--batch-size", "16", "--strategy", "contrastive", "--max-length", "16",
        "--zero-shot", "This film review is {}.", "--out", "run", "--quiet",
    ]  # fmt: skip
    assert cli.main(argv) == 0
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    options = config["options"]
    assert options["zero_shot"] == "This film review is {}." and options["strategy"] == "contrastive"
    capsys.readouterr()
    assert cli.main(["predict", "run/model.ckpt", "I loved it so much", "--quiet"]) == 0
    assert capsys.readouterr().out.split()[-1] in {"pos", "neg"}


def test_zero_shot_refuses_a_template_without_a_slot(tmp_path, monkeypatch, capsys):
    write_reviews(tmp_path)
    monkeypatch.chdir(tmp_path)
    argv = [
        "finetune", "text", "--train-file", "train.csv", "--input-field", "sentence", "--target-field",
        "label", "--zero-shot", "no slot", "--out", "run", "--quiet",
    ]  # fmt: skip
    assert cli.main(argv) != 0
    assert "exactly one {}" in capsys.readouterr().err


# -- image --------------------------------------------------------------------------------------
def write_insects(folder: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    colours = {"ants": (150, 40, 30), "bees": (230, 190, 40)}
    for split, count in (("train", 4), ("val", 2)):
        for name, colour in colours.items():
            (folder / split / name).mkdir(parents=True)
            for k in range(count):
                pixels = np.clip(np.array(colour) + rng.integers(-30, 30, size=(36, 40, 3)), 0, 255)
                Image.fromarray(pixels.astype(np.uint8)).save(folder / split / name / f"{k}.jpg")


@pytest.mark.slow
def test_image_finetune_predict_replay(tmp_path):
    write_insects(tmp_path)
    flash_command(
        "finetune", "image", "--train-folder", "train", "--val-folder", "val", "--image-size", "32",
        "--epochs", "1", "--batch-size", "4", "--out", "run", "--quiet", cwd=tmp_path,
    )  # fmt: skip
    plots = ("curves.png", "confusion_matrix.png", "worst_predictions.png", "train_batch.png")
    assert_run_folder(tmp_path / "run", plots)

    done = flash_command(
        "predict", "run/model.ckpt", "val", "train/ants/0.jpg", "--format", "json", cwd=tmp_path
    )
    rows = json.loads(done.stdout)
    assert [Path(row["input"]).as_posix() for row in rows] == [
        "val/ants/0.jpg", "val/ants/1.jpg", "val/bees/0.jpg", "val/bees/1.jpg", "train/ants/0.jpg",
    ]  # fmt: skip
    assert {row["prediction"] for row in rows} <= {"ants", "bees"}

    flash_command("finetune", "--config", "run/config.json", "--out", "replay", "--quiet", cwd=tmp_path)
    assert_replay_matches(tmp_path / "run", tmp_path / "replay")


@pytest.mark.slow
def test_image_finetune_from_a_csv_file(tmp_path):
    write_insects(tmp_path)
    with (tmp_path / "labels.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "label"])
        for path in sorted((tmp_path / "train").glob("*/*.jpg")):
            writer.writerow([path.relative_to(tmp_path).as_posix(), path.parent.name])
    argv = [
        "finetune",
        "image",
        "--train-file",
        "labels.csv",
        "--input-field",
        "file",
        "--target-field",
        "label",
    ]
    argv += ["--val-split", "0.25", "--image-size", "32", "--epochs", "1", "--out", "run", "--quiet"]
    assert cli.main(argv) == 0
    config = json.loads((tmp_path / "run" / "config.json").read_text())["options"]
    assert config["train_file"] == str(tmp_path / "labels.csv") and config["train_folder"] is None


def test_image_data_given_twice_or_half_is_refused(tmp_path, capsys):
    write_insects(tmp_path)
    argv = ["finetune", "image", "--train-folder", "train", "--train-file", "labels.csv", "--quiet"]
    assert cli.main(argv) == 1
    assert (
        "either as class folders (--train-folder) or as CSV files (--train-file)" in capsys.readouterr().err
    )
    (tmp_path / "labels.csv").write_text("file,label\ntrain/ants/0.jpg,ants\n")
    assert cli.main(["finetune", "image", "--train-file", "labels.csv", "--quiet"]) == 1
    assert "need --input-field" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_runs_on_a_folder(tmp_path, capsys):
    write_insects(tmp_path / "insects")
    argv = [
        "demo",
        "--data",
        "insects",
        "--epochs",
        "1",
        "--image-size",
        "32",
        "--batch-size",
        "4",
        "--out",
        "d",
    ]
    assert cli.main(argv) == 0
    assert "Validation accuracy" in capsys.readouterr().out
    assert list((tmp_path / "d").glob("*.ckpt"))


# -- errors and listings, in-process --------------------------------------------------------------
def test_predict_with_a_missing_or_foreign_checkpoint_says_so(tmp_path, capsys):
    assert cli.main(["predict", "nothing.ckpt", "a.csv"]) == 1
    assert "No checkpoint at nothing.ckpt" in capsys.readouterr().err
    (tmp_path / "notes.ckpt").write_text("not a model")
    assert cli.main(["predict", "notes.ckpt", "a.csv"]) == 1
    assert "not a flash checkpoint" in capsys.readouterr().err


def test_backbones_lists_each_domain_and_marks_offline_ones(capsys):
    assert cli.main(["backbones", "text", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    by_name = {row["backbone"]: row for row in rows}
    assert by_name["all-MiniLM-L6-v2"]["offline"] is True and by_name["all-MiniLM-L6-v2"]["default"] is True
    assert by_name["bert-base-uncased"]["offline"] is False
    assert cli.main(["backbones", "tabular"]) == 0
    table = capsys.readouterr().out
    assert "tabm" in table and "yes" in table


def test_every_domain_default_backbone_is_the_task_default():
    import inspect

    from flash.cli.domains import DOMAINS

    for spec in DOMAINS.values():
        try:
            package = spec.import_package()
        except ImportError:
            continue
        task_classes = [
            getattr(package, name) for name in dir(package) if name.endswith(("Classifier", "Regressor"))
        ]
        for task_class in task_classes:
            default = inspect.signature(task_class.__init__).parameters["backbone"].default
            assert default == spec.default_backbone, (spec.name, task_class.__name__)


def test_tabular_predict_prints_labels_or_probabilities_as_table_csv_or_json(tmp_path, capsys, monkeypatch):
    import flash.core.utils.progress as progress_module

    write_passengers(tmp_path)
    argv = ["finetune", "tabular", "--train-file", "train.csv", "--val-file", "val.csv"]
    argv += ["--target-field", "Survived", "--categorical-fields", "Sex,Embarked"]
    argv += ["--numerical-fields", "Age,Fare", "--epochs", "1", "--out", "run", "--quiet"]
    assert cli.main(argv) == 0
    capsys.readouterr()

    assert cli.main(["predict", "run/model.ckpt", "new.csv", "--quiet"]) == 0  # labels, as a table
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["input", "prediction"] and set(lines[1]) <= {"-", " "}
    assert [line.split()[0] for line in lines[2:]] == [f"new.csv:{i}" for i in range(20)]
    labels = [line.split()[1] for line in lines[2:]]
    assert set(labels) <= {"0", "1"}

    argv = ["predict", "run/model.ckpt", "new.csv", "--output", "probabilities", "--format", "csv"]
    assert cli.main(argv) == 0
    rows = list(csv.DictReader(capsys.readouterr().out.splitlines()))
    assert list(rows[0]) == ["input", "prediction", "0", "1"]
    for row, label in zip(rows, labels, strict=True):
        assert float(row["0"]) + float(row["1"]) == pytest.approx(1.0, abs=1e-5)
        assert row["prediction"] == label == max("01", key=lambda c: float(row[c]))

    assert cli.main(["predict", "run/model.ckpt", "new.csv", "--format", "json", "--out", "p.json"]) == 0
    assert [row["prediction"] for row in json.loads((tmp_path / "p.json").read_text())] == [
        int(label) for label in labels
    ]
    assert "20 predictions written to p.json" in capsys.readouterr().err
    assert cli.main(["predict", "run/model.ckpt", "new.csv", "--out", "p.json"]) == 1  # no --force
    assert "exists; pass --force" in capsys.readouterr().err

    monkeypatch.setattr(progress_module, "PROGRESS_DELAY_S", 0.0)  # show the bar at once
    assert cli.main(["predict", "run/model.ckpt", "new.csv", "--batch-size", "4"]) == 0
    assert "Predicting" in capsys.readouterr().err
    assert cli.main(["predict", "run/model.ckpt", "new.csv", "--batch-size", "4", "--quiet"]) == 0
    assert capsys.readouterr().err == ""


def test_backbones_of_every_domain_with_the_offline_ones_marked(capsys):
    assert cli.main(["backbones", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    order = list(DOMAINS)  # the registered domains, in listing order
    assert [row["domain"] for row in rows] == sorted((row["domain"] for row in rows), key=order.index)
    assert {"image", "text", "tabular"} <= {row["domain"] for row in rows}
    by_name = {(row["domain"], row["backbone"]): row for row in rows}
    assert by_name["image", "efficientnet_lite0"]["offline"] is True
    assert by_name["image", "efficientnet_lite0"]["default"] is True
    assert by_name["image", "resnet18"]["offline"] is False
    assert by_name["tabular", "tabm"]["offline"] is True
    assert sum(row["default"] for row in rows) == len({row["domain"] for row in rows})  # one per domain
    assert cli.main(["backbones"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["domain", "backbone", "offline", "default", "description"]
    resnet = next(line for line in lines if line.split()[:2] == ["image", "resnet18"])
    assert "no (downloads weights)" in resnet
    lite = next(line for line in lines if line.split()[:2] == ["image", "efficientnet_lite0"])
    assert lite.split()[2:4] == ["yes", "default"]


def test_demo_without_data_runs_the_digits_with_its_defaults(monkeypatch):
    import flash.image.demo

    calls = []
    monkeypatch.setattr(flash.image.demo, "run_demo", lambda **kwargs: calls.append(kwargs) or {})
    assert cli.main(["demo"]) == 0
    assert calls == [
        {"data": None, "out": "flash_demo", "epochs": 4, "image_size": None, "batch_size": 32,
         "backbone": "efficientnet_lite0"}
    ]  # fmt: skip
    assert cli.main(["demo", "--epochs", "2", "--out", "d", "--data", "pics"]) == 0
    assert calls[1]["epochs"] == 2 and calls[1]["out"] == "d" and calls[1]["data"] == "pics"


# -- the flags that error messages point to ----------------------------------------------------------
def test_a_bad_image_names_the_flag_that_skips_it_and_the_flag_works(tmp_path, capsys):
    write_insects(tmp_path)
    (tmp_path / "train" / "ants" / "broken.jpg").write_bytes(b"not an image")
    argv = ["finetune", "image", "--train-folder", "train", "--val-folder", "val", "--image-size", "32"]
    argv += ["--epochs", "1", "--batch-size", "4", "--quiet"]
    assert cli.main([*argv, "--out", "refused"]) == 1
    assert "--on-bad-image skip" in capsys.readouterr().err
    assert cli.main([*argv, "--out", "run", "--on-bad-image", "skip"]) == 0
    assert (tmp_path / "run" / "model.ckpt").is_file()


def test_text_encoding_and_empty_rows_name_their_flags_and_the_flags_work(tmp_path, capsys):
    rows = [("Très bon film", "pos"), ("Un désastre", "neg")] * 4
    pd.DataFrame(rows, columns=["sentence", "label"]).to_csv(
        tmp_path / "latin.csv", index=False, encoding="latin-1"
    )
    argv = [
        "finetune",
        "text",
        "--train-file",
        "latin.csv",
        "--input-field",
        "sentence",
        "--target-field",
        "label",
    ]
    argv += ["--val-split", "0.25", "--epochs", "1", "--batch-size", "4", "--quiet"]
    assert cli.main([*argv, "--out", "refused"]) == 1
    assert "--encoding latin-1" in capsys.readouterr().err
    assert cli.main([*argv, "--out", "run", "--encoding", "latin-1"]) == 0

    pd.DataFrame([*rows, ("", "pos")], columns=["sentence", "label"]).to_csv(
        tmp_path / "gaps.csv", index=False
    )
    argv[3] = "gaps.csv"
    assert cli.main([*argv, "--out", "refused2"]) == 1
    assert "--drop-empty" in capsys.readouterr().err
    assert cli.main([*argv, "--out", "run2", "--drop-empty"]) == 0
