"""Every finetuning strategy on a domain far from ImageNet, next to a hand-written loop and a probe.

    python benchmarks/far_domain.py [--strategies no_freeze,freeze,...] [--seeds 0,1,2]
        [--only flash,hand,probe,probe-bn] [--flash-args learning_rate=...,backbone_lr_factor=...]
        [--train-bn auto|true|false]

scikit-learn's handwritten digits rendered as image files (:func:`flash.image.demo.render_digits`:
1,258 training and 539 validation images), 64 px, no flips (a mirrored digit is another digit),
6 epochs, batch 32, the default backbone (EfficientNet-Lite0, the shipped ImageNet weights). Each
run is its own fresh process (:func:`benchmarks.common.run_isolated`), seeded with its seed:

- ``flash <strategy>``: ``ImageClassifier`` and ``ImageClassificationData.from_folders`` with their
  defaults, ``flash.Trainer(max_epochs=6).finetune(task, data, strategy=<strategy>)``; the
  strategies' own defaults (``freeze_unfreeze``: the backbone trains from epoch 3;
  ``unfreeze_milestones``: the top half of its blocks from epoch 2, all of it from epoch 4).
- ``hand-written``: a standard PyTorch recipe on the same backbone: ``ImageFolder`` with
  torchvision's ``RandomResizedCrop(64, scale=(0.8, 1))``, the whole network trained from the first
  step with AdamW (lr 1e-3, weight decay 0.01) under a per-step cosine schedule, BatchNorm in train
  mode.
- ``linear probe``: scikit-learn's ``LogisticRegression`` on the frozen backbone's pooled features
  of centre crops; ``probe-bn`` (not run by default): the same after one pass of the training
  images through the backbone in training mode, which re-estimates its BatchNorm statistics as
  training BatchNorm layers do in the first epoch, with every weight unchanged.

Prints every run's final validation accuracy and wall time, then mean and standard deviation per
contender. ``--flash-args`` (``name=value`` pairs) passes settings to ``ImageClassifier`` and
``--train-bn`` passes ``train_bn`` to ``finetune``, to compare a changed setting with the defaults;
a strategy may carry its argument after a colon (``freeze_unfreeze:0``); ``auto`` (with options
as ``auto:{'folds':3}``) runs ``strategy="auto"`` and prints what it chose. ``--data DIR`` runs
flash on other images (``DIR/train/<class>``, ``DIR/val/<class>``) with ``--epochs``,
``--image-size`` and ``--hflip``, e.g. to check a changed default on photos.
"""

from __future__ import annotations

import argparse
import ast
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import print_table, run_isolated

BATCH_SIZE = 32
EPOCHS = 6
IMAGE_SIZE = 64
CROP_SCALE = (0.8, 1.0)
STRATEGIES = ("no_freeze", "freeze", "freeze_unfreeze", "unfreeze_milestones")


def _setup(setup: dict[str, Any] | None) -> tuple[int, int, float]:
    """Epochs, image size and flip probability: digits' unless ``--data`` set others."""
    setup = setup or {}
    return setup.get("epochs", EPOCHS), setup.get("image_size", IMAGE_SIZE), setup.get("hflip", 0.0)


def flash_run(
    data_dir: str,
    strategy: str,
    seed: int,
    task_args: dict[str, Any],
    train_bn: bool | None = None,
    setup: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One flash run with the defaults (plus ``task_args``, ``train_bn``); final accuracy and every epoch's."""
    epochs, image_size, hflip = _setup(setup)
    import lightning.pytorch as pl

    import flash
    from flash.image import ImageClassificationData, ImageClassifier

    pl.seed_everything(seed, verbose=False)
    data = ImageClassificationData.from_folders(
        train_folder=f"{data_dir}/train",
        val_folder=f"{data_dir}/val",
        batch_size=BATCH_SIZE,
        image_size=image_size,
        hflip=hflip,
        seed=seed,
    )
    task = ImageClassifier(num_classes=data.num_classes, **task_args)
    with tempfile.TemporaryDirectory() as out:
        trainer = flash.Trainer(
            max_epochs=epochs, enable_progress_bar=False, enable_model_summary=False, default_root_dir=out
        )
        name, _, argument = strategy.partition(":")
        chosen = (name, ast.literal_eval(argument)) if argument else name
        search = trainer.finetune(task, data, strategy=chosen, train_bn=train_bn)
    epochs = [float(row["val_accuracy"]) for row in trainer.history if "val_accuracy" in row]
    result: dict[str, Any] = {"accuracy": epochs[-1], "epochs": epochs}
    if search is not None:  # strategy "auto": what it chose, and its leaderboard
        result["chosen"] = search.chosen.label
        result["leaderboard"] = str(search)
    return result


def _backbone(num_classes: int):
    from benchmarks.image_cpu import _shipped_efficientnet_lite0

    return _shipped_efficientnet_lite0(num_classes)


def hand_written(data_dir: str, strategy: str, seed: int, task_args: dict[str, Any]) -> dict[str, Any]:
    """A standard full-finetuning loop: AdamW 1e-3 on every weight, cosine per step."""
    import torch
    from torch import nn
    from torchvision import datasets
    from torchvision import transforms as T

    torch.manual_seed(seed)
    normalize = T.Normalize([0.5, 0.5, 0.5], [0.5, 0.5, 0.5])
    train_tf = T.Compose([T.RandomResizedCrop(IMAGE_SIZE, scale=CROP_SCALE), T.ToTensor(), normalize])
    val_tf = T.Compose([T.Resize(round(IMAGE_SIZE / 0.875)), T.CenterCrop(IMAGE_SIZE), T.ToTensor(), normalize])  # fmt: skip
    train = datasets.ImageFolder(f"{data_dir}/train", train_tf)
    val = datasets.ImageFolder(f"{data_dir}/val", val_tf)
    train_loader = torch.utils.data.DataLoader(train, BATCH_SIZE, shuffle=True, drop_last=False)
    val_loader = torch.utils.data.DataLoader(val, 128)

    model = _backbone(len(train.classes)).to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, EPOCHS * len(train_loader))
    loss_fn = nn.CrossEntropyLoss()
    epochs = []
    for _ in range(EPOCHS):
        model.train()
        for x, y in train_loader:
            loss = loss_fn(model(x.to(memory_format=torch.channels_last)), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
        model.eval()
        correct = 0
        with torch.no_grad():
            for x, y in val_loader:
                correct += (model(x.to(memory_format=torch.channels_last)).argmax(1) == y).sum().item()
        epochs.append(correct / len(val))
    return {"accuracy": epochs[-1], "epochs": epochs}


def linear_probe(
    data_dir: str, strategy: str, seed: int, task_args: dict[str, Any], restatistics: bool = False
) -> dict[str, Any]:
    """Logistic regression on the frozen backbone's pooled features of centre crops; with
    ``restatistics``, after one pass of the training images (shuffled, batch 32) through the
    backbone in training mode: what trained BatchNorm layers do to their running statistics in
    the first epoch, without any weight changing."""
    import numpy as np
    import torch
    from sklearn.linear_model import LogisticRegression
    from torchvision import datasets
    from torchvision import transforms as T

    tf = T.Compose(
        [
            T.Resize(round(IMAGE_SIZE / 0.875)),
            T.CenterCrop(IMAGE_SIZE),
            T.ToTensor(),
            T.Normalize([0.5, 0.5, 0.5], [0.5, 0.5, 0.5]),
        ]
    )
    model = _backbone(0).eval()

    def features(split: str) -> tuple[np.ndarray, np.ndarray]:
        folder = datasets.ImageFolder(f"{data_dir}/{split}", tf)
        xs, ys = [], []
        with torch.inference_mode():
            for x, y in torch.utils.data.DataLoader(folder, 128):
                xs.append(model(x).numpy())
                ys.append(y.numpy())
        return np.concatenate(xs), np.concatenate(ys)

    if restatistics:
        torch.manual_seed(seed)
        folder = datasets.ImageFolder(f"{data_dir}/train", tf)
        model.train()
        with torch.no_grad():
            for x, _ in torch.utils.data.DataLoader(folder, BATCH_SIZE, shuffle=True):
                model(x)
        model.eval()
    x_train, y_train = features("train")
    x_val, y_val = features("val")
    probe = LogisticRegression(max_iter=3000, random_state=seed).fit(x_train, y_train)
    return {"accuracy": float(probe.score(x_val, y_val)), "epochs": []}


def linear_probe_restatistics(
    data_dir: str, strategy: str, seed: int, task_args: dict[str, Any]
) -> dict[str, Any]:
    """:func:`linear_probe` after re-estimating the BatchNorm statistics on the training images."""
    return linear_probe(data_dir, strategy, seed, task_args, restatistics=True)


def _parse_args(text: str) -> dict[str, Any]:
    """``name=value,name=value`` with Python literals (``1e-3``, ``None``, ``True``) as values."""
    result: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, value = part.partition("=")
        try:
            result[name.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            result[name.strip()] = value.strip()
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--strategies", default=",".join(STRATEGIES), help="flash strategies to run")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument(
        "--only", default="flash,hand,probe", help="comma-separated: flash, hand, probe, probe-bn"
    )
    parser.add_argument("--flash-args", default="", help="ImageClassifier settings, name=value,...")
    parser.add_argument(
        "--train-bn",
        choices=("auto", "true", "false"),
        default="auto",
        help="finetune's train_bn (auto: None)",
    )
    parser.add_argument("--data", help="flash only: a folder with train/ and val/ class folders instead")
    parser.add_argument("--epochs", type=int, default=EPOCHS, help="with --data")
    parser.add_argument("--image-size", type=int, default=None, help="with --data (default: the backbone's)")
    parser.add_argument("--hflip", type=float, default=0.5, help="with --data")
    args = parser.parse_args(argv)
    if args.data and args.only != "flash":
        parser.error("--data runs flash only: add --only flash")
    setup = {"epochs": args.epochs, "image_size": args.image_size, "hflip": args.hflip} if args.data else None
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    if (
        not seeds
        or only - {"flash", "hand", "probe", "probe-bn"}
        or {s.partition(":")[0] for s in strategies} - {*STRATEGIES, "auto"}
    ):
        parser.error(
            f"--seeds takes whole numbers; --only flash, hand, probe; --strategies {STRATEGIES} or auto"
        )
    task_args = _parse_args(args.flash_args)
    train_bn = {"auto": None, "true": True, "false": False}[args.train_bn]
    settings = [args.flash_args] * bool(task_args) + [f"train_bn={train_bn}"] * (train_bn is not None)
    suffix = f" ({', '.join(settings)})" if settings else ""

    contenders: list[tuple[str, Any, str]] = []
    if "flash" in only:
        contenders += [(f"flash {s}{suffix}", flash_run, s) for s in strategies]
    if "hand" in only:
        contenders.append(("hand-written (AdamW 1e-3, cosine)", hand_written, ""))
    if "probe" in only:
        contenders.append(("linear probe", linear_probe, ""))
    if "probe-bn" in only:
        name = "linear probe, BatchNorm statistics re-estimated on the training images"
        contenders.append((name, linear_probe_restatistics, ""))

    epochs, image_size, hflip = _setup(setup)
    print(f"{args.data or 'digits'}, {epochs} epochs, {image_size or 'default'} px, batch {BATCH_SIZE}, "
          f"flip probability {hflip}; seeds {seeds}", flush=True)  # fmt: skip
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        from flash.image.demo import render_digits

        data_dir = (
            str(Path(args.data).resolve()) if args.data else str(render_digits(Path(scratch) / "digits"))
        )
        for name, fn, strategy in contenders:
            accuracies, walls = [], []
            for seed in seeds:
                start = time.strftime("%H:%M:%S")
                extra = (train_bn, setup) if fn is flash_run else ()
                result, seconds, _ = run_isolated(fn, data_dir, strategy, seed, task_args, *extra)
                accuracies.append(result["accuracy"])
                walls.append(seconds)
                per_epoch = " ".join(f"{a:.3f}" for a in result["epochs"])
                print(f"[{start}] {name}, seed {seed}: {result['accuracy']:.3f} in {seconds:.0f} s"
                      + (f" (epochs: {per_epoch})" if per_epoch else ""), flush=True)  # fmt: skip
                if "leaderboard" in result:
                    print(f"  auto chose {result['chosen']}:\n{result['leaderboard']}", flush=True)
            sd = statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0
            rows.append(
                {
                    "contender": name,
                    "val accuracy per seed": " ".join(f"{a:.3f}" for a in accuracies),
                    "mean ± sd": f"{statistics.mean(accuracies):.3f} ± {sd:.3f}",
                    "wall s (mean)": round(statistics.mean(walls), 1),
                }
            )
    print()
    print_table(rows, ["contender", "val accuracy per seed", "mean ± sd", "wall s (mean)"])


if __name__ == "__main__":
    main()
