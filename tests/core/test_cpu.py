"""glibc keeps freed activation-sized blocks for reuse while ``reuse_freed_memory`` is on, and
gives them back (and stops keeping them) once the run that turned it on ends."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from image_fixtures import make_class_folders

import flash
import flash.core.utils.cpu as cpu
from flash.image import ImageClassificationData, ImageClassifier

PROBE = """
import json
import numpy as np
from flash.core.utils.cpu import freed_memory_reused, release_freed_memory, reuse_freed_memory

def resident_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20

def churn():
    block = np.ones(200 * 2**20, dtype=np.uint8)  # 200 MiB, every page touched
    del block
    return resident_mb()

readings = {"default": churn()}
if reuse_freed_memory():
    assert reuse_freed_memory()  # calling it again changes nothing
    readings["reusing"] = churn()
    assert release_freed_memory() and not release_freed_memory()
    readings["released"] = resident_mb()
    readings["after"] = churn()
    with freed_memory_reused() as on:
        assert on
        readings["in_block"] = churn()
    readings["after_block"] = churn()
print(json.dumps(readings))
"""


def _probe(**env: str) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, env={**os.environ, **env}
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator settings")
def test_freed_blocks_stay_in_the_process_only_while_asked():
    mb = _probe()
    kept = {name: value - mb["default"] for name, value in mb.items()}
    assert kept["reusing"] > 150  # by default the 200 MiB go back to the kernel at once
    assert kept["released"] < 50  # the end of the run gives them back ...
    assert kept["after"] < 50  # ... and later frees go back at once again
    assert kept["in_block"] > 150 and kept["after_block"] < 50


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator settings")
def test_a_process_with_its_own_allocator_settings_is_left_alone():
    assert list(_probe(MALLOC_TRIM_THRESHOLD_=str(2**20))) == ["default"]  # reuse_freed_memory() declined


@pytest.fixture
def tiny_images(tmp_path):
    root = make_class_folders(tmp_path / "images", per_class=2)
    return ImageClassificationData.from_folders(
        train_folder=root / "train", val_folder=root / "val", batch_size=2, image_size=32, num_workers=0
    )


TRAINER_ARGS = {"enable_progress_bar": False, "enable_model_summary": False, "logger": False}


def test_an_image_fit_reuses_freed_memory_only_while_it_runs(tiny_images, monkeypatch):
    from lightning.pytorch.callbacks import Callback

    calls = []
    monkeypatch.setattr(cpu, "reuse_freed_memory", lambda: calls.append("reuse") or True)
    monkeypatch.setattr(cpu, "release_freed_memory", lambda: calls.append("release") or True)

    class Watch(Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            calls.append("training")

    task = ImageClassifier(num_classes=2, pretrained=False)
    flash.Trainer(max_epochs=1, callbacks=[Watch()], **TRAINER_ARGS).finetune(task, tiny_images, "freeze")
    assert calls == ["reuse", "training", "release"]


def test_a_fit_that_fails_still_ends_the_setting(tiny_images, monkeypatch):
    calls = []
    monkeypatch.setattr(cpu, "reuse_freed_memory", lambda: calls.append("reuse") or True)
    monkeypatch.setattr(cpu, "release_freed_memory", lambda: calls.append("release") or True)

    class Failing(ImageClassifier):
        def training_step(self, batch, batch_idx):
            raise ArithmeticError("boom")

    with pytest.raises(ArithmeticError, match="boom"):
        flash.Trainer(max_epochs=1, **TRAINER_ARGS).fit(Failing(num_classes=2, pretrained=False), tiny_images)
    assert calls == ["reuse", "release"]
