"""Download a file or archive from an http(s) or file URL into a folder, once, without touching what is there.

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
- The download goes to a temporary file in ``path/.flash_download/`` and is used only once it is
  complete. A dropped connection, a short body, a cut chunked body raise :class:`DownloadError`
  and leave nothing behind. A body sent without ``Content-Length`` ends when the server closes
  the connection, so it cannot be told apart from a complete one; archives are read to the end
  while extracting, so a truncated one is still caught.
- Archives are checked member by member before anything is extracted: absolute paths, ``..``
  components, symbolic and hard links and device files are refused with :class:`UnsafeArchiveError`;
  an archive that expands past ``max_extracted_size``, or past ``max_compression_ratio`` times its own
  size, is refused with :class:`ArchiveLimitError`.
- Nothing the user has is deleted or overwritten. The result is extracted into a staging folder
  inside ``path/.flash_download/``; if any of its files would take the place of a different file
  or folder already in ``path``, the call raises :class:`DownloadConflictError` and changes
  nothing (identical files are not a conflict). Otherwise only paths ``path`` lacks are moved in;
  if a move fails, the ones already made are taken back.
- Processes downloading the same file into the same folder at once (DDP ranks) take turns
  through a lock file; the ones that wait find the data there and return.
"""

from __future__ import annotations

import contextlib
import filecmp
import http.client
import json
import lzma
import os
import shutil
import stat
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

from tqdm.auto import tqdm

SCHEMES = ("http", "https", "file")
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
STATE_DIR = ".flash_download"
DEFAULT_MAX_EXTRACTED_SIZE = 64 * 2**30
"""Default cap on the bytes an archive may expand to (64 GiB)."""
DEFAULT_MAX_COMPRESSION_RATIO = 100.0
"""Default cap on extracted size / archive size (real data sets compress 1-20 times)."""
RATIO_CHECK_FLOOR = 64 * 2**20
"""Archives that expand to at most this many bytes (64 MiB) are not checked for their ratio."""
_CHUNK = 1 << 16
_SHOWN_CONFLICTS = 5


class DownloadError(OSError):
    """A download failed: HTTP error, unreachable host, missing file, short or cut body, bad archive."""


class UnsafeArchiveError(DownloadError, ValueError):
    """An archive holds a member that would be written outside the target folder, or a link."""


class ArchiveLimitError(DownloadError):
    """An archive would expand past ``max_extracted_size`` or ``max_compression_ratio``."""


class DownloadConflictError(DownloadError, FileExistsError):
    """The download would replace a file or folder the target folder already holds."""


@dataclass(frozen=True)
class ArchiveLimits:
    """How far an archive may expand (``None``: no limit)."""

    max_extracted_size: int | None = DEFAULT_MAX_EXTRACTED_SIZE
    max_compression_ratio: float | None = DEFAULT_MAX_COMPRESSION_RATIO

    def __post_init__(self) -> None:
        size, ratio = self.max_extracted_size, self.max_compression_ratio
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size <= 0):
            raise ValueError(f"max_extracted_size must be a positive number of bytes or None, got {size!r}.")
        if ratio is not None and (
            isinstance(ratio, bool) or not isinstance(ratio, int | float) or not ratio >= 1
        ):
            raise ValueError(f"max_compression_ratio must be a number >= 1 or None, got {ratio!r}.")


def download_data(
    url: str,
    path: str | os.PathLike = "data/",
    *,
    force: bool = False,
    progress: bool = True,
    timeout: float = 60.0,
    max_extracted_size: int | None = DEFAULT_MAX_EXTRACTED_SIZE,
    max_compression_ratio: float | None = DEFAULT_MAX_COMPRESSION_RATIO,
) -> Path:
    """Download ``url`` into the folder ``path``, extracting zip and tar archives there.

    Nothing already in ``path`` is deleted or overwritten: if the download holds a path that
    ``path`` already has with other content, nothing is changed and
    :class:`DownloadConflictError` is raised.

    Args:
        url: an ``http://``, ``https://`` or ``file://`` URL.
        path: the folder to put the file, or the archive's contents, in (created if missing).
        force: download again even if a previous call already did.
        progress: show a progress bar.
        timeout: seconds to wait for the server to answer or send more data.
        max_extracted_size: most bytes an archive may expand to (``None``: no limit).
        max_compression_ratio: most an archive may expand relative to its own size (``None``:
            no limit); archives that expand to at most 64 MiB are not checked.

    Returns:
        The folder ``path``.

    Raises:
        ValueError: ``url`` is not an http(s) or file URL, or a limit is not a positive number.
        DownloadError: the server answered with an HTTP error, could not be reached, the
            connection dropped before the whole file arrived, the archive is corrupt or truncated,
            or the disk is full. Its subclasses: :class:`UnsafeArchiveError` (members outside
            ``path`` or links), :class:`ArchiveLimitError` (a limit above),
            :class:`DownloadConflictError` (a path would be replaced). In every case nothing is kept.
    """
    name = _check_url(url)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}.")
    limits = ArchiveLimits(max_extracted_size, max_compression_ratio)
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
        staging = None
        try:
            staging = Path(tempfile.mkdtemp(prefix=f"{name}.", suffix=".extract", dir=state_dir))
            if _is_archive(name):
                _extract(partial, staging, name, limits)
            else:
                os.replace(partial, staging / name)
            entries = sorted(p.name for p in staging.iterdir())
            _place(staging, root, url, lambda: _write_record(record_path, url, entries))
        except OSError as error:
            if isinstance(error, DownloadError):
                raise
            raise DownloadError(
                f"Downloading {url} into {root} failed: {error}. Nothing was kept."
            ) from error
        finally:
            partial.unlink(missing_ok=True)
            if staging is not None:
                shutil.rmtree(staging, ignore_errors=True)
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
    if name in ("", ".", "..", STATE_DIR) or "\\" in name or "\x00" in name:
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
    except BaseException as error:
        partial.unlink(missing_ok=True)
        if isinstance(error, OSError) and not isinstance(error, DownloadError):  # e.g. a full disk
            raise DownloadError(f"Saving {url} failed: {error}. Nothing was kept.") from error
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
    except (OSError, ValueError, http.client.HTTPException) as error:
        raise DownloadError(f"Downloading {url} failed: {error!r}.") from error


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
            except (OSError, ValueError, http.client.HTTPException) as error:  # timeouts, resets, a cut chunk
                raise DownloadError(
                    f"Downloading {url} failed after {received} bytes: {error!r}. Nothing was kept; try again."
                ) from error
            if not chunk:
                return received
            try:
                out.write(chunk)
            except OSError as error:  # a full disk
                raise DownloadError(
                    f"Saving {url} failed after {received} bytes: {error}. Nothing was kept."
                ) from error
            received += len(chunk)
            bar.update(len(chunk))


# -- extraction -----------------------------------------------------------------------------------
def _extract(archive: Path, staging: Path, name: str, limits: ArchiveLimits) -> None:
    """Check every member and the archive's size against ``limits``, then extract into ``staging``.

    Every failure (a corrupt or truncated archive, a full disk) raises :class:`DownloadError`.
    """
    archive_bytes = archive.stat().st_size
    try:
        if name.lower().endswith(".zip"):
            _extract_zip(archive, staging, name, limits, archive_bytes)
        else:
            _extract_tar(archive, staging, name, limits, archive_bytes)
    except DownloadError:
        raise
    except zipfile.BadZipFile as error:
        raise DownloadError(f"{name} is not a valid zip archive: {error}. Nothing was kept.") from error
    except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError) as error:
        raise DownloadError(
            f"{name} is not a valid or complete archive ({type(error).__name__}: {error}). Nothing was kept; "
            "if the download was cut short, try again."
        ) from error
    except (OSError, NotImplementedError, RuntimeError) as error:
        raise DownloadError(f"Extracting {name} failed: {error}. Nothing was kept.") from error


def _check_member_name(member: str, archive_name: str) -> None:
    normalised = member.replace("\\", "/")
    parts = PurePosixPath(normalised).parts
    if normalised.startswith("/") or (len(normalised) > 1 and normalised[1] == ":") or ".." in parts:
        raise UnsafeArchiveError(
            f"{archive_name} holds {member!r}, which would be written outside the target folder; "
            "nothing was extracted."
        )
    if parts and parts[0] == STATE_DIR:
        raise UnsafeArchiveError(
            f"{archive_name} holds {member!r}, inside the folder {STATE_DIR!r} that download_data keeps "
            "its records in; nothing was extracted."
        )


class _SizeTally:
    """Adds up the sizes the members declare and stops at the first limit they pass."""

    def __init__(self, name: str, limits: ArchiveLimits, archive_bytes: int) -> None:
        self.name = name
        self.limits = limits
        self.archive_bytes = max(1, archive_bytes)
        self.total = 0

    def add(self, size: int) -> None:
        self.total += max(0, int(size))
        cap = self.limits.max_extracted_size
        if cap is not None and self.total > cap:
            raise ArchiveLimitError(
                f"{self.name} expands to more than {_human(cap)} (max_extracted_size={cap}); nothing was "
                "extracted. If you trust this archive, pass a larger max_extracted_size (or None)."
            )
        ratio = self.limits.max_compression_ratio
        if ratio is not None and self.total > RATIO_CHECK_FLOOR and self.total > ratio * self.archive_bytes:
            raise ArchiveLimitError(
                f"{self.name} ({_human(self.archive_bytes)}) expands to more than {_human(self.total)}, over "
                f"{ratio:g} times its size (max_compression_ratio={ratio:g}): it looks like a decompression bomb; "
                "nothing was extracted. If you trust this archive, pass a larger max_compression_ratio (or None)."
            )

    def check_free_space(self, folder: Path) -> None:
        free = shutil.disk_usage(folder).free
        if self.total > free:
            raise DownloadError(
                f"{self.name} expands to {_human(self.total)} but only {_human(free)} are free on the disk "
                "it is downloaded to; nothing was extracted. Free some space and try again."
            )


def _human(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def _extract_zip(archive: Path, staging: Path, name: str, limits: ArchiveLimits, archive_bytes: int) -> None:
    tally = _SizeTally(name, limits, archive_bytes)
    with zipfile.ZipFile(archive) as zf:
        members = zf.infolist()
        for info in members:
            _check_member_name(info.filename, name)
            if stat.S_ISLNK(info.external_attr >> 16):
                raise UnsafeArchiveError(
                    f"{name} holds the symbolic link {info.filename!r}; links are refused, nothing was extracted."
                )
            tally.add(info.file_size)  # zipfile stops reading a member at its declared size
        tally.check_free_space(staging)
        zf.extractall(staging)


def _extract_tar(archive: Path, staging: Path, name: str, limits: ArchiveLimits, archive_bytes: int) -> None:
    tally = _SizeTally(name, limits, archive_bytes)
    with tarfile.open(archive, "r:*") as tf:
        members = []
        for member in tf:  # headers one by one: a bomb is stopped before its data is decompressed
            _check_member_name(member.name, name)
            if member.issym() or member.islnk():
                raise UnsafeArchiveError(
                    f"{name} holds the link {member.name!r} -> {member.linkname!r}; links are refused, "
                    "nothing was extracted."
                )
            if not (member.isfile() or member.isdir()):
                raise UnsafeArchiveError(
                    f"{name} holds {member.name!r}, which is neither a file nor a folder; nothing was extracted."
                )
            tally.add(member.size)
            members.append(member)
        tally.check_free_space(staging)
        tf.extractall(staging, members=members, filter="data")


# -- placing the result -------------------------------------------------------------------------------
def _is_real_dir(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink()


def _same_content(new: Path, existing: Path) -> bool:
    if existing.is_symlink() or not existing.is_file():
        return False
    return new.stat().st_size == existing.stat().st_size and filecmp.cmp(new, existing, shallow=False)


def _conflicts(source: Path, target: Path, relative: str = "") -> list[str]:
    """Paths under ``source`` whose place under ``target`` is taken by something else (identical files are not)."""
    found = []
    for child in sorted(source.iterdir()):
        place = target / child.name
        shown = f"{relative}{child.name}"
        if not os.path.lexists(place):
            continue
        if child.is_dir():
            if _is_real_dir(place):
                found += _conflicts(child, place, f"{shown}/")
            else:
                found.append(f"{shown}/ (a file here, a folder in the download)")
        elif _is_real_dir(place):
            found.append(f"{shown} (a folder here, a file in the download)")
        elif not _same_content(child, place):
            found.append(shown)
    return found


def _refuse_conflicts(staging: Path, root: Path, url: str) -> None:
    conflicts = _conflicts(staging, root)
    if not conflicts:
        return
    shown = ", ".join(conflicts[:_SHOWN_CONFLICTS])
    more = f" and {len(conflicts) - _SHOWN_CONFLICTS} more" if len(conflicts) > _SHOWN_CONFLICTS else ""
    raise DownloadConflictError(
        f"Downloading {url} into {root} would replace {len(conflicts)} path(s) that are already there and "
        f"differ from the download: {shown}{more}. Nothing was changed. Move or delete them, or download "
        "into another folder."
    )


def _move_new_paths(source: Path, target: Path, moved: list[tuple[Path, Path]]) -> None:
    """Move every path under ``source`` that ``target`` lacks into it; record each move in ``moved``."""
    for child in sorted(source.iterdir()):
        place = target / child.name
        if os.path.lexists(place):
            if child.is_dir() and _is_real_dir(place):
                _move_new_paths(child, place, moved)
                continue
            if not child.is_dir() and _same_content(child, place):
                continue
            raise DownloadConflictError(f"{place} appeared while the download was being put in place.")
        os.rename(child, place)
        moved.append((child, place))


def _undo_moves(moved: list[tuple[Path, Path]]) -> None:
    """Take back what :func:`_move_new_paths` put in place (only paths that did not exist before)."""
    for original, placed in reversed(moved):
        try:
            os.rename(placed, original)
        except OSError:
            if _is_real_dir(placed):
                shutil.rmtree(placed, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    placed.unlink()


def _place(staging: Path, root: Path, url: str, record: Callable[[], None]) -> None:
    """Move the new paths of ``staging`` into ``root`` and call ``record``; on any failure undo the moves."""
    _refuse_conflicts(staging, root, url)
    moved: list[tuple[Path, Path]] = []
    try:
        _move_new_paths(staging, root, moved)
        record()
    except BaseException as error:
        _undo_moves(moved)
        if isinstance(error, OSError) and not isinstance(error, DownloadError):
            raise DownloadError(
                f"Putting the download of {url} into {root} failed: {error}. Nothing was kept."
            ) from error
        raise


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
