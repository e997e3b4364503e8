"""Serving the tabular classifier and regressor over real HTTP: rows as JSON objects."""

from __future__ import annotations

import re

import httpx
import lightning.pytorch
import pytest
from tiny_tasks import tabular_classifier, tabular_regressor

from flash.core.deploy.serve import start_server

ROWS = [
    {"x": 2.5, "z": 0.0, "color": "red"},
    {"x": -2.5, "z": 0.3, "color": "blue"},
    {"x": 1.7, "z": -1.0, "color": "green"},
    {"x": -2.0, "z": 1.0, "color": "red"},
    {"x": 0.4, "z": None, "color": "purple"},
]


@pytest.fixture(scope="module")
def classifier_server():
    lightning.pytorch.seed_everything(0)
    task = tabular_classifier(epochs=1, learning_rate=2e-2)
    with start_server(task) as server:
        yield server, task


def test_rows_get_the_same_predictions_as_in_process(classifier_server):
    server, task = classifier_server
    response = httpx.post(f"{server.url}/predict", json={"inputs": ROWS}, timeout=60)
    assert response.status_code == 200
    predictions = response.json()["predictions"]
    assert [p["label"] for p in predictions] == task.predict(ROWS)
    for prediction, probabilities in zip(predictions, task.predict(ROWS, output="probabilities")):
        assert prediction["probabilities"] == pytest.approx(probabilities, abs=1e-4)
    assert [p["label"] for p in predictions[:4]] == ["high", "low", "high", "low"]


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ([{"x": 1.0, "color": "red"}], r"inputs\[0\].*lacks column z"),
        ([ROWS[0], {"x": "abc", "z": 1.0, "color": "red"}], r"inputs\[1\].*'x'.*not a number"),
        ([[1.0, 0.0, "red"]], "JSON object"),
        ([{"x": [1, 2], "z": 1.0, "color": "red"}], "must hold a number"),
    ],
    ids=["missing-column", "text-in-number", "not-an-object", "nested-value"],
)
def test_bad_rows_get_422_and_the_server_keeps_serving(classifier_server, inputs, message):
    server, _ = classifier_server
    response = httpx.post(f"{server.url}/predict", json={"inputs": inputs}, timeout=60)
    assert response.status_code == 422
    assert re.search(message, response.json()["detail"]), response.json()["detail"]
    assert httpx.post(f"{server.url}/predict", json={"inputs": ROWS[:1]}, timeout=60).status_code == 200


def test_regressor_answers_values():
    task = tabular_regressor()
    with start_server(task) as server:
        response = httpx.post(f"{server.url}/predict", json={"inputs": ROWS}, timeout=60)
    assert response.status_code == 200
    values = [p["value"] for p in response.json()["predictions"]]
    assert values == pytest.approx(task.predict(ROWS, output="values"), abs=1e-4)
    assert all(set(p) == {"value"} for p in response.json()["predictions"])
