"""A real uvicorn server on 127.0.0.1 (a free port) serving the wired toy, driven with real HTTP."""

from __future__ import annotations

import asyncio
import random
import re
import threading
import time

import httpx
import pytest
import torch
from servable_toy import ServableToy, expected

from flash.core.deploy.serve import build_app, start_server

LIMIT = 64 * 1024


@pytest.fixture(scope="module")
def server():
    with start_server(ServableToy(), "127.0.0.1", 0, max_body_bytes=LIMIT, max_inputs_per_request=50) as srv:
        yield srv
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{srv.url}/health", timeout=2)


@pytest.fixture
def client(server):
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


def assert_matches(prediction: dict, row: list[float]) -> None:
    want = expected(row)
    assert prediction["label"] == want["label"]
    assert prediction["probabilities"].keys() == want["probabilities"].keys()
    for name, p in want["probabilities"].items():
        assert prediction["probabilities"][name] == pytest.approx(p, abs=1e-5)


def assert_still_serving(client: httpx.Client) -> None:
    assert client.get("/health").status_code == 200
    response = client.post("/predict", json={"inputs": [[1, 1, 0, 0]]})
    assert response.status_code == 200
    assert response.json()["predictions"][0]["label"] == "pos"


def test_health_and_known_predictions_in_order(client):
    health = client.get("/health")
    assert health.status_code == 200
    assert health.json() == {"status": "ok", "task": "ServableToy", "domain": "toy", "labels": ["neg", "pos"]}
    rows = [[1, 2, 0, 0], [-3, 1, 5, 5], [0.25, -0.5, 0, 0], [4, -1, -9, 9]]
    response = client.post("/predict", json={"inputs": rows})
    assert response.status_code == 200
    predictions = response.json()["predictions"]
    assert [p["label"] for p in predictions] == ["pos", "neg", "neg", "pos"]
    for prediction, row in zip(predictions, rows):
        assert_matches(prediction, row)


def _chunks(total: int):
    sent = 0
    while sent < total:
        yield b" " * 8192
        sent += 8192


@pytest.mark.parametrize(
    ("status", "request_kwargs", "message"),
    [
        (400, {"content": b"{not json", "headers": {"content-type": "application/json"}}, "not valid JSON"),
        (400, {"content": b"", "headers": {"content-type": "application/json"}}, "empty"),
        (
            400,
            {"content": b"\xff\xfe\x00", "headers": {"content-type": "application/json"}},
            "not valid JSON",
        ),
        (
            400,
            {"content": b"[" * 300 + b"]" * 300, "headers": {"content-type": "application/json"}},
            "deeply",
        ),
        (422, {"json": [[1, 2, 3, 4]]}, "must be a JSON object .* got a list"),
        (422, {"json": {"rows": [[1, 2, 3, 4]]}}, "Unknown field.*'rows'"),
        (422, {"json": {}}, '"inputs" \\(or "instances"\\); it has neither'),
        (422, {"json": {"inputs": [[1, 2, 3, 4]], "instances": [[1, 2, 3, 4]]}}, "it has both"),
        (422, {"json": {"inputs": [[1, 2, 3, 4]], "extra": 1}}, "Unknown field.*'extra'"),
        (422, {"json": {"inputs": "1,2,3,4"}}, '"inputs" must be a list, got a string'),
        (422, {"json": {"instances": {"a": 1}}}, '"instances" must be a list, got an object'),
        (422, {"json": {"inputs": None}}, '"inputs" must be a list, got null'),
        (422, {"json": {"inputs": []}}, '"inputs" is empty'),
        (422, {"json": {"instances": []}}, '"instances" is empty'),
        (422, {"json": {"inputs": [[1, 2, 3, 4]] * 51}}, '"inputs" holds 51 items; .* at most 50'),
        (422, {"json": {"inputs": [[1, 2, 3, 4], [1, 2]]}}, r"inputs\[1\]: expected a list of 4 numbers"),
        (422, {"json": {"instances": [[1, 2]]}}, r"instances\[0\]: expected a list of 4 numbers"),
        (413, {"content": b"[" * (LIMIT + 1), "headers": {"content-type": "application/json"}}, "limit"),
        (413, {"content": _chunks(4 * LIMIT), "headers": {"content-type": "application/json"}}, "limit"),
        (415, {"files": {"files": ("a.png", b"\x89PNG")}}, "takes JSON"),
    ],
    ids=[
        "not-json",
        "empty-body",
        "not-utf8",
        "nested-too-deep",
        "list-body",
        "unknown-field-only",
        "no-inputs",
        "inputs-and-instances",
        "extra-field",
        "inputs-not-list",
        "instances-not-list",
        "inputs-null",
        "inputs-empty",
        "instances-empty",
        "too-many-inputs",
        "bad-item",
        "bad-instance",
        "too-large",
        "too-large-chunked",
        "upload-to-json-task",
    ],
)
def test_bad_requests_get_4xx_and_the_server_keeps_serving(client, status, request_kwargs, message):
    response = client.post("/predict", **request_kwargs)
    assert response.status_code == status
    assert response.headers["content-type"].startswith("application/json")
    assert response.json().keys() == {"detail"}
    assert re.search(message, response.json()["detail"]), response.json()["detail"]
    assert_still_serving(client)


def test_instances_are_inputs_under_kserves_name(client):
    rows = [[1, 2, 0, 0], [-3, 1, 5, 5]]
    inputs = client.post("/predict", json={"inputs": rows})
    instances = client.post("/predict", json={"instances": rows})
    assert instances.status_code == 200
    assert instances.json() == inputs.json()
    assert [p["label"] for p in instances.json()["predictions"]] == ["pos", "neg"]


def test_unknown_route_and_method_are_json_errors(client):
    assert client.get("/nope").json() == {"detail": "Not Found"}
    assert client.get("/predict").status_code == 405
    assert "detail" in client.get("/predict").json()


def test_openapi_schema_describes_predict(client):
    schema = client.get("/openapi.json").json()
    predict = schema["paths"]["/predict"]["post"]
    assert "application/json" in predict["requestBody"]["content"]
    body = predict["requestBody"]["content"]["application/json"]["schema"]
    assert {"inputs", "instances"} <= set(body["properties"])
    assert body["properties"]["inputs"]["maxItems"] == 50
    assert schema["components"]["schemas"]["ErrorResponse"]["required"] == ["detail"]
    assert {"200", "400", "413", "422"} <= set(predict["responses"])
    assert "/health" in schema["paths"]
    assert client.get("/docs").status_code == 200


def test_burst_of_concurrent_requests_is_answered_correctly_and_batched(server):
    rng = random.Random(0)
    requests = [
        [[rng.uniform(-3, 3) for _ in range(4)] for _ in range(rng.randint(1, 3))] for _ in range(200)
    ]
    predictor = server.app.state.predictor
    batches_before, items_before = predictor.batches_run, predictor.items_run

    async def burst() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=20, max_keepalive_connections=20)
        async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=60) as c:
            return await asyncio.gather(*(c.post("/predict", json={"inputs": rows}) for rows in requests))

    start = time.perf_counter()
    responses = asyncio.run(burst())
    elapsed = time.perf_counter() - start
    assert elapsed < 60, f"200 requests took {elapsed:.1f} s"
    for response, rows in zip(responses, requests):
        assert response.status_code == 200
        predictions = response.json()["predictions"]
        assert len(predictions) == len(rows)
        for prediction, row in zip(predictions, rows):
            assert_matches(prediction, row)
    assert predictor.items_run - items_before == sum(len(rows) for rows in requests)
    sizes = list(predictor.batch_sizes)[-(predictor.batches_run - batches_before) :]
    assert sum(sizes) == sum(len(rows) for rows in requests)
    assert max(sizes) > 3, "concurrent requests were never batched together"
    assert max(sizes) <= 32


def test_server_stops_by_itself(tmp_path):
    with start_server(ServableToy(), port=0) as srv:
        assert httpx.get(f"{srv.url}/health").status_code == 200
    assert not srv._thread.is_alive()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{srv.url}/health", timeout=2)


def test_bad_arguments_are_clear_errors(tmp_path):
    task = ServableToy()
    with pytest.raises(ValueError, match="max_body_bytes"):
        build_app(task, max_body_bytes=0)
    with pytest.raises(ValueError, match="max_batch_size"):
        build_app(task, max_batch_size=-1)
    with pytest.raises(ValueError, match="port"):
        start_server(task, port=70000)
    with pytest.raises(TypeError, match="flash task"):
        build_app(object())
    with pytest.raises(TypeError, match="'max_batch'.*max_batch_size"):
        build_app(task, max_batch=4)
    with pytest.raises(ValueError, match="max_wait_ms"):
        build_app(task, max_wait_ms=float("nan"))
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a flash checkpoint"):
        build_app(junk)
    with start_server(task, port=0) as srv, pytest.raises(OSError, match="Cannot listen"):
        start_server(task, port=srv.port)


class FragileToy(ServableToy):
    """Fails inside the model on any batch holding a row whose third value is 999."""

    def forward(self, x):
        if bool((x[:, 2] == 999).any()):
            raise RuntimeError("boom")
        return super().forward(x)


def test_a_model_failure_is_a_500_for_its_request_only():
    with start_server(FragileToy(), max_wait_ms=50) as srv:

        async def mixed():
            async with httpx.AsyncClient(base_url=srv.url, timeout=60) as c:
                bad = c.post("/predict", json={"inputs": [[1, 1, 999, 0]]})
                goods = [c.post("/predict", json={"inputs": [[i, 1, 0, 0]]}) for i in range(5)]
                return await asyncio.gather(bad, *goods)

        bad, *goods = asyncio.run(mixed())
        assert bad.status_code == 500
        assert "RuntimeError" in bad.json()["detail"]
        assert [g.json()["predictions"][0]["label"] for g in goods] == ["pos"] * 5
        assert httpx.get(f"{srv.url}/health").status_code == 200
        assert max(srv.app.state.predictor.batch_sizes) > 1, "the bad request never shared a batch"


def test_multi_label_predictions_are_lists_of_labels():
    with start_server(ServableToy(multi_label=True)) as srv:
        response = httpx.post(f"{srv.url}/predict", json={"inputs": [[2, 1, 0, 0], [-2, 1, 0, 0]]})
    assert response.status_code == 200
    assert [p["label"] for p in response.json()["predictions"]] == [["pos"], ["neg"]]


class GatedToy(ServableToy):
    """Holds every forward pass until ``gate`` is set, so requests pile up behind it."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()

    def forward(self, x):
        self.gate.wait(30)
        return super().forward(x)


async def _wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


def test_a_full_queue_is_a_503_with_retry_after():
    task = GatedToy()
    with start_server(task, max_batch_size=1, max_wait_ms=0, max_queue_size=1) as srv:
        predictor = srv.app.state.predictor
        row = {"inputs": [[1, 1, 0, 0]]}

        async def pile_up():
            async with httpx.AsyncClient(base_url=srv.url, timeout=60) as c:
                inside = asyncio.ensure_future(c.post("/predict", json=row))
                await _wait_for(lambda: predictor.batches_run == 1)  # the model holds it
                waiting = asyncio.ensure_future(c.post("/predict", json=row))
                await _wait_for(lambda: predictor._queue.full())
                refused = await c.post("/predict", json=row)
                task.gate.set()
                return refused, await inside, await waiting

        refused, inside, waiting = asyncio.run(pile_up())
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "1"
    assert refused.json().keys() == {"detail"} and "1 requests waiting" in refused.json()["detail"]
    assert inside.status_code == waiting.status_code == 200


def test_connections_all_busy_is_a_503_with_retry_after():
    task = GatedToy()
    with start_server(task, max_connections=1) as srv:
        predictor = srv.app.state.predictor

        async def busy():
            async with httpx.AsyncClient(base_url=srv.url, timeout=60) as c:
                inside = asyncio.ensure_future(c.post("/predict", json={"inputs": [[1, 1, 0, 0]]}))
                await _wait_for(lambda: predictor.batches_run == 1)
                async with httpx.AsyncClient(base_url=srv.url, timeout=60) as other:
                    refused = await other.get("/health")
                task.gate.set()
                return refused, await inside

        refused, inside = asyncio.run(busy())
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "1"
    assert "connections open, all busy" in refused.json()["detail"]
    assert inside.status_code == 200


def test_the_record_of_batch_sizes_stays_bounded():
    from flash.core.deploy.serve_batching import BATCH_HISTORY

    with start_server(ServableToy(), max_batch_size=1, max_wait_ms=0) as srv:
        predictor = srv.app.state.predictor
        rows = [[i, 1, 0, 0] for i in range(BATCH_HISTORY + 50)]

        async def many():
            limits = httpx.Limits(max_connections=8)
            async with httpx.AsyncClient(base_url=srv.url, limits=limits, timeout=60) as c:
                return await asyncio.gather(*(c.post("/predict", json={"instances": [row]}) for row in rows))

        assert all(r.status_code == 200 for r in asyncio.run(many()))
    assert predictor.batches_run == predictor.items_run == BATCH_HISTORY + 50
    assert len(predictor.batch_sizes) == BATCH_HISTORY
    assert predictor._in_flight == [] and predictor._held is None


class FileToy(ServableToy):
    """Takes uploads: each file holds a row as text, ``1,2,0,0``."""

    def decode_serve_file(self, data, filename=""):
        self.received.append((type(data), data, filename))
        return torch.tensor([float(v) for v in data.decode().split(",")])


def test_uploaded_files_reach_the_task_as_their_bytes():
    task = FileToy()
    task.received = []
    with start_server(task) as srv:
        files = [("files", ("a.csv", b"1,2,0,0")), ("files", ("b.csv", b"-3,1,5,5"))]
        response = httpx.post(f"{srv.url}/predict", files=files, timeout=30)
    assert response.status_code == 200, response.text
    assert [p["label"] for p in response.json()["predictions"]] == ["pos", "neg"]
    assert task.received == [(bytes, b"1,2,0,0", "a.csv"), (bytes, b"-3,1,5,5", "b.csv")]
