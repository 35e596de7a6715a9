"""Issue #9, sections 1-3, through the Python API: the same one-line errors as the CLI, raised before
any work, and the decode loop's context cap and Ctrl-C behaviour."""

from __future__ import annotations

import importlib
import json
import os
import re
import socket
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

from steerlab.artifacts import export_gguf, load_vector, save_vector
from steerlab.checks import MAX_STRENGTH, check_output_path, check_strength, closest_name, hub_offline
from steerlab.embed.cp import CPConfig
from steerlab.embed.io import embed_file, read_sentences
from steerlab.evals.commands import run_eval
from steerlab.evals.loglik import loglikelihood
from steerlab.evals.runner import run_task
from steerlab.fit import ContrastPair, fit_vector
from steerlab.generate import GenerationInterrupted, generate, normalize_steer
from steerlab.interventions import Steer
from steerlab.io import InputError, read_pairs, read_prompts
from steerlab.methods import make_method
from steerlab.models import ModelLoadError, load_model
from steerlab.testing import tiny_model
from steerlab.vectors import SteeringVector, VectorMeta

gen_module = importlib.import_module("steerlab.generate")
needs_proc = pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs the unwritable /proc folder")


def bound_error(name: str, shown: str) -> str:
    return "^" + re.escape(f"{name} must be a finite number between -10000 and 10000, got {shown}") + "$"


def _vec(lm: Any, layers: tuple[int, ...] = (1,), scale: float = 8.0) -> SteeringVector:
    g = torch.Generator().manual_seed(0)
    a = lm.adapter
    vecs = {
        f"residual.{layer}": torch.randn(a.hidden_size, generator=g) * scale / a.hidden_size**0.5
        for layer in layers
    }
    meta = VectorMeta(
        model_name=lm.name, architecture=a.family, hidden_size=a.hidden_size, n_layers=a.n_layers
    )
    return SteeringVector(vecs, meta)


PAIRS = [ContrastPair(f"I love {i}", f"I hate {i}") for i in range(3)]


# ------------------------------------------------------------------ 1. strength: one bound everywhere


def test_check_strength_bound() -> None:
    assert MAX_STRENGTH == 1e4
    assert check_strength(-1e4) == -1e4 and check_strength(3) == 3.0 and isinstance(check_strength(3), float)
    for bad, shown in ((float("nan"), "nan"), (float("inf"), "inf"), (1e30, "1e+30"), (-10000.5, "-10000.5")):
        with pytest.raises(ValueError, match=bound_error("strength", shown)):
            check_strength(bad)
    with pytest.raises(TypeError, match=r"^--strength must be a number, got str '2'$"):
        check_strength("2", "--strength")


@pytest.mark.parametrize("value, shown", [(float("nan"), "nan"), (float("-inf"), "-inf"), (1e30, "1e+30")])
def test_generate_refuses_bad_strength(tiny, value, shown) -> None:
    with pytest.raises(ValueError, match=bound_error("strength", shown)):
        generate(tiny, "abc", steer=_vec(tiny), strength=value, max_new_tokens=2)
    with pytest.raises(ValueError, match=bound_error("strength", shown)):  # one value per row
        generate(tiny, ["abc", "de"], steer=_vec(tiny), strength=[1.0, value], max_new_tokens=2)
    with pytest.raises(ValueError, match=bound_error("strength", shown)):
        Steer(_vec(tiny), value)


def test_method_and_encoder_options_refuse_bad_values() -> None:
    with pytest.raises(ValueError, match=bound_error("multiplier", "nan")):
        make_method("caa", multiplier="nan")
    with pytest.raises(ValueError, match=bound_error("multiplier", "1e+30")):
        make_method("caa", multiplier=1e30)
    with pytest.raises(ValueError, match=bound_error("alpha", "inf")):
        make_method("iti", alpha=float("inf"))
    with pytest.raises(ValueError, match=bound_error("CP alpha", "nan")):
        CPConfig("ns", alpha=float("nan"))
    assert make_method("caa", multiplier="-8").config.multiplier == -8.0


def test_run_eval_with_nan_multiplier_writes_nothing(tmp_path) -> None:
    out = tmp_path / "ev"
    with pytest.raises(ValueError, match=bound_error("multiplier", "nan")):
        run_eval(
            "copa", "caa", "tiny", limit=4, out=out, progress=False, method_options={"multiplier": "nan"}
        )
    assert not out.exists()


def test_embed_output_must_be_npy_or_parquet(tmp_path) -> None:
    src = tmp_path / "s.txt"
    src.write_text("a\nb\n")

    class Never:
        def __getattr__(self, name: str) -> Any:
            raise AssertionError("the encoder was used")

    with pytest.raises(
        ValueError,
        match=r"^unsupported output file type '\.csv' \(e\.csv\): name the output "
        r"\.npy or \.parquet$",
    ):
        embed_file(Never(), src, tmp_path / "e.csv", progress=False)
    with pytest.raises(
        ValueError,
        match=r"^output e\.parquet is named like parquet but the format asked is npy: "
        r"name it \.npy$",
    ):
        embed_file(Never(), src, tmp_path / "e.parquet", fmt="npy", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.txt"]


# ------------------------------------------------------------------ 2. messages that name the mistake


def test_empty_or_non_string_prompt(tiny) -> None:
    with pytest.raises(ValueError, match=r"^prompt 1 is empty: give some text to continue$"):
        generate(tiny, "")
    with pytest.raises(ValueError, match=r"^prompt 2 is empty: give some text to continue$"):
        generate(tiny, ["fine", " \n"])
    with pytest.raises(TypeError, match=r"^prompt 1 is a int, not a string$"):
        generate(tiny, [3])  # type: ignore[list-item]


def test_bad_method_option_values() -> None:
    with pytest.raises(ValueError, match=r"^bad value 'abc' for caa\.layer: expected int or None$"):
        make_method("caa", layer="abc")
    with pytest.raises(ValueError, match=r"^layer must be an integer or None, got 2\.5$"):
        make_method("caa", layer=2.5)
    with pytest.raises(ValueError, match=r"^bad value 'many' for iti\.k: expected int$"):
        make_method("iti", k="many")
    cfg = make_method("caa", layer="-1", max_pairs="none", steer_from="answer").config
    assert (cfg.layer, cfg.max_pairs, cfg.steer_from) == (-1, None, "answer")


def test_method_layer_is_checked_against_the_model_before_anything_is_written(tiny, tmp_path) -> None:
    out = tmp_path / "ev"
    with pytest.raises(ValueError, match=r"^layer 9 out of range: this model has layers 0\.\.3$"):
        run_task(tiny, "copa", make_method("caa", layer=9), out, limit=4)
    assert not out.exists()


@needs_proc
def test_unwritable_outputs_are_refused_naming_the_output(tiny) -> None:
    vec = _vec(tiny)
    with pytest.raises(
        PermissionError,
        match=r"^cannot write output file /proc/v\.safetensors: the folder /proc is "
        r"not writable; choose another location$",
    ):
        save_vector(vec, "/proc/v")
    with pytest.raises(
        PermissionError,
        match=r"^cannot write output file /proc/a/b/x\.gguf: the folder /proc is not "
        r"writable; choose another location$",
    ):
        export_gguf(vec, "/proc/a/b/x.gguf")
    with pytest.raises(PermissionError, match=r"^cannot write output folder /proc/ev"):
        run_eval("copa", "none", tiny, out="/proc/ev", progress=False)


def test_check_output_path_creates_nothing(tmp_path) -> None:
    target = tmp_path / "a" / "b" / "out.npy"
    assert check_output_path(target) == target
    assert list(tmp_path.iterdir()) == []  # no folder, no probe file left behind
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(
        FileExistsError,
        match=rf"^output folder {re.escape(str(f))} is an existing file: "
        r"choose a folder path$",
    ):
        check_output_path(f, folder=True)
    with pytest.raises(
        NotADirectoryError,
        match=rf"^cannot write output file {re.escape(str(f / 'x.npy'))}: "
        rf"{re.escape(str(f))} is a file, not a folder$",
    ):
        check_output_path(f / "x.npy")


def test_fit_site_and_layer_messages(tiny) -> None:
    with pytest.raises(
        ValueError,
        match=r"^unknown site kind 'bogus': use one of residual, heads, attn_out, "
        r"mlp_out, block_in$",
    ):
        fit_vector(tiny, PAIRS, 1, site_kind="bogus")
    with pytest.raises(ValueError, match=r"^no layers given: pass at least one layer index$"):
        fit_vector(tiny, PAIRS, [])


def test_non_utf8_files_name_file_and_line(tmp_path) -> None:
    txt = tmp_path / "s.txt"
    txt.write_bytes(b"one\ntwo\n\x80three\n")
    with pytest.raises(
        ValueError,
        match=rf"^{re.escape(str(txt))}:3: not UTF-8 text \(byte 0x80\); save the file "
        r"as UTF-8$",
    ):
        read_sentences(txt)
    csv_file = tmp_path / "p.csv"
    csv_file.write_bytes(b"positive,negative\ngood,bad\nnice,na\xefve\n")
    with pytest.raises(InputError, match=rf"^{re.escape(str(csv_file))}:3: not UTF-8 text \(byte 0xef\)"):
        read_pairs(csv_file)
    prompts = tmp_path / "p.txt"
    prompts.write_bytes(b"\xef\xbb\xbfhello\n\xfe\n")  # the BOM is fine, 0xfe on line 2 is not
    with pytest.raises(InputError, match=rf"^{re.escape(str(prompts))}:2: not UTF-8 text \(byte 0xfe\)"):
        read_prompts(prompts)
    prompts.write_bytes(b"\xef\xbb\xbfhello\nworld\n")
    assert read_prompts(prompts) == ["hello", "world"]


def test_steer_accepts_a_vector_file_path(tiny, tmp_path) -> None:
    vec = _vec(tiny, layers=(1, 2))
    path = save_vector(vec, tmp_path / "v.safetensors")
    ref = generate(tiny, ["abc", "xyz"], steer=vec, strength=3.0, max_new_tokens=4)
    plain = generate(tiny, ["abc", "xyz"], max_new_tokens=4)
    assert ref.tokens != plain.tokens  # the vector does steer
    assert (
        generate(tiny, ["abc", "xyz"], steer=str(path), strength=3.0, max_new_tokens=4).tokens == ref.tokens
    )
    assert generate(tiny, ["abc", "xyz"], steer=path, strength=3.0, max_new_tokens=4).tokens == ref.tokens
    rows = generate(tiny, ["abc", "xyz"], steer=[str(path), None], strength=3.0, max_new_tokens=4)
    assert rows.tokens == [ref.tokens[0], plain.tokens[1]]
    with pytest.raises(ValueError, match=r"^vector file not found: "):
        generate(tiny, "abc", steer=str(tmp_path / "missing.safetensors"))
    with pytest.raises(
        TypeError,
        match=r"^steer='v\.safetensors' is a path: load it first with "
        r"steerlab\.load_vector\(path\)$",
    ):
        normalize_steer("v.safetensors", 1)


def test_strength_without_steer_warns(tiny) -> None:
    plain = generate(tiny, "abc", max_new_tokens=3)
    with pytest.warns(
        UserWarning,
        match=r"^strength=/where= have no effect without steer=: pass the vector to "
        r"steer with$",
    ):
        out = generate(tiny, "abc", strength=5.0, max_new_tokens=3)
    assert out.tokens == plain.tokens
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        generate(tiny, "abc", steer=None, max_new_tokens=1)  # no strength, no warning


def test_model_folder_without_config_and_mistyped_name(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match=r"the folder has no config\.json"):
        load_model(tmp_path)
    with pytest.raises(
        ModelLoadError,
        match=r"^cannot load model 'embeded': it is not a local file or folder, and "
        r"the Hugging Face hub cannot be reached to download it; did you mean "
        r"'embedded'\?$",
    ):
        load_model("embeded")


# ------------------------------------------------------------------ 3. fail fast, never hang


def test_hub_offline_is_cheap_and_stateless(monkeypatch) -> None:
    for var in (
        "HF_HUB_OFFLINE",
        "TRANSFORMERS_OFFLINE",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub_offline()
    monkeypatch.delenv("HF_HUB_OFFLINE")
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    try:
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
        assert not hub_offline()  # something answers at the hub address
    finally:
        server.close()
    assert hub_offline()  # asked again: nothing answers any more (no cached answer)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy:3128")
    assert not hub_offline()  # behind a proxy the direct check says nothing: leave it to the hub client


def test_closest_name() -> None:
    assert closest_name("embeded", ["embedded", "gpt2"]) == "embedded"
    assert closest_name("zzz", ["embedded"]) is None


def test_new_tokens_are_capped_at_the_context() -> None:
    lm = tiny_model("llama")
    lm.model.config.max_position_embeddings = 20
    n_prompt = len(lm.tokenizer("hello")["input_ids"])
    with pytest.warns(
        UserWarning,
        match=rf"^max_new_tokens=100000 does not fit in the model's context \(20 tokens, "
        rf"{n_prompt} taken by the prompt\): generating at most {20 - n_prompt} new "
        r"tokens$",
    ):
        out = generate(lm, "hello", max_new_tokens=100_000)
    assert len(out.tokens[0]) == 20 - n_prompt and out.finish_reasons == ["length"]
    with pytest.raises(
        ValueError, match=r"^the prompt is 25 tokens and fills the model's context of 20: shorten it$"
    ):
        generate(lm, "x" * 25, max_new_tokens=1)


def test_ctrl_c_keeps_the_partial_output(tiny, monkeypatch) -> None:
    vec = _vec(tiny)
    full = generate(tiny, ["abc", "hello"], steer=vec, max_new_tokens=8)
    original = gen_module.select_next
    calls = {"n": 0}

    def select(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(gen_module, "select_next", select)
    with pytest.raises(GenerationInterrupted) as info:
        generate(tiny, ["abc", "hello"], steer=vec, max_new_tokens=8)
    assert isinstance(info.value, KeyboardInterrupt)
    part = info.value.output
    assert part.tokens == [t[:3] for t in full.tokens]
    assert part.texts == [tiny.tokenizer.decode(t[:3]) for t in full.tokens]
    assert part.finish_reasons == ["interrupted", "interrupted"]
    monkeypatch.setattr(gen_module, "select_next", original)
    # the steering hooks were removed on the way out: a plain run is unsteered again
    assert (
        generate(tiny, ["abc", "hello"], max_new_tokens=8).tokens
        == generate(tiny_model("llama"), ["abc", "hello"], max_new_tokens=8).tokens
    )


def test_save_vector_creates_missing_folders(tmp_path) -> None:
    """A vector saved through a missing folder works (folders are created at write time, not by the check)."""
    lm = tiny_model("llama")
    path = save_vector(_vec(lm), tmp_path / "new" / "dir" / "v")
    assert path.name == "v.safetensors" and json.loads(path.with_suffix(".json").read_text())["format"]
    assert load_vector(path, lm).vectors.keys() == {"residual.1"}


def test_scoring_refuses_nan_log_probabilities(tiny) -> None:
    """A finite strength can still overflow the model (a huge vector): the scores must not turn into a silent
    'every prediction is option 0'."""
    huge = _vec(tiny) * 1e35
    assert loglikelihood(tiny, [("a b", " c")], _vec(tiny), strength=2.0)[0].sum < 0
    with pytest.raises(
        ValueError,
        match=r"^the model's log-probabilities are NaN under this steering: lower the "
        r"strength$",
    ):
        loglikelihood(tiny, [("a b", " c")], huge, strength=1e4)


def test_offline_hub_model_in_the_local_cache_still_loads(tmp_path) -> None:
    """Offline (here: nothing answers at HF_ENDPOINT, no HF_HUB_OFFLINE) a hub id that is in the local cache
    loads from it without network retries, and a near miss is pointed at it."""
    repo = tmp_path / "hub" / "models--someone--tiny-llama"
    snapshot = repo / "snapshots" / ("a" * 40)
    lm = tiny_model("llama")
    lm.model.save_pretrained(snapshot)
    lm.tokenizer.save_pretrained(snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    script = (
        "from steerlab.models import ModelLoadError, load_model\n"
        "print(load_model('someone/tiny-llama').adapter.n_layers)\n"
        "try:\n    load_model('someone/tiny-lama')\nexcept ModelLoadError as e:\n    print(e)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_HUB_CACHE=str(tmp_path / "hub"), HF_ENDPOINT="http://127.0.0.1:9")
    res = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == [
        "4",
        "cannot load model 'someone/tiny-lama': it is not a local file or folder, and the Hugging Face hub "
        "cannot be reached to download it; did you mean 'someone/tiny-llama'?",
    ]
