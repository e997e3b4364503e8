"""The main job: the finetuning page's example on scikit-learn's digits, offline."""

from __future__ import annotations

import pytest

from flash.image import ImageClassifier
from flash.image.demo import render_digits, run_demo


def test_digits_are_written_once_as_a_stratified_split(tmp_path):
    root = render_digits(tmp_path / "digits")
    counts = {
        split: {d.name: len(list(d.glob("*.png"))) for d in (root / split).iterdir()}
        for split in ("train", "val")
    }
    assert sorted(counts["train"]) == sorted(counts["val"]) == [str(d) for d in range(10)]
    assert sum(counts["train"].values()) + sum(counts["val"].values()) == 1797
    for digit in counts["val"]:
        share = counts["val"][digit] / (counts["val"][digit] + counts["train"][digit])
        assert 0.25 < share < 0.35
    first = sorted((root / "train" / "3").glob("*.png"))[0]
    stamp = first.stat().st_mtime_ns
    render_digits(tmp_path / "digits")
    assert first.stat().st_mtime_ns == stamp  # already there: nothing rewritten


def test_a_data_folder_without_train_and_val_is_named(tmp_path):
    (tmp_path / "photos" / "train").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="has no val/ folder"):
        run_demo(tmp_path / "photos", tmp_path / "out", verbose=False)


@pytest.mark.slow
def test_the_demo_finetunes_the_digits_and_saves_a_checkpoint_that_predicts(tmp_path, capsys):
    result = run_demo(out=tmp_path / "demo", epochs=1, num_predictions=3)  # 64 px crops
    printed = capsys.readouterr().out
    assert "Validation accuracy" in printed and "predicted" in printed
    assert result["val_accuracy"] > 0.5  # ten classes: chance is 0.1
    restored = ImageClassifier.load_from_checkpoint(result["checkpoint"])
    files = [file for file, _, _ in result["predictions"]]
    assert restored.predict(files) == [label for _, _, label in result["predictions"]]
