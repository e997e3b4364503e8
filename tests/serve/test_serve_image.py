"""Serving the image classifier (EfficientNet-Lite0, shipped ImageNet weights) over real HTTP."""

from __future__ import annotations

import base64
import io
import re

import httpx
import pytest
from tiny_tasks import color_image, image_classifier

from flash.core.deploy.checkpoint import load_task
from flash.core.deploy.serve import start_server

LIMIT = 512 * 1024


def png_bytes(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg_bytes(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    image_classifier(root, root / "image.ckpt")
    reference = load_task(root / "image.ckpt")
    with start_server(root / "image.ckpt", max_body_bytes=LIMIT) as server:
        yield server, reference


def test_base64_and_uploaded_images_get_their_colours(served):
    server, reference = served
    images = [color_image("red", 101), color_image("blue", 202), color_image("red", 303)]
    files = [png_bytes(images[0]), jpeg_bytes(images[1]), png_bytes(images[2])]
    expected = ["red", "blue", "red"]
    decoded = [reference.decode_serve_input(b64(f)) for f in files]
    reference_probabilities = reference.predict(decoded, output="probabilities")

    as_json = httpx.post(
        f"{server.url}/predict",
        json={"inputs": [b64(files[0]), b64(files[1]), "data:image/png;base64," + b64(files[2])]},
        timeout=120,
    )
    uploaded = httpx.post(
        f"{server.url}/predict",
        files=[("files", (f"{i}.img", data, "application/octet-stream")) for i, data in enumerate(files)],
        timeout=120,
    )
    for response in (as_json, uploaded):
        assert response.status_code == 200, response.text
        predictions = response.json()["predictions"]
        assert [p["label"] for p in predictions] == expected
        for prediction, probabilities in zip(predictions, reference_probabilities):
            assert prediction["probabilities"] == pytest.approx(probabilities, abs=1e-4)


def test_bad_images_get_4xx_and_the_server_keeps_serving(served):
    server, _ = served
    good = b64(png_bytes(color_image("blue", 7)))
    truncated = png_bytes(color_image("red", 8))[:200]
    cases = [
        ({"json": {"inputs": [good, "not base64 at all!"]}}, 422, r"inputs\[1\].*not valid base64"),
        ({"json": {"inputs": [b64(b"hello, not an image")]}}, 422, r"inputs\[0\].*not an image"),
        ({"json": {"inputs": [b64(truncated)]}}, 422, "not an image|truncated"),
        ({"json": {"inputs": [123]}}, 422, "base64 string"),
        ({"files": [("files", ("a.txt", b"plain text", "text/plain"))]}, 422, "not an image"),
        ({"data": {"note": "hi"}, "files": [("files", ("a.png", b"x"))]}, 422, "'note' is not a file"),
        ({"files": [("files", ("big.png", b"\0" * (2 * LIMIT)))]}, 413, "limit"),
    ]
    for kwargs, status, message in cases:
        response = httpx.post(f"{server.url}/predict", timeout=120, **kwargs)
        assert response.status_code == status, (kwargs.keys(), response.text)
        assert re.search(message, response.json()["detail"]), response.json()["detail"]
        check = httpx.post(f"{server.url}/predict", json={"inputs": [good]}, timeout=120)
        assert check.status_code == 200 and check.json()["predictions"][0]["label"] == "blue"


def test_openapi_offers_json_and_multipart(served):
    server, _ = served
    body = httpx.get(f"{server.url}/openapi.json").json()["paths"]["/predict"]["post"]["requestBody"]
    assert set(body["content"]) == {"application/json", "multipart/form-data"}
    assert "base64" in body["content"]["application/json"]["schema"]["properties"]["inputs"]["description"]
