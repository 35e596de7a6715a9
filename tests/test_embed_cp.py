"""Contrastive Prompting: formulas, equivalence with a plain-hook reference, early exit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from steerlab.embed import CPConfig, Encoder
from steerlab.embed.cp import contrast, cp_default_alpha, cp_default_layer
from steerlab.embed.prompts import AUX_PROMPT, fill, preprocess_sentence

SENTS = ["a man is playing a guitar .", "two dogs run", "the weather is nice today , is it not"]


def test_contrast_formulas():
    a = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    b = torch.tensor([[0.0, 4.0], [0.0, 1.0]])
    torch.testing.assert_close(contrast(a, b, "ns", 2.0), 2.0 * (a - b))  # replaces A, not A - alpha*B
    nr = contrast(a, b, "nr")
    torch.testing.assert_close(nr.norm(dim=-1), a.norm(dim=-1))  # keeps |A|
    d = a - b
    torch.testing.assert_close(nr / nr.norm(dim=-1, keepdim=True), d / d.norm(dim=-1, keepdim=True))
    with pytest.raises(ValueError):
        contrast(a, b, "xx")


def test_config_coercion_and_defaults():
    assert CPConfig.coerce(None) is None and CPConfig.coerce(False) is None
    assert CPConfig.coerce(True).variant == "ns"
    assert CPConfig.coerce("CP-NR").variant == "nr"
    assert CPConfig.coerce({"variant": "ns", "alpha": 3}).alpha == 3
    with pytest.raises(ValueError, match="variant"):
        CPConfig("xy")
    # paper: PromptEOL layer 5 (1-based) of 32 -> 0-based 4; PretCoT/KE layer 7 -> 6
    assert cp_default_layer("prompteol", 32) == 4 and cp_default_layer("ke", 32) == 6
    assert cp_default_layer("prompteol", 30) == 4 and cp_default_layer("pretcot", 30) == 6
    assert cp_default_layer("prompteol", 4) == 0
    assert cp_default_alpha("prompteol") == 2.0 and cp_default_alpha("pretcot") == 3.0


def _reference_cp(lm, sentence, main_tpl, layer, k, variant, alpha):
    """CP with plain torch hooks and full forward passes (no early exit, no steerlab hooks)."""
    o_proj = lm.adapter.o_proj(lm.model, layer)
    store = {}

    def grab(m, args):
        store["b"] = args[0][:, -1].clone()

    h = o_proj.register_forward_pre_hook(grab)
    with torch.no_grad():
        lm.model(**lm.tokenizer([fill(AUX_PROMPT, sentence)], return_tensors="pt"))
    h.remove()

    def edit(m, args):
        x = args[0].clone()
        x[:, -1] = contrast(args[0][:, -1], store["b"], variant, alpha)
        return (x, *args[1:])

    h = o_proj.register_forward_pre_hook(edit)
    with torch.no_grad():
        out = lm.model(**lm.tokenizer([fill(main_tpl, sentence)], return_tensors="pt"), output_hidden_states=True)
    h.remove()
    return out.hidden_states[k][0, -1]


@pytest.mark.parametrize("variant, alpha", [("ns", 2.0), ("ns", 0.5), ("nr", None)])
@pytest.mark.parametrize("family", ["llama", "gpt2", "gpt_neox"])
def test_matches_reference(family, variant, alpha):
    from steerlab.testing import tiny_model

    lm = tiny_model(family)
    enc = Encoder(lm, cp={"variant": variant, "layer": 1, "alpha": alpha}, layer=3)
    got = enc.encode(SENTS)
    for i, s in enumerate(SENTS):
        ref = _reference_cp(lm, preprocess_sentence(s), enc.templates[0], 1, 3, variant, enc.cp.alpha)
        np.testing.assert_allclose(got[i], ref.numpy(), atol=1e-4, rtol=1e-4)
    base = Encoder(lm, layer=3).encode(SENTS)
    assert not np.allclose(got, base, atol=1e-3)


@pytest.mark.parametrize("layer", [0, 1, 2])
def test_aux_pass_runs_only_up_to_the_intervention_layer(tiny, layer):
    """0-based CP layer l: the auxiliary pass calls decoder layers 0..l once each (l+1 calls;
    layer l stops inside its attention, at o_proj's input) and nothing after."""
    enc = Encoder(tiny, cp={"layer": layer}, layer=4, share_prefix=False)
    calls: list = []
    hooks = [tiny.adapter.layer(tiny.model, i).register_forward_pre_hook(lambda m, a, i=i: calls.append(i))
             for i in range(tiny.adapter.n_layers)]
    hooks.append(tiny.adapter.mlp(tiny.model, layer).register_forward_pre_hook(lambda m, a: calls.append("mlp")))
    hooks.append(tiny.model.lm_head.register_forward_pre_hook(lambda m, a: calls.append("lm_head")))
    try:
        b = enc.aux_pass([preprocess_sentence(s) for s in SENTS])
        assert calls == list(range(layer + 1))  # one batched forward, early exit
        assert b.shape == (3, tiny.adapter.heads_width)
        calls.clear()
        enc.encode(SENTS, batch_size=3)
        # aux pass (layers 0..l) then the main pass (all 4 layers, read-out = final norm)
        assert [c for c in calls if c != "mlp"] == list(range(layer + 1)) + list(range(4))
        assert calls.count("mlp") == 1  # layer l's MLP runs in the main pass only
        assert "lm_head" not in calls
    finally:
        for h in hooks:
            h.remove()


def test_shared_prefix_pass_also_stops_early(tiny):
    """With the shared prompt prefix, the prefix pass of the auxiliary prompt stops at layer l too."""
    enc = Encoder(tiny, cp={"layer": 1}, layer=3)
    calls: list = []
    hooks = [tiny.adapter.layer(tiny.model, i).register_forward_pre_hook(lambda m, a, i=i: calls.append(i))
             for i in range(tiny.adapter.n_layers)]
    try:
        enc.aux_pass(["one sentence .", "another one ."])
        assert calls == [0, 1, 0, 1]  # prefix (1 row) then the rest (2 rows), both stop at layer 1
        calls.clear()
        enc.encode(["one sentence .", "another one ."])
        assert calls == [0, 1, 0, 1] + [0, 1, 2, 0, 1, 2]  # aux, then main up to read-out 3
    finally:
        for h in hooks:
            h.remove()
    np.testing.assert_allclose(enc.encode(SENTS), Encoder(tiny, cp={"layer": 1}, layer=3,
                                                          share_prefix=False).encode(SENTS), atol=1e-5)


def test_cp_layer_must_precede_readout(tiny):
    with pytest.raises(ValueError, match="before the read-out"):
        Encoder(tiny, cp={"layer": 3}, layer=3)
    enc = Encoder(tiny, cp={"layer": 1})
    with pytest.raises(ValueError, match="before every read-out"):
        enc.encode_layers(SENTS, [1, 4])


def test_cp_with_metaeol_and_batches(tiny):
    enc = Encoder(tiny, prompt="metaeol", cp="nr")
    x = enc.encode(SENTS, batch_size=2)
    y = np.stack([enc.encode(s) for s in SENTS])
    np.testing.assert_allclose(x, y, atol=1e-4)


def test_no_hooks_left_behind(tiny):
    # transformers may keep its own output-capture hooks on a shared model: compare per module
    before = {name: (dict(m._forward_pre_hooks), dict(m._forward_hooks)) for name, m in tiny.model.named_modules()}
    enc = Encoder(tiny, cp="ns", tp=True)
    enc.encode(SENTS)
    after = {name: (dict(m._forward_pre_hooks), dict(m._forward_hooks)) for name, m in tiny.model.named_modules()}
    assert after == before


@pytest.mark.slow
def test_embedded_cp_defaults(embedded):
    enc = Encoder(embedded, cp="ns")
    assert (enc.cp.layer, enc.cp.alpha) == (4, 2.0)  # paper's layer 5 of 32, scaled to 30 layers
    x = enc.encode(SENTS[:2])
    assert x.shape == (2, 576) and np.isfinite(x).all()
