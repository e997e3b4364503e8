"""Lightning Flash 0.8's text and multi-label example scripts, in Flash's spelling, on tiny data
(only the network-only backbones are replaced by the offline defaults)."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from image_fixtures import COLOURS, colour_image

import flash
from flash.core.data.utils import download_data  # noqa: F401  (Flash's import path)

pytestmark = pytest.mark.slow

GOOD = ["a wonderful film", "moving and funny", "great acting", "a lovely story"]
BAD = ["a dreadful film", "dull and too long", "awful acting", "a waste of time"]


def test_text_classification_example(tmp_path):
    from flash.text import TextClassificationData, TextClassifier

    rows = [
        {"review": f"{t} {i}", "sentiment": s}
        for i in range(3)
        for t, s in [(g, "positive") for g in GOOD] + [(b, "negative") for b in BAD]
    ]
    pd.DataFrame(rows).to_csv(tmp_path / "train.csv", index=False)
    pd.DataFrame(rows[:8]).to_csv(tmp_path / "valid.csv", index=False)

    datamodule = TextClassificationData.from_csv(
        "review",
        "sentiment",
        train_file=str(tmp_path / "train.csv"),
        val_file=str(tmp_path / "valid.csv"),
        batch_size=4,
    )
    model = TextClassifier(labels=datamodule.labels)
    trainer = flash.Trainer(max_epochs=1, gpus=torch.cuda.device_count())
    trainer.finetune(model, datamodule=datamodule, strategy="freeze")
    datamodule = TextClassificationData.from_lists(
        predict_data=["The worst movie in the history of cinema.", "A wonderful, moving film."],
        batch_size=4,
    )
    predictions = trainer.predict(model, datamodule=datamodule, output="labels")
    assert [len(batch) for batch in predictions] == [2]
    assert set(predictions[0]) <= {"positive", "negative"}
    trainer.save_checkpoint(tmp_path / "text_classification_model.pt")


def test_multi_label_text_and_image_examples(tmp_path):
    from flash.image import ImageClassificationData, ImageClassifier
    from flash.text import TextClassificationData, TextClassifier

    texts = [f"{t} {i}" for i in range(2) for t in GOOD + BAD]
    frame = pd.DataFrame(
        {"comment_text": texts, "toxic": [int(t in " ".join(BAD) and "film" not in t) for t in texts]}
    )
    frame["insult"] = [int("awful" in t or "waste" in t) for t in texts]
    frame.to_csv(tmp_path / "train.csv", index=False)
    datamodule = TextClassificationData.from_csv(
        "comment_text",
        ["toxic", "insult"],
        train_file=str(tmp_path / "train.csv"),
        val_split=0.25,
        batch_size=4,
    )
    model = TextClassifier(labels=datamodule.labels, multi_label=datamodule.multi_label)
    trainer = flash.Trainer(max_epochs=1, gpus=torch.cuda.device_count())
    trainer.finetune(model, datamodule=datamodule, strategy="freeze")
    predict = TextClassificationData.from_lists(
        predict_data=["U SUCK", "Would you care to vote? Thx."], batch_size=4
    )
    predictions = trainer.predict(model, datamodule=predict, output="labels")
    assert all(isinstance(p, list) and set(p) <= {"toxic", "insult"} for p in predictions[0])

    posters = tmp_path / "movie_posters"
    for split in ("train", "val", "predict"):
        (posters / split).mkdir(parents=True)
    rows = []
    for i in range(6):
        colour = COLOURS["red"] if i % 2 else COLOURS["blue"]
        colour_image(colour, seed=i).save(posters / "train" / f"tt{i:07d}.jpg")
        colour_image(colour, seed=i + 10).save(posters / "val" / f"tt{i:07d}.jpg")
        rows.append({"Id": f"tt{i:07d}", "Action": i % 2, "Romance": 1 - i % 2, "Crime": i % 3 == 0})
    for split in ("train", "val"):
        pd.DataFrame(rows).assign(Crime=lambda f: f["Crime"].astype(int)).to_csv(
            posters / split / "metadata.csv", index=False
        )
    colour_image(COLOURS["red"], seed=99).save(posters / "predict" / "tt0085318.jpg")

    def resolver(root, file_id):
        return str(posters / root.split("/")[-1] / f"{file_id}.jpg")

    datamodule = ImageClassificationData.from_csv(
        "Id",
        ["Action", "Romance", "Crime"],
        train_file=str(posters / "train" / "metadata.csv"),
        train_resolver=resolver,
        val_file=str(posters / "val" / "metadata.csv"),
        val_resolver=resolver,
        transform_kwargs={"image_size": (64, 64)},
        batch_size=2,
    )
    model = ImageClassifier(
        backbone="efficientnet_lite0", labels=datamodule.labels, multi_label=datamodule.multi_label
    )
    trainer = flash.Trainer(max_epochs=1, gpus=torch.cuda.device_count())
    trainer.finetune(model, datamodule=datamodule, strategy="freeze")
    datamodule = ImageClassificationData.from_files(
        predict_files=[str(posters / "predict" / "tt0085318.jpg")], batch_size=3
    )
    predictions = trainer.predict(model, datamodule=datamodule, output="labels")
    assert isinstance(predictions[0][0], list) and set(predictions[0][0]) <= {"Action", "Romance", "Crime"}
