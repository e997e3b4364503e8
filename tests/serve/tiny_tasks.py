"""Small real tasks for the serving and export tests: the offline backbones, tiny generated data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

import flash

SPORTS = [
    "The striker scored a late goal in the match",
    "The team won the football final",
    "She ran the marathon in record time",
    "The tennis player served an ace",
    "Our goalkeeper saved a penalty kick",
    "The basketball game went to overtime",
]
FOOD = [
    "I baked a chocolate cake with cream",
    "The soup needs more salt and pepper",
    "We cooked pasta with fresh tomato sauce",
    "This bread is warm and crusty",
    "She made a salad with olives and cheese",
    "The curry was spicy and delicious",
]
KNOWN_TEXTS = {
    "The goalkeeper and the striker trained before the football match": "sports",
    "A warm chocolate cake with fresh cream": "food",
    "He won the tennis final in five sets": "sports",
    "Tomato soup with bread and cheese": "food",
}


def quiet_trainer(**kwargs) -> flash.Trainer:
    return flash.Trainer(
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        **kwargs,
    )


def text_data():
    from flash.text import TextClassificationData

    texts, targets = SPORTS + FOOD, ["sports"] * len(SPORTS) + ["food"] * len(FOOD)
    return TextClassificationData.from_lists(
        train_data=texts, train_targets=targets, val_data=texts, val_targets=targets, batch_size=12
    )


@torch.no_grad()
def nearest_centroid_head(task, data) -> None:
    """Make the head a nearest-centroid classifier of the backbone's features of the training texts."""
    texts, targets = SPORTS + FOOD, ["sports"] * len(SPORTS) + ["food"] * len(FOOD)
    batch = task.collate_fn()([{"input": ids} for ids in task.tokenize(texts)])
    task.eval()
    features = task.backbone(batch["input"])
    linear = task.head[-1]
    for index, label in enumerate(data.labels):
        centroid = features[[t == label for t in targets]].mean(dim=0)
        linear.weight[index] = centroid
        linear.bias[index] = -0.5 * centroid.dot(centroid)


def text_classifier(checkpoint: Path | None = None):
    """The default text backbone with a nearest-centroid head over sports and food sentences."""
    from flash.text import TextClassifier

    data = text_data()
    task = TextClassifier(num_classes=data.num_classes, labels=data.labels)
    nearest_centroid_head(task, data)
    if checkpoint is not None:
        trainer = quiet_trainer()
        trainer.validate(task, datamodule=data, verbose=False)
        trainer.save_checkpoint(checkpoint)
    return task


def tabular_rows(n: int = 96, seed: int = 0) -> dict[str, list]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    return {
        "x": x.round(3).tolist(),
        "z": rng.normal(size=n).round(3).tolist(),
        "color": rng.choice(["red", "blue", "green"], size=n).tolist(),
        "label": np.where(x > 0, "high", "low").tolist(),
        "price": (10 + 3 * x).round(3).tolist(),
    }


def tabular_classifier(epochs: int = 0, checkpoint: Path | None = None, **kwargs):
    from flash.tabular import TabularClassificationData, TabularClassifier

    rows = tabular_rows()
    rows.pop("price")
    data = TabularClassificationData.from_dicts(
        categorical_fields=["color"],
        numerical_fields=["x", "z"],
        target_fields="label",
        train_dict=rows,
        batch_size=16,
    )
    task = TabularClassifier.from_data(data, **kwargs)
    if epochs or checkpoint is not None:
        trainer = quiet_trainer(max_epochs=epochs)
        trainer.fit(task, datamodule=data)
        if checkpoint is not None:
            trainer.save_checkpoint(checkpoint)
    return task


def tabular_regressor(**kwargs):
    from flash.tabular import TabularRegressionData, TabularRegressor

    rows = tabular_rows()
    rows.pop("label")
    data = TabularRegressionData.from_dicts(
        categorical_fields=["color"], numerical_fields=["x", "z"], target_fields="price", train_dict=rows
    )
    return TabularRegressor.from_data(data, **kwargs)


def preprocessed_batch(task, inputs):
    """The batch ``forward`` receives for ``inputs``, made by the task's own predict path."""
    from torch.utils.data import default_collate

    dataset, _ = task.predict_dataset(inputs)
    collate = task.collate_fn() or default_collate
    return collate([dataset[i] for i in range(len(dataset))])["input"]


def onnx_feeds(batch) -> dict[str, np.ndarray]:
    if isinstance(batch, torch.Tensor):
        return {"input": batch.numpy()}
    return {name: tensor.numpy() for name, tensor in batch.items()}


COLORS = {"red": (200, 30, 30), "blue": (30, 40, 200)}


def color_image(color: str, seed: int, size: int = 48):
    """An image of one colour with a random smooth shading and a little noise (a PIL image)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    ramp = np.linspace(-1, 1, size, dtype=np.float32)
    shading = rng.uniform(-30, 30) * ramp[None, :, None] + rng.uniform(-30, 30) * ramp[:, None, None]
    base = np.array(COLORS[color], dtype=np.float32)
    pixels = base + shading + rng.normal(0, 6, size=(size, size, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def image_folders(root: Path, per_class: int = 3) -> dict[str, list[Path]]:
    """``root/<colour>/<i>.png`` for each colour; returns the files per colour."""
    files: dict[str, list[Path]] = {}
    for color in COLORS:
        (root / color).mkdir(parents=True, exist_ok=True)
        files[color] = []
        for i in range(per_class):
            path = root / color / f"{i}.png"
            color_image(color, seed=1000 * list(COLORS).index(color) + i).save(path)
            files[color].append(path)
    return files


@torch.no_grad()
def fit_centroid_head(task, inputs, targets) -> None:
    """Make the head a nearest-centroid classifier of the backbone's features of ``inputs``."""
    task.eval()
    features = task.backbone(preprocessed_batch(task, inputs)).flatten(1)
    linear = task.head if isinstance(task.head, torch.nn.Linear) else task.head[-1]
    for index, label in enumerate(task.labels):
        centroid = features[[t == label for t in targets]].mean(dim=0)
        linear.weight[index] = centroid
        linear.bias[index] = -0.5 * centroid.dot(centroid)


def image_classifier(root: Path, checkpoint: Path | None = None, image_size: int = 96):
    """The default image backbone (EfficientNet-Lite0, ImageNet weights) with a red/blue centroid head.

    Small crops keep the tests fast; the network is the same at any size."""
    from flash.image import ImageClassificationData, ImageClassifier

    files = image_folders(root / "train")
    data = ImageClassificationData.from_folders(
        train_folder=root / "train",
        val_folder=root / "train",
        batch_size=6,
        num_workers=0,
        image_size=image_size,
    )
    task = ImageClassifier(num_classes=data.num_classes, labels=data.labels, image_size=image_size)
    paths = [str(p) for color in data.labels for p in files[color]]
    targets = [color for color in data.labels for _ in files[color]]
    fit_centroid_head(task, paths, targets)
    if checkpoint is not None:
        trainer = quiet_trainer()
        trainer.validate(task, datamodule=data, verbose=False)
        trainer.save_checkpoint(checkpoint)
    return task
