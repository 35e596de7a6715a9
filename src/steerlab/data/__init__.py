"""Benchmark data: where it lives and typed loaders.

Data is never bundled with the package. :func:`data_dir` resolves the data root in this order:

1. an explicit path argument (``data_dir("/data/steerlab")``);
2. the ``STEERLAB_DATA`` environment variable (tests and CI set it to ``../shared/data``).

When neither gives an existing directory, :class:`DataNotFoundError` says where it looked.
Loaders take the same optional ``root`` and read their files below it (``sts/...`` for STS).

Named datasets go through :mod:`steerlab.data.registry`, which extends this order for each
file: explicit path -> ``$STEERLAB_DATA`` -> the user cache -> a checksum-verified download
from the dataset's canonical public source (hub or original URL), with an error naming every
place it looked and how to provide the files when nothing is found offline.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["DataNotFoundError", "ENV_VAR", "data_dir", "data_path"]

ENV_VAR = "STEERLAB_DATA"


class DataNotFoundError(FileNotFoundError):
    """The data directory or a data file could not be found."""


def data_dir(root: str | os.PathLike[str] | None = None) -> Path:
    """The data root: ``root`` if given, else ``$STEERLAB_DATA``; raises naming where it looked."""
    looked: list[str] = []
    if root is not None:
        p = Path(root).expanduser()
        if p.is_dir():
            return p
        raise DataNotFoundError(f"data directory not found: {p} (given explicitly)")
    env = os.environ.get(ENV_VAR)
    if env:
        p = Path(env).expanduser()
        if p.is_dir():
            return p
        looked.append(f"${ENV_VAR}={env} (not a directory)")
    else:
        looked.append(f"${ENV_VAR} (not set)")
    raise DataNotFoundError(
        "benchmark data not found: looked at " + "; ".join(looked)
        + f". Pass a data directory explicitly or set {ENV_VAR} (e.g. export {ENV_VAR}=../shared/data)"
    )


def data_path(*parts: str, root: str | os.PathLike[str] | None = None) -> Path:
    """A file or folder below the data root; raises :class:`DataNotFoundError` if it is missing."""
    base = data_dir(root)
    p = base.joinpath(*parts)
    if not p.exists():
        raise DataNotFoundError(f"data file not found: {p} (data root {base})")
    return p
