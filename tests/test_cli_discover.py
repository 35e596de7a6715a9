"""First-use CLI: -h, --version, `steerlab list` and what `eval --help` names."""

from __future__ import annotations

import json
import os
from pathlib import Path

from typer.testing import CliRunner

from steerlab import __version__
from steerlab.catalog import catalog
from steerlab.cli import app

runner = CliRunner()
DATA = os.environ.get("STEERLAB_DATA") or str(Path(__file__).resolve().parents[2] / "shared" / "data")


def run(*args: str):
    return runner.invoke(app, list(args), env={"STEERLAB_DATA": DATA, "COLUMNS": "200"})


def test_short_help_equals_long_help() -> None:
    for cmd in ([], ["eval"], ["generate"], ["list"]):
        short, long = run(*cmd, "-h"), run(*cmd, "--help")
        assert short.exit_code == long.exit_code == 0
        assert short.stdout == long.stdout and "Usage: steerlab" in short.stdout


def test_version() -> None:
    for flag in ("--version", "-V"):
        res = run(flag)
        assert res.exit_code == 0 and res.stdout == f"steerlab {__version__}\n"


def test_eval_help_names_every_task_family() -> None:
    text = " ".join(run("eval", "--help").stdout.split())
    for name in ("truthfulqa_mc", "persona/<trait>", "caa/<behavior>", "ai_risk/<set>", "steerlab list"):
        assert name in text, name


def test_list_json_is_the_catalog() -> None:
    res = run("list", "--json")
    assert res.exit_code == 0
    assert json.loads(res.stdout) == json.loads(json.dumps(catalog().to_dict()))


def test_list_table_shows_groups_and_method_defaults() -> None:
    res = run("list")
    assert res.exit_code == 0
    out = res.stdout
    assert "tasks (9; steerlab eval TASK)" in out and "CAA behaviours (7; steerlab eval caa/BEHAVIOUR)" in out
    assert "ai_risk sets (16; steerlab eval ai_risk/SET)" in out and "ai_risk/survival-instinct" in out
    assert "persona traits (15;" in out and "STSBenchmark" in out
    assert "k=48, alpha=15.0" in out and "multiplier=1.0" in out
