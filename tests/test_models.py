"""Model loading: local dirs, GGUF cache (keyed by hash, corrupt entries rebuilt), tokenizer set-up, errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import transformers

import steerlab
from steerlab import models
from steerlab.models import ModelLoadError, load_model
from steerlab.testing import tiny_model


def test_local_directory_roundtrip(tmp_path: Path) -> None:
    lm = tiny_model("qwen2")
    lm.model.save_pretrained(tmp_path)
    lm.tokenizer.save_pretrained(tmp_path)
    again = load_model(str(tmp_path))
    assert again.adapter.family == "qwen2"
    assert again.tokenizer.padding_side == "left" and again.tokenizer.pad_token is not None
    enc = lm.encode(["abc", "abcdef"])
    with torch.no_grad():
        assert torch.allclose(lm.model(**enc).logits, again.model(**again.encode(["abc", "abcdef"])).logits, atol=1e-6)


def test_bfloat16_dtype(tmp_path: Path) -> None:
    lm = tiny_model("llama")
    lm.model.save_pretrained(tmp_path)
    lm.tokenizer.save_pretrained(tmp_path)
    assert load_model(str(tmp_path), dtype="bfloat16").dtype == torch.bfloat16
    with pytest.raises(ValueError, match="unknown dtype 'int3'"):
        load_model(str(tmp_path), dtype="int3")


def test_pad_token_added_when_missing() -> None:
    lm = tiny_model("llama")
    tok = lm.tokenizer
    tok.pad_token = None
    wrapped = steerlab.wrap_model(lm.model, tok)
    assert wrapped.tokenizer.pad_token == tok.eos_token
    enc = wrapped.encode(["a", "abcd"])
    assert enc["attention_mask"].tolist()[0][:3] == [0, 0, 0]  # left padding


def test_chat_template(tiny) -> None:
    assert tiny.format_prompt("hi", chat=True) == "<|user|>hi<|end|><|assistant|>"
    assert tiny.format_prompt("hi", chat=True, system="be brief").startswith("<|system|>be brief<|end|>")
    assert tiny.format_prompt("hi") == "hi"
    tok = tiny_model("gpt2").tokenizer
    tok.chat_template = None
    lm = steerlab.wrap_model(tiny.model, tok, name="nochat")
    with pytest.raises(ValueError, match="has no chat template"):
        lm.encode(["hi"], chat=True)


def test_missing_sources_give_clear_errors(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="GGUF file not found"):
        load_model(str(tmp_path / "nope.gguf"))
    with pytest.raises(ModelLoadError, match="model directory not found"):
        load_model("./no/such/dir")
    with pytest.raises(ModelLoadError, match="cannot load model 'someone/no-such-model'"):
        load_model("someone/no-such-model")


def test_cache_validity_checks(tmp_path: Path) -> None:
    entry = tmp_path / "e"
    entry.mkdir()
    assert not models._cache_valid(entry)  # no manifest: a partial build
    (entry / "model.safetensors").write_bytes(b"x" * 10)
    digest = models._sha256(entry / "model.safetensors")
    manifest = {"format": 1, "stamp": models.cache_stamp(), "files": {"model.safetensors": {"size": 10, "sha256": digest}}}
    (entry / models._MANIFEST).write_text(json.dumps(manifest))
    assert models._cache_valid(entry)
    # written by another transformers major version (or another steerlab layout): not valid here
    (entry / models._MANIFEST).write_text(json.dumps({**manifest, "stamp": "1-tf4"}))
    assert not models._cache_valid(entry)
    (entry / models._MANIFEST).write_text(json.dumps({k: v for k, v in manifest.items() if k != "stamp"}))
    assert not models._cache_valid(entry)
    (entry / models._MANIFEST).write_text(json.dumps(manifest))
    (entry / "model.safetensors").write_bytes(b"y" * 10)  # same size, corrupt content
    assert not models._cache_valid(entry)
    (entry / "model.safetensors").write_bytes(b"x" * 9)  # truncated
    assert not models._cache_valid(entry)


def test_embedded_model_basics(embedded) -> None:
    assert embedded.name == "SmolLM2-135M-Instruct"
    assert embedded.dtype == torch.float32
    assert embedded.tokenizer.padding_side == "left" and embedded.tokenizer.pad_token is not None
    assert embedded.has_chat_template
    text = embedded.format_prompt("Hello", chat=True)
    assert "<|im_start|>user\nHello<|im_end|>" in text and text.rstrip().endswith("assistant")


def test_corrupt_embedded_cache_is_rebuilt(tmp_path: Path, monkeypatch) -> None:
    """A truncated cached checkpoint is detected and rebuilt from the GGUF (keyed by its SHA-256)."""
    gguf = models.embedded_gguf_path()
    good = models.gguf_cache_entry(gguf)
    monkeypatch.setenv("STEERLAB_CACHE", str(tmp_path))
    entry = tmp_path / "gguf" / good.name
    shutil.copytree(good, entry)
    assert good.name == f"{models._sha256(gguf)[:24]}-1-tf{transformers.__version__.split('.')[0]}"
    with open(entry / "model.safetensors", "r+b") as f:
        f.truncate(1000)
    assert not models._cache_valid(entry)
    lm = load_model("embedded")
    assert models._cache_valid(entry)
    assert (entry / "model.safetensors").stat().st_size == (good / "model.safetensors").stat().st_size
    assert lm.adapter.n_layers == 30


def test_cache_of_another_format_is_rebuilt(tmp_path: Path, monkeypatch) -> None:
    """An entry whose manifest carries another format stamp (e.g. written by transformers 4) is never
    loaded as it is: it is rebuilt in this format, and the model loads with the GGUF's rope_theta."""
    gguf = models.embedded_gguf_path()
    good = models.gguf_cache_entry(gguf)
    monkeypatch.setenv("STEERLAB_CACHE", str(tmp_path))
    entry = tmp_path / "gguf" / good.name
    shutil.copytree(good, entry)
    # what an entry written in another format looks like: a config read back with the wrong rope_theta,
    # a manifest that is complete and consistent except for its stamp
    cfg = json.loads((entry / "config.json").read_text())
    (entry / "config.json").write_text(json.dumps({**cfg, "rope_theta": 10000.0, "rope_parameters": None}))
    meta = json.loads((entry / models._MANIFEST).read_text())
    meta["files"]["config.json"]["size"] = (entry / "config.json").stat().st_size
    (entry / models._MANIFEST).write_text(json.dumps({**meta, "stamp": "1-tf4"}))
    assert models._cache_valid(entry, "1-tf4") and not models._cache_valid(entry)
    lm = load_model("embedded")
    assert json.loads((entry / models._MANIFEST).read_text())["stamp"] == models.cache_stamp()
    rope = getattr(lm.model.config, "rope_parameters", None) or {}
    assert rope.get("rope_theta", getattr(lm.model.config, "rope_theta", None)) == 100000.0
