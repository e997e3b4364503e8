"""``flash embed`` and ``flash search`` in-process, on the default text embedder and image folders."""

from __future__ import annotations

import json

import numpy as np
import pytest
from embedding_fixtures import TEXTS, image_folders

from flash import cli
from flash.core.deploy.similarity import SimilarityIndex


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    return path


def test_embed_writes_the_vectors_embed_gives(corpus, tmp_path, capsys):
    from flash.text import TextEmbedder

    assert cli.main(["embed", "text", str(corpus), "--out", str(tmp_path / "v.npy"), "--quiet"]) == 0
    vectors = np.load(tmp_path / "v.npy")
    np.testing.assert_allclose(vectors, TextEmbedder().embed(TEXTS), atol=1e-6)
    assert cli.main(["embed", "text", TEXTS[0], TEXTS[1], "--quiet"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["input"] for r in rows] == TEXTS[:2]
    np.testing.assert_allclose([r["embedding"] for r in rows], vectors[:2], atol=1e-6)


def test_embed_an_index_then_search_it(corpus, tmp_path, capsys):
    index_path = tmp_path / "corpus.index"
    assert cli.main(["embed", "text", str(corpus), "--index", str(index_path), "--quiet"]) == 0
    assert len(SimilarityIndex.load(index_path)) == 6
    code = cli.main(
        [
            "search",
            str(index_path),
            "A kitten slept on the rug",
            "Share prices dropped",
            "-k",
            "3",
            "--format",
            "json",
            "--quiet",
        ]
    )
    assert code == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["rank"] for r in rows] == [1, 2, 3, 1, 2, 3]
    assert {r["item"] for r in rows[:3]} == set(TEXTS[:3]) and {r["item"] for r in rows[3:]} == set(TEXTS[3:])
    assert rows[0]["id"].startswith(str(corpus)) and rows[0]["score"] > rows[2]["score"]

    before = index_path.read_bytes()
    assert cli.main(["embed", "text", str(corpus), "--index", str(index_path), "--quiet"]) == 1
    assert "exists; pass --force" in capsys.readouterr().err
    assert index_path.read_bytes() == before
    assert cli.main(["search", str(index_path), "cats", "-k", "7", "--quiet"]) == 1
    assert "-k 7 but the index holds 6 item(s)" in capsys.readouterr().err


def test_search_refuses_queries_of_another_modality(tmp_path, capsys):
    folders = image_folders(tmp_path / "images", per_class=2)
    index_path = tmp_path / "images.index"
    assert cli.main(["embed", "image", str(folders), "--index", str(index_path), "--quiet"]) == 0
    assert cli.main(["search", str(index_path), "a red square", "--quiet"]) == 1
    assert (
        "This index holds image embeddings: its queries are image files or folders" in capsys.readouterr().err
    )
    assert cli.main(["search", str(index_path), "a red square", "--model", "text", "--quiet"]) == 1
    assert "holds image embeddings" in capsys.readouterr().err
    assert cli.main(["search", str(index_path), str(folders / "red" / "0.png"), "-k", "2", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert out.count("red") >= 2 and "item" not in out.splitlines()[0]
    assert cli.main(["embed", "nothing-here.ckpt", "x", "--quiet"]) == 1
    assert "neither a checkpoint file nor a domain" in capsys.readouterr().err


def test_embed_an_index_for_approximate_search(corpus, tmp_path, capsys):
    from flash.core.deploy import similarity

    pytest.importorskip("usearch.index", reason='the approximate backend needs the "ann" extra (usearch)')
    index_path = tmp_path / "corpus.index"
    assert cli.main(["embed", "text", TEXTS[0], "--backend", "approximate", "--quiet"]) == 1
    assert "--backend is how an index is searched: give it with --index FILE" in capsys.readouterr().err
    args = ["embed", "text", str(corpus), "--index", str(index_path), "--backend", "approximate", "--quiet"]
    assert cli.main(args) == 0
    assert SimilarityIndex.load(index_path).backend == "approximate"
    assert (
        cli.main(
            ["search", str(index_path), "Share prices dropped", "-k", "1", "--format", "json", "--quiet"]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)[0]["item"] in TEXTS[3:]
    for backend in similarity.BACKENDS:  # `flash embed --backend` offers every backend
        assert cli.build_parser().parse_args(["embed", "text", "x", "--backend", backend]).backend == backend
