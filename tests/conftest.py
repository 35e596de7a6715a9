"""Shared fixtures: tiny random-weight models (fast) and the embedded model (loaded once)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from steerlab.testing import tiny_model

DATA_DIR = Path(os.environ.get("STEERLAB_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
# code under test reads the data root from the environment, as `make test` sets it
os.environ.setdefault("STEERLAB_DATA", str(DATA_DIR))


@pytest.fixture(scope="session", autouse=True)
def _threads() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tiny():
    """A tiny random Llama (4 layers, hidden 64, 4 heads of 16, 2 kv heads)."""
    return tiny_model("llama")


@pytest.fixture(scope="session")
def embedded():
    """The embedded SmolLM2-135M-Instruct, loaded once per test session."""
    import steerlab

    return steerlab.load_model("embedded")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA_DIR.is_dir():
        pytest.fail(f"benchmark data not found at {DATA_DIR}; set STEERLAB_DATA")
    return DATA_DIR
