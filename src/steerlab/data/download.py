"""The user data cache and checksum-verified downloads.

Downloaded files go to ``cache_data_dir()`` (``$STEERLAB_CACHE/data``, else
``platformdirs.user_cache_dir("steerlab")/data``) in the same layout as ``../shared/data``, so
a cache folder can also be used as ``$STEERLAB_DATA``. Downloads are off unless asked for
(``allow_download=True`` or ``STEERLAB_ALLOW_DOWNLOAD=1``).

Every file has a list of source URLs that are tried in order; the first whose bytes match the
file's pinned SHA-256 wins. A URL whose bytes do not match is reported and skipped; when all
fail, :class:`DownloadError` lists every URL and why it failed. Files are written to a temporary
name next to the target and renamed into place only after the checksum matched, so the cache
never holds a partial or unverified file. ``$STEERLAB_DATA_MIRROR`` (a base URL with the layout
of ``../shared/data``: ``https://...``, or ``file:///...`` for a local copy) is tried first.

Only ``urllib`` is used (``http(s)://`` and ``file://``); nothing is downloaded at import time.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

from ..files import temp_file_beside

__all__ = [
    "CACHE_ENV",
    "DOWNLOAD_ENV",
    "MIRROR_ENV",
    "ChecksumError",
    "DownloadError",
    "RemoteFile",
    "Fetcher",
    "cache_data_dir",
    "downloads_allowed",
    "sha256_file",
    "fetch_url",
    "download_file",
    "download_files",
]

CACHE_ENV = "STEERLAB_CACHE"
DOWNLOAD_ENV = "STEERLAB_ALLOW_DOWNLOAD"
MIRROR_ENV = "STEERLAB_DATA_MIRROR"
_USER_AGENT = "steerlab-data/0.1 (+https://github.com/; urllib)"
_CHUNK = 1 << 20


class ChecksumError(ValueError):
    """Downloaded bytes do not match the pinned SHA-256."""


class DownloadError(RuntimeError):
    """No source URL of a file could be downloaded and verified."""


@dataclass(frozen=True)
class RemoteFile:
    """A data file: its path below the data root, its SHA-256 and the URLs to try in order."""

    relpath: str
    sha256: str | None
    urls: tuple[str, ...]


#: ``fetch(url, dest, sha256, timeout)`` downloads ``url`` to ``dest`` (verified) or raises
Fetcher = Callable[[str, Path, "str | None", float], Path]


def cache_data_dir() -> Path:
    """Where downloaded data lives: ``$STEERLAB_CACHE/data`` or the platform user cache dir."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser() / "data"
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("steerlab")) / "data"


def downloads_allowed(allow: bool | None = None) -> bool:
    """``allow`` if given, else whether ``$STEERLAB_ALLOW_DOWNLOAD`` is set to a true value."""
    if allow is not None:
        return bool(allow)
    return os.environ.get(DOWNLOAD_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_CHUNK):
            h.update(block)
    return h.hexdigest()


def fetch_url(url: str, dest: Path, sha256: str | None = None, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` atomically, verifying ``sha256`` (when given) before the rename."""
    dest = Path(dest)
    tmp = temp_file_beside(dest, ".part")
    try:
        h = hashlib.sha256()
        req = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
        with open(tmp, "wb") as out, urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310
            while block := resp.read(_CHUNK):
                h.update(block)
                out.write(block)
        got = h.hexdigest()
        if sha256 is not None and got != sha256.lower():
            raise ChecksumError(f"sha256 mismatch for {url}: expected {sha256}, got {got}")
        os.replace(tmp, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return dest


def _mirror_urls(relpath: str) -> list[str]:
    base = os.environ.get(MIRROR_ENV, "").strip()
    if not base:
        return []
    return [base.rstrip("/") + "/" + urllib.request.pathname2url(relpath).lstrip("/")]


def download_file(
    file: RemoteFile,
    root: Path,
    fetch: Fetcher = fetch_url,
    timeout: float = 60.0,
) -> Path:
    """Download one file below ``root`` from the first of its URLs that verifies."""
    dest = Path(root) / file.relpath
    urls = _mirror_urls(file.relpath) + list(file.urls)
    if not urls:
        raise DownloadError(f"no source URL known for {file.relpath}")
    failures: list[str] = []
    for url in urls:
        try:
            return fetch(url, dest, file.sha256, timeout)
        except ChecksumError as e:
            failures.append(f"{url}: {e}")
        except (urllib.error.URLError, OSError, ValueError) as e:
            failures.append(f"{url}: {type(e).__name__}: {e}")
    raise DownloadError(f"could not download {file.relpath}:\n  " + "\n  ".join(failures))


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    """An exclusive inter-process lock on ``path`` (a no-op where fcntl is missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def download_files(
    files: Sequence[RemoteFile],
    root: Path,
    fetch: Fetcher = fetch_url,
    timeout: float = 60.0,
    progress: bool = False,
    label: str = "download",
) -> list[Path]:
    """Download the files of ``files`` that are missing below ``root`` (serialised by a lock file)."""
    root = Path(root)
    out: list[Path] = []
    with _lock(root / ".download.lock"):
        missing = [f for f in files if not (root / f.relpath).is_file()]
        bar = None
        if progress and missing:
            from rich.progress import Progress

            bar = Progress()
            bar.start()
            task = bar.add_task(label, total=len(missing))
        try:
            for f in files:
                if f in missing:
                    download_file(f, root, fetch=fetch, timeout=timeout)
                    if bar is not None:
                        bar.advance(task)
                out.append(root / f.relpath)
        finally:
            if bar is not None:
                bar.stop()
    return out
