"""Reports: results.json -> markdown table (with the command) and a PNG bar plot."""

from __future__ import annotations

import copy

import pytest

from steerlab.evals.report import load_results, markdown_report, plot_results, write_report
from steerlab.evals.runner import write_json_atomic

RES = {
    "format": 1, "task": "truthfulqa_mc", "method": "caa",
    "method_config": {"layer": 3, "multiplier": 2.0, "max_pairs": None},
    "model": "embedded", "limit": 6, "folds": 2, "seed": 0, "split": None, "config_hash": "abc123",
    "command": "steerlab eval truthfulqa_mc --method caa --model embedded --limit 6 --folds 2 --seed 0 --out o",
    "metric_names": ["mc1", "mc2", "mc3"],
    "metrics": {"n": 6, "mc1": 0.5, "mc2": 0.25, "mc3": 1 / 3},
    "per_fold": [{"fold": 0, "n": 3, "mc1": 1 / 3, "mc2": 0.2, "mc3": 0.3, "fit": {}},
                 {"fold": 1, "n": 3, "mc1": 2 / 3, "mc2": 0.3, "mc3": None, "fit": {}}],
    "items": [],
}


def test_markdown_table_and_command():
    md = markdown_report(RES)
    assert "| method | n | mc1 | mc2 | mc3 |" in md
    assert "| caa (layer=3, multiplier=2.0) | 6 | 50.00 | 25.00 | 33.33 |" in md
    assert "| caa | 1 | 3 | 66.67 | 30.00 | n/a |" in md
    assert RES["command"] in md and "`abc123`" in md


def test_several_methods_in_one_table():
    base = copy.deepcopy(RES)
    base.update(method="none", method_config={}, command="steerlab eval ... --method none")
    md = markdown_report([base, RES])
    rows = [line for line in md.split("Per fold")[0].splitlines() if line.startswith("| none |") or line.startswith("| caa (")]
    assert len(rows) == 2 and rows[0].startswith("| none | 6 |")
    with pytest.raises(ValueError, match="^no results to report$"):
        markdown_report([])


def test_png_and_write_report(tmp_path):
    png = plot_results(RES, tmp_path / "p.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    write_json_atomic(tmp_path / "results.json", RES)
    assert load_results(tmp_path) == RES
    md, png2 = write_report(load_results(tmp_path / "results.json"), tmp_path)
    assert md.read_text() == markdown_report(RES) and png2.stat().st_size > 1000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.png", "results.json", "results.md", "results.png"]
