"""CLI: every command works on a local model, and every bad input is one line + non-zero exit."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from steerlab.cli import app
from steerlab.testing import tiny_model

runner = CliRunner()


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    out = {}
    for fam in ("llama", "gpt2"):
        lm = tiny_model(fam)
        d = root / fam
        lm.model.save_pretrained(d)
        lm.tokenizer.save_pretrained(d)
        out[fam] = d
    from transformers import BertConfig, BertLMHeadModel

    bert = BertLMHeadModel(BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                      intermediate_size=64, is_decoder=True))
    bert.save_pretrained(root / "bert")
    lm = tiny_model("llama")
    lm.tokenizer.save_pretrained(root / "bert")
    out["bert"] = root / "bert"
    return out


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("data") / "pairs.jsonl"
    rows = [{"positive": f"I love item {i}!", "negative": f"I hate item {i}."} for i in range(6)]
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


DATA = os.environ.get("STEERLAB_DATA") or str(Path(__file__).resolve().parents[2] / "shared" / "data")


def run(*args: str):
    env = {"HF_HUB_OFFLINE": "1", "STEERLAB_DEBUG": "", "STEERLAB_DATA": DATA}
    return runner.invoke(app, [str(a) for a in args], env=env)


def assert_one_line_error(res, pattern: str) -> None:
    assert res.exit_code != 0, res.output
    err = res.stderr.strip()
    assert "Traceback" not in res.output and "Traceback" not in err
    assert err.startswith("error:") and len(err.splitlines()) == 1, err
    assert pattern in err, err


def test_info_table_and_json(model_dirs) -> None:
    res = run("info", "--model", model_dirs["llama"], "--json")
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)
    assert d["family"] == "llama" and d["layers"] == 4 and d["heads"] == 4 and "residual" in d["sites"]
    res = run("info", "--model", model_dirs["gpt2"])
    assert res.exit_code == 0 and "gpt2" in res.stdout


def test_fit_generate_export_roundtrip(model_dirs, pairs_file, tmp_path) -> None:
    vec = tmp_path / "v.safetensors"
    res = run("fit", pairs_file, "--model", model_dirs["llama"], "--layers", "1,2", "--out", vec)
    assert res.exit_code == 0, res.output
    assert vec.exists() and vec.with_suffix(".json").exists()
    meta = json.loads(vec.with_suffix(".json").read_text())
    assert json.dumps(meta).count("residual.1") >= 1
    res = run("generate", "hello", "abc", "--model", model_dirs["llama"], "--vector", vec, "--strength", "4",
              "--compare", "-n", "5", "--json")
    assert res.exit_code == 0, res.output
    lines = [json.loads(x) for x in res.stdout.strip().splitlines()]
    assert [x["prompt"] for x in lines] == ["hello", "abc"] and {"unsteered", "steered"} <= set(lines[0])
    # the CLI's texts are exactly the library's, with and without the saved vector, and steering changed them
    import steerlab as sl

    lm = sl.load_model(model_dirs["llama"])
    v = sl.load_vector(vec, lm)
    assert sorted(v.vectors) == ["residual.1", "residual.2"]
    chat = lm.has_chat_template
    plain = sl.generate(lm, ["hello", "abc"], max_new_tokens=5, chat=chat)
    steered = sl.generate(lm, ["hello", "abc"], steer=v, strength=4.0, where="generated", max_new_tokens=5, chat=chat)
    assert [x["unsteered"] for x in lines] == [t.strip() for t in plain.texts]
    assert [x["steered"] for x in lines] == [t.strip() for t in steered.texts]
    # the random tiny model decodes to invalid bytes, so compare tokens here (readable text: the test below)
    assert all(a != b for a, b in zip(plain.tokens, steered.tokens))
    out = tmp_path / "v.gguf"
    res = run("export-gguf", vec, out)
    assert res.exit_code == 0 and out.exists(), res.output
    import gguf
    import numpy as np

    reader = gguf.GGUFReader(str(out))
    directions = {t.name: np.asarray(t.data, dtype=np.float32).reshape(-1) for t in reader.tensors}
    assert sorted(directions) == ["direction.1", "direction.2"]
    for layer in (1, 2):
        np.testing.assert_array_equal(directions[f"direction.{layer}"], v.vectors[f"residual.{layer}"].numpy())


@pytest.mark.slow
def test_fit_and_compare_on_embedded_model(embedded, tmp_path) -> None:
    """On the embedded model the CLI's steered text differs from its unsteered text, and both are the
    library's greedy output for the same vector and strength."""
    import steerlab as sl

    pairs = tmp_path / "pairs.jsonl"
    rows = [{"positive": f"I am so happy and grateful today{p}", "negative": f"I am so sad and miserable today{p}"}
            for p in (".", "!", ", truly.", " again.", "; life is good.", "; nothing works.")]
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    vec = tmp_path / "joy.safetensors"
    res = run("fit", pairs, "--layers", "12", "--out", vec)
    assert res.exit_code == 0, res.output
    res = run("generate", "Tell me about your week.", "--vector", vec, "--strength", "8", "--compare", "-n", "12",
              "--json")
    assert res.exit_code == 0, res.output
    (line,) = [json.loads(x) for x in res.stdout.strip().splitlines()]
    v = sl.load_vector(vec, embedded)
    plain = sl.generate(embedded, ["Tell me about your week."], max_new_tokens=12, chat=True).texts[0].strip()
    steered = sl.generate(embedded, ["Tell me about your week."], steer=v, strength=8.0, where="generated",
                          max_new_tokens=12, chat=True).texts[0].strip()
    assert (line["unsteered"], line["steered"]) == (plain, steered)
    assert steered != plain and len(steered) > 0


def test_fit_iti_then_generate(model_dirs, tmp_path) -> None:
    """`steerlab fit iti PAIRS` saves exactly fit_iti's vector (records from the pairs), and `generate` steers with
    it as the library does."""
    import steerlab as sl
    from steerlab.interventions.iti import ITIConfig, fit_iti, load_iti, records_from_pairs
    from steerlab.io import read_pairs

    pairs = tmp_path / "qa.jsonl"
    rows = [{"prompt": f"Q: is item {i} good?\nA:", "positive": f" Yes, item {i} is lovely.",
             "negative": f" No, item {i} is awful."} for i in range(10)]
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    vec = tmp_path / "iti.safetensors"
    res = run("fit", "iti", pairs, "--model", model_dirs["llama"], "--k", "3", "--alpha", "5", "--out", vec)
    assert res.exit_code == 0, res.output
    assert "fitted iti on 10 pairs: 3 heads" in " ".join(res.stdout.split())
    lm = sl.load_model(model_dirs["llama"])
    saved = sl.load_vector(vec, lm)
    ref = fit_iti(lm, records_from_pairs(read_pairs(pairs)), ITIConfig(k=3, alpha=5.0, batch_size=8))
    whole = load_iti(vec, lm)  # the file holds the whole fit, not only its vector
    assert whole.heads == ref.heads and torch.equal(whole.sigma, ref.sigma)
    torch.testing.assert_close(whole.directions, ref.directions)
    assert saved.vectors.keys() == ref.vector.vectors.keys() and all(s.kind.value == "heads" for s in saved.sites)
    for key, v in ref.vector.vectors.items():
        torch.testing.assert_close(saved.vectors[key], v)
    res = run("generate", "hello", "--model", model_dirs["llama"], "--vector", vec, "--compare", "-n", "6", "--json")
    assert res.exit_code == 0, res.output
    line = json.loads(res.stdout)
    chat = lm.has_chat_template
    steered = sl.generate(lm, ["hello"], steer=saved, strength=1.0, where="generated", max_new_tokens=6, chat=chat)
    plain = sl.generate(lm, ["hello"], max_new_tokens=6, chat=chat)
    assert line["steered"] == steered.texts[0].strip() and line["unsteered"] == plain.texts[0].strip()
    assert steered.tokens != plain.tokens


def test_fit_method_errors(model_dirs, pairs_file, tmp_path) -> None:
    out = tmp_path / "v.safetensors"
    assert_one_line_error(run("fit", "iti", pairs_file, "--layers", "2", "--out", out),
                          "error: --layers do(es) not apply to iti: it ranks the heads of every layer; choose how many "
                          "with --k")
    assert_one_line_error(run("fit", pairs_file, "--k", "3", "--out", out),
                          "error: --k, --alpha and --direction are options of iti: use `steerlab fit iti PAIRS_FILE`")
    assert_one_line_error(run("fit", "bogus", pairs_file, "--out", out),
                          "error: unknown fit method 'bogus': use one of mean_diff, caa, pca, probe, iti")
    assert_one_line_error(run("fit", "pca", pairs_file, "--method", "probe", "--out", out),
                          "error: two methods given ('pca' and --method probe): give one")
    assert_one_line_error(run("fit", "iti", pairs_file, "--alpha", "nan", "--out", out),
                          "error: alpha must be a finite number between -10000 and 10000, got nan")
    assert not out.exists()


def test_unknown_model(tmp_path) -> None:
    assert_one_line_error(run("info", "--model", "nobody/no-such-model-xyz"), "cannot load model 'nobody/no-such-model-xyz'")
    assert_one_line_error(run("info", "--model", tmp_path / "missing.gguf"), "GGUF file not found")


def test_unsupported_architecture(model_dirs) -> None:
    assert_one_line_error(run("info", "--model", model_dirs["bert"]), "unsupported architecture")


def test_layer_out_of_range(model_dirs, pairs_file, tmp_path) -> None:
    res = run("fit", pairs_file, "--model", model_dirs["llama"], "--layers", "7", "--out", tmp_path / "v.safetensors")
    assert_one_line_error(res, "layer 7 out of range: this model has layers 0..3")
    assert not (tmp_path / "v.safetensors").exists()


def test_missing_malformed_and_empty_files(model_dirs, tmp_path) -> None:
    out = tmp_path / "v.safetensors"
    assert_one_line_error(run("fit", tmp_path / "nope.jsonl", "--out", out, "--model", model_dirs["llama"]), "file not found")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"positive": "a", "negative": "b"}\n{"positive": "a", \n')
    assert_one_line_error(run("fit", bad, "--out", out, "--model", model_dirs["llama"]), "bad.jsonl:2: not valid JSON")
    missing = tmp_path / "missing.csv"
    missing.write_text("positive,negative\nyes,\n")
    assert_one_line_error(run("fit", missing, "--out", out, "--model", model_dirs["llama"]), "missing or empty field(s): negative")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    assert_one_line_error(run("fit", empty, "--out", out, "--model", model_dirs["llama"]), "no pairs found (empty dataset)")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00\x01not a safetensors file")
    assert_one_line_error(run("generate", "hi", "--vector", garbage, "--model", model_dirs["llama"]), "error")
    assert_one_line_error(run("generate", "--model", model_dirs["llama"]), "no prompts")


def test_vector_of_another_model_and_nan(model_dirs, pairs_file, tmp_path) -> None:
    vec = tmp_path / "llama.safetensors"
    assert run("fit", pairs_file, "--model", model_dirs["llama"], "--layers", "1", "--out", vec).exit_code == 0
    assert_one_line_error(run("generate", "hi", "--vector", vec, "--model", model_dirs["gpt2"]), "gpt2")
    from steerlab.artifacts import load_vector, save_vector

    v = load_vector(vec)
    v.vectors["residual.1"][3] = float("nan")
    nan_path = tmp_path / "nan.safetensors"
    try:
        save_vector(v, nan_path)
    except ValueError:  # refusing to save NaN is fine too; craft the file directly then
        from safetensors.torch import load_file, save_file
        from safetensors import safe_open

        with safe_open(str(vec), "pt") as f:
            meta = f.metadata()
        tensors = load_file(str(vec))
        tensors["residual.1"][3] = float("nan")
        save_file(tensors, str(nan_path), metadata=meta)
    assert_one_line_error(run("generate", "hi", "--vector", nan_path, "--model", model_dirs["llama"]), "NaN")


def test_bad_option_values(model_dirs, pairs_file, tmp_path) -> None:
    out = tmp_path / "v.safetensors"
    assert_one_line_error(run("fit", pairs_file, "--out", out, "--model", model_dirs["llama"], "--layers", "x"), "bad layer list")
    assert_one_line_error(run("fit", pairs_file, "--out", out, "--model", model_dirs["llama"], "--method", "magic"), "unknown method")


def test_embed_and_eval_bad_input(tmp_path, monkeypatch) -> None:
    assert_one_line_error(run("embed", tmp_path / "none.txt"), "input file not found")
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    assert_one_line_error(run("embed", empty, "--out", tmp_path / "e.npy"), "no sentences found")
    res = runner.invoke(app, ["eval", "sts"], env={"HF_HUB_OFFLINE": "1", "STEERLAB_DEBUG": "", "STEERLAB_DATA": ""})
    assert_one_line_error(res, "benchmark data not found")
    assert_one_line_error(run("eval", "sts", "--tasks", "sts99"), "sts99")
    assert_one_line_error(run("eval", "copa", "--param", "oops"), "bad method option 'oops'")
    assert_one_line_error(run("eval", "nosuchtask"), "nosuchtask")
    assert_one_line_error(run("eval", "copa", "--method", "magic", "--model", "tiny"), "magic")


def test_embed_writes_npy(model_dirs, tmp_path) -> None:
    import numpy as np

    src = tmp_path / "s.txt"
    src.write_text("a cat sits on the mat\nthe dog runs\nhello\n")
    res = run("embed", src, "--out", tmp_path / "s.npy", "--model", model_dirs["llama"], "--batch-size", "2")
    assert res.exit_code == 0, res.output
    arr = np.load(tmp_path / "s.npy")
    assert arr.shape == (3, 64) and np.isfinite(arr).all()


def test_eval_task_writes_results(tmp_path) -> None:
    out = tmp_path / "ev"
    res = run("eval", "copa", "--model", "tiny", "--method", "none", "--limit", "4", "--folds", "2", "--out", out)
    assert res.exit_code == 0, res.output
    d = json.loads((out / "results.json").read_text())
    assert d["metrics"]["n"] == 4 and (out / "results.md").exists() and (out / "results.png").exists()
