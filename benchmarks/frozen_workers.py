"""Epoch time of a frozen backbone with cached features, with 0 and with 2 loader workers.

    python benchmarks/frozen_workers.py PATH/TO/hymenoptera_data --images 60 --epochs 3

Takes the first ``--images`` training images (half per class) of a folder of class folders,
finetunes the default ImageClassifier with ``strategy="freeze"`` for ``--epochs`` epochs, and
prints each epoch's wall time and how many images the loaders decoded and cropped. While the
backbone is frozen its features are computed once (in the first epoch), so later epochs should
cost almost nothing; before the datasets' pixel switch lived in shared memory, persistent
workers kept decoding every image every epoch.
"""

from __future__ import annotations

import argparse
import multiprocessing
import time
from pathlib import Path

from lightning.pytorch.callbacks import Callback

import flash
from flash.image import ImageClassificationData, ImageClassifier
from flash.image.transforms import ImagePipeline


class EpochTimes(Callback):
    def __init__(self) -> None:
        self.times: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.times.append(time.perf_counter() - self._start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="a folder with train/<class>/<image>")
    parser.add_argument("--images", type=int, default=60)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    classes = sorted(p for p in (args.folder / "train").iterdir() if p.is_dir())
    files, targets = [], []
    for folder in classes:
        images = sorted(folder.iterdir())[: args.images // len(classes)]
        files += [str(p) for p in images]
        targets += [folder.name] * len(images)
    made = multiprocessing.get_context("fork").Value("i", 0)
    original = ImagePipeline.__call__

    def counted(self, array):
        with made.get_lock():
            made.value += 1
        return original(self, array)

    ImagePipeline.__call__ = counted  # inherited by the forked loader workers
    for workers in (0, 2):
        made.value = 0
        data = ImageClassificationData.from_files(files, targets, num_workers=workers, batch_size=16)
        task = ImageClassifier(num_classes=len(classes))
        times = EpochTimes()
        trainer = flash.Trainer(
            max_epochs=args.epochs, callbacks=[times], logger=False, enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False,
        )  # fmt: skip
        start = time.perf_counter()
        trainer.finetune(task, data, strategy="freeze")
        total = time.perf_counter() - start
        epochs = ", ".join(f"{t:.2f}" for t in times.times)
        print(
            f"num_workers={workers}: epochs {epochs} s (fit {total:.1f} s); "
            f"{made.value} images decoded and cropped for {len(files)} images x {args.epochs} epochs"
        )


if __name__ == "__main__":
    main()
