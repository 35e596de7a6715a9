"""Files: the one atomic-write helper every output goes through, and the one UTF-8 / JSON-lines reader
every input goes through (user files, benchmark data).

A file is written to a temporary file next to its destination, flushed and fsynced, then renamed
over the destination, so a reader never sees a half-written file and a crash leaves the old
version. The temporary file is created with mode ``0o666`` minus the process umask, like any file
``open(path, "w")`` would create (``tempfile.mkstemp`` would make every output ``0600``, unreadable
by others in a shared folder).
"""

from __future__ import annotations

import codecs
import io
import json
import os
import secrets
from pathlib import Path
from typing import Any, Callable, Iterator

__all__ = ["temp_file_beside", "atomic_write", "atomic_write_bytes", "atomic_write_text", "InputError", "read_text",
           "text_lines", "jsonl_lines", "read_jsonl"]


class InputError(ValueError):
    """A user-supplied file is missing, empty or malformed."""


def temp_file_beside(path: Path, suffix: str = ".tmp") -> Path:
    """Create an empty, new temporary file in ``path``'s folder (the user's normal file mode) and
    return its path; the caller renames it into place or removes it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}{suffix}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(f"cannot create a temporary file next to {path}")


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], None]) -> Path:
    """Run ``write(tmp)`` on a temporary file next to ``path``, fsync it, then rename it over ``path``."""
    target = Path(path)
    tmp = temp_file_beside(target)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)
    return target


def _write_all(f: Any, data: bytes) -> None:
    """Write ``data`` to the open file ``f`` in chunks (a seam tests use to simulate failures)."""
    view = memoryview(data)
    chunk = 1 << 20
    for start in range(0, len(view), chunk):
        f.write(view[start:start + chunk])


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically: never a half-written file."""
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            _write_all(f, data)
            f.flush()

    return atomic_write(path, write)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def read_text(path: str | os.PathLike[str]) -> str:
    """The text of a UTF-8 file (a leading byte-order mark dropped); an :class:`InputError` naming the
    file and line of the first byte that is not UTF-8."""
    p = Path(path)
    data = p.read_bytes()
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise InputError(f"{p}:{line}: not UTF-8 text (byte 0x{data[e.start]:02x}); "
                         "save the file as UTF-8") from None


def text_lines(path: str | os.PathLike[str], csv_mode: bool = False) -> io.StringIO:
    """:func:`read_text` as a file-like object (``csv_mode``: newlines kept for the csv module)."""
    return io.StringIO(read_text(path), newline="" if csv_mode else None)


def jsonl_lines(path: str | os.PathLike[str]) -> Iterator[tuple[int, str]]:
    """``(line number, line)`` for the non-blank lines of a JSON-lines file (for callers that parse, or
    count malformed rows, themselves)."""
    for n, line in enumerate(text_lines(path), start=1):
        if line.strip():
            yield n, line


def read_jsonl(path: str | os.PathLike[str]) -> Iterator[tuple[int, Any]]:
    """``(line number, value)`` for each non-blank line of a JSON-lines file; an :class:`InputError` naming
    the file and line of the first line that is not JSON."""
    for n, line in jsonl_lines(path):
        try:
            yield n, json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"{path}:{n}: not valid JSON ({e.msg})") from None
