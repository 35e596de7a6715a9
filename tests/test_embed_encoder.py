"""Encoder: encode() contract, read-out layers, left padding, several architectures."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from steerlab.embed import Encoder, resolve_layer
from steerlab.embed.prompts import fill, preprocess_sentence
from steerlab.testing import tiny_model

SENTS = ["a man is playing a guitar .", "hi", "the cat sat on the mat and looked at the dog for a while"]


@pytest.fixture(scope="module")
def tiny_enc(tiny):
    return Encoder(tiny)


def test_layer_resolution():
    assert resolve_layer(None, 30, "prompteol") == 25  # 27/32 of depth
    assert resolve_layer(None, 32, "pretcot") == 27
    assert resolve_layer(None, 30, "ke") == 29  # penultimate
    assert resolve_layer(-1, 30) == 30 and resolve_layer(-2, 30) == 29
    assert resolve_layer("last", 30) == 30 and resolve_layer("penultimate", 30) == 29
    assert resolve_layer(0.5, 30) == 15 and resolve_layer("12", 30) == 12
    for bad in (0, 31, -31, 1.5, "middle", True):
        with pytest.raises(ValueError):
            resolve_layer(bad, 30)


def test_encode_contract(tiny_enc):
    x = tiny_enc.encode(SENTS)
    assert isinstance(x, np.ndarray) and x.shape == (3, 64) and x.dtype == np.float32
    one = tiny_enc.encode(SENTS[0])
    assert one.shape == (64,)
    np.testing.assert_allclose(one, x[0], atol=1e-5)
    t = tiny_enc.encode(SENTS, convert_to_tensor=True, normalize_embeddings=True)
    assert isinstance(t, torch.Tensor)
    torch.testing.assert_close(t.norm(dim=-1), torch.ones(3))
    # MTEB-style keywords are accepted
    y = tiny_enc.encode(SENTS, task_name="STSBenchmark", prompt_type="query", batch_size=1, show_progress_bar=False)
    np.testing.assert_allclose(x, y, atol=1e-5)
    assert tiny_enc.encode([]).shape == (0, 64)
    assert tiny_enc.get_sentence_embedding_dimension() == 64
    with pytest.raises(ValueError, match="strings"):
        tiny_enc.encode(["ok", 3])
    with pytest.raises(ValueError, match="output_value"):
        tiny_enc.encode(SENTS, output_value="token_embeddings")
    with pytest.raises(ValueError, match="batch_size"):
        tiny_enc.encode(SENTS, batch_size=0)


def test_batching_and_order_do_not_change_embeddings(tiny_enc):
    """Left padding + per-row position ids: a sentence's vector does not depend on its batch."""
    full = tiny_enc.encode(SENTS, batch_size=3)
    alone = np.stack([tiny_enc.encode([s])[0] for s in SENTS])
    np.testing.assert_allclose(full, alone, atol=1e-5)
    rev = tiny_enc.encode(SENTS[::-1], batch_size=2)[::-1]
    np.testing.assert_allclose(full, rev, atol=1e-5)


def test_batch_size_controls_forward_calls(tiny):
    rows = []
    h = tiny.model.register_forward_pre_hook(lambda m, a, kw: rows.append(kw["input_ids"].shape[0]), with_kwargs=True)
    try:
        Encoder(tiny, share_prefix=False).encode(SENTS * 3, batch_size=4)
        assert rows == [4, 4, 1]  # ceil(9 / 4) passes
        rows.clear()
        # the shared prompt prefix runs once per batch of two or more rows, as one row
        Encoder(tiny).encode(SENTS * 3, batch_size=4)
        assert rows == [1, 4, 1, 4, 1]
    finally:
        h.remove()


def _hf_last_token(lm, text, k):
    enc = lm.tokenizer([text], return_tensors="pt")
    with torch.no_grad():
        out = lm.model(**enc, output_hidden_states=True)
    return out.hidden_states[k][0, -1]


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_matches_hf_hidden_states(tiny, k):
    """layer=k reads HF ``output_hidden_states[k]`` (k = n_layers: the final-norm output)."""
    enc = Encoder(tiny, layer=k)
    s = SENTS[0]
    ref = _hf_last_token(tiny, fill(enc.templates[0], preprocess_sentence(s)), k)
    torch.testing.assert_close(torch.from_numpy(enc.encode(s)), ref, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("share", [False, True])
def test_stops_after_readout_layer(tiny, share):
    enc = Encoder(tiny, layer=2, share_prefix=share)
    seen = []
    hs = [tiny.adapter.layer(tiny.model, i).register_forward_pre_hook(lambda m, a, i=i: seen.append(i))
          for i in range(tiny.adapter.n_layers)]
    hs.append(tiny.model.lm_head.register_forward_pre_hook(lambda m, a: seen.append("lm_head")))
    try:
        enc.encode(SENTS[:2])
    finally:
        for h in hs:
            h.remove()
    # layers after the read-out and the LM head never run (with a shared prefix: prefix pass, then the rest)
    assert seen == ([0, 1, 0, 1] if share else [0, 1])


def test_encode_layers_one_pass(tiny):
    enc = Encoder(tiny)
    out = enc.encode_layers(SENTS, [1, 3, -1])
    assert sorted(out) == [1, 3, 4]
    for k in (1, 3, 4):
        np.testing.assert_allclose(out[k], Encoder(tiny, layer=k).encode(SENTS), atol=1e-5)


def test_metaeol_averages_templates(tiny):
    enc = Encoder(tiny, prompt="metaeol")
    x = enc.encode(SENTS[:2])
    parts = [Encoder(tiny, prompt=t, layer=enc.layer).encode(SENTS[:2]) for t in enc.templates]
    np.testing.assert_allclose(x, np.mean(parts, axis=0), atol=1e-5)


def test_preprocess_flag(tiny):
    a = Encoder(tiny).encode(["is it"])
    b = Encoder(tiny).encode(["is it."])
    c = Encoder(tiny, preprocess=False).encode(["is it"])
    np.testing.assert_allclose(a, b, atol=1e-6)
    assert not np.allclose(a, c)


def test_max_sentence_tokens_keeps_prompt(tiny):
    enc = Encoder(tiny, max_sentence_tokens=3, preprocess=False)
    np.testing.assert_allclose(enc.encode(["abcdef"]), enc.encode(["abc"]), atol=1e-6)


def test_requires_left_padding():
    lm = tiny_model("llama")
    lm.tokenizer.padding_side = "right"
    with pytest.raises(ValueError, match="left"):
        Encoder(lm)


def test_bad_arguments(tiny):
    with pytest.raises(ValueError):
        Encoder(tiny, prompt="nope")
    with pytest.raises(ValueError):
        Encoder(tiny, batch_size=0)
    with pytest.raises(ValueError, match="cp must"):
        Encoder(tiny, cp=3.5)
    with pytest.raises(ValueError, match="tp must"):
        Encoder(tiny, tp="yes")


@pytest.mark.parametrize("family", ["llama", "gpt2", "gpt_neox", "qwen2", "gemma3", "phi3"])
def test_families(family):
    lm = tiny_model(family)
    for kw in ({}, {"cp": "ns"}, {"cp": "nr"}, {"tp": True}, {"cp": "ns", "tp": True}):
        enc = Encoder(lm, **kw)
        x = enc.encode(SENTS)
        assert x.shape == (3, lm.adapter.hidden_size) and np.isfinite(x).all()
        np.testing.assert_allclose(x[1], enc.encode(SENTS[1]), atol=1e-4)


@pytest.mark.slow
def test_embedded_model(embedded):
    enc = Encoder(embedded)
    assert enc.layer == 25 and enc.embedding_dim == 576
    x = enc.encode(["A man is playing a guitar.", "A person plays a guitar.", "The stock market fell sharply today."],
                   normalize_embeddings=True)
    assert x.shape == (3, 576)
    assert x[0] @ x[1] > x[0] @ x[2]  # paraphrase closer than an unrelated sentence
