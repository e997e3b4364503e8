"""``flash serve`` answers embedding requests for an embedder checkpoint, through the task contract."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
from embedding_fixtures import TEXTS, quiet_trainer, text_data

from flash.core.deploy.serve import start_server
from flash.text import TextEmbedder


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    checkpoint = tmp_path_factory.mktemp("embedder") / "embedder.ckpt"
    task = TextEmbedder(max_length=32)
    trainer = quiet_trainer()
    trainer.validate(task, datamodule=text_data(), verbose=False)
    trainer.save_checkpoint(checkpoint)
    with start_server(checkpoint, max_batch_size=8) as server:
        yield server, task


def test_served_embeddings_are_those_of_embed(served):
    server, task = served
    response = httpx.post(f"{server.url}/predict", json={"inputs": TEXTS[:3]}, timeout=60)
    assert response.status_code == 200
    served_vectors = [p["embedding"] for p in response.json()["predictions"]]
    np.testing.assert_allclose(served_vectors, task.embed(TEXTS[:3]), atol=1e-5)
    health = httpx.get(f"{server.url}/health").json()
    assert health["task"] == "TextEmbedder" and health["domain"] == "text"


def test_bad_inputs_get_422(served):
    server, _ = served
    for body in ({"inputs": [42]}, {"inputs": ["  "]}):
        response = httpx.post(f"{server.url}/predict", json=body, timeout=60)
        assert response.status_code == 422 and response.json()["detail"]


def test_an_image_embedder_serves_base64_and_uploaded_images(tmp_path):
    import base64

    from embedding_fixtures import image_folders

    from flash.image import ImageClassificationData, ImageEmbedder

    folders = image_folders(tmp_path / "images", per_class=2)
    data = ImageClassificationData.from_folders(
        train_folder=folders, val_folder=folders, batch_size=4, image_size=64
    )
    task = ImageEmbedder(image_size=64)
    trainer = quiet_trainer()
    trainer.validate(task, datamodule=data, verbose=False)
    trainer.save_checkpoint(tmp_path / "images.ckpt")
    files = sorted(folders.rglob("*.png"))
    payloads = [path.read_bytes() for path in files]
    expected = task.embed([str(path) for path in files])
    with start_server(tmp_path / "images.ckpt") as server:
        as_json = httpx.post(
            f"{server.url}/predict",
            json={"inputs": [base64.b64encode(data).decode("ascii") for data in payloads]},
            timeout=60,
        )
        uploaded = httpx.post(
            f"{server.url}/predict",
            files=[("files", (path.name, data, "image/png")) for path, data in zip(files, payloads)],
            timeout=60,
        )
    for response in (as_json, uploaded):
        assert response.status_code == 200
        vectors = [p["embedding"] for p in response.json()["predictions"]]
        np.testing.assert_allclose(vectors, expected, atol=1e-4)
