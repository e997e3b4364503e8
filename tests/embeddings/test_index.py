"""SimilarityIndex on plain vectors: exact top-k, save and load, and the errors of bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flash.core.deploy.similarity import SimilarityIndex


@pytest.fixture
def corpus():
    rng = np.random.default_rng(0)
    return rng.normal(size=(50, 8)).astype(np.float32)


def test_top_k_is_the_exact_cosine_ranking(corpus):
    index = SimilarityIndex(corpus, ids=[f"doc{i}" for i in range(50)])
    queries = np.random.default_rng(1).normal(size=(3, 8))
    normalised = corpus / np.linalg.norm(corpus, axis=1, keepdims=True)
    expected = (queries / np.linalg.norm(queries, axis=1, keepdims=True)) @ normalised.T
    results = index.search(queries, k=4)
    assert len(results) == 3
    for row, hits in zip(expected, results):
        order = np.argsort(-row)[:4]
        assert [h["id"] for h in hits] == [f"doc{i}" for i in order]
        assert [h["score"] for h in hits] == pytest.approx(row[order], abs=1e-5)
        assert [h["position"] for h in hits] == order.tolist()
    single = index.search(torch.from_numpy(corpus[7]), k=1)
    assert single[0]["id"] == "doc7" and single[0]["score"] == pytest.approx(1.0, abs=1e-5)


def test_save_and_load_keep_everything_and_never_overwrite(corpus, tmp_path):
    index = SimilarityIndex(
        corpus, ids=list(range(100, 150)), items=[f"text {i}" for i in range(50)], modality="text"
    )
    path = index.save(tmp_path / "sub" / "corpus.index")
    loaded = SimilarityIndex.load(path)
    assert loaded.ids == index.ids and loaded.modality == "text" and len(loaded) == 50 and loaded.dim == 8
    assert torch.equal(loaded.embeddings, index.embeddings)
    assert loaded.search(corpus[:2], k=3) == index.search(corpus[:2], k=3)
    assert loaded.search(corpus[3], k=1)[0]["item"] == "text 3"
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="overwrite=True"):
        SimilarityIndex(corpus[:5]).save(path)
    assert path.read_bytes() == before
    SimilarityIndex(corpus[:5]).save(path, overwrite=True)
    assert len(SimilarityIndex.load(path)) == 5


def test_bad_input_gets_clear_errors(corpus, tmp_path):
    with pytest.raises(ValueError, match="corpus is empty"):
        SimilarityIndex(np.zeros((0, 8), dtype=np.float32))
    with pytest.raises(ValueError, match="one id per item"):
        SimilarityIndex(corpus, ids=["a"])
    with pytest.raises(ValueError, match="all-zero vector"):
        SimilarityIndex(np.zeros((2, 8)))
    index = SimilarityIndex(corpus[:3], modality="image")
    with pytest.raises(ValueError, match="k=4 but the index holds 3 item.*k <= 3"):
        index.search(corpus[:1], k=4)
    with pytest.raises(ValueError, match="4-long vectors, the index holds 8-long"):
        index.search(np.ones((1, 4)), k=1)
    with pytest.raises(ValueError, match="holds image embeddings.*pass embedder="):
        index.search("a photo of a cat", k=1)
    with pytest.raises(ValueError, match="k must be"):
        index.search(corpus[:1], k=0)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match="not a flash similarity index"):
        SimilarityIndex.load(tmp_path / "notes.txt")
    torch.save({"weights": torch.ones(2)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a flash similarity index"):
        SimilarityIndex.load(tmp_path / "other.pt")
    with pytest.raises(FileNotFoundError):
        SimilarityIndex.load(tmp_path / "missing.index")
