"""Helpers the CLI tests share: run ``steerlab`` in-process and read its one error line."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from steerlab.cli import app

runner = CliRunner()
DATA = os.environ.get("STEERLAB_DATA") or str(Path(__file__).resolve().parents[2] / "shared" / "data")


def run(*args: Any, env: dict[str, str] | None = None):
    """``steerlab ARGS`` offline, with the benchmark data, wide output, no tracebacks."""
    base = {"HF_HUB_OFFLINE": "1", "STEERLAB_DEBUG": "", "STEERLAB_DATA": DATA, "COLUMNS": "250"}
    return runner.invoke(app, [str(a) for a in args], env={**base, **(env or {})})


def error_line(res, code: int = 1) -> str:
    """The single stderr line of a failed command (asserting exit code, one line, no traceback)."""
    assert res.exit_code == code, (res.exit_code, res.output)
    err = res.stderr.strip()
    assert "Traceback" not in res.output and "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    return err
