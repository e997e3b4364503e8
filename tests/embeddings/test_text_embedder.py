"""TextEmbedder: sentence-transformers embeddings from the shipped MiniLM, finetuning with every
strategy, and the same vectors from embed, a checkpoint in a fresh process and ONNX."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from embedding_fixtures import (
    ANIMALS,
    MONEY,
    TEXT_LABELS,
    TEXTS,
    assert_fresh_process_embeds_alike,
    quiet_trainer,
    separation,
    text_data,
)

from flash.core.deploy.similarity import SimilarityIndex
from flash.text import TextClassificationData, TextEmbedder
from flash.text.backbones import packaged_minilm_path


@pytest.fixture(scope="module")
def embedder():
    return TextEmbedder(max_length=32)


def test_embeddings_are_minilm_mean_pooled_and_normalised(embedder):
    from transformers import AutoModel, AutoTokenizer

    source = packaged_minilm_path()
    tokenizer, model = AutoTokenizer.from_pretrained(source), AutoModel.from_pretrained(source).eval()
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        states = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    expected = torch.nn.functional.normalize((states * mask).sum(1) / mask.sum(1), dim=-1).numpy()

    vectors = embedder.embed(TEXTS)
    assert vectors.shape == (6, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(vectors, expected, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    one = embedder.embed(TEXTS[2])
    assert one.shape == (384,)
    np.testing.assert_allclose(one, vectors[2], atol=1e-5)
    tensor = embedder.embed(TEXTS[:2], return_tensors=True)
    assert isinstance(tensor, torch.Tensor) and tensor.shape == (2, 384)
    assert separation(vectors, TEXT_LABELS) > 0.1  # meaningful before any training


def test_files_and_frames_embed_like_lists(embedder, tmp_path):
    import pandas as pd

    (tmp_path / "texts.txt").write_text("\n".join(TEXTS), encoding="utf-8")
    pd.DataFrame({"sentence": TEXTS}).to_csv(tmp_path / "texts.csv", index=False)
    vectors = embedder.embed(TEXTS)
    np.testing.assert_allclose(embedder.embed(tmp_path / "texts.txt"), vectors, atol=1e-6)
    np.testing.assert_allclose(embedder.embed(str(tmp_path / "texts.csv")), vectors, atol=1e-6)
    with pytest.raises(ValueError, match="empty"):
        embedder.embed([])
    with pytest.raises(TypeError, match="TextEmbedder predicts on a string"):
        embedder.embed(3.5)


def test_search_finds_the_texts_of_the_same_topic_and_refuses_other_models(embedder):
    index = SimilarityIndex.build(embedder, TEXTS, ids=list(range(6)))
    hits = index.search(["A kitten slept on the rug", "The share price dropped"], k=3, embedder=embedder)
    assert {h["id"] for h in hits[0]} == {0, 1, 2} and {h["id"] for h in hits[1]} == {3, 4, 5}
    assert hits[0][0]["score"] > hits[0][-1]["score"] > 0
    np.testing.assert_allclose(index.embeddings.numpy(), embedder.embed(TEXTS), atol=0)
    other = TextEmbedder(max_length=32)
    with torch.no_grad():
        other.head.weight.mul_(-1)  # another model: same sizes, different vectors
    with pytest.raises(ValueError, match="not the model this index was built with"):
        index.search("a cat", k=1, embedder=other)


def test_a_class_with_one_example_is_refused_with_what_to_do():
    data = TextClassificationData.from_lists(
        train_data=[*ANIMALS, MONEY[0]], train_targets=["animals"] * 3 + ["money"], batch_size=4
    )
    with pytest.raises(ValueError, match=r"single training example \('money'\).*Add at least one more"):
        quiet_trainer().finetune(TextEmbedder(max_length=16), data, strategy="no_freeze")


@pytest.mark.slow  # about 30 s: a training epoch and a second Python process
def test_a_checkpoint_loaded_in_a_fresh_process_gives_the_same_vectors(tmp_path):
    task = TextEmbedder(max_length=16, learning_rate=1e-2)
    head = task.head.weight.detach().clone()
    trainer = quiet_trainer(max_epochs=1)
    trainer.finetune(task, text_data(), strategy="freeze")
    assert not torch.equal(task.head.weight, head)
    assert_fresh_process_embeds_alike(trainer, task, TEXTS, tmp_path)


@pytest.mark.slow
def test_finetuning_pulls_the_classes_apart():
    torch.manual_seed(0)
    task = TextEmbedder(max_length=16)
    before = separation(task.embed(TEXTS), TEXT_LABELS)
    quiet_trainer(max_epochs=3).finetune(task, text_data(), strategy="no_freeze")
    assert separation(task.embed(TEXTS), TEXT_LABELS) > before + 0.1


@pytest.mark.parametrize(
    "strategy",
    [
        pytest.param("freeze", marks=pytest.mark.slow),
        ("freeze_unfreeze", 1),
        pytest.param(("unfreeze_milestones", ((1, 1), 1)), marks=pytest.mark.slow),
    ],
)
def test_every_strategy_applies_to_the_backbone(strategy):
    task = TextEmbedder(max_length=16, learning_rate=1e-3)
    backbone = [p.detach().clone() for p in task.backbone.parameters()]
    head = task.head.weight.detach().clone()
    quiet_trainer(max_epochs=1).finetune(task, text_data(), strategy=strategy)
    assert not torch.equal(task.head.weight, head)
    assert all(torch.equal(a, b) for a, b in zip(backbone, task.backbone.parameters()))  # frozen in epoch 0
    quiet_trainer(max_epochs=2).finetune(task, text_data(), strategy=strategy)
    if strategy != "freeze":
        assert not all(torch.equal(a, b) for a, b in zip(backbone, task.backbone.parameters()))


@pytest.mark.slow  # about 30 s: the ONNX export of MiniLM
def test_onnx_export_gives_the_same_embeddings(embedder, tmp_path):
    import onnxruntime as ort

    from flash.core.deploy.export import read_onnx_metadata

    path = embedder.to_onnx(tmp_path / "embedder.onnx")
    meta = read_onnx_metadata(path)
    assert meta["embedding_dim"] == 384 and meta["normalized"] and "embeddings" in meta["outputs"]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    dataset, _ = embedder.predict_dataset(TEXTS)
    batch = embedder.collate_fn()([dataset[i] for i in range(len(dataset))])["input"]
    (embeddings,) = session.run(None, {name: tensor.numpy() for name, tensor in batch.items()})
    np.testing.assert_allclose(embeddings, embedder.embed(TEXTS), atol=1e-4, rtol=0)
