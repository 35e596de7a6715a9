"""Several CP settings from one cached main pass equal separate Encoder runs."""

from __future__ import annotations

import numpy as np
import pytest

from steerlab.embed import CPConfig, Encoder
from steerlab.embed.variants import encode_cp_variants, joint_ok
from steerlab.testing import tiny_model

SENTS = ["a man is playing a guitar .", "two dogs run", "the weather is nice today , is it not", "ok",
         "a woman slices an onion on the chopping board"]


def _check(lm, prompt, tp, cps, layer=None, rtol=1e-5):
    enc = Encoder(lm, prompt=prompt, layer=layer, tp=tp, batch_size=2)
    out = encode_cp_variants(enc, SENTS, cps, batch_size=3)
    assert len(out) == len(cps)
    for cp, got in zip(cps, out):
        ref = Encoder(lm, prompt=prompt, layer=layer, tp=tp, cp=cp, batch_size=2).encode(SENTS)
        assert got.shape == ref.shape and got.dtype == np.float32
        scale = float(np.abs(ref).max())
        np.testing.assert_allclose(got, ref, atol=rtol * scale, rtol=0, err_msg=f"cp={cp} tp={tp}")
    return out


@pytest.mark.parametrize("family", ["llama", "qwen2", "gpt2"])
def test_variants_equal_separate_runs(family):
    lm = tiny_model(family)
    cps = [None, {"variant": "ns", "layer": 0, "alpha": 2.0}, {"variant": "nr", "layer": 1},
           {"variant": "ns", "layer": 1, "alpha": 0.5}]
    out = _check(lm, "prompteol", None, cps, layer=3)
    assert not np.allclose(out[0], out[1])  # CP really changed something


def test_variants_with_tp_and_fallback(tiny):
    # TP exit 2: CP layers >= 1 share the pass; layer 0 changes what TP copies -> own pass
    enc = Encoder(tiny, prompt="prompteol", layer=3, tp={"exit": 2})
    assert joint_ok(enc, CPConfig("ns", 1, 1.0)) and not joint_ok(enc, CPConfig("ns", 0, 1.0))
    _check(tiny, "prompteol", {"exit": 2}, [None, {"variant": "ns", "layer": 0, "alpha": 1.0},
                                             {"variant": "nr", "layer": 2}], layer=3)


def test_multi_template_prompt_and_last_layer(tiny):
    _check(tiny, "metaeol", None, [None, {"variant": "nr", "layer": 1}], layer=3)
    # the final-norm read-out (k = n_layers) cannot share the pass: falls back, still equal
    enc = Encoder(tiny, prompt="prompteol", layer=4)
    assert not joint_ok(enc, CPConfig("ns", 1, 1.0))
    _check(tiny, "prompteol", None, [None, {"variant": "ns", "layer": 1, "alpha": 1.0}], layer=4)


def test_errors(tiny):
    with pytest.raises(ValueError, match="without CP"):
        encode_cp_variants(Encoder(tiny, cp="ns"), SENTS, [None])
    with pytest.raises(ValueError, match="strings"):
        encode_cp_variants(Encoder(tiny), ["a", 3], [None])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="CP layer"):
        encode_cp_variants(Encoder(tiny, layer=2), SENTS, [{"variant": "ns", "layer": 3}])


def test_embedded_model(embedded):
    cps = [None, {"variant": "ns", "layer": 2, "alpha": 0.5}, {"variant": "nr", "layer": 4}]
    _check(embedded, "prompteol", {"exit": 2}, cps, rtol=2e-6)
