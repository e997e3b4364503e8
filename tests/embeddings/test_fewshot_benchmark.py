"""The parts of benchmarks/fewshot_image.py that decide its numbers without a network: the files
it reads, the K-shot draws, the nearest-neighbour vote, the prototype rule and its arguments."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from embedding_fixtures import colour_image
from tests.scripts import loaded_script

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "fewshot_image.py"


@pytest.fixture(scope="module")
def bench():
    yield from loaded_script("fewshot_image")


def _unit(degrees: list[float]) -> np.ndarray:
    radians = np.deg2rad(degrees)
    return np.stack([np.cos(radians), np.sin(radians)], axis=1).astype(np.float32)


def test_the_splits_are_the_image_files_from_folders_reads(bench, tmp_path):
    for label, count in (("bees", 2), ("ants", 3)):
        for i in range(count):
            (tmp_path / "train" / label).mkdir(parents=True, exist_ok=True)
            colour_image((200, 40, 40), seed=i).save(tmp_path / "train" / label / f"{i}.png")
    (tmp_path / "train" / "ants" / "notes.txt").write_text("not an image")
    (tmp_path / "train" / ".hidden").mkdir()
    files, targets, classes = bench.list_split(str(tmp_path), "train")
    assert classes == ["ants", "bees"]
    assert targets == [0, 0, 0, 1, 1]
    assert [Path(f).name for f in files] == ["0.png", "1.png", "2.png", "0.png", "1.png"]


def test_shots_are_k_per_class_the_same_for_a_seed_and_refused_beyond_a_class(bench):
    targets = [0] * 10 + [1] * 6
    chosen = bench.draw_shots(targets, 5, seed=3)
    assert sorted(targets[i] for i in chosen) == [0] * 5 + [1] * 5
    assert len(set(chosen)) == 10
    assert chosen == bench.draw_shots(targets, 5, seed=3)
    assert any(bench.draw_shots(targets, 5, seed=s) != chosen for s in range(4))
    with pytest.raises(ValueError, match="class 1 has 6 training images, fewer than 7 shots"):
        bench.draw_shots(targets, 7, seed=0)


def test_nearest_neighbours_vote_by_majority_and_break_ties_by_similarity(bench):
    # class 0 around 0 degrees, class 1 around 90; the query at 40 degrees has a class-1 item nearest
    train = _unit([0, 10, 20, 45, 90])
    train_targets = [0, 0, 0, 1, 1]
    val = _unit([40, 85])
    assert bench.knn_accuracy(train, train_targets, val, [1, 1], k=1) == 1.0
    assert bench.knn_accuracy(train, train_targets, val, [0, 1], k=3) == 1.0  # 45(1), 20(0), 10(0) -> 0
    # k=2 at 40 degrees: one vote each (45 and 20), class 1's neighbour is nearer
    assert bench.knn_accuracy(train, train_targets, val[:1], [1], k=2) == 1.0


def test_prototype_is_the_nearest_normalised_class_mean(bench):
    train = _unit([0, 30, 80, 100])
    targets = np.array([3, 3, 7, 7])
    predicted = bench.prototype(train, targets, _unit([10, 50, 60, 95]))
    assert predicted.tolist() == [3, 3, 7, 7]  # the means sit at 15 and 90 degrees


def test_logistic_regression_separates_two_shots(bench):
    predicted = bench.logistic_regression(_unit([0, 90]), np.array([0, 1]), _unit([5, 85]))
    assert predicted.tolist() == [0, 1]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--shots", "0"], "--shots needs positive integers"),
        (["--seeds", "a,b"], "comma-separated integers"),
        (["--embedder-epochs", "0"], "must be at least 1"),
    ],
)
def test_bad_arguments_are_named(bench, tmp_path, capsys, argv, message):
    for split in ("train", "val"):
        (tmp_path / split).mkdir()
    with pytest.raises(SystemExit) as exit_info:
        bench.main([str(tmp_path), *argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_a_missing_split_is_named(bench, tmp_path, capsys):
    (tmp_path / "train").mkdir()
    with pytest.raises(SystemExit):
        bench.main([str(tmp_path)])
    assert "has no val/ folder" in capsys.readouterr().err
