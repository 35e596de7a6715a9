"""The shared-prefix fast path (common base prefix + per-question prefix + length-sorted answer passes)
gives the same log-likelihoods and last-token activations as plain full forward passes."""

from __future__ import annotations

import pytest
import torch

from steerlab import Steer, SteeringVector
from steerlab.evals.loglik import (base_prefix, common_prefix_len, encode_pair, last_token_hidden, loglikelihood,
                                   shared_context_logprobs)
from steerlab.fit import ContrastPair, fit_vector
from steerlab.sites import Site, SiteKind, site_module
from steerlab.testing import tiny_model

PRIMER = "Q: What is one plus one?\nA: Two.\n\nQ: Where is Paris?\nA: In France.\n\n"
QUESTIONS = ["Q: Is the sky green?\nA:", "Q: Why?\nA:", "Q: What colour is a ripe banana usually?\nA:"]
ANSWERS = [" Yes.", " No, it is blue.", " It depends on the weather and the time of day.", " Yellow."]
PAIRS = [(PRIMER + q, a) for q in QUESTIONS for a in ANSWERS]


def _vec(lm, layers, seed: int = 0, scale: float = 3.0) -> SteeringVector:
    g = torch.Generator().manual_seed(seed)
    return SteeringVector({f"residual.{layer}": torch.randn(lm.adapter.hidden_size, generator=g) * scale
                           for layer in layers})


def test_common_prefix_len():
    assert common_prefix_len([(1, 2, 3), (1, 2, 4), (1, 2)]) == 2
    assert common_prefix_len([(1, 2), (3,)]) == 0
    assert common_prefix_len([]) == 0 and common_prefix_len([(5, 6)]) == 2


@pytest.mark.parametrize("family", ["llama", "qwen2", "gemma2"])
@pytest.mark.parametrize("steer_from", [None, "last_prompt", "answer"])
@pytest.mark.parametrize("batch_size", [1, 3, 8])
def test_fast_path_equals_plain_tiny(family, steer_from, batch_size):
    lm = tiny_model(family)
    steer = None if steer_from is None else Steer(_vec(lm, [1, 2]), 1.5)
    kw = {} if steer_from is None else {"steer_from": steer_from}
    plain = loglikelihood(lm, PAIRS, steer, share_context=False, batch_size=batch_size, **kw)
    fast = loglikelihood(lm, PAIRS, steer, share_context=True, batch_size=batch_size, **kw)
    nobase = loglikelihood(lm, PAIRS, steer, share_context=True, share_base=False, batch_size=batch_size, **kw)
    for p, f, n in zip(plain, fast, nobase):
        assert f.n_tokens == p.n_tokens
        assert f.sum == pytest.approx(p.sum, abs=1e-4)
        assert n.sum == pytest.approx(p.sum, abs=1e-4)
        assert f.is_greedy == p.is_greedy


def test_fast_path_steering_really_changes_scores(tiny):
    base = loglikelihood(tiny, PAIRS, share_context=True)
    steered = loglikelihood(tiny, PAIRS, Steer(_vec(tiny, [1]), 3.0), share_context=True, steer_from="answer")
    assert max(abs(a.sum - b.sum) for a, b in zip(base, steered)) > 1e-2


def test_base_prefix_is_not_consumed(tiny):
    """Expanding the base cache hands out copies: the base can serve any number of batches."""
    enc = [encode_pair(tiny.tokenizer, c, x) for c, x in PAIRS]
    pre = [e.ids[: e.context_len - 1] for e in enc]
    blen = min(common_prefix_len(pre), min(len(p) for p in pre) - 1)
    base = base_prefix(tiny, pre[0][:blen])
    groups = [i // len(ANSWERS) for i in range(len(enc))]
    a, _ = shared_context_logprobs(tiny, enc, groups, pad_id=0, base=base, row_batch=2)
    b, _ = shared_context_logprobs(tiny, enc, groups, pad_id=0, base=base)
    c, _ = shared_context_logprobs(tiny, enc, groups, pad_id=0)
    for x, y, z in zip(a, b, c):
        assert torch.allclose(x, y, atol=1e-5) and torch.allclose(x, z, atol=1e-4)
    with pytest.raises(ValueError, match="strict prefix"):
        shared_context_logprobs(tiny, enc, groups, pad_id=0, base=base_prefix(tiny, pre[0]))


def _block_outputs_plain(lm, text: str) -> list[torch.Tensor]:
    """Every block's output at the last token of ``text``: one unpadded forward with a plain torch
    forward hook on each block (the reference; ``hidden_states[-1]`` is after the final norm)."""
    outs: dict[int, torch.Tensor] = {}
    handles = []
    for layer in range(lm.adapter.n_layers):
        module, pre = site_module(lm.adapter, lm.model, Site(SiteKind.RESIDUAL, layer))
        assert not pre
        handles.append(module.register_forward_hook(
            lambda m, a, o, layer=layer: outs.__setitem__(layer, (o[0] if isinstance(o, tuple) else o)[0, -1].float())))
    try:
        with torch.no_grad():
            lm.model(torch.tensor([lm.tokenizer(text)["input_ids"]]))
    finally:
        for h in handles:
            h.remove()
    return [outs[layer] for layer in range(lm.adapter.n_layers)]


@pytest.mark.parametrize("family", ["llama", "qwen2", "gpt2"])
def test_last_token_hidden_matches_full_forward(family):
    lm = tiny_model(family)
    items = PAIRS + [("", "Just text."), ("Short", " x")]
    layers = list(range(lm.adapter.n_layers))  # every layer, the last included
    got = last_token_hidden(lm, items, layers, batch_size=3)
    for k, (p, a) in enumerate(items):
        ref = _block_outputs_plain(lm, p + a)
        for layer in layers:
            assert torch.allclose(got[layer][k], ref[layer], atol=1e-4), (k, layer)
    # the last block's output is not hidden_states[-1] (that one is after the final norm)
    with torch.no_grad():
        hs = lm.model(torch.tensor([lm.tokenizer(items[0][0] + items[0][1])["input_ids"]]),
                      output_hidden_states=True).hidden_states
    assert not torch.allclose(hs[-1][0, -1].float(), got[lm.adapter.n_layers - 1][0], atol=1e-2)


def test_fit_vector_share_prefix_equals_capture_every_layer(tiny):
    pairs = [ContrastPair(ANSWERS[i % 4], ANSWERS[(i + 1) % 4], PRIMER + q) for i, q in enumerate(QUESTIONS)]
    layers = list(range(tiny.adapter.n_layers))
    ref = fit_vector(tiny, pairs, layers)
    fast = fit_vector(tiny, pairs, layers, share_prefix=True, batch_size=2)
    for key in ref.vectors:
        assert torch.allclose(fast.vectors[key], ref.vectors[key], atol=1e-4), key


def test_fit_vector_share_prefix_equals_capture(tiny):
    pairs = [ContrastPair(ANSWERS[i % 4], ANSWERS[(i + 1) % 4], PRIMER + q) for i, q in enumerate(QUESTIONS)]
    pairs.append(ContrastPair(" True.", " False.", PRIMER + QUESTIONS[0]))
    layers = [0, 1, 2]
    ref = fit_vector(tiny, pairs, layers)
    fast = fit_vector(tiny, pairs, layers, share_prefix=True, batch_size=2)
    for key in ref.vectors:
        assert torch.allclose(fast.vectors[key], ref.vectors[key], atol=1e-4)
    with pytest.raises(ValueError, match="share_prefix"):
        fit_vector(tiny, pairs, layers, positions="all", share_prefix=True)


@pytest.mark.slow
def test_fast_path_equals_plain_embedded(embedded):
    from steerlab.data.registry import load_dataset
    from steerlab.evals.truthfulqa import qa_prompt, to_questions

    qs = to_questions(load_dataset("truthfulqa_mc", limit=3, seed=0))
    pairs = [(qa_prompt(q.question), " " + a) for q in qs for a in q.answers()[:4]]
    steer = Steer(_vec(embedded, [10], scale=2.0), 1.0)
    for st, sf in ((None, "last_prompt"), (steer, "last_prompt"), (steer, "answer")):
        plain = loglikelihood(embedded, pairs, st, steer_from=sf, share_context=False, batch_size=4)
        fast = loglikelihood(embedded, pairs, st, steer_from=sf, share_context=True, batch_size=4)
        assert [f.sum for f in fast] == pytest.approx([p.sum for p in plain], abs=2e-4)
    cps = [ContrastPair(" " + q.true[0], " " + q.false[0], qa_prompt(q.question)) for q in qs]
    every = list(range(embedded.adapter.n_layers))  # the last layer (29) included
    ref = fit_vector(embedded, cps, every)
    fast_v = fit_vector(embedded, cps, every, share_prefix=True)
    for key in ref.vectors:
        rel = (fast_v.vectors[key] - ref.vectors[key]).norm() / ref.vectors[key].norm()
        assert rel < 1e-4, (key, float(rel))
