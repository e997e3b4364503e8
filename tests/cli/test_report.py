"""``flash finetune ... --report``: one self-contained HTML page per run, and the domains'
``DataModule.describe()`` statistics it shows."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from image_fixtures import COLOURS, colour_image
from tabular_tables import make_table
from toy_cli import TOY

import flash
import flash.core.utils.progress
from flash import cli
from flash.cli.domains import DOMAINS
from flash.cli.report import write_report
from flash.core.data.datamodule import Split
from flash.core.data.describe import number_summary
from flash.image import ImageClassificationData
from flash.tabular import TabularClassificationData
from flash.text import TextClassificationData
from text.conftest import sentiment_frame
from toy import ToyClassifier, ToyData, toy_data

ARGV = ["finetune", "toy", "--rows", "48", "--epochs", "2", "--quiet"]


@pytest.fixture(autouse=True)
def toy_domain(monkeypatch):
    monkeypatch.setitem(DOMAINS, "toy", TOY)
    yield
    flash.core.utils.progress._QUIET = None


def assert_self_contained(page: str) -> None:
    sources = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert all(source.startswith("data:") for source in sources), sources
    assert "<script" not in page and "<link" not in page


def test_a_run_with_report_writes_one_self_contained_page_with_what_reproduces_it(tmp_path):
    argv = [
        *ARGV,
        "--epochs",
        "1",
        "--strategy",
        "auto",
        "--folds",
        "2",
        "--seed",
        "7",
        "--report",
        "--out",
        "run",
    ]
    assert cli.main(argv) == 0
    out = tmp_path / "run"
    page = (out / "report.html").read_text(encoding="utf-8")
    assert_self_contained(page)
    assert page.count('src="data:image/png;base64,') == 2  # curves, confusion matrix
    assert "plots/curves.png" in page and "plots/confusion_matrix.png" in page
    assert (
        "<pre>flash finetune toy --rows 48 --epochs 2 --quiet --epochs 1 --strategy auto --folds 2 --seed 7 "
        in page
    )
    assert "<tr><th>seed</th><td>7</td></tr>" in page
    for name in ("flash", "torch", "torchvision", "lightning", "transformers", "timm", "python"):
        assert f"<tr><th>{name}</th><td>" in page
    assert f"<tr><th>flash</th><td>{flash.__version__}</td></tr>" in page
    assert f"<tr><th>torch</th><td>{torch.__version__.split('+')[0]}" in page
    assert "<pre>flash finetune --config run/config.json --out NEW_DIR</pre>" in page
    # the data: items and items per class, per split
    data = toy_data(n=48)
    train_counts = np.bincount(data.splits["train"].targets)
    assert '<tr><th>items</th><td class="number">48</td><td class="number">24</td></tr>' in page
    assert f'<tr><th>class neg</th><td class="number">{train_counts[0]}</td>' in page
    # the search's leaderboard, the chosen row marked, as results.json has it
    results = json.loads((out / "results.json").read_text())
    chosen = results["auto"]["chosen"]
    assert len(results["auto"]["leaderboard"]) >= 2
    for row in results["auto"]["leaderboard"]:
        assert f"<td>{row['candidate']}</td>" in page
    assert re.search(rf'<tr class="chosen"><td>{re.escape(chosen)}</td>', page)
    assert page.count('<tr class="chosen">') == 1
    assert results["files"]["report"] == str(Path("run") / "report.html")
    assert json.loads((out / "config.json").read_text())["options"]["report"] is True
    # metrics per epoch, as metrics.csv has them
    assert "<th>val_accuracy</th>" in page and "<h3>Per epoch</h3>" in page


def test_the_report_embeds_every_plot_and_the_calibration_and_force_removes_it(tmp_path):
    extra = [
        "--epochs",
        "1",
        "--calibrate",
        "--coverage",
        "0.8",
        "--lr",
        "auto",
        "--lr-find-steps",
        "8",
        "--report",
        "--out",
        "run",
    ]
    assert cli.main([*ARGV, *extra]) == 0
    page = (tmp_path / "run" / "report.html").read_text(encoding="utf-8")
    assert_self_contained(page)
    plots = sorted(p.name for p in (tmp_path / "run" / "plots").glob("*.png"))
    assert plots == ["confusion_matrix.png", "curves.png", "lr_finder.png", "reliability.png"]
    assert page.count('src="data:image/png;base64,') == len(plots)
    for name in plots:
        assert f"<code>plots/{name}</code>" in page
    assert "Reliability diagram" in page and "Learning-rate finder" in page
    calibration = json.loads((tmp_path / "run" / "results.json").read_text())["calibration"]
    assert "<h2>Calibration</h2>" in page
    assert f"<tr><th>temperature</th><td>{calibration['temperature']:.4g}</td></tr>" in page
    sets = calibration["conformal"]
    assert "<tr><th>prediction sets: coverage asked</th><td>0.8</td></tr>" in page
    assert f"<td>{sets['empirical_coverage']:.4g} ± {sets['empirical_coverage_sd']:.4g}</td>" in page
    assert f"<tr><th>mean set size</th><td>{sets['mean_set_size']:.4g}</td></tr>" in page

    assert cli.main([*ARGV, "--epochs", "1", "--force", "--out", "run"]) == 0  # --report is off by default
    assert not (tmp_path / "run" / "report.html").exists()
    assert "report" not in json.loads((tmp_path / "run" / "results.json").read_text())["files"]


def finished_run(tmp_path, labels):
    """A run dict as ``flash finetune`` holds it when it writes the report (without training)."""
    data = ToyData(
        Split([np.zeros(4, np.float32)] * 3, np.array([0, 1, 1])),
        Split([np.zeros(4, np.float32)] * 2, np.array([1, 1])),
        labels=labels,
        num_workers=0,
    )
    history = [{"epoch": 0, "train_loss": 0.7, "val_loss": 0.69, "val_accuracy": 0.5}]
    return {
        "options": {"backbone": "toy<x>", "strategy": "no_freeze", "lr": 0.01, "epochs": 1, "seed": 3},
        "task": ToyClassifier(num_classes=len(labels)),
        "data": data,
        "history": history,
        "files": {"config": tmp_path / "config.json"},
        "wall_time_s": 1.5,
    }


def test_user_strings_are_escaped(tmp_path):
    run = finished_run(tmp_path, ["<b>", "a&b"])
    path = write_report(tmp_path / "report.html", run, argv=["finetune", "toy", "--out", "<script>"])
    page = path.read_text(encoding="utf-8")
    assert "<b>" not in page  # the class name is escaped
    assert "class &lt;b&gt;" in page and "class a&amp;b" in page
    assert '<td class="number">1</td><td class="number">0</td>' in page  # <b>: 1 train, 0 val
    assert "toy&lt;x&gt;" in page and "&lt;script&gt;" in page and "<script" not in page
    assert_self_contained(page)


def test_write_report_checks_its_arguments(tmp_path):
    run = finished_run(tmp_path, ["a", "b"])
    with pytest.raises(ValueError, match=r"name it \*\.html"):
        write_report(tmp_path / "report.txt", run)
    with pytest.raises(FileNotFoundError, match="create it first"):
        write_report(tmp_path / "nowhere" / "report.html", run)
    with pytest.raises(ValueError, match="run lacks task, data"):
        write_report(tmp_path / "report.html", {"options": {}})


# -- DataModule.describe() --------------------------------------------------------------------------
def test_describe_is_empty_for_data_without_its_own_statistics():
    assert toy_data(n=8).describe() == {}


def test_image_describe_reads_sizes_from_headers_and_array_shapes_and_skips_unreadable_files(tmp_path):
    files = []
    for i, size in enumerate([(40, 30), (50, 20), (64, 48)]):
        files.append(tmp_path / f"{i}.png")
        colour_image(COLOURS["red"], size, seed=i).save(files[-1])
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    data = ImageClassificationData.from_files([*files, broken], ["a", "b", "a", "b"], on_bad_image="skip")
    described = data.describe()
    assert described["image width"] == {"min": 40, "median": 50, "max": 64}
    assert described["image height"] == {"min": 20, "median": 30, "max": 48}
    assert described["images sized"] == "3 sampled of 4 training images"

    images = np.zeros((3, 12, 20, 3), np.uint8)
    assert ImageClassificationData.from_numpy(images, ["a", "b", "a"]).describe()["image width"]["max"] == 20
    tensors = torch.zeros(3, 3, 12, 20)
    assert (
        ImageClassificationData.from_tensors(tensors, torch.tensor([0, 1, 0])).describe()["image height"][
            "min"
        ]
        == 12
    )


def test_image_describe_samples_at_most_its_limit(tmp_path, monkeypatch):
    images = np.zeros((9, 8, 8, 3), np.uint8)
    data = ImageClassificationData.from_numpy(images, ["a", "b", "c"] * 3)
    monkeypatch.setattr(data, "describe_limit", 4)
    assert data.describe()["images sized"] == "4 sampled of 9 training images"


def test_text_describe_counts_words_of_the_training_texts():
    frame = sentiment_frame()
    data = TextClassificationData.from_data_frame("sentence", "label", train_data_frame=frame)
    words = [len(text.split()) for text in frame["sentence"]]
    described = data.describe()
    assert described["texts"] == len(frame)
    assert described["words per text"]["min"] == min(words) == 2
    assert described["words per text"]["max"] == max(words)
    assert described["words per text"]["median"] == np.median(words)
    assert described["words per text"]["p95"] == pytest.approx(np.percentile(words, 95), abs=1e-4)


def test_tabular_describe_gives_rows_columns_and_missing_values_of_the_training_rows():
    table = make_table(n=40)
    fields = {"categorical_fields": ["color"], "numerical_fields": ["age", "fare"], "target_fields": "label"}
    data = TabularClassificationData.from_data_frame(
        **fields, train_data_frame=table.iloc[:30], val_data_frame=table.iloc[30:]
    )
    described = data.describe()
    assert described["rows"] == {"train": 30, "val": 10}
    assert described["numerical columns"] == ["age", "fare"]
    assert described["categorical columns"] == ["color"]
    assert described["missing (fraction of training rows)"] == {
        "age": round(2 / 30, 4),  # rows 3 and 11
        "fare": 0.0,
        "color": round(1 / 30, 4),  # row 5
        "label": 0.0,
    }


def test_number_summary():
    assert number_summary([3, 1, 2]) == {"min": 1, "median": 2, "max": 3}
    assert number_summary(range(1, 101), (50, 95)) == {"min": 1, "median": 50.5, "p95": 95.05, "max": 100}
    with pytest.raises(ValueError, match="at least one value"):
        number_summary([])
    with pytest.raises(ValueError, match="finite"):
        number_summary([1.0, float("nan")])
    with pytest.raises(ValueError, match="outside"):
        number_summary([1], (101,))


def test_the_report_shows_the_domain_statistics(tmp_path):
    run = finished_run(tmp_path, ["a", "b"])
    table = make_table(n=20)
    run["data"] = TabularClassificationData.from_data_frame(
        categorical_fields=["color"], numerical_fields=["age"], target_fields="label", train_data_frame=table
    )
    page = write_report(tmp_path / "report.html", run).read_text(encoding="utf-8")
    assert "<h3>TabularClassificationData</h3>" in page
    assert "<th>missing (fraction of training rows)</th>" in page and "<th>age</th><td>0.1</td>" in page
