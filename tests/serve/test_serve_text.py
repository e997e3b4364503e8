"""Serving the text classifier (the offline MiniLM backbone) from its checkpoint, over real HTTP."""

from __future__ import annotations

import asyncio
import random
import re

import httpx
import pytest
import torch
from tiny_tasks import FOOD, KNOWN_TEXTS, SPORTS, text_classifier

from flash.core.deploy.checkpoint import load_task
from flash.core.deploy.serve import start_server


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    checkpoint = tmp_path_factory.mktemp("text") / "text.ckpt"
    text_classifier(checkpoint)
    raw = torch.load(checkpoint, weights_only=True)  # plain tensors and containers only
    assert raw["hyper_parameters"]["labels"] == ["food", "sports"]
    reference = load_task(checkpoint)
    with start_server(checkpoint, max_batch_size=16) as server:
        yield server, reference


def test_known_texts_get_their_labels_in_order(served):
    server, reference = served
    texts = list(KNOWN_TEXTS)
    response = httpx.post(f"{server.url}/predict", json={"inputs": texts}, timeout=60)
    assert response.status_code == 200
    predictions = response.json()["predictions"]
    assert [p["label"] for p in predictions] == list(KNOWN_TEXTS.values())
    expected = reference.predict(texts, output="probabilities")
    for prediction, probabilities in zip(predictions, expected):
        assert prediction["probabilities"] == pytest.approx(probabilities, abs=1e-4)
    health = httpx.get(f"{server.url}/health").json()
    assert health["domain"] == "text" and health["labels"] == ["food", "sports"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"inputs": [42]}, "must be a JSON string"),
        ({"inputs": ["fine", "   "]}, r"inputs\[1\].*empty"),
        ({"inputs": [["nested"]]}, "must be a JSON string"),
    ],
)
def test_bad_text_inputs_get_422(served, body, message):
    server, _ = served
    response = httpx.post(f"{server.url}/predict", json=body, timeout=60)
    assert response.status_code == 422
    assert response.json()["detail"]

    assert re.search(message, response.json()["detail"])
    upload = httpx.post(f"{server.url}/predict", files={"files": ("a.txt", b"hello")}, timeout=60)
    assert upload.status_code == 415
    assert httpx.post(f"{server.url}/predict", json={"inputs": ["A cake"]}, timeout=60).status_code == 200


def test_concurrent_requests_of_mixed_lengths_match_one_by_one_predictions(served):
    server, reference = served
    rng = random.Random(1)
    pool = SPORTS + FOOD + list(KNOWN_TEXTS)
    requests = [rng.sample(pool, rng.randint(1, 2)) for _ in range(60)]
    expected = dict(zip(pool, reference.predict(pool, output="probabilities")))

    async def burst():
        limits = httpx.Limits(max_connections=20)
        async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=120) as client:
            return await asyncio.gather(*(client.post("/predict", json={"inputs": r}) for r in requests))

    predictor = server.app.state.predictor
    before = predictor.batches_run
    for response, texts in zip(asyncio.run(burst()), requests):
        assert response.status_code == 200
        for prediction, text in zip(response.json()["predictions"], texts):
            want = expected[text]
            assert prediction["label"] == max(want, key=want.get)
            assert prediction["probabilities"] == pytest.approx(want, abs=1e-4)
    assert max(list(predictor.batch_sizes)[-(predictor.batches_run - before) :]) > 2
