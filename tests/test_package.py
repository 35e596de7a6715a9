"""The top-level package: lazy public names (no torch at import), the short forms, the version."""

from __future__ import annotations

import importlib
import subprocess
import sys

import steerlab


def _fresh(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def test_import_does_not_load_torch() -> None:
    assert _fresh("import sys, steerlab; print('torch' in sys.modules, steerlab.__version__)") == "False 0.1.0"


def test_cli_help_does_not_load_torch() -> None:
    code = ("import sys\nfrom typer.testing import CliRunner\nfrom steerlab.cli import app\n"
            "r = CliRunner().invoke(app, ['--help'])\nprint(r.exit_code, 'torch' in sys.modules)")
    assert _fresh(code) == "0 False"


def test_public_names_resolve() -> None:
    from steerlab.embed import Encoder
    from steerlab.generate import generate

    assert all(getattr(steerlab, n) is not None for n in steerlab.__all__)
    assert steerlab.Encoder is Encoder  # the embeddings issue's short form
    # importing the submodule never replaces the function of the same name
    importlib.import_module("steerlab.capture")
    importlib.import_module("steerlab.generate")

    assert steerlab.generate is generate and callable(steerlab.capture)
    assert _fresh("import steerlab.generate, steerlab; print(callable(steerlab.generate))") == "True"
    try:
        steerlab.no_such_name  # noqa: B018
    except AttributeError as e:
        assert str(e) == "module 'steerlab' has no attribute 'no_such_name'"
    else:
        raise AssertionError("no AttributeError")
