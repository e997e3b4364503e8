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
from flash.core.data.download import (
    STATE_DIR,
    ArchiveLimitError,
    DownloadConflictError,
    DownloadError,
    UnsafeArchiveError,
    download_data,
)


class FileServer:
    """Serves ``files`` (URL path -> bytes); ``truncated`` paths announce more bytes than they send."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.truncated: set[str] = set()
        self.cut_without_length: set[str] = set()
        self.cut_chunked: set[str] = set()
        self.requests: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                server.requests.append(self.path)
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404, "Not Found")
                    return
                self.send_response(200)
                if self.path in server.cut_without_length:  # no length: the body ends when the socket closes
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.wfile.write(body[: len(body) // 2])
                    self.close_connection = True
                    return
                if self.path in server.cut_chunked:  # chunked, closed before the last (empty) chunk
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    half = body[: len(body) // 2]
                    self.wfile.write(f"{len(body):x}\r\n".encode() + half)
                    self.wfile.flush()
                    self.close_connection = True
                    return
                announced = len(body) * 2 if self.path in server.truncated else len(body)
                self.send_header("Content-Length", str(announced))
                self.end_headers()
                if self.path in server.truncated:
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)
                self.close_connection = True

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


# -- never deleting or replacing what the user has ----------------------------------------------------
def test_archive_file_named_like_a_user_folder_changes_nothing(server, tmp_path):
    out = tmp_path / "out"
    (out / "data").mkdir(parents=True)
    (out / "data/mine.txt").write_bytes(b"precious")
    server.files["/clash.zip"] = make_zip({"data": b"a file where the user has a folder", "new.txt": b"n"})
    with pytest.raises(
        DownloadConflictError, match=r"data \(a folder here, a file in the download\)"
    ) as error:
        download_data(f"{server.url}/clash.zip", out, progress=False)
    assert isinstance(error.value, DownloadError) and isinstance(error.value, FileExistsError)
    assert "Nothing was changed" in str(error.value)
    assert visible_files(out) == {"data/mine.txt"}  # all or nothing: new.txt is not put in either
    assert (out / "data/mine.txt").read_bytes() == b"precious"
    assert not (out / STATE_DIR / "clash.zip.json").exists()
    assert [p.name for p in (out / STATE_DIR).iterdir() if not p.name.endswith(".lock")] == []


def test_archive_folder_named_like_a_user_file_changes_nothing(server, tmp_path):
    (tmp_path / "set").write_bytes(b"user's file")
    server.files["/set.tar.gz"] = make_tar_gz({"set/a.txt": b"a"})
    with pytest.raises(DownloadConflictError, match=r"set/ \(a file here"):
        download_data(f"{server.url}/set.tar.gz", tmp_path, progress=False)
    assert (tmp_path / "set").read_bytes() == b"user's file"


def test_same_named_user_file_is_kept_and_reported(server, tmp_path):
    (tmp_path / "data/train").mkdir(parents=True)
    (tmp_path / "data/train/a.txt").write_bytes(b"edited by the user")
    server.files["/data.zip"] = make_zip({"data/train/a.txt": b"ant", "data/val/b.txt": b"bee"})
    with pytest.raises(DownloadConflictError, match=r"data/train/a\.txt"):
        download_data(f"{server.url}/data.zip", tmp_path, progress=False)
    assert visible_files(tmp_path) == {"data/train/a.txt"}
    assert (tmp_path / "data/train/a.txt").read_bytes() == b"edited by the user"

    server.files["/notes.txt"] = b"server notes"
    (tmp_path / "notes.txt").write_bytes(b"my notes")
    with pytest.raises(DownloadConflictError, match=r"notes\.txt"):
        download_data(f"{server.url}/notes.txt", tmp_path, progress=False)
    assert (tmp_path / "notes.txt").read_bytes() == b"my notes"


def test_identical_files_are_no_conflict_and_user_files_beside_them_stay(server, tmp_path):
    server.files["/data.zip"] = make_zip({"data/train/a.txt": b"ant", "data/val/b.txt": b"bee"})
    (tmp_path / "data/train").mkdir(parents=True)
    (tmp_path / "data/train/a.txt").write_bytes(b"ant")
    (tmp_path / "data/train/mine.txt").write_bytes(b"mine")
    download_data(f"{server.url}/data.zip", tmp_path, progress=False)
    assert visible_files(tmp_path) == {"data/train/a.txt", "data/train/mine.txt", "data/val/b.txt"}
    download_data(f"{server.url}/data.zip", tmp_path, progress=False, force=True)  # a second copy: no clash
    assert (tmp_path / "data/train/mine.txt").read_bytes() == b"mine"
    assert server.count("/data.zip") == 2


def test_a_failed_move_takes_back_what_it_moved(server, tmp_path, monkeypatch):
    import os

    (tmp_path / "keep").mkdir()
    (tmp_path / "keep/mine.txt").write_bytes(b"mine")
    server.files["/many.zip"] = make_zip(
        {"a/1.txt": b"1", "b/2.txt": b"2", "keep/3.txt": b"3", "z.txt": b"z"}
    )
    real_rename, calls = os.rename, []

    def flaky_rename(source, target):
        calls.append(target)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        return real_rename(source, target)

    monkeypatch.setattr(os, "rename", flaky_rename)
    with pytest.raises(DownloadError, match="No space left on device") as error:
        download_data(f"{server.url}/many.zip", tmp_path, progress=False)
    assert "Nothing was kept" in str(error.value)
    assert visible_files(tmp_path) == {"keep/mine.txt"}
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    assert not (tmp_path / STATE_DIR / "many.zip.json").exists()
    monkeypatch.setattr(os, "rename", real_rename)
    download_data(f"{server.url}/many.zip", tmp_path, progress=False)
    assert visible_files(tmp_path) == {"a/1.txt", "b/2.txt", "keep/3.txt", "keep/mine.txt", "z.txt"}


def test_member_inside_the_record_folder_is_refused(server, tmp_path):
    server.files["/sneaky.zip"] = make_zip({f"{STATE_DIR}/sneaky.zip.json": b"{}", "ok.txt": b"ok"})
    with pytest.raises(UnsafeArchiveError, match=STATE_DIR):
        download_data(f"{server.url}/sneaky.zip", tmp_path, progress=False)
    assert visible_files(tmp_path) == set()


# -- limits and faults ------------------------------------------------------------------------------------
BOMB_BYTES = 72 * 2**20  # just over the 64 MiB under which ratios are not checked; compresses ~1000:1


@pytest.fixture(scope="module")
def zip_bomb() -> bytes:
    buffer = io.BytesIO()
    block = bytes(2**20)
    with (
        zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf,
        zf.open("zeros.bin", "w", force_zip64=True) as member,
    ):
        for _ in range(BOMB_BYTES // len(block)):
            member.write(block)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def tar_bomb() -> bytes:
    class Zeros(io.RawIOBase):
        def __init__(self, size: int) -> None:
            self.left = size

        def readable(self) -> bool:
            return True

        def readinto(self, buffer) -> int:
            n = min(len(buffer), self.left)
            buffer[:n] = bytes(n)
            self.left -= n
            return n

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tf:
        info = tarfile.TarInfo("zeros.bin")
        info.size = BOMB_BYTES
        tf.addfile(info, io.BufferedReader(Zeros(BOMB_BYTES)))
    return buffer.getvalue()


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_compression_bomb_is_refused_before_extracting(server, tmp_path, kind, zip_bomb, tar_bomb):
    import time

    archive = zip_bomb if kind == "zip" else tar_bomb
    assert len(archive) * 200 < BOMB_BYTES
    server.files[f"/bomb.{kind}"] = archive
    start = time.perf_counter()
    with pytest.raises(ArchiveLimitError, match="max_compression_ratio=100") as error:
        download_data(f"{server.url}/bomb.{kind}", tmp_path, progress=False)
    assert time.perf_counter() - start < 5
    assert isinstance(error.value, DownloadError)
    assert "nothing was extracted" in str(error.value)
    assert list(tmp_path.rglob("zeros.bin")) == []
    with pytest.raises(ArchiveLimitError, match="max_compression_ratio=500"):
        download_data(f"{server.url}/bomb.{kind}", tmp_path, progress=False, max_compression_ratio=500)


def test_extracted_size_cap(server, tmp_path):
    server.files["/set.tar.gz"] = make_tar_gz({"set/a.bin": bytes(600), "set/b.bin": bytes(600)})
    with pytest.raises(ArchiveLimitError, match="max_extracted_size=1000"):
        download_data(f"{server.url}/set.tar.gz", tmp_path, progress=False, max_extracted_size=1000)
    assert visible_files(tmp_path) == set()
    download_data(f"{server.url}/set.tar.gz", tmp_path, progress=False, max_extracted_size=1200)
    assert visible_files(tmp_path) == {"set/a.bin", "set/b.bin"}


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("max_extracted_size", 0),
        ("max_extracted_size", 1.5),
        ("max_compression_ratio", 0.5),
        ("timeout", True),
    ],
)
def test_bad_limits_are_clear_errors(tmp_path, option, value):
    with pytest.raises(ValueError, match=option):
        download_data("http://127.0.0.1:9/x.zip", tmp_path, **{option: value})


def test_truncated_tar_gz_is_a_download_error(server, tmp_path):
    archive = make_tar_gz({f"set/{i}.bin": bytes(range(256)) * 64 for i in range(8)})
    server.files["/cut.tar.gz"] = archive[: len(archive) // 2]  # served whole, but the archive is cut
    with pytest.raises(DownloadError, match="not a valid or complete archive"):
        download_data(f"{server.url}/cut.tar.gz", tmp_path, progress=False)
    assert visible_files(tmp_path) == set()


def test_cut_body_without_length_is_not_recorded(server, tmp_path):
    server.files["/nolength.tar.gz"] = make_tar_gz({f"set/{i}.bin": bytes(range(256)) * 64 for i in range(8)})
    server.cut_without_length.add("/nolength.tar.gz")
    with pytest.raises(DownloadError):
        download_data(f"{server.url}/nolength.tar.gz", tmp_path, progress=False)
    assert visible_files(tmp_path) == set()
    assert not (tmp_path / STATE_DIR / "nolength.tar.gz.json").exists()
    server.cut_without_length.clear()
    download_data(f"{server.url}/nolength.tar.gz", tmp_path, progress=False)
    assert len(visible_files(tmp_path)) == 8


def test_cut_chunked_body_is_a_download_error(server, tmp_path):
    server.files["/chunked.bin"] = bytes(range(256)) * 256
    server.cut_chunked.add("/chunked.bin")
    with pytest.raises(DownloadError, match="IncompleteRead"):
        download_data(f"{server.url}/chunked.bin", tmp_path, progress=False)
    assert visible_files(tmp_path) == set()
    assert list(tmp_path.rglob("*.part")) == []
