"""Issue #9, sections 1-3: every bad CLI input is one exact ``error:`` line, exit 1, nothing written,
and checked before the slow part (model load, fit, generation)."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from steerlab import cli
from cli_support import error_line, run
from steerlab.artifacts import load_vector
from steerlab.testing import tiny_model

BOUND = "a finite number between -10000 and 10000"
needs_proc = pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs the unwritable /proc folder")






@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory) -> Path:
    """A tiny random Llama saved with a 40-token context (so the new-token cap is quick to reach)."""
    d = tmp_path_factory.mktemp("models") / "llama"
    lm = tiny_model("llama")
    lm.model.config.max_position_embeddings = 40
    lm.model.save_pretrained(d)
    lm.tokenizer.save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def vec_file(llama_dir, tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("vec")
    pairs = d / "pairs.jsonl"
    pairs.write_text(
        "".join(json.dumps({"positive": f"I love {i}", "negative": f"I hate {i}"}) + "\n" for i in range(4))
    )
    out = d / "v.safetensors"
    res = run("fit", pairs, "--model", llama_dir, "--layers", "1,2", "--out", out)
    assert res.exit_code == 0, res.output
    return out


@pytest.fixture()
def pairs_file(tmp_path) -> Path:
    p = tmp_path / "pairs.jsonl"
    p.write_text(
        "".join(json.dumps({"positive": f"good {i}", "negative": f"bad {i}"}) + "\n" for i in range(3))
    )
    return p


@pytest.fixture()
def no_model_load(monkeypatch) -> None:
    """Fail the test if the command loads a model: the error must come before the slow part."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the model was loaded before the bad input was refused")

    monkeypatch.setattr(cli, "_load", refuse)


# ------------------------------------------------------------------ 1. wrong results without an error


@pytest.mark.parametrize(
    "value, shown", [("nan", "nan"), ("inf", "inf"), ("-inf", "-inf"), ("1e30", "1e+30"), ("20000", "20000")]
)
def test_generate_refuses_non_finite_or_absurd_strength(
    vec_file, llama_dir, no_model_load, value, shown
) -> None:
    res = run("generate", "hi", "--model", llama_dir, "--vector", vec_file, f"--strength={value}", "-n", "2")
    assert error_line(res) == f"error: --strength must be {BOUND}, got {shown}"
    assert res.stdout == ""


def test_generate_accepts_strength_at_the_bound(vec_file, llama_dir) -> None:
    res = run(
        "generate",
        "hi",
        "--model",
        llama_dir,
        "--vector",
        vec_file,
        "--strength",
        "-10000",
        "-n",
        "2",
        "--json",
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["prompt"] == "hi"


def test_eval_multiplier_nan_is_refused_and_nothing_is_written(tmp_path) -> None:
    out = tmp_path / "ev"
    res = run(
        "eval",
        "copa",
        "--model",
        "tiny",
        "--method",
        "caa",
        "-p",
        "multiplier=nan",
        "--limit",
        "4",
        "--out",
        out,
    )
    assert error_line(res) == f"error: multiplier must be {BOUND}, got nan"
    assert not out.exists()  # no results.json, no checkpoint/ folder


def test_eval_iti_alpha_inf_is_refused(tmp_path) -> None:
    out = tmp_path / "ev"
    res = run("eval", "copa", "--model", "tiny", "--method", "iti", "-p", "alpha=inf", "--out", out)
    assert error_line(res) == f"error: alpha must be {BOUND}, got inf"
    assert not out.exists()


def test_embed_cp_alpha_nan_is_refused(tmp_path, llama_dir) -> None:
    src = tmp_path / "s.txt"
    src.write_text("a cat\n")
    res = run("embed", src, "--model", llama_dir, "--cp", "ns", "--alpha", "nan", "--out", tmp_path / "e.npy")
    assert error_line(res) == f"error: CP alpha must be {BOUND}, got nan"
    assert not (tmp_path / "e.npy").exists()


def test_embed_refuses_an_unsupported_output_extension(tmp_path, no_model_load) -> None:
    src = tmp_path / "s.txt"
    src.write_text("a cat\n")
    res = run("embed", src, "--out", tmp_path / "e.csv")
    assert (
        error_line(res)
        == "error: unsupported output file type '.csv' (e.csv): name the output .npy or .parquet"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.txt"]


def test_eval_sts_writes_results_to_eval_out_by_default(tmp_path, llama_dir, monkeypatch) -> None:
    """The help says the default output is eval_out/: without --out the results land there."""
    monkeypatch.chdir(tmp_path)
    res = run("eval", "sts", "--model", llama_dir, "--tasks", "stsb", "--limit", "4")
    assert res.exit_code == 0, res.output
    saved = json.loads((tmp_path / "eval_out" / "results.json").read_text())
    assert set(saved["scores"]) == {"STSBenchmark"} and saved["n_pairs"]["STSBenchmark"] == 4
    assert res.stdout.strip().endswith("wrote eval_out/results.json")
    assert "[default: eval_out]" in run("eval", "--help", env={"COLUMNS": "300"}).stdout


def test_eval_sts_bad_task_creates_no_output_folder(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    res = run("eval", "sts", "--tasks", "sts99")
    assert error_line(res) == (
        "error: unknown STS task 'sts99': choose from STS12, STS13, STS14, STS15, STS16, "
        "STSBenchmark, SICKRelatedness (or stsb, sick)"
    )
    assert not (tmp_path / "eval_out").exists()


# ------------------------------------------------------------------ 2. messages that name the mistake


def test_empty_prompt(llama_dir, no_model_load) -> None:
    assert (
        error_line(run("generate", "", "--model", llama_dir))
        == "error: prompt 1 is empty: give some text to continue"
    )
    res = run("generate", "ok", "  ", "--model", llama_dir)
    assert error_line(res) == "error: prompt 2 is empty: give some text to continue"


def test_eval_bad_layer_option_names_it_and_writes_nothing(tmp_path) -> None:
    out = tmp_path / "ev"
    res = run("eval", "copa", "--model", "tiny", "--method", "caa", "-p", "layer=abc", "--out", out)
    assert error_line(res) == "error: bad value 'abc' for caa.layer: expected int or None"
    assert not out.exists()


def test_eval_layer_out_of_range_is_checked_before_anything_is_written(tmp_path) -> None:
    out = tmp_path / "ev"
    res = run(
        "eval", "copa", "--model", "tiny", "--method", "caa", "-p", "layer=9", "--limit", "4", "--out", out
    )
    assert error_line(res) == "error: layer 9 out of range: this model has layers 0..3"
    assert not out.exists()


@needs_proc
def test_fit_unwritable_output_fails_before_the_model_loads(pairs_file, no_model_load) -> None:
    res = run("fit", pairs_file, "--out", "/proc/steerlab-test/v.safetensors")
    assert error_line(res) == (
        "error: cannot write output file /proc/steerlab-test/v.safetensors: "
        "the folder /proc is not writable; choose another location"
    )


@needs_proc
def test_export_gguf_unwritable_output_names_the_output(vec_file) -> None:
    res = run("export-gguf", vec_file, "/proc/x.gguf")
    assert error_line(res) == (
        "error: cannot write output file /proc/x.gguf: the folder /proc is not writable; "
        "choose another location"
    )


@needs_proc
def test_eval_unwritable_output_folder(tmp_path) -> None:
    res = run("eval", "copa", "--model", "tiny", "--out", "/proc/ev")
    assert error_line(res) == (
        "error: cannot write output folder /proc/ev: the folder /proc is not writable; "
        "choose another location"
    )


def test_fit_output_that_is_a_folder(pairs_file, tmp_path, no_model_load) -> None:
    (tmp_path / "v.safetensors").mkdir()
    res = run("fit", pairs_file, "--out", tmp_path / "v.safetensors")
    assert error_line(res) == (
        f"error: output file {tmp_path / 'v.safetensors'} is a folder: "
        f"give a file name, e.g. {tmp_path / 'v.safetensors' / 'out'}"
    )


def test_reversed_layer_range(pairs_file, llama_dir, tmp_path) -> None:
    out = tmp_path / "v.safetensors"
    res = run("fit", pairs_file, "--model", llama_dir, "--layers", "3-1", "--out", out)
    assert (
        error_line(res)
        == "error: bad layer range '3-1': it runs backwards; write the lower layer first, e.g. 1-3"
    )
    assert not out.exists()


def test_negative_layer_range_still_works(pairs_file, llama_dir, tmp_path) -> None:
    out = tmp_path / "v.safetensors"
    assert run("fit", pairs_file, "--model", llama_dir, "--layers", "2--1", "--out", out).exit_code == 0
    assert json.loads(out.with_suffix(".json").read_text())["sites"].keys() == {"residual.2", "residual.3"}


def test_bad_site_lists_the_kinds(pairs_file, no_model_load, tmp_path) -> None:
    res = run("fit", pairs_file, "--site", "bogus", "--out", tmp_path / "v.safetensors")
    assert (
        error_line(res) == "error: unknown site kind 'bogus': use one of residual, heads, attn_out, mlp_out, block_in"
    )


def test_bad_fit_method_and_positions_fail_before_the_model_loads(
    pairs_file, no_model_load, tmp_path
) -> None:
    out = tmp_path / "v.safetensors"
    res = run("fit", pairs_file, "--method", "magic", "--out", out)
    assert error_line(res) == "error: unknown method 'magic': use one of mean_diff, pca, probe"
    res = run("fit", pairs_file, "--positions", "first", "--out", out)
    assert error_line(res) == (
        "error: bad positions 'first': use 'last', 'all', 'answer', LastK(k) (or 'last_K') or Mask(rows)"
    )


def test_embed_non_utf8_input_names_file_and_line(tmp_path, no_model_load) -> None:
    src = tmp_path / "s.txt"
    src.write_bytes(b"fine\nalso fine\ncaf\xe9 latin-1\n")
    res = run("embed", src, "--out", tmp_path / "e.npy")
    assert error_line(res) == f"error: {src}:3: not UTF-8 text (byte 0xe9); save the file as UTF-8"
    jl = tmp_path / "s.jsonl"
    jl.write_bytes(b'{"text": "ok"}\n{"text": "\xff"}\n')
    res = run("embed", jl, "--out", tmp_path / "e.npy")
    assert error_line(res) == f"error: {jl}:2: not UTF-8 text (byte 0xff); save the file as UTF-8"


def test_model_folder_without_config(tmp_path) -> None:
    empty = tmp_path / "emptydir"
    empty.mkdir()
    res = run("info", "--model", empty)
    assert error_line(res) == (
        f"error: cannot load model '{empty}': the folder has no config.json (a model folder holds "
        "config.json and weights, as written by save_pretrained); use 'embedded', a .gguf file, "
        "a local model folder, or a hub id (online)"
    )


def test_model_file_that_is_not_gguf(tmp_path) -> None:
    f = tmp_path / "weights.bin"
    f.write_bytes(b"\x00")
    res = run("info", "--model", f)
    assert error_line(res) == (
        f"error: cannot load model '{f}': it is a file but not a .gguf; use 'embedded', "
        "a .gguf file, a local model folder, or a hub id (online)"
    )


def test_eval_sts_refuses_steering_options() -> None:
    res = run("eval", "sts", "--method", "caa", "-p", "layer=3")
    assert error_line(res) == (
        "error: --method, --param given to `eval sts`, which scores sentence embeddings "
        "without a steering method: drop them"
    )


def test_eval_task_refuses_sts_options(tmp_path) -> None:
    res = run("eval", "copa", "--model", "tiny", "--method", "iti", "--alpha", "5", "--out", tmp_path / "ev")
    assert error_line(res) == (
        "error: --alpha given to `eval copa`: these options belong to `eval sts`; "
        "set the method's options with -p KEY=VALUE, e.g. -p layer=12"
    )
    assert not (tmp_path / "ev").exists()


def test_strength_without_vector_is_an_error(llama_dir, no_model_load) -> None:
    res = run("generate", "hi", "--model", llama_dir, "--strength", "3")
    assert error_line(res) == (
        "error: --strength without --vector: these steering options need a vector file (--vector FILE)"
    )
    res = run("generate", "hi", "--model", llama_dir, "--compare", "--where", "all")
    assert error_line(res) == (
        "error: --compare, --where without --vector: these steering options need a vector "
        "file (--vector FILE)"
    )


# ------------------------------------------------------------------ 3. fail fast, never hang


def test_mistyped_model_name_offline_fails_at_once_with_a_suggestion(monkeypatch) -> None:
    from steerlab import models

    def no_hub(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("tried the hub while offline")

    monkeypatch.setattr("transformers.AutoModelForCausalLM.from_pretrained", no_hub)
    res = run("info", "--model", "embeded")
    assert error_line(res) == (
        "error: cannot load model 'embeded': it is not a local file or folder, and the "
        "Hugging Face hub cannot be reached to download it; did you mean 'embedded'?"
    )
    res = run("info", "--model", "nobody/no-such-model-xyz")
    assert error_line(res) == (
        "error: cannot load model 'nobody/no-such-model-xyz': it is not a local file or folder, and the "
        "Hugging Face hub cannot be reached to download it; use 'embedded', a .gguf file, a local model "
        "folder, or a hub id (online)"
    )
    assert "embedded" in models.known_model_names()


def test_bad_vector_file_fails_before_the_model_loads(tmp_path, no_model_load) -> None:
    garbage = tmp_path / "g.safetensors"
    garbage.write_bytes(b"\x00\x01 not safetensors")
    res = run("generate", "hi", "--vector", garbage)
    assert error_line(res).startswith(f"error: '{garbage}' is not a valid safetensors file (")


def test_new_tokens_are_capped_at_the_context_with_a_warning(llama_dir) -> None:
    res = run("generate", "hi", "--model", llama_dir, "--no-chat", "-n", "100000", "--json")
    assert res.exit_code == 0, res.output
    assert res.stderr.strip() == (
        "warning: max_new_tokens=100000 does not fit in the model's context (40 tokens, "
        "2 taken by the prompt): generating at most 38 new tokens"
    )
    assert json.loads(res.stdout)["prompt"] == "hi"


def test_ctrl_c_prints_the_partial_output(llama_dir, monkeypatch) -> None:
    """Ctrl-C at the 4th decoding step of the second prompt: the first prompt's whole output and the
    second's first 3 tokens are printed (as the library makes them), then one error line, exit 130."""
    from steerlab.generate import generate
    from steerlab.models import load_model

    gen_mod = importlib.import_module("steerlab.generate")
    lm = load_model(llama_dir)
    first = generate(lm, "hi", max_new_tokens=6)
    partial = generate(lm, "yo", max_new_tokens=3)
    original = gen_mod.select_next
    calls = {"n": 0}

    def select(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == len(first.tokens[0]) + 4:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(gen_mod, "select_next", select)
    res = run(
        "generate", "hi", "yo", "--model", llama_dir, "--no-chat", "-n", "6", "--json", "--batch-size", "1"
    )
    assert error_line(res, code=130) == (
        "error: interrupted: the output above is what was generated before Ctrl-C (2 of 2 prompt(s))"
    )
    rows = [json.loads(x) for x in res.stdout.splitlines()]
    assert rows == [
        {"prompt": "hi", "output": first.texts[0].strip()},
        {"prompt": "yo", "output": partial.texts[0].strip()},
    ]


def test_ctrl_c_during_the_first_prompt_prints_its_partial_text(llama_dir, monkeypatch) -> None:
    gen_mod = importlib.import_module("steerlab.generate")

    def select(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(gen_mod, "select_next", select)
    res = run(
        "generate", "hi", "yo", "--model", llama_dir, "--no-chat", "-n", "6", "--json", "--batch-size", "1"
    )
    assert error_line(res, code=130) == (
        "error: interrupted: the output above is what was generated before Ctrl-C (1 of 2 prompt(s))"
    )
    assert [json.loads(x) for x in res.stdout.splitlines()] == [{"prompt": "hi", "output": ""}]


@pytest.mark.parametrize("args, message", [
    (["--grid", "multiplier=a,b"], "error: bad value 'a' for caa.multiplier: expected float"),
    (["--grid", "multiplier"], "error: bad grid 'multiplier': use NAME=V1,V2,..., e.g. multiplier=1,2,4"),
    (["--grid", "strength=1,2"], "error: unknown option(s) for method 'caa': strength (known: layer, multiplier, "
                                 "steer_from, max_pairs, batch_size)"),
    (["--grid", "multiplier=1,2", "-p", "multiplier=3"], "error: 'multiplier' is both a --param and a --grid axis: "
                                                         "give it once"),
    (["--grid", "multiplier=1,2", "--select", "mc9"], "error: --select mc9: task 'caa/refusal' reports p_matching, "
                                                      "matching_rate"),
    (["--grid", "multiplier=1,2", "--coherence-margin", "1"], "error: --coherence-margin: task 'caa/refusal' has no "
                                                              "coherence measure"),
    (["--no-grow"], "error: --select, --coherence-margin, --val-limit and --no-grow need a --grid"),
    (["--grid", "multiplier=1,1"], "error: grid axis 'multiplier' repeats a value"),
])
def test_eval_bad_grid_is_one_line_and_writes_nothing(tmp_path, args, message) -> None:
    out = tmp_path / "out"
    res = run("eval", "caa/refusal", "--method", "caa", "--model", "tiny", "--limit", "16", "--out", out, *args)
    assert error_line(res) == message
    assert not out.exists()


def test_eval_grid_searches_each_fold_and_reports_it(tmp_path) -> None:
    out = tmp_path / "out"
    res = run("eval", "caa/refusal", "--method", "caa", "-p", "layer=1", "--model", "tiny", "--limit", "16",
              "--grid", "multiplier=-6,3", "--no-grow", "--out", out)
    assert res.exit_code == 0, res.output
    results = json.loads((out / "results.json").read_text())
    chosen = [pf["selection"]["chosen"]["multiplier"] for pf in results["per_fold"]]
    for f, m in enumerate(chosen):
        # two values and no growth: the choice is at an edge of the grid, and the output says so
        assert (f"fold {f}: chose {{'multiplier': {m}}} on 2 validation questions (max p_matching; 2 tried; "
                "still at an edge: multiplier)") in res.output
    assert results["command"].endswith("--grid multiplier=-6.0,3.0 --no-grow --select p_matching")
    md = (out / "results.md").read_text()
    assert "Validation search" in md
    assert f"caa fold 0 (2 questions, max p_matching): **chose {{'multiplier': {chosen[0]}}}**, still at an edge" in md


def test_import_gguf_round_trips_export_gguf(vec_file, tmp_path) -> None:
    assert run("export-gguf", vec_file, tmp_path / "v.gguf").exit_code == 0
    res = run("import-gguf", tmp_path / "v.gguf", tmp_path / "back.safetensors")
    assert res.exit_code == 0, res.output
    original, back = load_vector(vec_file), load_vector(tmp_path / "back.safetensors")
    assert sorted(back.vectors) == sorted(original.vectors) == ["residual.1", "residual.2"]
    assert all(torch.equal(back.vectors[k], original.vectors[k].float()) for k in original.vectors)
    (tmp_path / "junk.gguf").write_bytes(b"junk")
    res = run("import-gguf", tmp_path / "junk.gguf", tmp_path / "x.safetensors")
    assert res.exit_code != 0
    assert error_line(res) == f"error: '{tmp_path / 'junk.gguf'}' is not a readable GGUF file (GGUF magic invalid)"
    assert not (tmp_path / "x.safetensors").exists()
