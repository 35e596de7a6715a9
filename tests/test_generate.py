"""Steered generation: KV cache == full recompute, first generated token steered, per-row vectors."""

from __future__ import annotations

import pytest
import torch

import steerlab as sl
from steerlab.artifacts import VectorError
from steerlab.hooks import HookManager
from steerlab.sites import Site

PROMPTS = ["What is the capital of France?", "Write a haiku about the sea.", "Hi"]


def _vec(lm, layers=(10,), scale=8.0, seed=0, kind="residual") -> sl.SteeringVector:
    g = torch.Generator().manual_seed(seed)
    a = lm.adapter
    width = a.heads_width if kind == "heads" else a.hidden_size
    vecs = {f"{kind}.{layer}": torch.randn(width, generator=g) * scale / width**0.5 for layer in layers}
    meta = sl.VectorMeta(model_name=lm.name, architecture=a.family, hidden_size=a.hidden_size, n_layers=a.n_layers)
    return sl.SteeringVector(vecs, meta)


def test_zero_vector_matches_plain_generate(embedded) -> None:
    zero = _vec(embedded) * 0.0
    out = sl.generate(embedded, PROMPTS, steer=zero, chat=True, max_new_tokens=20)
    enc = embedded.encode(PROMPTS, chat=True)
    tok = embedded.tokenizer
    ref = embedded.model.generate(**enc, max_new_tokens=20, do_sample=False, pad_token_id=tok.pad_token_id,
                                  eos_token_id=tok.eos_token_id)
    ref_tokens = ref[:, enc["input_ids"].shape[1]:].tolist()
    for mine, theirs in zip(out.tokens, ref_tokens):
        cut = theirs.index(tok.eos_token_id) if tok.eos_token_id in theirs else len(theirs)
        assert mine == theirs[:cut]
    assert "Paris" in out.texts[0]


@pytest.mark.parametrize("where", ["all", "prompt", "generated", 5])
def test_kv_cache_equals_full_recompute(embedded, where) -> None:
    vec = _vec(embedded, layers=(6, 12), scale=12.0) + _vec(embedded, layers=(8,), kind="heads", scale=6.0)
    kw = dict(steer=vec, where=where, chat=True, max_new_tokens=16)
    cached = sl.generate(embedded, PROMPTS, use_cache=True, **kw)
    full = sl.generate(embedded, PROMPTS, use_cache=False, **kw)
    assert cached.tokens == full.tokens
    plain = sl.generate(embedded, PROMPTS, chat=True, max_new_tokens=16)
    assert cached.tokens != plain.tokens  # the steering really acts


def test_generated_only_steers_first_token(embedded) -> None:
    prompt = "The weather today is"
    vec = _vec(embedded, layers=(10,), scale=60.0, seed=3)
    plain = sl.generate(embedded, prompt, max_new_tokens=1)
    steered = sl.generate(embedded, prompt, steer=vec, where="generated", max_new_tokens=1)
    assert steered.tokens[0] != plain.tokens[0]
    # the first generated token equals the argmax of a forward pass steered only at the last prompt position
    enc = embedded.encode([prompt])
    n = enc["input_ids"].shape[1]
    v = vec.vectors["residual.10"]

    def last_only(x, site, state):
        y = x.clone()
        y[:, n - 1] += v
        return y

    with torch.no_grad(), HookManager(embedded.model).add(Site.residual(10), last_only):
        manual = embedded.model(**enc).logits[0, -1].argmax().item()
    assert steered.tokens[0][0] == manual
    # ...and prompt-only steering leaves generated positions alone: same as steering positions < n
    prompt_only = sl.generate(embedded, prompt, steer=vec, where="prompt", max_new_tokens=6)
    assert prompt_only.tokens == sl.generate(embedded, prompt, steer=vec, where="prompt", max_new_tokens=6,
                                             use_cache=False).tokens


def test_per_row_vectors_and_strengths(embedded) -> None:
    v1, v2 = _vec(embedded, seed=1, scale=30.0), _vec(embedded, seed=2, scale=30.0)
    batch = sl.generate(embedded, PROMPTS, steer=[v1, None, v2], strength=[1.0, 1.0, 0.5], chat=True, max_new_tokens=10)
    one = sl.generate(embedded, PROMPTS[0], steer=v1, chat=True, max_new_tokens=10)
    two = sl.generate(embedded, PROMPTS[1], chat=True, max_new_tokens=10)
    three = sl.generate(embedded, PROMPTS[2], steer=v2 * 0.5, chat=True, max_new_tokens=10)
    assert batch.tokens == [one.tokens[0], two.tokens[0], three.tokens[0]]


def test_steer_objects_and_where_per_row(tiny) -> None:
    v = _vec(tiny, layers=(1,), scale=20.0)
    rows = sl.generate(tiny, ["abc", "hello"], steer=[sl.Steer(v, 1.0, "prompt"), sl.Steer(v, 2.0, "generated")],
                       max_new_tokens=6)
    a = sl.generate(tiny, "abc", steer=v, where="prompt", max_new_tokens=6)
    b = sl.generate(tiny, "hello", steer=v, strength=2.0, where="generated", max_new_tokens=6)
    assert rows.tokens == [a.tokens[0], b.tokens[0]]


def test_sampling_is_seeded_and_stop_strings_cut(tiny) -> None:
    kw = dict(do_sample=True, temperature=1.3, top_p=0.9, top_k=50, max_new_tokens=12)
    a = sl.generate(tiny, ["abc", "xyz"], seed=7, **kw)
    b = sl.generate(tiny, ["abc", "xyz"], seed=7, **kw)
    c = sl.generate(tiny, ["abc", "xyz"], seed=8, **kw)
    assert a.tokens == b.tokens and a.tokens != c.tokens
    full = sl.generate(tiny, "abc", max_new_tokens=12).texts[0]
    stop = full[3:5]
    cut = sl.generate(tiny, "abc", max_new_tokens=12, stop=stop)
    assert cut.texts[0] == full[: full.find(stop)] and cut.finish_reasons == ["stop"]


def test_bad_inputs(tiny, embedded) -> None:
    with pytest.raises(VectorError, match="hidden size 576 does not match the model's 64"):
        sl.generate(tiny, "abc", steer=_vec(embedded), max_new_tokens=2)
    with pytest.raises(ValueError, match="bad steering position 'middle'"):
        sl.generate(tiny, "abc", steer=_vec(tiny, layers=(1,)), where="middle", max_new_tokens=2)
    with pytest.raises(ValueError, match="2 steering entries for 1 prompts"):
        sl.generate(tiny, "abc", steer=[None, None], max_new_tokens=2)
    with pytest.raises(ValueError, match="no prompts given"):
        sl.generate(tiny, [], max_new_tokens=2)
    nan = _vec(tiny, layers=(1,)) * float("nan")
    with pytest.raises(VectorError, match="NaN or infinite"):
        sl.generate(tiny, "abc", steer=nan, max_new_tokens=2)
