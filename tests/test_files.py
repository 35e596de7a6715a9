"""The one atomic-write helper: the user's normal file mode, no half-written file, no temp file left."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

import steerlab.files as files
from steerlab.artifacts import save_vector
from steerlab.embed.io import ChunkStore
from steerlab.evals.report import write_report
from steerlab.vectors import SteeringVector, VectorMeta


@pytest.fixture()
def umask():
    def set_mask(mask: int) -> None:
        os.umask(mask)

    old = os.umask(0o022)
    yield set_mask
    os.umask(old)


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_atomic_write_uses_the_umask(tmp_path: Path, umask) -> None:
    p = files.atomic_write_text(tmp_path / "a.txt", "hello")
    assert p.read_text() == "hello" and _mode(p) == 0o644
    umask(0o077)
    q = files.atomic_write_bytes(tmp_path / "b.bin", b"\x00\x01")
    assert q.read_bytes() == b"\x00\x01" and _mode(q) == 0o600
    umask(0o002)
    assert _mode(files.atomic_write_text(tmp_path / "c.txt", "x")) == 0o664
    assert sorted(x.name for x in tmp_path.iterdir()) == ["a.txt", "b.bin", "c.txt"]  # no temp files left


def test_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    p = files.atomic_write_text(tmp_path / "keep.txt", "old")

    def boom(tmp: Path) -> None:
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="^disk full$"):
        files.atomic_write(p, boom)
    assert p.read_text() == "old" and [x.name for x in tmp_path.iterdir()] == ["keep.txt"]


def test_outputs_are_readable_by_others(tmp_path: Path, umask) -> None:
    """Vector files, their sidecars, reports and embeddings get 0644 under umask 022 (not mkstemp's 0600)."""
    vec = SteeringVector({"residual.1": torch.ones(8)}, VectorMeta(model_name="m", hidden_size=8, n_layers=2))
    out = save_vector(vec, tmp_path / "v.safetensors")
    assert _mode(out) == 0o644 and _mode(out.with_suffix(".json")) == 0o644
    res = {"task": "copa", "method": "none", "model": "m", "metrics": {"n": 2, "acc": 0.5}, "metric_names": ["acc"],
           "folds": 1, "limit": 2, "seed": 0, "command": "steerlab eval copa", "config_hash": "abc",
           "per_fold": [], "method_config": {}}
    md, png = write_report(res, tmp_path / "rep")
    assert _mode(md) == 0o644 and _mode(png) == 0o644 and png.read_bytes()[:4] == b"\x89PNG"
    store = ChunkStore(tmp_path / "emb", ["a", "b", "c"], dim=2, meta={"m": 1}, chunk_size=2)
    store.write(0, np.zeros((2, 2), np.float32))
    store.write(1, np.ones((1, 2), np.float32))
    npy = store.write_npy(tmp_path / "e.npy")
    assert _mode(npy) == 0o644 and np.load(npy).tolist() == [[0, 0], [0, 0], [1, 1]]
