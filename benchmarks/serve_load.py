"""A bounded mixed load on a real image server: valid and malformed requests, status counts, latency, memory.

Starts ``flash`` serving a small image classifier (EfficientNet-Lite0 at 96 px, untrained head) in
its own process on 127.0.0.1 at a free port, then sends ``--requests`` requests over ``--threads``
threads (stopping early after ``--seconds``): valid single images and batches of four, mixed with
image bombs (a 12 KB PNG of 100 megapixels), a PNG over Pillow's bomb limit, JSON with a
5,000-digit number, JSON nested 100,000 deep, bad base64 and truncated images. Prints the
status counts per kind, p50/p99 latency, and the server's RSS before and after and its peak.

    python -m benchmarks.serve_load --requests 400 --threads 16
"""

from __future__ import annotations

import argparse
import base64
import io
import random
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections import Counter, defaultdict
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

SERVER = """
import sys
from flash.image import ImageClassifier
task = ImageClassifier(num_classes=2, labels=["red", "blue"], image_size=96)
task.serve(host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""


def bilevel_png(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\0" * (1 + (width + 7) // 8)
    compressor = zlib.compressobj(9)
    step = max(1, (1 << 20) // len(row))
    body = b"".join(compressor.compress(row * min(step, height - s)) for s in range(0, height, step))
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    idat = body + compressor.flush()
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def photo(seed: int, size: int = 320) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def request_kinds() -> dict[str, dict]:
    """Each kind of request: httpx.post keyword arguments."""
    photos = [b64(photo(seed)) for seed in range(8)]
    bomb = b64(bilevel_png(10_000, 10_000))
    json_type = {"content-type": "application/json"}
    return {
        "valid 1 image": {"json": {"inputs": photos[:1]}},
        "valid 4 images": {"json": {"inputs": photos[:4]}},
        "16 image bombs": {"json": {"inputs": [bomb] * 16}},
        "over Pillow's limit": {"json": {"inputs": [b64(bilevel_png(20_000, 10_000))]}},
        "5,000-digit number": {"content": b'{"inputs": [' + b"9" * 5000 + b"]}", "headers": json_type},
        "nested 100,000 deep": {
            "content": b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
            "headers": json_type,
        },
        "bad base64": {"json": {"inputs": ["not base64!"]}},
        "truncated image": {"json": {"inputs": [b64(photo(9)[:300])]}},
    }


def memory_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=400, help="requests in all")
    parser.add_argument("--threads", type=int, default=16, help="client threads")
    parser.add_argument("--seconds", type=float, default=120.0, help="stop sending after this long")
    parser.add_argument("--valid-share", type=float, default=0.5, help="share of valid requests")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile() as log:
        server = subprocess.Popen([sys.executable, "-c", SERVER, str(port)], stdout=log, stderr=log)
        try:
            run_load(server, url, args)
        finally:
            server.terminate()
            server.wait(timeout=30)
            log.seek(0)
            tracebacks = log.read().decode(errors="replace").count("Traceback")
            print(f"tracebacks in the server log: {tracebacks}")


def run_load(server: subprocess.Popen, url: str, args: argparse.Namespace) -> None:
    deadline = time.monotonic() + 180
    while True:
        if server.poll() is not None:
            raise RuntimeError("the server exited before it answered /health")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("the server did not come up within 180 s")
        time.sleep(0.25)

    kinds = request_kinds()
    valid = [k for k in kinds if k.startswith("valid")]
    malformed = [k for k in kinds if not k.startswith("valid")]
    rng = random.Random(args.seed)
    plan = [rng.choice(valid if rng.random() < args.valid_share else malformed) for _ in range(args.requests)]
    httpx.post(f"{url}/predict", timeout=60, **kinds["valid 1 image"])  # warm up
    rss_before = memory_kib(server.pid, "VmRSS")
    Path(f"/proc/{server.pid}/clear_refs").write_text("5")  # peak RSS from here

    statuses: dict[str, Counter] = defaultdict(Counter)
    latencies: dict[str, list[float]] = defaultdict(list)
    lock = threading.Lock()
    stop_at = time.monotonic() + args.seconds
    next_index = iter(range(len(plan)))

    def worker() -> None:
        with httpx.Client(base_url=url, timeout=60) as client:
            while time.monotonic() < stop_at:
                with lock:
                    index = next(next_index, None)
                if index is None:
                    return
                kind = plan[index]
                start = time.perf_counter()
                try:
                    status = str(client.post("/predict", **kinds[kind]).status_code)
                except httpx.TransportError as error:
                    status = type(error).__name__
                with lock:
                    statuses[kind][status] += 1
                    latencies["valid" if kind in valid else "malformed"].append(time.perf_counter() - start)

    started = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(args.threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    peak = memory_kib(server.pid, "VmHWM")
    time.sleep(1.0)
    rss_after = memory_kib(server.pid, "VmRSS")
    health = httpx.get(f"{url}/health", timeout=10).status_code

    sent = sum(sum(c.values()) for c in statuses.values())
    print(f"{sent} requests over {args.threads} threads in {wall:.1f} s")
    print(f"{'kind':<22} statuses")
    for kind in kinds:
        counts = ", ".join(f"{status}: {n}" for status, n in sorted(statuses[kind].items()))
        print(f"{kind:<22} {counts}")
    for group in ("valid", "malformed"):
        values = np.array(latencies[group]) * 1000
        if len(values):
            p50, p99 = np.percentile(values, [50, 99])
            print(f"latency {group:<10} p50 {p50:7.1f} ms   p99 {p99:7.1f} ms   ({len(values)} requests)")
    print(
        f"server RSS before {rss_before / 1024:.0f} MB, peak {peak / 1024:.0f} MB, "
        f"after {rss_after / 1024:.0f} MB; /health after the load: {health}"
    )


if __name__ == "__main__":
    main()
