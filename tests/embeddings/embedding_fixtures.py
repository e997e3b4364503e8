"""Tiny labelled texts and images for the embedding tests, and a quiet trainer."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

import flash

ANIMALS = ["The cat purred on the sofa", "A dog barked at the postman", "The horse galloped in the field"]
MONEY = ["Stocks fell sharply on Monday", "The bank raised interest rates", "Investors sold their shares"]
TEXTS = ANIMALS + MONEY
TEXT_LABELS = ["animals"] * len(ANIMALS) + ["money"] * len(MONEY)


def quiet_trainer(**kwargs) -> flash.Trainer:
    options = {
        "logger": False,
        "enable_progress_bar": False,
        "enable_checkpointing": False,
        "enable_model_summary": False,
        "max_epochs": 1,
        **kwargs,
    }
    return flash.Trainer(**options)


def text_data(batch_size: int = 6):
    from flash.text import TextClassificationData

    return TextClassificationData.from_lists(
        train_data=TEXTS,
        train_targets=TEXT_LABELS,
        val_data=TEXTS,
        val_targets=TEXT_LABELS,
        batch_size=batch_size,
    )


def separation(vectors: np.ndarray, labels: list[str]) -> float:
    """Mean cosine similarity of same-class pairs minus that of different-class pairs."""
    y = np.asarray(labels)
    similarity = vectors @ vectors.T
    same = (y[:, None] == y[None, :]) & ~np.eye(len(y), dtype=bool)
    return float(similarity[same].mean() - similarity[y[:, None] != y[None, :]].mean())


def colour_image(colour: tuple[int, int, int], seed: int, size: int = 32) -> Image.Image:
    """A 32-pixel image of one colour with a little noise."""
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(colour)[None, None, :] + rng.normal(0, 12, (size, size, 3)), 0, 255)
    return Image.fromarray(pixels.astype(np.uint8))


def image_folders(root: Path, per_class: int = 3) -> Path:
    """``root/<class>/<i>.png`` for a red and a blue class."""
    for c, (name, colour) in enumerate({"red": (210, 40, 40), "blue": (40, 40, 210)}.items()):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            colour_image(colour, seed=10 * c + i).save(folder / f"{i}.png")
    return root


def assert_fresh_process_embeds_alike(trainer, task, inputs, tmp_path) -> np.ndarray:
    """Save ``task``'s checkpoint, embed ``inputs`` from it in a new Python process, and check the
    vectors equal ``task.embed(inputs)`` bit for bit; returns them."""
    vectors = task.embed(inputs)
    checkpoint = tmp_path / "embedder.ckpt"
    trainer.save_checkpoint(checkpoint)
    script = (
        "import sys, numpy as np; from flash.core.deploy.checkpoint import load_task; "
        f"np.save(sys.argv[2], load_task(sys.argv[1]).embed({list(inputs)!r}))"
    )
    subprocess.run([sys.executable, "-c", script, str(checkpoint), str(tmp_path / "fresh.npy")], check=True)
    np.testing.assert_array_equal(np.load(tmp_path / "fresh.npy"), vectors)
    return vectors
