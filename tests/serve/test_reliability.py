"""A real server under hostile input: image bombs, malformed JSON, slow and vanishing clients.

The image server runs in its own process (so its memory can be measured and its file-descriptor
limit set to 1024), on 127.0.0.1 at a free port, with short header and body deadlines.
"""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from hostile import b64, bilevel_png, deep_json, huge_int_json
from servable_toy import ServableToy
from tiny_tasks import color_image, tabular_classifier

from flash.core.deploy.serve import start_server

HEADER_TIMEOUT = 3.0
BODY_TIMEOUT = 3.0
FD_LIMIT = 1024

SERVER_SCRIPT = """
import resource, sys
from pathlib import Path
_, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, ({fd_limit}, hard))
sys.path[:0] = {paths!r}
from tiny_tasks import image_classifier
task = image_classifier(Path(sys.argv[1]))
task.serve(host="127.0.0.1", port=int(sys.argv[2]), header_timeout={header}, body_timeout={body}, log_level="info")
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def memory_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def reset_peak(pid: int) -> bool:
    """Reset the process's peak RSS (VmHWM) to its current RSS; False where the kernel does not allow it."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class ImageServer:
    def __init__(self, process: subprocess.Popen, url: str, log: Path) -> None:
        self.process, self.url, self.log = process, url, log

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture(scope="module")
def image_server(tmp_path_factory):
    if not sys.platform.startswith("linux"):
        pytest.skip("measures the server through /proc")
    root = tmp_path_factory.mktemp("reliability")
    here = Path(__file__).parent
    script = SERVER_SCRIPT.format(
        fd_limit=FD_LIMIT, paths=[str(here), str(here.parent)], header=HEADER_TIMEOUT, body=BODY_TIMEOUT
    )
    port = free_port()
    log = root / "server.log"
    with open(log, "wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-c", script, str(root), str(port)], stdout=log_file, stderr=subprocess.STDOUT
        )
    server = ImageServer(process, f"http://127.0.0.1:{port}", log)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, server.log_text()
            try:
                if httpx.get(f"{server.url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not come up:\n" + server.log_text()
            time.sleep(0.25)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def client(image_server):
    with httpx.Client(base_url=image_server.url, timeout=60) as c:
        yield c


def good_image() -> str:
    import io

    buffer = io.BytesIO()
    color_image("red", 5).save(buffer, format="PNG")
    return b64(buffer.getvalue())


def assert_json_error(response: httpx.Response, status: int, pattern: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert pattern in response.json()["detail"], response.json()["detail"]


def test_sixteen_image_bombs_are_refused_unread(image_server, client):
    bomb = b64(bilevel_png(10_000, 10_000))  # 12 KB, 100 megapixels: 300 MB as RGB
    before = memory_kib(image_server.pid, "VmRSS")
    exact_peak = reset_peak(image_server.pid)
    response = client.post("/predict", json={"inputs": [bomb] * 16})
    assert_json_error(response, 422, "max_image_pixels=50,000,000")
    assert "inputs[0]" in response.json()["detail"]
    peak = memory_kib(image_server.pid, "VmHWM")
    if exact_peak:
        assert peak - before < 200 * 1024, f"peak RSS grew by {(peak - before) // 1024} MB"
    assert memory_kib(image_server.pid, "VmRSS") - before < 200 * 1024


def test_sixteen_large_images_decode_small_and_memory_comes_back(image_server, client):
    large = b64(bilevel_png(7_000, 7_000))  # 49 megapixels each, under the limit
    client.post("/predict", json={"inputs": [good_image()]})  # warm up
    before = memory_kib(image_server.pid, "VmRSS")
    exact_peak = reset_peak(image_server.pid)
    response = client.post("/predict", json={"inputs": [large] * 16})
    assert response.status_code == 200, response.text
    assert len(response.json()["predictions"]) == 16
    if exact_peak:
        peak = memory_kib(image_server.pid, "VmHWM")
        assert peak - before < 200 * 1024, f"peak RSS grew by {(peak - before) // 1024} MB"
    after = memory_kib(image_server.pid, "VmRSS")
    assert after - before < 60 * 1024, f"RSS stayed {(after - before) // 1024} MB above where it was"


def test_over_pillows_bomb_limit_is_a_4xx(client):
    response = client.post("/predict", json={"inputs": [b64(bilevel_png(20_000, 10_000))]})
    assert_json_error(response, 422, "decompression-bomb limit")


def test_malformed_json_is_a_json_4xx_and_the_connection_stays_usable(client):
    cases = [
        (huge_int_json(5000), "not valid JSON"),
        (deep_json(100_000), "nests JSON too deeply"),
        (b'{"inputs": [1, 2', "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
    ]
    for body, message in cases:
        response = client.post("/predict", content=body, headers={"content-type": "application/json"})
        assert_json_error(response, 400, message)
        assert client.post("/predict", json={"inputs": [good_image()]}).status_code == 200


def raw_request(url: str, head: bytes) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    sock.sendall(head)
    return sock


def read_until_closed(sock: socket.socket, timeout: float) -> tuple[bytes, float]:
    start = time.monotonic()
    sock.settimeout(timeout)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data, time.monotonic() - start


def test_slow_headers_are_cut_off(image_server):
    with raw_request(image_server.url, b"POST /predict HTTP/1.1\r\nHost: x\r\n") as sock:
        data, waited = read_until_closed(sock, HEADER_TIMEOUT + 10)
    assert data == b"" and waited < HEADER_TIMEOUT + 3


def test_slow_body_gets_408(image_server):
    head = (
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    )
    with raw_request(image_server.url, head + b'{"inputs": [') as sock:
        data, waited = read_until_closed(sock, BODY_TIMEOUT + 10)
    assert data.startswith(b"HTTP/1.1 408"), data[:200]
    assert b"body_timeout" in data and b"connection: close" in data.lower()
    assert waited < BODY_TIMEOUT + 3


def test_hanging_up_mid_body_logs_one_line(image_server, client):
    head = (
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n\r\n"
    )
    with raw_request(image_server.url, head + b'{"inputs": ["' + b"A" * 100):
        time.sleep(0.3)
    deadline = time.monotonic() + 10
    while "hung up before its request body arrived" not in image_server.log_text():
        assert time.monotonic() < deadline, image_server.log_text()[-3000:]
        time.sleep(0.1)
    assert client.get("/health").status_code == 200
    log = image_server.log_text()
    assert log.count("hung up before its request body arrived") == 1
    assert "Traceback" not in log


def test_eleven_hundred_slow_sockets_leave_health_answering(image_server):
    sockets = []
    try:
        for _ in range(1100):
            sockets.append(raw_request(image_server.url, b"GET /health HTTP/1.1\r\nHost: x\r\n"))
        start = time.monotonic()
        response = httpx.get(f"{image_server.url}/health", timeout=HEADER_TIMEOUT)
        assert response.status_code == 200
        assert time.monotonic() - start < HEADER_TIMEOUT
    finally:
        for sock in sockets:
            sock.close()
    assert image_server.process.poll() is None
    log = image_server.log_text()
    assert "out of system resource" not in log and "Too many open files" not in log


def test_server_log_has_no_tracebacks(image_server):
    assert "Traceback" not in image_server.log_text()


# -- in-process servers: a fault inside the server, and a tabular column --------------------------
class FaultyToy(ServableToy):
    def decode_serve_input(self, value):
        if value == "fault":
            raise RuntimeError("an unexpected fault\nover two lines")
        return super().decode_serve_input(value)


def test_an_unexpected_fault_is_a_json_500_that_closes_and_logs_one_line(caplog):
    with start_server(FaultyToy()) as server, httpx.Client(base_url=server.url, timeout=30) as c:
        with caplog.at_level(logging.INFO, logger="uvicorn.error"):
            response = c.post("/predict", json={"inputs": ["fault"]})
        assert_json_error(response, 500, "RuntimeError")
        assert response.headers["connection"] == "close"
        assert c.post("/predict", json={"inputs": [[1, 1, 0, 0]]}).status_code == 200
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is None
    assert "\n" not in errors[0].getMessage() and "RuntimeError" in errors[0].getMessage()


def test_a_number_too_large_for_a_tabular_column_is_a_422():
    task = tabular_classifier()
    with start_server(task) as server:
        row = {"x": int("9" * 400), "z": 0.0, "color": "red"}
        response = httpx.post(f"{server.url}/predict", json={"inputs": [row]}, timeout=30)
        assert_json_error(response, 422, "too large for a 64-bit float")
        assert "inputs[0]" in response.json()["detail"]


def test_the_limits_are_checked():
    with pytest.raises(ValueError, match="max_image_pixels"):
        start_server(ServableToy(), max_image_pixels=0)
    with pytest.raises(ValueError, match="header_timeout"):
        start_server(ServableToy(), header_timeout=-1)
    with pytest.raises(ValueError, match="max_connections"):
        start_server(ServableToy(), max_connections=0)


def test_the_cli_offers_every_serving_option_with_its_default():
    import dataclasses

    from flash.cli import SERVE_OPTIONS
    from flash.core.deploy.serve_options import ServeOptions

    cli = {option.dest: option.default for option in SERVE_OPTIONS}
    assert cli == {field.name: field.default for field in dataclasses.fields(ServeOptions)}
