"""``steerlab fit fasb`` / ``generate --method fasb`` / ``eval --method fasb``: outputs and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli_support import error_line, run
from steerlab.fasb_commands import FASBRow, parse_overrides, render_row
from steerlab.interventions.fasb import FASBConfig, load_fasb
from steerlab.testing import tiny_model







@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    out = {}
    for family in ("llama", "qwen2"):
        d = tmp_path_factory.mktemp("models") / family
        lm = tiny_model(family)
        lm.model.save_pretrained(d)
        lm.tokenizer.save_pretrained(d)
        out[family] = d
    return out


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("pairs") / "pairs.jsonl"
    p.write_text("".join(json.dumps({"prompt": f"Q: question {i} A:", "positive": f" right answer {i}",
                                     "negative": f" wrong reply {i % 3}"}) + "\n" for i in range(12)))
    return p


@pytest.fixture(scope="module")
def artifact(models, pairs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fit") / "fasb.safetensors"
    res = run("fit", "fasb", pairs, "--model", models["llama"], "--k", 3, "--alpha", 8, "--threshold", 0.55,
              "--s", 2, "--out", out)
    assert res.exit_code == 0, res.output
    assert "fitted fasb on 12 pairs: 3 heads" in res.stdout and "threshold 0.55, s 2, reference semantics" in res.stdout
    return out


def test_fit_saves_an_artifact_with_the_settings(artifact, models) -> None:
    from steerlab.models import load_model

    fit = load_fasb(artifact, load_model(str(models["llama"])))
    assert (fit.config.k, fit.config.alpha, fit.config.threshold, fit.config.s) == (3, 8.0, 0.55, 2)
    assert len(fit.heads) == 3


def test_generate_marks_the_backtrack(artifact, models) -> None:
    res = run("generate", "--method", "fasb", "--artifact", artifact, "--model", models["llama"], "--no-chat",
              "-n", 6, "--json", "-p", "threshold=0.99", "abc", "hello there")
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    assert [r["prompt"] for r in rows] == ["abc", "hello there"]
    for r in rows:  # threshold 0.99: every row backs up at its first check (2 tokens: all dropped)
        e = r["events"][0]
        assert (e["kind"], e["length"], e["kept"], len(e["dropped"])) == ("backtrack", 2, 0, 2)
        assert e["strength"] == pytest.approx(8.0 * (1 - e["p_true"]))
        assert r["kept"] + r["regenerated"] == r["text"]
    table = run("generate", "--method", "fasb", "--artifact", artifact, "--model", models["llama"], "--no-chat",
                "-n", 6, "-p", "threshold=0.99", "abc")
    assert table.exit_code == 0 and "backed up at token 2" in table.stdout and "dropped 2, kept 0" in table.stdout


def test_render_row_styles() -> None:
    row = FASBRow("p", "ab XY", "ab", " cd", " XY", ({"kind": "backtrack", "length": 4, "p_true": 0.3, "dropped": [1, 2],
                                                     "kept": 2, "strength": 4.2},), 0.3, "length")
    answer, notes = render_row(row, FASBConfig(threshold=0.6))
    assert answer.plain == "ab cd XY"
    assert [(answer.plain[s.start:s.end], str(s.style)) for s in answer.spans] == [(" cd", "strike red"),
                                                                                    (" XY", "bold green")]
    assert notes.plain == "backed up at token 4: p_true 0.300 < 0.6, dropped 2, kept 2, strength 4.20"


def test_parse_overrides() -> None:
    assert parse_overrides(["threshold=0.5", "s=3", "semantics=cached", "backtrack=false"]) == {
        "threshold": 0.5, "s": 3, "semantics": "cached", "backtrack": False}
    with pytest.raises(ValueError, match="unknown fasb option 'direction' for generation: use one of alpha, "):
        parse_overrides(["direction=probe"])


def test_bad_input_one_line_each(artifact, models, pairs, tmp_path) -> None:
    out = tmp_path / "x.safetensors"
    assert error_line(run("fit", "fasb", pairs, "--model", models["llama"], "--threshold", 1.2, "--out", out)) == \
        "error: threshold must be in (0, 1), got 1.2"
    assert error_line(run("fit", "fasb", pairs, "--model", models["llama"], "--threshold", 0, "--out", out)) == \
        "error: threshold must be in (0, 1), got 0.0"
    assert error_line(run("fit", "fasb", pairs, "--model", models["llama"], "--s", 0, "--out", out)) == \
        "error: s (tokens to back up) must be an integer >= 1, got 0"
    assert error_line(run("fit", "fasb", pairs, "--model", models["llama"], "--k", 17, "--out", out)) == \
        "error: k=17 is larger than the number of heads (4 x 4 = 16)"
    assert not out.exists()
    assert error_line(run("generate", "--method", "fasb", "--artifact", artifact, "--model", models["qwen2"],
                          "abc")) == ("error: fasb artifact was made for another model: a llama model ('llama'), "
                                      "not this qwen2 model ('qwen2')")
    assert error_line(run("generate", "--method", "fasb", "--artifact", artifact, "--model", models["llama"],
                          "-p", "threshold=1", "abc")) == "error: threshold must be in (0, 1), got 1.0"
    assert error_line(run("generate", "--method", "fasb", "--artifact", artifact, "--model", models["llama"],
                          "-p", "k=99", "abc")) == "error: k=99 is larger than the number of heads (4 x 4 = 16)"
    assert error_line(run("generate", "--method", "fasb", "--model", models["llama"], "abc")) == \
        "error: --method fasb needs --artifact FILE (from `steerlab fit fasb`)"
    assert error_line(run("fit", "iti", pairs, "--threshold", 0.5, "--out", out)) == \
        "error: --threshold are options of fasb: use `steerlab fit fasb ...`"


def test_eval_with_fasb(tmp_path) -> None:
    """The harness runs FASB through ``FittedMethod.adaptive``: MC scored FASB's way, generation with its monitor
    (each answer's decision in the items)."""
    res = run("eval", "truthfulqa_mc", "--method", "fasb", "--model", "tiny", "--limit", 8, "-p", "k=4", "-p",
              "alpha=5", "-p", "threshold=0.5", "-p", "s=2", "-o", tmp_path / "mc")
    assert res.exit_code == 0, res.output
    d = json.loads((tmp_path / "mc" / "results.json").read_text())
    assert d["method"] == "fasb" and d["metrics"]["n"] == 8
    assert d["method_config"]["threshold"] == 0.5 and d["method_config"]["semantics"] == "reference"
    res = run("eval", "truthfulqa_gen", "--method", "fasb", "--model", "tiny", "--limit", 6, "-p", "k=4", "-p",
              "alpha=5", "-p", "threshold=0.99", "-p", "s=2", "-o", tmp_path / "gen")
    assert res.exit_code == 0, res.output
    items = json.loads((tmp_path / "gen" / "results.json").read_text())["items"]
    assert len(items) == 6 and all(it["steered"] and it["backtracked"] for it in items)  # 0.99: every answer
    assert all(it["fasb_strength"] == pytest.approx(5.0 * (1 - it["p_true"])) for it in items)
