"""``steerlab fit psr`` / ``generate --method psr [--show-gates]`` / ``analyze prompt-steering``: outputs, gates
read back against a plain computation, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import steerlab.psr_commands as psr_commands
from cli_support import error_line, run
from steerlab.interventions.psr import GatedSteering, load_psr, save_psr
from steerlab.psr_commands import PSRFitSettings, PSRRow, fit_psr_command, generate_psr_command, render_gates
from steerlab.psr_data import Sample
from steerlab.data.records import InstructionPair, PersonaVectorTrait
from steerlab.testing import tiny_model

TRAIT = PersonaVectorTrait("pirate", (InstructionPair("Talk like a pirate, arr.", "Talk plainly."),),
                           ("How is the weather today?", "What did you eat for breakfast?"), "")






@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("models") / "llama"
    lm = tiny_model("llama")
    lm.model.save_pretrained(d)
    lm.tokenizer.save_pretrained(d)
    return d


def test_generate_reads_each_tokens_gate(tiny):
    module = GatedSteering(tiny, [1, 2], alpha=2.0, seed=5)
    with torch.no_grad():
        for b in module.b:
            b.fill_(0.5)
    rows = generate_psr_command(tiny, module, ["hello", "a longer prompt"], max_new_tokens=5, chat=False)
    plain = __import__("steerlab").generate(tiny, ["hello", "a longer prompt"], interventions=[module],
                                              max_new_tokens=5)
    assert [r.text for r in rows] == plain.texts
    # the first token's gate: the mean over the layers of the gates at the last prompt token, by hand
    enc = tiny.encode(["hello"])
    h = {}
    blocks = tiny.adapter.layers(tiny.model)

    def grab(i):
        def hook(mod, args, out):
            x = out[0] if isinstance(out, tuple) else out
            g = torch.relu(x[0, -1].float() @ module.w[i] + module.b[i])
            h[i] = float(g)
            y = x.clone()
            y[0, -1] = x[0, -1] + 2.0 * g * module.z[i]
            return (y, *out[1:]) if isinstance(out, tuple) else y
        return hook

    handles = [blocks[layer].register_forward_hook(grab(i)) for i, layer in enumerate(module.layers)]
    with torch.no_grad():
        tiny.model(**enc)
    for hd in handles:
        hd.remove()
    assert rows[0].gates[0] == pytest.approx((h[0] + h[1]) / 2, rel=1e-5)
    assert len(rows[0].gates) == len(rows[0].tokens) == 5


def test_render_gates_shades_by_value():
    row = PSRRow("p", "ab", ("a", "b", "c"), (0.0, 0.5, 1.0))
    text = render_gates(row)
    assert text.plain == "abc"
    styles = [str(span.style) for span in text.spans]
    assert styles == ["black on rgb(255,165,165)", "black on rgb(255,75,75)"]


def test_cli_generate_psr_and_errors(tiny, tiny_dir, tmp_path):
    module = GatedSteering(tiny, [1], alpha=1.5, seed=2)
    art = save_psr(module, tmp_path / "p.safetensors")
    res = run("generate", "hello", "--model", tiny_dir, "--method", "psr", "--artifact", art, "-n", "4", "--json",
              "--show-gates")
    assert res.exit_code == 0, res.output
    row = json.loads(res.stdout.strip().splitlines()[-1])
    assert len(row["gates"]) == len(row["tokens"]) == 4
    res = run("generate", "hello", "--model", tiny_dir, "--method", "psr", "--artifact", art, "-n", "4",
              "--show-gates")
    assert res.exit_code == 0 and "psr p.safetensors | alpha 1.5 | gates shaded" in res.stdout
    assert "--strength must be a finite number" in error_line(
        run("generate", "hello", "--model", tiny_dir, "--method", "psr", "--artifact", art, "--strength", "nan"))
    assert error_line(run("generate", "hi", "--method", "psr")) == \
        "error: --method psr needs --artifact FILE (from `steerlab fit psr`)"
    assert error_line(run("generate", "hi", "--show-gates")) == "error: --show-gates belongs to --method psr"
    other = tiny_model("llama", hidden=32, n_heads=4)
    bad = save_psr(GatedSteering(other, [1]), tmp_path / "other.safetensors")
    assert "hidden size 32 does not match the model's 64" in error_line(
        run("generate", "hello", "--model", tiny_dir, "--method", "psr", "--artifact", bad))


def test_cli_fit_psr_bad_input(tmp_path):
    out = tmp_path / "psr.safetensors"
    missing = tmp_path / "trait.json"
    missing.write_text(json.dumps({"positive": "Be a pirate."}))
    assert "not a trait file: it lacks the field 'questions'" in error_line(
        run("fit", "psr", missing, "--out", out))
    assert error_line(run("fit", "pairs.jsonl", "--gate", "relu", "--out", out)) == \
        "error: --gate are options of psr: use `steerlab fit psr TRAIT ...`"
    assert error_line(run("fit", "psr", "evil", "--out", out, "--gate", "sigmoid")).startswith(
        "error: gate must be one of 'relu', 'constant', got 'sigmoid'")
    assert error_line(run("fit", "psr", "evil", "--out", out, "--objective", "kl")) == \
        "error: objective must be one of 'mse', 'll', got 'kl'"
    assert error_line(run("fit", "psr", "evil", "--out", out, "--k", "3")) == "error: --k do(es) not apply to psr"
    assert "Persona Vectors file not found" in error_line(run("fit", "psr", "no_such_trait", "--out", out))


@pytest.mark.slow
def test_fit_psr_end_to_end_and_zero_triplets(embedded, tmp_path, monkeypatch):
    settings = PSRFitSettings(layers=(15,), epochs=2, max_new_tokens=8, judge="none", dev_fraction=0.5)
    path, summary = fit_psr_command(embedded, TRAIT, settings, tmp_path / "p.safetensors", tmp_path / "work",
                                    progress=False)
    module = load_psr(path, embedded)
    assert module.layers == (15,) and module.gate == "relu" and module.where == "generated"
    meta = json.loads((tmp_path / "p.json").read_text())["meta"]
    training = meta["extra"]["training"]
    assert meta["data"]["n_train"] + meta["data"]["n_dev"] == meta["data"]["n_triplets"] >= 1
    assert training["steps"] == 2 * meta["data"]["n_train"] and len(training["dev_losses"]) == 3
    assert f"for 'pirate' at layer(s) 15 on {meta['data']['n_train']} triplets" in summary
    assert (tmp_path / "work" / "samples_pirate.jsonl").is_file()
    # every positive sample filtered out: one clear error, nothing trained
    monkeypatch.setattr(psr_commands, "sample_trait",
                        lambda *a, **k: [Sample("pos", 0, 0, 0, "q", "s", ""), Sample("plain", 0, 0, 0, "q", None, "x")])
    with pytest.raises(ValueError, match=r"no usable triplets after filtering 1 samples \(0 incoherent, 0 degenerate, "
                                         r"0 weak, 1 empty\)"):
        fit_psr_command(embedded, TRAIT, settings, tmp_path / "q.safetensors", tmp_path / "work2", progress=False)
