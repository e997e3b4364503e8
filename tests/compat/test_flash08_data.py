"""Lightning Flash 0.8 data spellings (items 4, 5, 6, 7, 13 and 14 of the migration page)."""

from __future__ import annotations

import io
import os

import numpy as np
import pandas as pd
import pytest
import torch
from flash08_http import StaticServer
from image_fixtures import COLOURS, colour_image, make_class_folders
from tabular_tables import SMALL_TABM, make_table

import flash
from flash.core.data.download import cache_dir
from toy import Split, ToyClassifier, ToyData

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def quiet(**kwargs) -> dict:
    return dict(
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        **kwargs,
    )


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FLASH_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def server():
    with StaticServer() as srv:
        yield srv


def jpeg(colour) -> bytes:
    buffer = io.BytesIO()
    colour_image(colour).save(buffer, format="JPEG")
    return buffer.getvalue()


# -- 4. URLs wherever Flash took them ----------------------------------------------------------------
def test_predict_files_urls_are_downloaded_once_into_the_cache(cache, server):
    from flash.image import ImageClassificationData

    server.files = {"/images/ant_1.jpg": jpeg(COLOURS["red"]), "/images/bee_1.jpg": jpeg(COLOURS["blue"])}
    urls = [f"{server.url}/images/ant_1.jpg", f"{server.url}/images/bee_1.jpg"]
    data = ImageClassificationData.from_files(predict_files=urls, batch_size=2)
    paths = data.splits["predict"].inputs
    assert all(p.startswith(str(cache)) and os.path.isfile(p) for p in paths)
    assert [os.path.basename(p) for p in paths] == ["ant_1.jpg", "bee_1.jpg"]
    ImageClassificationData.from_files(predict_files=urls, batch_size=2)
    assert server.requests == ["/images/ant_1.jpg", "/images/bee_1.jpg"]  # the second build reads the cache
    assert cache_dir() == cache


def test_a_missing_url_is_a_clear_error(cache, server):
    from flash.core.data.download import DownloadError
    from flash.image import ImageClassificationData

    with pytest.raises(DownloadError, match="404"):
        ImageClassificationData.from_files(predict_files=[f"{server.url}/nope.jpg"])


def test_tabular_train_and_predict_file_urls_and_a_checkpoint_url(cache, server, tmp_path):
    from flash.tabular import TabularClassificationData, TabularClassifier

    frame = make_table(60)
    server.files["/titanic.csv"] = frame.to_csv(index=False).encode()
    url = f"{server.url}/titanic.csv"
    datamodule = TabularClassificationData.from_csv(
        categorical_fields=["color"],
        numerical_fields=["age", "fare"],
        target_fields="label",
        train_file=url,
        val_split=0.2,
    )
    model = TabularClassifier.from_data(datamodule, backbone_kwargs=SMALL_TABM)
    trainer = flash.Trainer(max_epochs=1, **quiet())
    trainer.fit(model, datamodule=datamodule)
    trainer.save_checkpoint(tmp_path / "tabular.ckpt")
    server.files["/models/tabular.ckpt"] = (tmp_path / "tabular.ckpt").read_bytes()
    loaded = TabularClassifier.load_from_checkpoint(f"{server.url}/models/tabular.ckpt")
    predict = TabularClassificationData.from_csv(predict_file=url, parameters=datamodule.parameters)
    predictions = trainer.predict(loaded, datamodule=predict, output="classes")
    assert sum(len(b) for b in predictions) == len(frame)
    assert server.requests.count("/titanic.csv") == 1


# -- 5. transform_kwargs -----------------------------------------------------------------------------
def test_transform_kwargs_size_tuple_and_normalisation_reach_the_task(tmp_path):
    from flash.image import ImageClassificationData, ImageClassifier

    root = make_class_folders(tmp_path / "images", per_class=2)
    datamodule = ImageClassificationData.from_folders(
        train_folder=root / "train",
        val_folder=root / "val",
        batch_size=4,
        transform_kwargs={"image_size": (48, 48), "mean": MEAN, "std": STD},
    )
    model = ImageClassifier(labels=datamodule.labels)
    datamodule.attach_task(model)
    for preprocessing in (datamodule.preprocessing, model.preprocessing, model.hparams["preprocessing"]):
        assert preprocessing["image_size"] == 48
        assert tuple(preprocessing["mean"]) == MEAN and tuple(preprocessing["std"]) == STD
    batch = next(iter(datamodule.val_dataloader()))
    assert batch["input"].shape[-2:] == (48, 48)


@pytest.mark.parametrize(
    ("transform_kwargs", "match"),
    [
        ({"image_size": (196, 128)}, "square"),
        ({"mean": MEAN}, "both mean and std"),
        ({"image_size": 64, "rotation": 10}, "rotation"),
        ({"mean": (0.5, 0.5), "std": STD}, "3 numbers"),
    ],
)
def test_transform_kwargs_it_cannot_honour_are_refused(tmp_path, transform_kwargs, match):
    from flash.image import ImageClassificationData

    root = make_class_folders(tmp_path / "images", per_class=1, splits=("train",))
    with pytest.raises(ValueError, match=match):
        ImageClassificationData.from_folders(train_folder=root / "train", transform_kwargs=transform_kwargs)


# -- 13. train_resolver / val_resolver on the multi-label constructors -------------------------------
def test_resolvers_map_ids_to_image_paths(tmp_path):
    from flash.image import ImageClassificationData

    for split in ("train", "val"):
        folder = tmp_path / "posters" / split
        folder.mkdir(parents=True)
        rows = []
        for i in range(4):
            colour_image(COLOURS["red" if i % 2 else "blue"], seed=i).save(folder / f"poster-{i}.png")
            rows.append({"Id": f"tt{i}", "Action": i % 2, "Romance": 1 - i % 2})
        pd.DataFrame(rows).to_csv(folder / "metadata.csv", index=False)

    def resolver(root, file_id):
        return os.path.join(root, f"poster-{file_id[2:]}.png")

    datamodule = ImageClassificationData.from_csv(
        "Id",
        ["Action", "Romance"],
        train_file=str(tmp_path / "posters" / "train" / "metadata.csv"),
        train_resolver=resolver,
        val_file=str(tmp_path / "posters" / "val" / "metadata.csv"),
        val_resolver=resolver,
        transform_kwargs={"image_size": (32, 32)},
        batch_size=2,
    )
    assert datamodule.multi_label and datamodule.labels == ["Action", "Romance"]
    assert [os.path.basename(p) for p in datamodule.splits["val"].inputs] == [
        f"poster-{i}.png" for i in range(4)
    ]
    with pytest.raises(TypeError, match="train_resolver"):
        ImageClassificationData.from_csv(
            "Id",
            ["Action", "Romance"],
            train_file=str(tmp_path / "posters" / "train" / "metadata.csv"),
            train_resolver="x",
        )


# -- 6. TextClassifier(labels=...) without num_classes ------------------------------------------------
def test_text_classifier_takes_labels_alone():
    from flash.text import TextClassifier

    model = TextClassifier(labels=["negative", "positive"])
    assert model.num_classes == 2 and model.labels == ["negative", "positive"]
    with pytest.raises(ValueError, match="num_classes.*labels"):
        TextClassifier()


# -- 7. tabular: parameters, target_field, Flash's backbone names ------------------------------------
def test_tabular_regression_with_target_field_and_parameters(tmp_path):
    from flash.tabular import TabularRegressionData, TabularRegressor

    frame = make_table(60)
    frame.to_csv(tmp_path / "train.csv", index=False)
    frame.drop(columns=["amount"]).to_csv(tmp_path / "predict.csv", index=False)
    datamodule = TabularRegressionData.from_csv(
        categorical_fields=["color"],
        numerical_fields=["age", "fare"],
        target_field="amount",
        train_file=str(tmp_path / "train.csv"),
        val_split=0.1,
        batch_size=8,
    )
    assert datamodule.target_fields == ["amount"]
    model = TabularRegressor.from_data(datamodule, learning_rate=0.01, backbone_kwargs=SMALL_TABM)
    trainer = flash.Trainer(max_epochs=1, **quiet())
    trainer.fit(model, datamodule=datamodule)
    predict = TabularRegressionData.from_csv(
        predict_file=str(tmp_path / "predict.csv"), parameters=datamodule.parameters, batch_size=8
    )
    assert predict.numerical_fields == datamodule.numerical_fields
    predictions = [p for batch in trainer.predict(model, datamodule=predict) for p in batch]
    assert len(predictions) == len(frame) and all(np.isfinite(p) for p in predictions)
    from_frame = TabularRegressionData.from_data_frame(
        predict_data_frame=frame, parameters=datamodule.parameters
    )
    assert len(from_frame.splits["predict"]) == len(frame)


def test_tabular_parameters_misuse_is_refused(tmp_path):
    from flash.tabular import TabularClassificationData, TabularRegressionData

    frame = make_table(40)
    data = TabularClassificationData.from_data_frame(["color"], ["age"], "label", train_data_frame=frame)
    with pytest.raises(TypeError, match="classification"):
        TabularRegressionData.from_data_frame(predict_data_frame=frame, parameters=data.parameters)
    with pytest.raises(ValueError, match="without training rows"):
        TabularClassificationData.from_data_frame(train_data_frame=frame, parameters=data.parameters)
    with pytest.raises(ValueError, match="not both"):
        TabularClassificationData.from_data_frame(
            target_fields="label", target_field="label", train_data_frame=frame
        )
    with pytest.raises(ValueError, match="color"):
        TabularClassificationData.from_data_frame(
            predict_data_frame=frame.drop(columns=["color"]), parameters=data.parameters
        )


def test_flash_tabular_backbone_names():
    from flash.tabular import TabularClassificationData, TabularClassifier

    data = TabularClassificationData.from_data_frame(
        ["color"], ["age", "fare"], "label", train_data_frame=make_table(40)
    )
    model = TabularClassifier.from_data(data, backbone="fttransformer")
    assert (
        type(model.backbone).__name__
        == type(TabularClassifier.from_data(data, backbone="ft_transformer").backbone).__name__
    )
    with pytest.raises(ValueError, match="tabnet.*not available here.*tabm"):
        TabularClassifier.from_data(data, backbone="tabnet")


# -- 14. classes from num_classes when the training split lacks one -----------------------------------
def test_integer_targets_missing_a_class_widen_to_the_tasks_num_classes():
    x = [torch.randn(4) for _ in range(6)]
    data = ToyData(Split(x, np.array([0, 1, 0, 1, 0, 1])), labels=[0, 2], batch_size=3, num_workers=0)
    task = ToyClassifier(num_classes=3)
    data.attach_task(task)
    assert data.labels == [0, 1, 2] and task.labels == [0, 1, 2]
    assert data.splits["train"].targets.tolist() == [0, 2, 0, 2, 0, 2]  # target 2 stays class 2
    trainer = flash.Trainer(max_epochs=1, **quiet())
    trainer.fit(
        ToyClassifier(num_classes=3),
        datamodule=ToyData(Split(x, np.array([0, 1] * 3)), labels=[0, 2], num_workers=0),
    )


def test_names_or_out_of_range_integers_are_still_refused():
    x = [torch.randn(4) for _ in range(4)]
    for labels in (["a", "b"], [0, 5]):
        data = ToyData(Split(x, np.array([0, 1, 0, 1])), labels=labels, num_workers=0)
        with pytest.raises(ValueError, match="num_classes=3"):
            data.attach_task(ToyClassifier(num_classes=3))


def test_multi_label_integer_classes_widen_too():
    # classes 0 and 3 of a 4-class task
    data = ToyData(
        Split([torch.randn(4)] * 2, np.array([[1.0, 0.0], [1.0, 1.0]], dtype=np.float32)),
        labels=[0, 3],
        multi_label=True,
        num_workers=0,
    )
    assert data.widen_integer_labels(4)
    assert data.splits["train"].targets.tolist() == [[1, 0, 0, 0], [1, 0, 0, 1]]
