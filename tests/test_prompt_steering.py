"""Prompt steering as activation steering (steerlab.prompt_steering): deltas against plain runs, the one-pass
local delta against one patched run per layer, and the concentration numbers on constructed deltas."""

from __future__ import annotations

import math

import pytest
import torch

from steerlab.prompt_steering import (
    PromptPair,
    concentration,
    encode_triplet,
    prompt_deltas,
)

PAIRS = [PromptPair("Q: hi A:", "Be rude. Q: hi A:", " no way", 0.5),
         PromptPair("Q: how are you A:", "Say it loud! Q: how are you A:", " fine thanks", 1.0)]


def _hidden(lm, ids):
    """Every block's output by a plain forward (output_hidden_states; the last one is taken before the
    final norm by a hook, as hidden_states[-1] is after it)."""
    blocks = lm.adapter.layers(lm.model)
    got = {}
    handles = [blk.register_forward_hook(lambda m, a, o, i=i: got.__setitem__(i, (o[0] if isinstance(o, tuple) else o)))
               for i, blk in enumerate(blocks)]
    try:
        with torch.no_grad():
            lm.model(input_ids=torch.tensor([ids]))
    finally:
        for h in handles:
            h.remove()
    return [got[i][0] for i in range(len(blocks))]


def test_accumulated_delta_equals_two_plain_runs(tiny):
    tr = [encode_triplet(tiny, p) for p in PAIRS]
    deltas = prompt_deltas(tiny, tr, mode="accumulated")
    for t, d in zip(tr, deltas):
        n = len(t.response)
        a = _hidden(tiny, list(t.steered + t.response))
        b = _hidden(tiny, list(t.context + t.response))
        ref = torch.stack([a[layer][-n:] - b[layer][-n:] for layer in range(4)])
        assert d.shape == (4, n, 64)
        assert torch.allclose(d, ref, atol=1e-5)


def test_local_delta_in_one_pass_equals_one_patched_run_per_layer(tiny):
    tr = [encode_triplet(tiny, p) for p in PAIRS]
    deltas = prompt_deltas(tiny, tr, mode="local")
    blocks = tiny.adapter.layers(tiny.model)
    for t, d in zip(tr, deltas):
        n = len(t.response)
        target = _hidden(tiny, list(t.steered + t.response))
        plain = _hidden(tiny, list(t.context + t.response))
        assert torch.allclose(d[0], target[0][-n:] - plain[0][-n:], atol=1e-5)  # layer 0: nothing before it
        for layer in range(1, 4):  # a separate run: only block `layer`'s input patched, by a plain pre-hook
            def patch(mod, args, kwargs, src=target[layer - 1][-n:]):
                h = (args[0] if args else kwargs["hidden_states"]).clone()
                h[0, -n:] = src
                return ((h, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": h})

            handle = blocks[layer].register_forward_pre_hook(patch, with_kwargs=True)
            try:
                out = _hidden(tiny, list(t.context + t.response))[layer]
            finally:
                handle.remove()
            assert torch.allclose(d[layer], target[layer][-n:] - out[-n:], atol=1e-5)


def test_deltas_of_one_layer_subset(tiny):
    tr = [encode_triplet(tiny, PAIRS[0])]
    full = prompt_deltas(tiny, tr)[0]
    part = prompt_deltas(tiny, tr, layers=[3, 1])[0]
    assert torch.equal(part, full[[1, 3]])


def test_concentration_numbers():
    u = torch.zeros(8)
    u[0] = 1.0
    const = u.repeat(10, 1)[None]  # 10 tokens, same delta: what constant steering does
    c = concentration([const], [5])
    assert c.top10_share == (pytest.approx(0.1),) and c.cv == (pytest.approx(0.0),)
    assert c.constant_r2 == (pytest.approx(1.0),) and c.per_token_r2 == (pytest.approx(1.0),)
    scaled = (torch.tensor([10.0] + [1.0] * 9)[:, None] * u)[None]  # one token carries 10x
    c = concentration([scaled], [5])
    assert c.top10_share[0] == pytest.approx(10 / 19)
    norms = torch.tensor([10.0] + [1.0] * 9)
    assert c.cv[0] == pytest.approx(float(norms.std(unbiased=False) / norms.mean()))
    # a constant coefficient explains 1 - sum (c_t - mean)^2 / sum c_t^2; a per-token one explains all
    assert c.constant_r2[0] == pytest.approx(1 - float(((norms - norms.mean()) ** 2).sum() / (norms ** 2).sum()))
    assert c.per_token_r2[0] == pytest.approx(1.0)
    assert math.isinf(concentration([torch.cat([torch.zeros(1, 9, 8), scaled[:, :1]], 1)], [0]).ratio_p90_p10[0])


def test_errors(tiny):
    with pytest.raises(ValueError, match="mode must be one of 'accumulated', 'local', got 'global'"):
        prompt_deltas(tiny, [encode_triplet(tiny, PAIRS[0])], mode="global")
    with pytest.raises(ValueError, match="a prompt pair has an empty response"):
        encode_triplet(tiny, PromptPair("a", "b", ""))
    with pytest.raises(ValueError, match="a prompt pair has score nan; it must be a finite number"):
        encode_triplet(tiny, PromptPair("a", "b", "c", math.nan))
    with pytest.raises(ValueError, match="no deltas given"):
        concentration([], [0])
