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
