"""Checks shared by every entry point (CLI, Python API, eval options, artifacts).

Each check lives here once and raises a one-line error that names the user's mistake and
the fix, so the command line and the library report the same thing:

* :func:`check_strength` - a steering strength / multiplier / alpha must be a finite number
  with ``|value| <= MAX_STRENGTH`` (1e4). Larger values only ever saturate or overflow the
  residual stream (NaN logits: every prediction the same, empty generations).
* :func:`check_output_path` - an output file or folder can be written, checked *before* any
  slow work (without creating anything).
* :func:`hub_offline` - whether the Hugging Face hub cannot be reached (cheap, stateless).
* :func:`closest_name` - the closest known name, for "did you mean ...?" hints.
"""

from __future__ import annotations

import difflib
import math
import os
import socket
import tempfile
from pathlib import Path
from typing import Iterable
from urllib.parse import urlparse

__all__ = ["MAX_STRENGTH", "check_strength", "check_output_path", "hub_offline", "closest_name"]

#: the largest accepted ``|strength|`` (also CAA's ``multiplier`` and ITI's ``alpha``)
MAX_STRENGTH = 1e4

_TRUE = ("1", "true", "yes", "on")
_PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")


def check_strength(value: object, name: str = "strength") -> float:
    """``value`` as a float when it is a finite number with ``|value| <= MAX_STRENGTH``.

    ``name`` is how the caller's user spells the option (``--strength``, ``caa.multiplier``).
    """
    not_a_number = TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    if isinstance(value, (bool, str, bytes)):
        raise not_a_number
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise not_a_number from None
    if not math.isfinite(v) or abs(v) > MAX_STRENGTH:
        raise ValueError(
            f"{name} must be a finite number between {-MAX_STRENGTH:g} and {MAX_STRENGTH:g}, got {v:g}"
        )
    return v


def _probe_writable(folder: Path) -> bool:
    """Whether a file can be created in ``folder`` (creates and removes a probe file)."""
    try:
        fd, name = tempfile.mkstemp(prefix=".steerlab-write-check-", dir=folder)
    except OSError:
        return False
    os.close(fd)
    os.unlink(name)
    return True


def check_output_path(path: str | os.PathLike[str], folder: bool = False) -> Path:
    """Refuse an output location that cannot be written, before the work that produces it.

    ``path`` is an output file (``folder=False``) or an output folder. Missing parent folders
    are fine (they are created when the output is written); the nearest existing one must be
    a writable folder. Nothing is left behind. Returns ``path`` as a :class:`Path`.
    """
    p = Path(path).expanduser()
    what = "output folder" if folder else "output file"
    if folder and p.exists() and not p.is_dir():
        raise FileExistsError(f"{what} {p} is an existing file: choose a folder path")
    if not folder and p.is_dir():
        raise IsADirectoryError(f"{what} {p} is a folder: give a file name, e.g. {p / 'out'}")
    start = p if folder else p.parent
    existing = start.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise NotADirectoryError(f"cannot write {what} {p}: {existing} is a file, not a folder")
    if not _probe_writable(existing):
        raise PermissionError(
            f"cannot write {what} {p}: the folder {existing} is not writable; choose another location"
        )
    return p


def hub_offline(timeout: float = 0.5) -> bool:
    """Whether the Hugging Face hub is unreachable: ``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE``
    set, or no TCP connection to the hub host (``HF_ENDPOINT``) within ``timeout`` seconds.

    Behind a proxy (``HTTPS_PROXY``/``ALL_PROXY``) the hub is assumed reachable: the direct
    connection says nothing about it. Nothing is cached: each call checks again.
    """
    if any(
        os.environ.get(v, "").strip().lower() in _TRUE for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    ):
        return True
    if any(os.environ.get(v) for v in _PROXY_VARS):
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host = url.hostname or "huggingface.co"
    port = url.port or (80 if url.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError:
        return True
    return False


def closest_name(name: str, known: Iterable[str]) -> str | None:
    """The known name closest to ``name`` (difflib ratio >= 0.6), or None."""
    match = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return match[0] if match else None
