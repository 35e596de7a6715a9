"""Token Prepending: placeholder handling, the layer-input overwrite, model left untouched."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from steerlab.embed import Encoder, TPConfig
from steerlab.embed.prompts import PST
from steerlab.embed.tp import add_tp_hooks, tp_default_exit
from steerlab.hooks import HookManager
from steerlab.testing import tiny_model

SENTS = ["a man is playing a guitar .", "two dogs run", "the weather is nice today , is it not"]


def test_config():
    assert TPConfig.coerce(None) is None and TPConfig.coerce(True) == TPConfig()
    assert TPConfig.coerce(5).exit == 5
    assert TPConfig.coerce({"start": 2, "exit": 4}) == TPConfig(2, 4)
    with pytest.raises(ValueError, match="start"):
        TPConfig(start=0)
    with pytest.raises(ValueError, match="exit"):
        TPConfig(start=3, exit=3)
    assert tp_default_exit(32) == 7 and tp_default_exit(30) == 7 and tp_default_exit(4) == 2


def test_model_and_tokenizer_untouched():
    lm = tiny_model("llama")
    weight = lm.model.get_input_embeddings().weight.detach().clone()
    n_tok = len(lm.tokenizer)
    n_params = sum(p.numel() for p in lm.model.parameters())
    enc = Encoder(lm, tp=True)
    enc.encode(SENTS)
    assert len(lm.tokenizer) == n_tok and PST not in lm.tokenizer.get_vocab()
    assert sum(p.numel() for p in lm.model.parameters()) == n_params
    assert torch.equal(lm.model.get_input_embeddings().weight, weight)
    for m in lm.model.modules():
        assert not m._forward_pre_hooks and not m._forward_hooks
    # the placeholder id comes from the tokenizer copy: one past the model's vocabulary here
    assert enc._pst.token_id == n_tok
    assert enc.tokenizer is not lm.tokenizer


def test_placeholder_position_found_per_row(tiny):
    enc = Encoder(tiny, tp=True, share_prefix=False)
    kw, pst_pos = enc._inputs([enc.templates[0].replace("{s}", s) for s in SENTS], 3)
    ids = enc.tokenizer([enc.templates[0].replace("{s}", s) for s in SENTS], padding=True)["input_ids"]
    for row, p in zip(ids, pst_pos.tolist()):
        assert row[p] == enc._pst.token_id
    assert len(set(pst_pos.tolist())) == 3  # different left padding -> different columns
    assert "inputs_embeds" in kw and "input_ids" not in kw


def test_overwrite_invariant(tiny):
    """Before each layer in [start, exit) the placeholder holds the previous layer's last-token
    output; before other layers it does not."""
    enc = Encoder(tiny, tp={"start": 1, "exit": 3}, layer=4, share_prefix=False)
    texts = [enc.templates[0].replace("{s}", s) for s in SENTS]
    kw, pst_pos = enc._inputs(texts, 3)
    seen = {}

    def grab(i):
        def hook(module, args):
            seen[i] = args[0].detach().clone()
        return hook

    # the input layernorm sees the layer input after the TP pre-hook has edited it
    hs = [tiny.model.model.layers[i].input_layernorm.register_forward_pre_hook(grab(i)) for i in range(4)]
    try:
        with torch.no_grad(), add_tp_hooks(HookManager(tiny.model, tiny.adapter), range(1, 3), pst_pos):
            tiny.model(**kw)
    finally:
        for h in hs:
            h.remove()
    rows = torch.arange(3)
    for i in (1, 2):
        torch.testing.assert_close(seen[i][rows, pst_pos], seen[i][:, -1])
    for i in (0, 3):
        assert not torch.allclose(seen[i][rows, pst_pos], seen[i][:, -1])


def test_tokens_before_placeholder_unaffected(tiny):
    """Causal mask and positions are unchanged: everything before the placeholder is as without TP."""
    enc = Encoder(tiny, tp=True, share_prefix=False)
    texts = [enc.templates[0].replace("{s}", s) for s in SENTS[:1]]
    kw, pst_pos = enc._inputs(texts, 3)
    with torch.no_grad():
        plain = tiny.model(**kw, output_hidden_states=True).hidden_states
        with add_tp_hooks(HookManager(tiny.model, tiny.adapter), range(1, 3), pst_pos):
            tp = tiny.model(**kw, output_hidden_states=True).hidden_states
    p = int(pst_pos[0])
    for k in range(1, 5):
        torch.testing.assert_close(plain[k][:, :p], tp[k][:, :p])
    assert not torch.allclose(plain[2][:, p + 1:], tp[2][:, p + 1:])


def test_tp_changes_embeddings_and_is_deterministic(tiny):
    base = Encoder(tiny).encode(SENTS)
    a = Encoder(tiny, tp=True).encode(SENTS)
    b = Encoder(tiny, tp=True).encode(SENTS)
    np.testing.assert_allclose(a, b, atol=1e-6)  # seeded placeholder vector
    assert not np.allclose(a, base, atol=1e-3)
    c = Encoder(tiny, tp={"seed": 1}).encode(SENTS)
    assert not np.allclose(a, c, atol=1e-6)


def test_cp_plus_tp(tiny):
    cp = Encoder(tiny, cp="ns").encode(SENTS)
    tp = Encoder(tiny, tp=True).encode(SENTS)
    both = Encoder(tiny, cp="ns", tp=True)
    assert PST in both.aux_template  # the auxiliary prompt gets the placeholder too
    x = both.encode(SENTS)
    assert not np.allclose(x, cp, atol=1e-3) and not np.allclose(x, tp, atol=1e-3)
    np.testing.assert_allclose(x, Encoder(tiny, cp="ns", tp=True, share_prefix=False).encode(SENTS), atol=1e-5)


@pytest.mark.parametrize("prompt", ["prompteol", "pretcot", "ke", "metaeol", 'Custom: "{s}" in a word:"'])
def test_every_prompt(tiny, prompt):
    enc = Encoder(tiny, prompt=prompt, tp=True)
    assert all(t.count(PST) == 1 for t in enc.templates)
    x = enc.encode(SENTS)
    assert x.shape == (3, 64) and np.isfinite(x).all()


def test_out_of_range(tiny):
    with pytest.raises(ValueError, match="out of range"):
        Encoder(tiny, tp={"exit": 9})


@pytest.mark.slow
def test_embedded_tp(embedded):
    n_tok = len(embedded.tokenizer)
    enc = Encoder(embedded, tp=True)
    assert (enc.tp.start, enc.tp.exit) == (1, 7)
    x = enc.encode(SENTS[:2])
    assert x.shape == (2, 576) and np.isfinite(x).all()
    assert len(embedded.tokenizer) == n_tok


def test_randn_init_option(tiny):
    """`init="randn"` (the TP reference's starting vector): a seeded standard normal vector; the default
    stays the embedding statistics; describe() records the option only when it is not the default."""
    default = Encoder(tiny, tp=True)
    ref = Encoder(tiny, tp={"init": "randn", "seed": 3})
    expected = torch.randn(tiny.adapter.hidden_size, generator=torch.Generator().manual_seed(3))
    assert torch.equal(ref._pst.vector, expected.to(ref._pst.vector.dtype))
    assert not torch.equal(default._pst.vector, Encoder(tiny, tp={"init": "randn"})._pst.vector)
    assert "init" not in default.describe()["tp"] and ref.describe()["tp"]["init"] == "randn"
    # before layer `start` only the placeholder's own position differs, so with TP starting at layer 1 the
    # embeddings change only through layer 0's view of the placeholder
    a = default.encode(SENTS)
    b = Encoder(tiny, tp={"init": "randn"}).encode(SENTS)
    assert a.shape == b.shape and not np.allclose(a, b)
    with pytest.raises(ValueError, match="^TP init must be one of embedding_stats, randn, got 'zeros'$"):
        Encoder(tiny, tp={"init": "zeros"})
