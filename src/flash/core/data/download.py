"""Download a file or archive from an http(s) or file URL into a folder, once.

``download_data(url, path)`` saves the file under ``path``; zip and tar archives (``.zip``,
``.tar``, ``.tar.gz``/``.tgz``, ``.tar.bz2``, ``.tar.xz``) are extracted into ``path`` and the
archive itself is not kept.

How "already there" is known: after a download succeeds, a small JSON record is written to
``path/.flash_download/<file name>.json`` holding the URL and the top-level entries it put into
``path``. A later call with the same URL and path does nothing while that record exists, names
the same URL, and every entry it lists still exists. Delete the entries (or pass
``force=True``) to download again.

Single files given as URLs where flash takes a path (``predict_files``, a tabular ``train_file``,
``load_from_checkpoint``) go through :func:`cached_download`: downloaded once into
``~/.cache/flash/downloads`` (or ``$FLASH_CACHE_DIR/downloads``) and read from there.

Safety:
- The download goes to a temporary file in ``path/.flash_download/`` and is renamed into place
  only once it is complete (a dropped connection or a short body leaves nothing behind).
- Archives are checked member by member before anything is extracted: absolute paths, ``..``
  components, symbolic and hard links and device files are refused with :class:`UnsafeArchiveError`.
- Extraction happens in a staging folder that is moved into ``path`` only when it succeeds.
- Processes downloading the same file into the same folder at once (DDP ranks) take turns
  through a lock file; the ones that wait find the data there and return.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import IO, Any

from tqdm.auto import tqdm

SCHEMES = ("http", "https", "file")
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
STATE_DIR = ".flash_download"
_CHUNK = 1 << 16


class DownloadError(OSError):
    """A download failed: HTTP error, unreachable host, missing file or short body."""


class UnsafeArchiveError(ValueError):
    """An archive holds a member that would be written outside the target folder, or a link."""


def download_data(
    url: str,
    path: str | os.PathLike = "data/",
    *,
    force: bool = False,
    progress: bool = True,
    timeout: float = 60.0,
) -> Path:
    """Download ``url`` into the folder ``path``, extracting zip and tar archives there.

    Args:
        url: an ``http://``, ``https://`` or ``file://`` URL.
        path: the folder to put the file, or the archive's contents, in (created if missing).
        force: download again even if a previous call already did.
        progress: show a progress bar.
        timeout: seconds to wait for the server to answer or send more data.

    Returns:
        The folder ``path``.

    Raises:
        ValueError: ``url`` is not an http(s) or file URL.
        DownloadError: the server answered with an HTTP error, could not be reached, or the
            connection dropped before the whole file arrived.
        UnsafeArchiveError: the archive holds members outside ``path`` or links; nothing is extracted.
    """
    name = _check_url(url)
    if not isinstance(timeout, int | float) or timeout <= 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}.")
    root = Path(path)
    if root.exists() and not root.is_dir():
        raise NotADirectoryError(f"{root} exists and is not a folder; pass a folder to download into.")
    state_dir = root / STATE_DIR
    record_path = state_dir / f"{name}.json"
    if not force and _already_downloaded(record_path, url, root):
        return root

    state_dir.mkdir(parents=True, exist_ok=True)
    with _exclusive(state_dir / f"{name}.lock"):
        if not force and _already_downloaded(record_path, url, root):
            return root  # another process (e.g. another DDP rank) finished it while we waited
        partial = _fetch(url, state_dir, name, progress, timeout)
        try:
            if _is_archive(name):
                entries = _extract(partial, root, state_dir, name)
            else:
                os.replace(partial, root / name)
                entries = [name]
        finally:
            partial.unlink(missing_ok=True)
        _write_record(record_path, url, entries)
    return root


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_path`` where the platform has ``fcntl`` (one download at a time)."""
    try:
        import fcntl
    except ImportError:  # Windows: no cross-process lock, the temporary names still keep files whole
        yield
        return
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _check_url(url: Any) -> str:
    """Validate ``url`` and return the file name it names."""
    if not isinstance(url, str) or not url.strip():
        raise ValueError(f"url must be an http(s) or file URL string, got {url!r}.")
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme not in SCHEMES:
        hint = " For a local file use file:///absolute/path." if not parsed.scheme else ""
        raise ValueError(f"Unsupported URL {url!r}: the scheme must be one of {', '.join(SCHEMES)}.{hint}")
    if parsed.scheme != "file" and not parsed.netloc:
        raise ValueError(f"URL {url!r} has no host.")
    name = PurePosixPath(urllib.parse.unquote(parsed.path)).name
    if name in ("", ".", "..") or "\\" in name or "\x00" in name:
        name = "download"
    return name


def _is_archive(name: str) -> bool:
    return name.lower().endswith(ARCHIVE_SUFFIXES)


def _already_downloaded(record_path: Path, url: str, root: Path) -> bool:
    try:
        record = json.loads(record_path.read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(record, dict) or record.get("url") != url:
        return False
    entries = record.get("entries")
    return isinstance(entries, list) and all(isinstance(e, str) and (root / e).exists() for e in entries)


def _write_record(record_path: Path, url: str, entries: list[str]) -> None:
    tmp = record_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"url": url, "entries": sorted(entries)}, indent=1))
    os.replace(tmp, record_path)


# -- fetching -------------------------------------------------------------------------------------
def _fetch(url: str, state_dir: Path, name: str, progress: bool, timeout: float) -> Path:
    """Stream ``url`` to a temporary file in ``state_dir``; return it only when complete."""
    handle, tmp_name = tempfile.mkstemp(prefix=f"{name}.", suffix=".part", dir=state_dir)
    partial = Path(tmp_name)
    try:
        with os.fdopen(handle, "wb") as out, _open(url, timeout) as response:
            expected = _content_length(response)
            received = _copy(response, out, expected, name, progress, url)
        if expected is not None and received != expected:
            raise DownloadError(
                f"Downloading {url} failed: the connection closed after {received} of {expected} bytes. "
                "Nothing was kept; try again."
            )
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return partial


def _open(url: str, timeout: float) -> Any:
    request = urllib.request.Request(url, headers={"User-Agent": "flash-download"})
    try:
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        raise DownloadError(f"Downloading {url} failed: HTTP {error.code} {error.reason}.") from error
    except urllib.error.URLError as error:
        raise DownloadError(f"Downloading {url} failed: {error.reason}.") from error
    except (OSError, ValueError) as error:
        raise DownloadError(f"Downloading {url} failed: {error}.") from error


def _content_length(response: Any) -> int | None:
    value = response.headers.get("Content-Length")
    try:
        length = int(value) if value is not None else None
    except ValueError:
        return None
    return length if length is not None and length >= 0 else None


def _copy(
    response: IO[bytes], out: IO[bytes], expected: int | None, name: str, progress: bool, url: str
) -> int:
    received = 0
    with tqdm(
        total=expected, unit="B", unit_scale=True, unit_divisor=1024, desc=name, disable=not progress
    ) as bar:
        while True:
            try:
                chunk = response.read(_CHUNK)
            except (OSError, ValueError) as error:  # timeouts, resets, IncompleteRead
                raise DownloadError(
                    f"Downloading {url} failed after {received} bytes: {error!r}. Nothing was kept; try again."
                ) from error
            if not chunk:
                return received
            out.write(chunk)
            received += len(chunk)
            bar.update(len(chunk))


# -- extraction -----------------------------------------------------------------------------------
def _extract(archive: Path, root: Path, state_dir: Path, name: str) -> list[str]:
    """Check every member, extract into a staging folder, then move the result into ``root``."""
    staging = Path(tempfile.mkdtemp(prefix=f"{name}.", suffix=".extract", dir=state_dir))
    try:
        if name.lower().endswith(".zip"):
            _extract_zip(archive, staging, name)
        else:
            _extract_tar(archive, staging, name)
        entries = sorted(p.name for p in staging.iterdir())
        for entry in entries:
            _move_into(staging / entry, root / entry)
        return entries
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _check_member_name(member: str, archive_name: str) -> None:
    normalised = member.replace("\\", "/")
    parts = PurePosixPath(normalised).parts
    if normalised.startswith("/") or (len(normalised) > 1 and normalised[1] == ":") or ".." in parts:
        raise UnsafeArchiveError(
            f"{archive_name} holds {member!r}, which would be written outside the target folder; "
            "nothing was extracted."
        )


def _extract_zip(archive: Path, staging: Path, name: str) -> None:
    try:
        with zipfile.ZipFile(archive) as zf:
            members = zf.infolist()
            for info in members:
                _check_member_name(info.filename, name)
                if stat.S_ISLNK(info.external_attr >> 16):
                    raise UnsafeArchiveError(
                        f"{name} holds the symbolic link {info.filename!r}; links are refused, "
                        "nothing was extracted."
                    )
            zf.extractall(staging)
    except zipfile.BadZipFile as error:
        raise DownloadError(f"{name} is not a valid zip archive: {error}.") from error


def _extract_tar(archive: Path, staging: Path, name: str) -> None:
    try:
        with tarfile.open(archive, "r:*") as tf:
            members = tf.getmembers()
            for member in members:
                _check_member_name(member.name, name)
                if member.issym() or member.islnk():
                    raise UnsafeArchiveError(
                        f"{name} holds the link {member.name!r} -> {member.linkname!r}; links are refused, "
                        "nothing was extracted."
                    )
                if not (member.isfile() or member.isdir()):
                    raise UnsafeArchiveError(
                        f"{name} holds {member.name!r}, which is neither a file nor a folder; "
                        "nothing was extracted."
                    )
            tf.extractall(staging, members=members, filter="data")
    except tarfile.TarError as error:
        raise DownloadError(f"{name} is not a valid tar archive: {error}.") from error


def _move_into(source: Path, target: Path) -> None:
    """Move ``source`` to ``target``, merging folders and replacing files that exist."""
    if source.is_dir() and target.is_dir() and not target.is_symlink():
        for child in source.iterdir():
            _move_into(child, target / child.name)
        return
    if target.is_dir() and not target.is_symlink():
        shutil.rmtree(target)
    os.replace(source, target)


# -- URLs where a file path is expected ------------------------------------------------------------
CACHE_ENV = "FLASH_CACHE_DIR"
"""Environment variable naming the download cache folder (default ``~/.cache/flash``)."""


def cache_dir() -> Path:
    """The folder single files given as URLs are downloaded to: ``$FLASH_CACHE_DIR``, or
    ``~/.cache/flash`` (``$XDG_CACHE_HOME/flash`` where that is set)."""
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "flash"


def is_url(value: Any) -> bool:
    """Whether ``value`` is an ``http://`` or ``https://`` URL string."""
    return isinstance(value, str) and value.lower().startswith(("http://", "https://"))


def cached_download(url: str, *, progress: bool = True, timeout: float = 60.0) -> Path:
    """The local copy of the file at ``url``, downloaded into :func:`cache_dir` on first use.

    Each URL gets its own folder (named by a hash of the URL), so a second call with the same URL
    does not download again; delete the cache folder to refresh. Archives are kept as they are.

    Raises:
        ValueError: ``url`` is not an http(s) or file URL.
        DownloadError: the download failed (nothing is kept).
    """
    import hashlib

    name = _check_url(url)
    folder = cache_dir() / "downloads" / hashlib.sha256(url.encode("utf-8")).hexdigest()[:24]
    target = folder / name
    if target.is_file():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    with _exclusive(folder / ".lock"):
        if not target.is_file():
            partial = _fetch(url, folder, name, progress, timeout)
            os.replace(partial, target)
    return target


def local_path(value: Any) -> Any:
    """``value`` itself, or for an http(s) URL the path of its cached download (see :func:`cached_download`)."""
    return str(cached_download(value)) if is_url(value) else value
