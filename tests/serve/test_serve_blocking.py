"""``task.serve()`` blocks in its own process, answers, and stops cleanly on Ctrl-C (SIGINT)."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest
from tiny_tasks import tabular_classifier

SERVE_SCRIPT = """
import sys
from flash.core.deploy.checkpoint import load_task
load_task(sys.argv[1]).serve(host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_serve_blocks_answers_and_stops_on_sigint(tmp_path):
    checkpoint = tmp_path / "tab.ckpt"
    task = tabular_classifier(epochs=1, checkpoint=checkpoint)
    row = {"x": 1.5, "z": 0.0, "color": "red"}
    port = free_port()
    process = subprocess.Popen([sys.executable, "-c", SERVE_SCRIPT, str(checkpoint), str(port)])
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert process.poll() is None, "the server process exited"
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not come up"
            time.sleep(0.25)
        response = httpx.post(f"{url}/predict", json={"inputs": [row]}, timeout=60)
        assert response.status_code == 200
        assert response.json()["predictions"][0]["label"] == task.predict(row)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def wait_for_line(log, text: str, process: subprocess.Popen, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while text not in log.read_text(errors="replace"):
        assert process.poll() is None, f"the server exited:\n{log.read_text(errors='replace')}"
        assert time.monotonic() < deadline, f"no {text!r} in:\n{log.read_text(errors='replace')}"
        time.sleep(0.1)
    return log.read_text(errors="replace")


@pytest.mark.slow
def test_flash_serve_prints_its_url_and_ctrl_c_stops_it_at_once(tmp_path):
    checkpoint = tmp_path / "tab.ckpt"
    tabular_classifier(epochs=1, checkpoint=checkpoint)
    port = free_port()
    log = tmp_path / "serve.log"
    argv = ["serve", str(checkpoint), "--port", str(port), "--accelerator", "cpu", "--log-level", "warning"]
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "flash", *argv], stdout=out, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_line(
            log, f"Serving TabularClassifier at {url} (docs at /docs); Ctrl-C to stop", process, 180
        )
        with httpx.Client(base_url=url, timeout=30) as client:  # a keep-alive connection stays open
            assert client.get("/health").status_code == 200
            response = client.post("/predict", json={"instances": [{"x": 1.5, "z": 0.0, "color": "red"}]})
            assert response.status_code == 200 and len(response.json()["predictions"]) == 1
            process.send_signal(signal.SIGINT)
            start = time.monotonic()
            assert process.wait(timeout=10) == 0
        assert time.monotonic() - start < 5, "Ctrl-C took more than 5 s to stop the server"
        text = log.read_text(errors="replace")
        assert "Stopped serving TabularClassifier." in text
        assert "Traceback" not in text and "KeyboardInterrupt" not in text
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
