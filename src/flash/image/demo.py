"""The finetuning page's image example, end to end, with no network and no data of your own.

    python -m flash.image.demo                 # scikit-learn's handwritten digits, as image files
    python -m flash.image.demo --data PATH     # your images: PATH/train/<class>/*, PATH/val/<class>/*

It finetunes the default pretrained backbone (EfficientNet-Lite0, ImageNet weights shipped with
flash's dependencies) with ``FreezeUnfreeze``, prints the validation accuracy of every epoch and a
few predictions, and saves a checkpoint that ``ImageClassifier.load_from_checkpoint`` reads back.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

from flash.core.utils.validation import check_int

DIGITS_IMAGE_SIZE = 64
DIGITS_VAL_FRACTION = 0.3


def render_digits(
    folder: str | os.PathLike, val_fraction: float = DIGITS_VAL_FRACTION, seed: int = 0
) -> Path:
    """Write scikit-learn's 1,797 handwritten digits (8x8, 16 grey levels) as 32x32 PNG files in
    ``folder/train/<digit>/`` and ``folder/val/<digit>/`` (a stratified split). Does nothing if
    they are already there."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    root = Path(folder)
    marker = root / ".complete"
    if marker.is_file():
        return root
    digits = load_digits()
    rng = np.random.default_rng(seed)
    for label in range(10):
        members = np.flatnonzero(digits.target == label)
        rng.shuffle(members)
        n_val = round(len(members) * val_fraction)
        for split, indices in (("val", members[:n_val]), ("train", members[n_val:])):
            out = root / split / str(label)
            out.mkdir(parents=True, exist_ok=True)
            for index in indices:
                pixels = (digits.images[index] * (255 / 16)).round().astype(np.uint8)
                image = Image.fromarray(pixels, mode="L").resize((32, 32), Image.BICUBIC)
                image.save(out / f"{index:04d}.png")
    marker.write_text("scikit-learn digits\n")
    return root


def _check_data_folder(path: str | os.PathLike) -> Path:
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"--data {str(path)!r} is not a folder.")
    missing = [split for split in ("train", "val") if not (root / split).is_dir()]
    if missing:
        raise FileNotFoundError(
            f"--data {str(path)!r} has no {' or '.join(s + '/' for s in missing)} folder; expected "
            "PATH/train/<class>/<image> and PATH/val/<class>/<image>."
        )
    return root


def run_demo(
    data: str | os.PathLike | None = None,
    out: str | os.PathLike = "flash_demo",
    epochs: int | None = None,
    *,
    unfreeze_epoch: int | None = None,
    image_size: int | None = None,
    batch_size: int = 32,
    backbone: str = "efficientnet_lite0",
    num_predictions: int = 5,
    verbose: bool = True,
) -> dict[str, Any]:
    """Finetune an image classifier on ``data`` (default: the digits) and report how it did.

    Args:
        data: a folder with ``train/`` and ``val/`` class folders; ``None`` renders scikit-learn's
            digits into ``out/digits``.
        out: where the digits, logs and the checkpoint go.
        epochs: training epochs (default 4); the backbone is frozen for the first half
            (``unfreeze_epoch``).
        image_size: crop size (default 64 for the digits, the backbone's 224 for your data).
        batch_size: images per step.
        backbone: any image backbone name (the default works offline).
        num_predictions: how many validation images to predict and print.
        verbose: print progress and results.

    Returns:
        ``{"val_accuracy", "history", "checkpoint", "predictions", "data", "labels", "seconds"}``;
        ``predictions`` are ``(file, true class, predicted class)`` triples.
    """
    import lightning.pytorch as pl

    import flash
    from flash.core.training.finetuning import FreezeUnfreeze
    from flash.image import ImageClassificationData, ImageClassifier

    start = time.perf_counter()
    epochs = 4 if epochs is None else epochs
    check_int(epochs, "epochs", 1)
    unfreeze_epoch = max(1, epochs // 2) if unfreeze_epoch is None else unfreeze_epoch
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    say = print if verbose else (lambda *a, **k: None)
    if data is None:
        root = render_digits(out / "digits")
        image_size = image_size or DIGITS_IMAGE_SIZE
        say(f"Data: scikit-learn's handwritten digits as PNG files in {root}")
        hflip = 0.0  # a mirrored digit is not the same digit
    else:
        root = _check_data_folder(data)
        say(f"Data: {root}")
        hflip = 0.5

    pl.seed_everything(0, verbose=False)
    datamodule = ImageClassificationData.from_folders(
        train_folder=root / "train",
        val_folder=root / "val",
        batch_size=batch_size,
        image_size=image_size,
        hflip=hflip,
    )
    sizes = {stage: len(split) for stage, split in datamodule.splits.items() if split is not None}
    say(f"{datamodule.num_classes} classes ({', '.join(map(str, datamodule.labels[:10]))}), {sizes}")
    task = ImageClassifier(num_classes=datamodule.num_classes, backbone=backbone)
    trainer = flash.Trainer(
        max_epochs=epochs,
        default_root_dir=str(out),
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    say(f"Finetuning {backbone}: backbone frozen for {unfreeze_epoch} of {epochs} epochs ...")
    trainer.finetune(task, datamodule, strategy=FreezeUnfreeze(unfreeze_epoch=unfreeze_epoch))
    for row in trainer.history:
        say(f"  epoch {int(row['epoch'])}: val_accuracy {row.get('val_accuracy', float('nan')):.3f}")
    checkpoint = out / "image_classifier.ckpt"
    trainer.save_checkpoint(str(checkpoint), weights_only=True)  # for predicting: no optimizer state

    val = datamodule.splits["val"]
    step = max(1, len(val) // max(1, num_predictions))
    chosen = list(range(0, len(val), step))[:num_predictions]
    files = [val.inputs[i] for i in chosen]
    predicted = task.predict(files) if files else []
    predictions = [
        (str(file), str(datamodule.labels[int(val.targets[i])]), str(label))
        for file, i, label in zip(files, chosen, predicted)
    ]
    accuracy = float(trainer.history[-1].get("val_accuracy", float("nan")))
    say(f"Validation accuracy: {accuracy:.3f}")
    for file, truth, label in predictions:
        say(f"  {Path(file).parent.name}/{Path(file).name}: true {truth}, predicted {label}")
    say(f"Checkpoint: {checkpoint}  (ImageClassifier.load_from_checkpoint(path).predict([...]))")
    seconds = time.perf_counter() - start
    say(f"Done in {seconds:.0f} s.")
    return {
        "val_accuracy": accuracy,
        "history": trainer.history,
        "checkpoint": str(checkpoint),
        "predictions": predictions,
        "data": str(root),
        "labels": [str(label) for label in datamodule.labels],
        "seconds": seconds,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m flash.image.demo",
        description="Finetune a pretrained image classifier end to end (default: handwritten digits, offline).",
    )
    parser.add_argument("--data", help="folder with train/ and val/ class folders (default: the digits)")
    parser.add_argument("--out", default="flash_demo", help="output folder (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=4, help="training epochs (default: %(default)s)")
    parser.add_argument(
        "--image-size", type=int, default=None, help="crop size (default: 64 for digits, else 224)"
    )
    parser.add_argument("--batch-size", type=int, default=32, help="images per step (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        run_demo(args.data, args.out, args.epochs, image_size=args.image_size, batch_size=args.batch_size)
    except (FileNotFoundError, ValueError) as error:
        parser.exit(2, f"error: {error}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
