"""ImageEmbedder: EfficientNet-Lite0 embeddings of files, folders, PIL images and arrays, training
on ImageClassificationData, search by image, and the same vectors from a checkpoint and ONNX."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from embedding_fixtures import (
    assert_fresh_process_embeds_alike,
    colour_image,
    image_folders,
    quiet_trainer,
    separation,
)
from PIL import Image

from flash.core.deploy.similarity import SimilarityIndex
from flash.image import ImageClassificationData, ImageEmbedder


@pytest.fixture(scope="module")
def embedder():
    return ImageEmbedder(image_size=64)


@pytest.fixture
def folders(tmp_path):
    return image_folders(tmp_path / "images")


def test_every_kind_of_image_input_gives_the_same_normalised_vector(embedder, folders):
    files = sorted(str(p) for p in folders.rglob("*.png"))
    vectors = embedder.embed(folders)
    assert vectors.shape == (6, 1280) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(embedder.embed(files), vectors, atol=1e-6)
    image = Image.open(files[0]).convert("RGB")
    one = embedder.embed(files[0])
    assert one.shape == (1280,)
    np.testing.assert_allclose(embedder.embed(image), one, atol=1e-6)
    np.testing.assert_allclose(embedder.embed(np.asarray(image)), one, atol=1e-6)
    assert separation(vectors, ["blue"] * 3 + ["red"] * 3) > 0.05


def test_the_network_and_its_batches_are_channels_last_with_the_same_vectors(embedder, folders):
    files = sorted(str(p) for p in folders.rglob("*.png"))
    stem = next(m for m in embedder.backbone.modules() if isinstance(m, torch.nn.Conv2d))
    assert stem.weight.is_contiguous(memory_format=torch.channels_last)
    dataset, _ = embedder.predict_dataset(files)
    batch = embedder.collate_fn()([dataset[i] for i in range(len(dataset))])["input"]
    assert batch.is_contiguous(memory_format=torch.channels_last)
    nchw = copy.deepcopy(embedder).eval().to(memory_format=torch.contiguous_format)
    assert not next(
        m for m in nchw.backbone.modules() if isinstance(m, torch.nn.Conv2d)
    ).weight.is_contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        reference = nchw(batch.contiguous()).numpy()
    np.testing.assert_allclose(embedder.embed(files), reference, atol=1e-5, rtol=0)


def test_search_by_image_and_queries_of_another_modality_are_refused(embedder, folders):
    files = sorted(str(p) for p in folders.rglob("*.png"))
    index = SimilarityIndex.build(embedder, files, ids=files)
    hits = index.search(colour_image((210, 40, 40), seed=99), k=3, embedder=embedder)
    assert all("/red/" in h["id"] for h in hits)
    with pytest.raises(ValueError, match="embeds images.*'a red square' is not an image file"):
        index.search("a red square", k=1, embedder=embedder)
    with pytest.raises(ValueError, match="holds image embeddings.*pass embedder="):
        index.search(["a red square"], k=1)
    with pytest.raises(ValueError, match="k=7 but the index holds 6"):
        index.search(files[0], k=7, embedder=embedder)
    with pytest.raises(ValueError, match="corpus is empty"):
        SimilarityIndex.build(embedder, [])


def test_a_text_embedder_cannot_query_an_image_index(embedder, folders):
    from flash.text import TextEmbedder

    index = SimilarityIndex.build(embedder, folders)
    with pytest.raises(
        ValueError, match="holds image embeddings, but the query embedder \\(TextEmbedder\\) embeds text"
    ):
        index.search("a red square", k=1, embedder=TextEmbedder(max_length=16))


def test_training_on_class_folders_with_the_backbone_frozen_trains_the_projection(folders):
    data = ImageClassificationData.from_folders(
        train_folder=folders, val_folder=folders, batch_size=6, image_size=64
    )
    task = ImageEmbedder(learning_rate=1e-2)
    backbone = [p.detach().clone() for p in task.backbone.parameters()]
    head = task.head.weight.detach().clone()
    quiet_trainer(max_epochs=2).finetune(task, data, strategy="freeze")
    assert not torch.equal(task.head.weight, head)
    assert all(torch.equal(a, b) for a, b in zip(backbone, task.backbone.parameters()))
    assert task.preprocessing["image_size"] == 64


@pytest.mark.slow  # about 30 s: training, a second Python process and the ONNX export
def test_checkpoint_in_a_fresh_process_and_onnx_give_the_same_vectors(folders, tmp_path):
    import onnxruntime as ort

    data = ImageClassificationData.from_folders(train_folder=folders, batch_size=6, image_size=64)
    task = ImageEmbedder()
    trainer = quiet_trainer(max_epochs=1)
    trainer.finetune(task, data, strategy=("freeze_unfreeze", 0))
    files = sorted(str(p) for p in folders.rglob("*.png"))
    vectors = assert_fresh_process_embeds_alike(trainer, task, files, tmp_path)

    path = task.to_onnx(tmp_path / "images.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    dataset, _ = task.predict_dataset(files)
    batch = task.collate_fn()([dataset[i] for i in range(len(dataset))])["input"]
    (embeddings,) = session.run(None, {session.get_inputs()[0].name: batch.numpy()})
    np.testing.assert_allclose(embeddings, vectors, atol=1e-4, rtol=0)
