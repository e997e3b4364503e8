"""The CPU side of benchmarks/image_gpu.py: arguments, the table, the no-CUDA message, the runner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from gpu_test_images import write_image
from tests.scripts import loaded_script

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "image_gpu.py"


@pytest.fixture(scope="module")
def bench():
    yield from loaded_script("image_gpu")


@pytest.fixture
def data_dir(tmp_path) -> Path:
    for label in ("ants", "bees"):
        for i in range(3):
            write_image(tmp_path / "data" / "train" / label / f"{i}.jpg", 40 + i, 52, seed=i)
    return tmp_path / "data"


TINY = ["--device", "cpu", "--images", "6", "--batch-size", "2", "--image-size", "32", "--warmup", "1"]
TINY += ["--workers", "0", "--pil-workers", "0"]


def test_defaults_match_the_issue(bench, data_dir):
    settings, _ = bench.parse_args([str(data_dir)])
    assert (settings.images, settings.batch_size, settings.image_size) == (20_000, 256, 224)
    assert settings.device == "cuda" and settings.low_precision and not settings.compile
    assert settings.time_limit < 360  # the whole run fits in six minutes
    assert settings.measured_batches == 20_000 // 256 - 10


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--images", "500"], "needs at least --warmup"),
        (["--batch-size", "0"], "must be >= 1"),
        (["--time-limit", "10"], "more than 30 seconds"),
        (["--device", "tpu"], "invalid choice"),
    ],
)
def test_bad_arguments_are_named(bench, data_dir, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        bench.parse_args([str(data_dir), *argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_data_folder_layouts(bench, data_dir, tmp_path, capsys):
    paths, targets, classes = bench.find_images(str(data_dir))
    assert classes == ["ants", "bees"] and targets == [0, 0, 0, 1, 1, 1] and len(paths) == 6
    assert bench.find_images(str(data_dir / "train"))[2] == ["ants", "bees"]  # class folders directly
    (tmp_path / "one" / "ants").mkdir(parents=True)
    with pytest.raises(SystemExit):
        bench.parse_args([str(tmp_path / "one")])
    assert "one sub-folder of images per class" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.parse_args([str(tmp_path / "missing")])
    assert "is not a folder" in capsys.readouterr().err


def test_repeating_files_to_an_epoch(bench):
    paths, targets = bench.repeat_to(["a", "b", "c"], [0, 1, 1], 7)
    assert paths == ["a", "b", "c", "a", "b", "c", "a"] and targets == [0, 1, 1, 0, 1, 1, 0]


def test_children_do_not_write_the_table(bench):
    argv = ["data", "--out", "t.md", "--images", "10", "--out=x.md"]
    assert bench._without_option(argv, "--out") == ["data", "--images", "10"]


def test_the_table_has_ratios_memory_and_failures(bench, data_dir):
    results = {
        "ceiling": {"images_per_s": 5000.0, "peak_gpu_mib": 9000.0},
        "flash_gpu": {"images_per_s": 4600.0, "peak_gpu_mib": 9500.0, "note": "7 reader workers"},
        "pil_loader": {"error": "timed out after 120 s"},
    }
    settings, _ = bench.parse_args([str(data_dir)])
    header = bench.table_header(settings, {"device_name": "NVIDIA H100", "torch": "2.x", "cpus": 16}, 245)
    table = bench.format_table(results, header)
    lines = table.splitlines()
    assert lines[0].startswith("EfficientNet-Lite0 finetuning throughput on NVIDIA H100: 224 px, batch 256")
    rows = {
        line.split("|")[1].strip()[:3]: [c.strip() for c in line.split("|")[2:-1]]
        for line in lines
        if "| (" in line
    }
    assert rows["(1)"][:3] == ["5,000", "1.00", "9,000"]
    assert rows["(2)"] == ["4,600", "0.92", "9,500", "7 reader workers"]
    assert rows["(3)"][:3] == ["-", "-", "-"] and "failed: timed out after 120 s" in rows["(3)"][3]
    no_ceiling = bench.format_table({"flash_gpu": results["flash_gpu"]}, [])
    assert "| 4,600    | -" in no_ceiling and "failed: not run" in no_ceiling


def test_without_cuda_it_stops_at_once_and_says_why(bench, data_dir, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert bench.main([str(data_dir), "--out", "table.md"]) == 2
    assert "no CUDA device" in capsys.readouterr().err
    assert not Path("table.md").exists()


def test_a_contender_without_cuda_reports_the_reason(bench, data_dir, monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    settings, _ = bench.parse_args([str(data_dir)])
    result_file = tmp_path / "result.json"
    assert bench.contender_main("ceiling", settings, str(result_file), 10.0) == 1
    assert "no CUDA device" in json.loads(result_file.read_text())["error"]


def test_a_contender_over_its_time_is_killed(bench, data_dir):
    result = bench.run_in_subprocess("ceiling", [str(data_dir), *TINY], timeout=0.5)
    assert result == {"error": "timed out after 0 s"} or "timed out" in result["error"]


@pytest.mark.slow
def test_cpu_self_test_runs_every_row_and_writes_the_table(bench, data_dir, tmp_path):
    out = tmp_path / "table.md"
    assert bench.main([str(data_dir), *TINY, "--out", str(out)], isolate=False) == 0
    table = out.read_text()
    assert "float32" in table and "CPU (self-test" in table
    rows = [line for line in table.splitlines() if line.startswith("| (")]
    assert len(rows) == 3 and not any("failed" in row for row in rows)
    assert rows[0].split("|")[3].strip() == "1.00"


@pytest.mark.slow
def test_a_contender_reports_from_its_own_process(bench, data_dir):
    """The parent reads the child's JSON result: a tiny GPU run, or (without CUDA) the reason it failed."""
    tiny_on_cuda = [arg for arg in TINY if arg not in ("--device", "cpu")]
    result = bench.run_in_subprocess("ceiling", [str(data_dir), *tiny_on_cuda], timeout=300)
    if torch.cuda.is_available():
        assert result["images_per_s"] > 0 and result["peak_gpu_mib"] > 0
    else:
        assert "no CUDA device" in result["error"]
