"""Choosing a finetuning setting on small data: every candidate of ``strategy="auto"`` cross-validated
on the same folds, what ``auto`` picks, what that costs, and how calibrated its probabilities are.

    python benchmarks/choosing.py DATA [--folds 5] [--repeats 2] [--seed 0] [--epochs N]
        [--image-size N] [--hflip P] [--rows N] [--threads N]

DATA is one of:

- ``digits``: scikit-learn's handwritten digits rendered as image files
  (:func:`flash.image.demo.render_digits`), 64 px, no flips, 6 epochs (the far-domain benchmark's
  settings);
- a folder of images, ``train/<class>/`` and ``val/<class>/`` (the ants and bees: 224 px, flips,
  4 epochs);
- a folder holding ``train.csv`` with ``sentence`` and ``label`` columns (SST-2; ``--rows`` keeps
  the first N training rows, default 4,000; 3 epochs);
- a CSV file with Titanic's columns (``Survived`` from ``Sex``, ``Embarked``, ``Pclass``, ``Age``,
  ``SibSp``, ``Parch``, ``Fare``; 20 epochs).

The training and validation items are pooled and ``trainer.finetune(task, data, strategy=("auto",
{"folds": F, "repeats": R, "seed": S}))`` runs on them with the task's defaults: each candidate is
cross-validated on the same ``F x R`` folds (paired), the cheapest within one standard error of the
best mean is chosen and trained on all the items. The table has, per candidate, the mean ± sample
standard deviation of the task's monitored metric over the folds, its standard error, the paired
difference from the best, the validation accuracy over the folds where the metric is another (the
table's loss), and the seconds of its cross-validation; then ``auto``'s row: the chosen
candidate's folds, and the seconds of the whole search plus the final training, also as a multiple
of the best candidate's cross-validation.

Calibration: the chosen candidate's out-of-fold logits, expected calibration error (15 bins) of
their softmax before and after temperature scaling, the temperature of each fold fitted on the other
folds' out-of-fold logits (never on the items it is measured on), and the ECE a perfectly
calibrated model shows on this many items (targets drawn from the scaled probabilities): ECE is
biased upwards on few items; mean over the repeats.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import far_domain
from benchmarks.common import print_table
from benchmarks.tabular_cpu import TITANIC_CATEGORICAL, TITANIC_NUMERICAL

KIND_DEFAULTS = {  # epochs, image size, flip probability
    "digits": (far_domain.EPOCHS, far_domain.IMAGE_SIZE, 0.0),
    "images": (4, 224, 0.5),
    "text": (3, None, None),
    "table": (20, None, None),
}


def kind_of(data: str) -> str:
    """Which kind of data ``data`` names (see the module's docstring)."""
    if data == "digits":
        return "digits"
    path = Path(data)
    if path.is_file() and path.suffix == ".csv":
        return "table"
    if (path / "train.csv").is_file():
        return "text"
    if (path / "train").is_dir() and (path / "val").is_dir():
        return "images"
    raise ValueError(
        f"{data} is neither 'digits', a folder with train/ and val/ image folders, a folder with "
        "train.csv, nor a CSV file."
    )


def build(kind: str, data: str, args: argparse.Namespace, scratch: str) -> tuple[Any, Any]:
    """The pooled data module (training and validation items together, no validation split) and a
    task with its defaults."""
    import pandas as pd

    _, image_size, hflip = KIND_DEFAULTS[kind]
    if kind in ("digits", "images"):
        from flash.image import ImageClassificationData, ImageClassifier

        folder = data
        if kind == "digits":
            from flash.image.demo import render_digits

            folder = str(render_digits(Path(scratch) / "digits"))
        module = ImageClassificationData.from_folders(
            train_folder=f"{folder}/train",
            val_folder=f"{folder}/val",
            image_size=args.image_size or image_size,
            hflip=hflip if args.hflip is None else args.hflip,
            batch_size=far_domain.BATCH_SIZE,
            seed=args.seed,
        )
        task = ImageClassifier(num_classes=module.num_classes)
    elif kind == "text":
        from flash.text import TextClassificationData, TextClassifier

        frame = pd.read_csv(Path(data, "train.csv")).head(args.rows)
        module = TextClassificationData.from_data_frame(
            "sentence", "label", train_data_frame=frame, seed=args.seed
        )
        task = TextClassifier(num_classes=module.num_classes)
    else:
        from flash.tabular import TabularClassificationData, TabularClassifier

        frame = pd.read_csv(data)[[*TITANIC_CATEGORICAL, *TITANIC_NUMERICAL, "Survived"]]
        module = TabularClassificationData.from_data_frame(
            categorical_fields=TITANIC_CATEGORICAL,
            numerical_fields=TITANIC_NUMERICAL,
            target_fields="Survived",
            train_data_frame=frame,
            seed=args.seed,
        )
        task = TabularClassifier.from_data(module)
    if module.splits.get("val") is None:
        return module, task
    items = len(module.pooled_training())
    return module.fold(list(range(items)), []).without_validation(), task


def cross_fitted_ece(
    outputs: np.ndarray, targets: np.ndarray, fold_of: np.ndarray, seed: int
) -> tuple[float, float, float]:
    """ECE of the out-of-fold softmax before and after temperature scaling, each fold's temperature
    fitted on the other folds' outputs, and the ECE's noise floor at this many items: its mean when
    the targets are drawn from the scaled probabilities themselves (perfect calibration, 100
    draws); means over the repeats."""
    import torch

    from flash.core.model.calibration import expected_calibration_error, fit_temperature

    rng = np.random.default_rng(seed)
    before, after, floor = [], [], []
    targets = np.asarray(targets, dtype=np.int64)
    for logits, folds in zip(outputs, fold_of):
        scaled = np.empty_like(logits)
        for fold in np.unique(folds):
            mine = folds == fold
            temperature = fit_temperature(logits[~mine], targets[~mine])
            scaled[mine] = logits[mine] / temperature
        before.append(expected_calibration_error(torch.softmax(torch.from_numpy(logits), -1), targets))
        probabilities = torch.softmax(torch.from_numpy(scaled).double(), -1)
        after.append(expected_calibration_error(probabilities, targets))
        cumulative = probabilities.numpy().cumsum(axis=1)
        for _ in range(100):
            drawn = (rng.random((len(targets), 1)) > cumulative).sum(axis=1).clip(max=cumulative.shape[1] - 1)
            floor.append(expected_calibration_error(probabilities, drawn))
    return float(np.mean(before)), float(np.mean(after)), float(np.mean(floor))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", help="'digits', an image folder, a folder with train.csv, or a CSV file")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=0, help="default: the data kind's (see above)")
    parser.add_argument("--image-size", type=int, default=0, help="images: default the kind's")
    parser.add_argument("--hflip", type=float, default=None, help="images: default the kind's")
    parser.add_argument("--rows", type=int, default=4000, help="text: the first N training rows")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's)")
    args = parser.parse_args(argv)
    try:
        kind = kind_of(args.data)
    except ValueError as error:
        parser.error(str(error))
    data = args.data if kind == "digits" else str(Path(args.data).resolve())
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    import lightning.pytorch as pl

    import flash

    epochs = args.epochs or KIND_DEFAULTS[kind][0]
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; {kind}, {epochs} epochs, "
          f"{args.folds} folds x {args.repeats} repeats, seed {args.seed}", flush=True)  # fmt: skip
    pl.seed_everything(args.seed, verbose=False)
    with tempfile.TemporaryDirectory() as scratch:
        pooled, task = build(kind, data, args, scratch)
        trainer = flash.Trainer(
            max_epochs=epochs, enable_progress_bar=False, enable_model_summary=False, default_root_dir=scratch
        )
        began = time.perf_counter()
        search = trainer.finetune(
            task,
            pooled,
            strategy=("auto", {"folds": args.folds, "repeats": args.repeats, "seed": args.seed}),
        )
        total = time.perf_counter() - began
    print(f"{len(pooled.pooled_training())} pooled items; metric {search.monitor} ({search.mode})")
    accuracy = "val_accuracy" if search.monitor != "val_accuracy" else ""
    accuracy_column = f"{accuracy} (mean ± sd)"

    def row_of(row: dict[str, Any], name: str, seconds: float) -> dict[str, Any]:
        cv = search.results[row["candidate"]]
        shown = {
            "candidate": name,
            "mean ± sd": f"{row['mean']:.4f} ± {row['std']:.4f}",
            "standard error": f"{row['standard_error']:.4f}",
            "vs best (paired)": f"{row['difference']:+.4f} ± {row['difference_std']:.4f}",
            "cv seconds": f"{seconds:.1f}",
        }
        if accuracy and accuracy in cv.metrics:
            shown[accuracy_column] = f"{cv.mean(accuracy):.4f} ± {cv.std(accuracy):.4f}"
        return shown

    rows = [row_of(row, row["candidate"], row["seconds"]) for row in search.leaderboard]
    chosen = next(row for row in search.leaderboard if row["chosen"])
    best = next(row for row in search.leaderboard if row["difference"] == 0)
    rows.append(row_of(chosen, f"auto (chose {chosen['candidate']})", total))
    columns = ["candidate", "mean ± sd", "standard error", "vs best (paired)", "cv seconds"]
    if accuracy:
        columns.insert(4, accuracy_column)
    print()
    print_table(rows, columns)
    sign = 1 if search.mode == "max" else -1
    within = sign * chosen["mean"] >= sign * best["mean"] - best["standard_error"]
    print(
        f"\nauto's folds {'are' if within else 'are NOT'} within one standard error of the best "
        f"candidate's ({best['candidate']}); its search and final training took "
        f"{total / best['seconds']:.2f}x the best candidate's cross-validation ({total:.0f} s)."
    )
    cv = search.results[chosen["candidate"]]
    if cv.outputs.ndim == 3 and not getattr(task, "multi_label", False):
        ece_before, ece_after, ece_floor = cross_fitted_ece(cv.outputs, cv.targets, cv.fold_of, args.seed)
        print(
            f"calibration of {chosen['candidate']}'s out-of-fold probabilities: ECE {ece_before:.4f} "
            f"before, {ece_after:.4f} after temperature scaling (each fold's temperature fitted on "
            f"the other folds); a perfectly calibrated model would show {ece_floor:.4f} on this many "
            "items (targets drawn from the scaled probabilities)"
        )


if __name__ == "__main__":
    main()
