"""download_data against an HTTP server this test starts on 127.0.0.1 (never any other address)."""

from __future__ import annotations

import io
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import flash
from flash.core.data.download import STATE_DIR, DownloadError, UnsafeArchiveError, download_data


class FileServer:
    """Serves ``files`` (URL path -> bytes); ``truncated`` paths announce more bytes than they send."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.truncated: set[str] = set()
        self.requests: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append(self.path)
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404, "Not Found")
                    return
                self.send_response(200)
                announced = len(body) * 2 if self.path in server.truncated else len(body)
                self.send_header("Content-Length", str(announced))
                self.end_headers()
                if self.path in server.truncated:
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    def count(self, path: str) -> int:
        return self.requests.count(path)


@pytest.fixture
def server() -> Iterator[FileServer]:
    srv = FileServer()
    srv.thread.start()
    try:
        yield srv
    finally:
        srv.httpd.shutdown()
        srv.httpd.server_close()
        srv.thread.join(timeout=5)


def make_zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def make_tar_gz(members: dict[str, bytes], links: dict[str, tuple[str, bytes]] | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for name, (target, kind) in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = kind
            info.linkname = target
            tf.addfile(info)
    return buffer.getvalue()


def visible_files(root: Path) -> set[str]:
    return {
        p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and STATE_DIR not in p.parts
    }


def test_zip_is_extracted_once(server, tmp_path):
    server.files["/data.zip"] = make_zip({"data/train/a.txt": b"ant", "data/val/b.txt": b"bee"})
    out = flash.download_data(f"{server.url}/data.zip", tmp_path / "out", progress=False)
    assert out == tmp_path / "out"
    assert visible_files(out) == {"data/train/a.txt", "data/val/b.txt"}
    assert (out / "data/train/a.txt").read_bytes() == b"ant"
    assert not (out / "data.zip").exists()

    download_data(f"{server.url}/data.zip", out, progress=False)
    assert server.count("/data.zip") == 1

    (out / "data/val/b.txt").unlink()
    (out / "data/val").rmdir()
    (out / "data/train/a.txt").unlink()
    (out / "data/train").rmdir()
    (out / "data").rmdir()
    download_data(f"{server.url}/data.zip", out, progress=False)
    assert server.count("/data.zip") == 2
    assert visible_files(out) == {"data/train/a.txt", "data/val/b.txt"}

    download_data(f"{server.url}/data.zip", out, progress=False, force=True)
    assert server.count("/data.zip") == 3


def test_tar_gz_and_plain_file(server, tmp_path):
    server.files["/set.tar.gz"] = make_tar_gz({"set/x.csv": b"a,b\n1,2\n", "set/sub/y.txt": b"y"})
    server.files["/notes.txt"] = b"hello"
    download_data(f"{server.url}/set.tar.gz", tmp_path, progress=True)
    download_data(f"{server.url}/notes.txt", tmp_path, progress=False)
    assert visible_files(tmp_path) == {"set/x.csv", "set/sub/y.txt", "notes.txt"}
    assert (tmp_path / "set/x.csv").read_bytes() == b"a,b\n1,2\n"
    download_data(f"{server.url}/notes.txt", tmp_path, progress=False)
    assert server.count("/notes.txt") == 1


def test_file_url(tmp_path):
    source = tmp_path / "src" / "bundle.zip"
    source.parent.mkdir()
    source.write_bytes(make_zip({"bundle/one.txt": b"1"}))
    download_data(source.as_uri(), tmp_path / "dest", progress=False)
    assert (tmp_path / "dest/bundle/one.txt").read_bytes() == b"1"
    with pytest.raises(DownloadError, match=r"missing\.zip"):
        download_data((tmp_path / "missing.zip").as_uri(), tmp_path / "dest", progress=False)


def test_http_404_names_the_url(server, tmp_path):
    url = f"{server.url}/nothing-here.zip"
    with pytest.raises(DownloadError, match="404") as error:
        download_data(url, tmp_path / "out", progress=False)
    assert url in str(error.value)
    assert visible_files(tmp_path / "out") == set()


def test_dropped_connection_leaves_no_file(server, tmp_path):
    server.files["/big.bin"] = bytes(range(256)) * 512
    server.truncated.add("/big.bin")
    with pytest.raises(DownloadError, match=r"big\.bin"):
        download_data(f"{server.url}/big.bin", tmp_path / "out", progress=False)
    assert list((tmp_path / "out").rglob("*.bin")) == []
    assert list((tmp_path / "out").rglob("*.part")) == []
    server.truncated.clear()
    download_data(f"{server.url}/big.bin", tmp_path / "out", progress=False)
    assert (tmp_path / "out/big.bin").read_bytes() == server.files["/big.bin"]


@pytest.mark.parametrize(
    ("name", "archive"),
    [
        ("up.zip", make_zip({"ok.txt": b"ok", "../escaped.txt": b"x"})),
        ("abs.zip", make_zip({"ok.txt": b"ok", "/tmp/escaped.txt": b"x"})),
        ("up.tar.gz", make_tar_gz({"ok.txt": b"ok", "a/../../escaped.txt": b"x"})),
        ("abs.tar.gz", make_tar_gz({"ok.txt": b"ok", "/tmp/escaped.txt": b"x"})),
        ("sym.tar.gz", make_tar_gz({"ok.txt": b"ok"}, {"link": ("/etc/passwd", tarfile.SYMTYPE)})),
        ("hard.tar.gz", make_tar_gz({"ok.txt": b"ok"}, {"link": ("../../secret", tarfile.LNKTYPE)})),
    ],
)
def test_malicious_archive_extracts_nothing(server, tmp_path, name, archive):
    server.files[f"/{name}"] = archive
    out = tmp_path / "nested" / "out"
    with pytest.raises(UnsafeArchiveError, match="nothing was extracted"):
        download_data(f"{server.url}/{name}", out, progress=False)
    assert visible_files(tmp_path) == set()
    assert not (out / STATE_DIR / f"{name}.json").exists()


def test_zip_symlink_is_refused(server, tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("ok.txt", b"ok")
        link = zipfile.ZipInfo("link")
        link.external_attr = (0o120777 << 16) | 0
        zf.writestr(link, "/etc/passwd")
    server.files["/link.zip"] = buffer.getvalue()
    with pytest.raises(UnsafeArchiveError, match="link"):
        download_data(f"{server.url}/link.zip", tmp_path / "out", progress=False)
    assert visible_files(tmp_path) == set()


def test_bad_arguments_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="scheme"):
        download_data("ftp://example.invalid/x.zip", tmp_path)
    with pytest.raises(ValueError, match="file:///"):
        download_data("data/x.zip", tmp_path)
    with pytest.raises(ValueError, match="URL"):
        download_data(None, tmp_path)  # type: ignore[arg-type]
    (tmp_path / "afile").write_text("x")
    with pytest.raises(NotADirectoryError):
        download_data("http://127.0.0.1:9/x.zip", tmp_path / "afile")


def test_corrupt_archive_is_a_clear_error(server, tmp_path):
    server.files["/broken.zip"] = b"this is not a zip file"
    with pytest.raises(DownloadError, match="not a valid zip"):
        download_data(f"{server.url}/broken.zip", tmp_path / "out", progress=False)
    assert visible_files(tmp_path) == set()


def test_concurrent_calls_download_once(server, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    server.files["/shared.tar.gz"] = make_tar_gz({f"shared/{i}.txt": bytes([i]) * 2048 for i in range(20)})
    url = f"{server.url}/shared.tar.gz"
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: download_data(url, tmp_path / "out", progress=False), range(4)))
    assert results == [tmp_path / "out"] * 4
    assert server.count("/shared.tar.gz") == 1
    assert len(visible_files(tmp_path / "out")) == 20
