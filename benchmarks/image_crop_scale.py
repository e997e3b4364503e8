"""How the training crops' area range changes the finetuned image model's accuracy, over seeds.

    python benchmarks/image_crop_scale.py DATA_DIR [--scales 0.6,0.8,0.9] [--seeds 0,1,2,3,4]
    python benchmarks/image_crop_scale.py --digits [--image-size 64] [--seeds 0,1,2]

Runs the finetuning page's recipe (``ImageClassifier`` defaults, batch 32, 4 epochs,
``FreezeUnfreeze(unfreeze_epoch=2)``) once per crop scale ``(low, 1)`` and seed, each in its own
fresh process, and prints the final validation accuracy of every run and the mean per scale.
``--digits`` uses scikit-learn's handwritten digits rendered as PNG files (no flips: a mirrored
digit is another digit), a domain far from the ImageNet photos the backbone was trained on.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import print_table, run_isolated

BATCH_SIZE = 32
EPOCHS = 4
UNFREEZE_EPOCH = 2


def finetune_once(data_dir: str, seed: int, low: float, image_size: int | None, hflip: float) -> float:
    """Final validation accuracy of one seeded run with training crops of ``(low, 1)`` of the area."""
    import lightning.pytorch as pl

    import flash
    from flash.core.training.finetuning import FreezeUnfreeze
    from flash.image import ImageClassificationData, ImageClassifier

    pl.seed_everything(seed, verbose=False)
    data = ImageClassificationData.from_folders(
        train_folder=f"{data_dir}/train",
        val_folder=f"{data_dir}/val",
        batch_size=BATCH_SIZE,
        image_size=image_size,
        hflip=hflip,
        crop_scale=(low, 1.0),
        seed=seed,  # the shuffle and the crops are drawn from the data module's seed
    )
    task = ImageClassifier(num_classes=data.num_classes)
    with tempfile.TemporaryDirectory() as out:
        trainer = flash.Trainer(
            max_epochs=EPOCHS, enable_progress_bar=False, enable_model_summary=False, default_root_dir=out
        )
        trainer.finetune(task, data, strategy=FreezeUnfreeze(unfreeze_epoch=UNFREEZE_EPOCH))
    return float(trainer.history[-1]["val_accuracy"])


def _numbers(text: str, kind: type) -> list[Any]:
    return [kind(part) for part in text.split(",") if part.strip()]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_dir", nargs="?", help="folder with train/ and val/ class folders")
    parser.add_argument("--digits", action="store_true", help="use scikit-learn's digits instead")
    parser.add_argument("--scales", default="0.6,0.8,0.9", help="lower ends of the crop area range")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument(
        "--image-size", type=int, default=None, help="default: the backbone's (224); 64 with --digits"
    )
    args = parser.parse_args(argv)
    if args.digits == (args.data_dir is not None):
        parser.error("pass either DATA_DIR or --digits")
    scales, seeds = _numbers(args.scales, float), _numbers(args.seeds, int)
    if not scales or not seeds or not all(0 < s <= 1 for s in scales):
        parser.error("--scales takes numbers in (0, 1] and --seeds whole numbers, comma-separated")

    with tempfile.TemporaryDirectory() as scratch:
        if args.digits:
            from flash.image.demo import render_digits

            data_dir, image_size, hflip = (
                str(render_digits(Path(scratch) / "digits")),
                args.image_size or 64,
                0.0,
            )
        else:
            data_dir, image_size, hflip = str(Path(args.data_dir).resolve()), args.image_size, 0.5
            for split in ("train", "val"):
                if not Path(data_dir, split).is_dir():
                    parser.error(f"{data_dir} has no {split}/ folder.")
        rows = []
        for low in scales:
            accuracies = []
            for seed in seeds:
                accuracy, _, _ = run_isolated(finetune_once, data_dir, seed, low, image_size, hflip)
                accuracies.append(accuracy)
                print(f"crops ({low}, 1), seed {seed}: {accuracy:.3f}", flush=True)
            rows.append(
                {
                    "crop area": f"({low}, 1)",
                    "final val accuracy per seed": " ".join(f"{a:.3f}" for a in accuracies),
                    "mean": round(sum(accuracies) / len(accuracies), 3),
                }
            )
    print()
    print_table(rows, ["crop area", "final val accuracy per seed", "mean"])


if __name__ == "__main__":
    main()
