"""SimilarityIndex's search backends: the approximate one (the ``ann`` extra) against exact search,
its save and load, the backend of older files, and the errors of a bad or missing backend."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from flash.core.deploy import similarity
from flash.core.deploy.similarity import SimilarityIndex
from flash.core.utils.extras import MissingExtraError


def unit_vectors(seed: int, n: int, dim: int = 32) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


@pytest.fixture
def usearch(monkeypatch):
    """The library, building graphs on one thread: the same graph, and recall, on every run."""
    module = pytest.importorskip(
        "usearch.index", reason='the approximate backend needs the "ann" extra (usearch)'
    )
    monkeypatch.setattr(similarity, "_BUILD_THREADS", 1)
    return module


def test_approximate_search_finds_what_exact_search_finds(usearch):
    corpus, queries = unit_vectors(0, 500), unit_vectors(1, 100)
    ids = [f"doc{i}" for i in range(500)]
    exact = SimilarityIndex(corpus, ids, backend="exact")
    approximate = SimilarityIndex(corpus, ids, backend="approximate")
    assert (exact.backend, approximate.backend) == ("exact", "approximate")
    assert "backend='approximate'" in repr(approximate)
    truth, found = exact.search(queries, k=10), approximate.search(queries, k=10)
    recall = np.mean([len({h["id"] for h in t} & {h["id"] for h in f}) / 10 for t, f in zip(truth, found)])
    assert recall >= 0.95
    assert np.mean([t[0]["id"] == f[0]["id"] for t, f in zip(truth, found)]) >= 0.95
    for query, row in zip(queries, found):  # hits as exact search gives them: exact cosines, best first
        assert [h["score"] for h in row] == sorted((h["score"] for h in row), reverse=True)
        for hit in row:
            assert hit["id"] == ids[hit["position"]]
            assert hit["score"] == pytest.approx(float(corpus[hit["position"]] @ query), abs=1e-5)
    single = approximate.search(torch.from_numpy(corpus[7]), k=1)  # one query: one list of hits
    assert single[0]["id"] == "doc7" and single[0]["score"] == pytest.approx(1.0, abs=1e-5)
    whole = approximate.search(corpus[:2], k=500)  # k = the whole index still gives every item once
    assert all(sorted(h["position"] for h in row) == list(range(500)) for row in whole)
    with pytest.raises(ValueError, match="k=501 but the index holds 500"):
        approximate.search(queries, k=501)
    with pytest.raises(ValueError, match="16-long vectors, the index holds 32-long"):
        approximate.search(np.ones((1, 16)), k=1)


def test_approximate_index_saves_its_graph_and_loads_with_it(usearch, tmp_path):
    corpus = unit_vectors(2, 300)
    index = SimilarityIndex(
        corpus, items=[f"text {i}" for i in range(300)], modality="text", backend="approximate"
    )
    path = index.save(tmp_path / "corpus.index")
    state = torch.load(path, weights_only=True)
    assert state["flash_similarity_index"] == 2 and state["backend"] == "approximate"
    assert state["graph"].dtype == torch.uint8 and len(state["graph"]) > 0
    loaded = SimilarityIndex.load(path)
    assert loaded.backend == "approximate" and loaded.modality == "text" and len(loaded) == 300
    queries = unit_vectors(3, 20)
    assert loaded.search(queries, k=5) == index.search(queries, k=5)
    assert loaded.search(corpus[3], k=1)[0]["item"] == "text 3"
    exact = SimilarityIndex.load(path, backend="exact")  # the same file, searched exactly
    assert exact.backend == "exact"
    assert exact.search(queries, k=5) == SimilarityIndex(corpus, items=index.items).search(queries, k=5)
    # an exact index is written as format 1, as older flash versions wrote (and read) it
    SimilarityIndex(corpus).save(tmp_path / "exact.index")
    assert torch.load(tmp_path / "exact.index", weights_only=True)["flash_similarity_index"] == 1
    rebuilt = SimilarityIndex.load(tmp_path / "exact.index", backend="approximate")  # graph built on load
    assert rebuilt.backend == "approximate" and rebuilt.search(corpus[5], k=1)[0]["position"] == 5
    state["graph"] = state["graph"][:100]
    torch.save(state, tmp_path / "damaged.index")
    with pytest.raises(ValueError, match="damaged"):
        SimilarityIndex.load(tmp_path / "damaged.index")


def test_auto_searches_approximately_only_large_corpora_when_the_library_is_installed(monkeypatch):
    corpus = unit_vectors(4, 60)
    monkeypatch.setattr(similarity, "AUTO_MIN_SIZE", 50)
    installed = similarity.importlib.util.find_spec("usearch") is not None
    index = SimilarityIndex(corpus, backend="auto")  # a graph built on every core, as by default
    assert index.backend == ("approximate" if installed else "exact")
    assert [row[0]["position"] for row in index.search(corpus[:3], k=2)] == [0, 1, 2]
    assert SimilarityIndex(corpus[:49], backend="auto").backend == "exact"
    monkeypatch.setattr(similarity.importlib.util, "find_spec", lambda name: None)
    assert SimilarityIndex(corpus, backend="auto").backend == "exact"


def test_files_of_older_versions_load_as_exact_indexes(tmp_path):
    corpus = unit_vectors(5, 20)
    state = {  # the layout of format 1, before backends: no "backend" field
        "flash_similarity_index": 1,
        "embeddings": torch.from_numpy(corpus),
        "ids": list(range(20)),
        "items": None,
        "modality": "text",
        "model": {},
        "fingerprint": None,
    }
    torch.save(state, tmp_path / "old.index")
    index = SimilarityIndex.load(tmp_path / "old.index")
    assert index.backend == "exact" and index.search(corpus[4], k=1)[0]["id"] == 4
    state["flash_similarity_index"] = 3
    torch.save(state, tmp_path / "future.index")
    with pytest.raises(ValueError, match="newer flash"):
        SimilarityIndex.load(tmp_path / "future.index")


def test_a_bad_or_missing_backend_is_named(monkeypatch, tmp_path):
    corpus = unit_vectors(6, 10)
    with pytest.raises(
        ValueError, match="backend='hnsw' is not a search backend; choose one of exact, approximate, auto"
    ):
        SimilarityIndex(corpus, backend="hnsw")
    SimilarityIndex(corpus).save(tmp_path / "corpus.index")
    with pytest.raises(ValueError, match="backend='fast' is not a search backend"):
        SimilarityIndex.load(tmp_path / "corpus.index", backend="fast")

    class Embedder:  # fails the test if build() embeds before checking the backend
        domain = "text"

        def embed(self, corpus, batch_size=32):
            raise AssertionError("embedded before the backend was checked")

    with pytest.raises(ValueError, match="not a search backend"):
        SimilarityIndex.build(Embedder(), ["a", "b"], backend="Exact")
    monkeypatch.setitem(sys.modules, "usearch.index", None)
    monkeypatch.setitem(sys.modules, "usearch", None)
    with pytest.raises(
        MissingExtraError,
        match=r'"approximate" search backend needs usearch.*pip install "flash-finetune\[ann\]"',
    ):
        SimilarityIndex(corpus, backend="approximate")
    with pytest.raises(ModuleNotFoundError, match=r"flash-finetune\[ann\]"):
        SimilarityIndex.load(tmp_path / "corpus.index", backend="approximate")
