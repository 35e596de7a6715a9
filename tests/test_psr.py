"""PSR's gated steering module (steerlab.interventions.psr): the edit against a plain hook written from the
formula, chaining over layers, the constant gate = additive steering, traces, artifacts, errors."""

from __future__ import annotations

import math

import pytest
import torch

import steerlab as sl
from steerlab.artifacts import VectorError, load_intervention
from steerlab.hooks import HookManager, positions_from_mask
from steerlab.interventions.psr import GatedSteering, load_psr, save_psr, system_prompt_end
from steerlab.runtime import forward
from steerlab.sites import Site
from steerlab.testing import tiny_model
from steerlab.vectors import SteeringVector, VectorMeta


def _plain_logits(lm, enc, module, alpha):
    """A plain loop of the formula: torch forward hooks on the decoder blocks, each computing
    h + alpha * relu(w.h + b) * z on the positions from the last prompt token on (all rows' prompts are
    the whole input here, so that is the last real token and nothing else)."""
    blocks = lm.adapter.layers(lm.model)
    handles = []
    mask = enc["attention_mask"]
    last = mask.shape[1] - 1  # left padded: every row's last real token is the last column
    for i, layer in enumerate(module.layers):
        z = module.z[i].detach()
        w = module.w[i].detach() if module.gate == "relu" else None
        b = module.b[i].detach() if module.gate == "relu" else None

        def hook(mod, args, out, z=z, w=w, b=b):
            h = out[0] if isinstance(out, tuple) else out
            h = h.clone()
            v = h[:, last].float()
            g = torch.relu(v @ w + b) if w is not None else torch.ones(v.shape[0])
            h[:, last] = (v + alpha * g[:, None] * z).to(h.dtype)
            return (h, *out[1:]) if isinstance(out, tuple) else h

        handles.append(blocks[layer].register_forward_hook(hook))
    try:
        with torch.no_grad():
            return lm.model(**enc).logits
    finally:
        for h in handles:
            h.remove()


@pytest.mark.parametrize("layers", [[1], [0, 1, 2, 3]])
def test_edit_equals_a_plain_hook_of_the_formula(tiny, layers):
    lm = tiny
    module = GatedSteering(lm, layers, alpha=3.0, seed=1)
    with torch.no_grad():  # a bias that keeps every gate open here, so the test sees the gate's value
        for b in module.b:
            b.fill_(2.0)
    enc = lm.encode(["hello there", "a b"])
    hooks = module.hooks(lm, enc["attention_mask"].sum(-1))
    hooks.set_state(positions=positions_from_mask(enc["attention_mask"]), prompt_lens=enc["attention_mask"].sum(-1))
    ours = forward(lm, hooks, **enc).logits
    ref = _plain_logits(lm, enc, module, 3.0)
    base = forward(lm, None, **enc).logits
    assert torch.allclose(ours, ref, atol=1e-5)
    assert float((ours - base).abs().max()) > 1e-3  # the edit is not a no-op here


def test_closed_gates_leave_activations_exact(tiny):
    module = GatedSteering(tiny, [1, 2], alpha=5.0)
    with torch.no_grad():
        for b in module.b:
            b.fill_(-1e4)
    out = sl.generate(tiny, ["hello", "abc"], interventions=[module], max_new_tokens=6)
    plain = sl.generate(tiny, ["hello", "abc"], max_new_tokens=6)
    assert out.tokens == plain.tokens


def test_constant_gate_is_additive_steering(tiny):
    z = torch.randn(64, generator=torch.Generator().manual_seed(3))
    module = GatedSteering(tiny, [2], gate="constant", alpha=4.0, init={"z": {2: z}})
    meta = VectorMeta(model_name=tiny.name, architecture=tiny.adapter.family, hidden_size=64, n_layers=4)
    vec = SteeringVector({"residual.2": z}, meta)
    a = sl.generate(tiny, ["hello", "abc"], interventions=[module], max_new_tokens=8)
    b = sl.generate(tiny, ["hello", "abc"], steer=vec, strength=4.0, where="generated", max_new_tokens=8)
    assert a.tokens == b.tokens
    assert a.tokens != sl.generate(tiny, ["hello", "abc"], max_new_tokens=8).tokens


def test_trace_records_the_gates_on_the_steered_positions(tiny):
    module = GatedSteering(tiny, [1], alpha=1.0, seed=2)
    with torch.no_grad():
        module.b[0].fill_(1.0)
    traced = module.traced()
    enc = tiny.encode(["hello there"])
    lens = enc["attention_mask"].sum(-1)
    h1 = {}
    reader = HookManager(tiny.model, tiny.adapter)
    reader.add(Site.parse("residual.1"), lambda x, s, st: h1.update(h=x.detach().clone()))
    forward(tiny, reader, **enc)  # unsteered residual.1 (the gate reads the activation before its own edit)
    hm = HookManager(tiny.model, tiny.adapter)
    traced.install(hm, lens)
    hm.set_state(positions=positions_from_mask(enc["attention_mask"]), prompt_lens=lens)
    forward(tiny, hm, **enc)
    g = traced.trace.last(1)[0]
    n = int(lens[0])
    expect = torch.relu(h1["h"][0, -1] @ module.w[0].detach() + module.b[0].detach())
    assert torch.allclose(g[-1], expect, atol=1e-6)
    assert g[: n - 1].abs().sum() == 0  # "generated": only the last prompt token of a prompt-only pass


def test_artifact_round_trip_and_other_model(tiny, tmp_path):
    module = GatedSteering(tiny, [1, 3], alpha=2.5, seed=4, where=3)
    path = save_psr(module, tmp_path / "p.safetensors", params={"objective": "mse"})
    back = load_psr(path, tiny)
    assert back.layers == (1, 3) and back.where == 3 and back.alpha == 2.5 and back.gate == "relu"
    for k, v in module.state_tensors().items():
        assert torch.equal(back.state_tensors()[k], v)
    out = sl.generate(tiny, ["hello"], interventions=[back], max_new_tokens=5)
    assert out.tokens == sl.generate(tiny, ["hello"], interventions=[module], max_new_tokens=5).tokens
    other = tiny_model("llama", hidden=32, n_heads=4)
    with pytest.raises(VectorError, match="hidden size 64 does not match the model's 32"):
        load_psr(path, other)
    with pytest.raises(VectorError, match="holds a psr artifact, not a fasb artifact"):
        load_intervention(path, kind="fasb")


@pytest.mark.parametrize("kw, message", [
    ({"gate": "sigmoid"}, "gate must be one of 'relu', 'constant', got 'sigmoid'"),
    ({"alpha": math.nan}, "alpha must be a finite number, got nan"),
    ({"alpha": "2"}, "alpha must be a finite number, got '2'"),
    ({"where": "middle"}, "bad steering position 'middle'"),
])
def test_bad_settings(tiny, kw, message):
    with pytest.raises(ValueError, match=message):
        GatedSteering(tiny, [1], **kw)


def test_bad_layers(tiny):
    with pytest.raises(ValueError, match=r"layer 4 is out of range: the model has 4 layers \(0-3\)"):
        GatedSteering(tiny, [4])
    with pytest.raises(ValueError, match="a layer is given twice: 1, 1"):
        GatedSteering(tiny, [1, 1])
    with pytest.raises(ValueError, match="PSR needs at least one layer"):
        GatedSteering(tiny, [])
    with pytest.raises(ValueError, match=r"init z at layer 1 has shape \(3,\); expected \(64,\)"):
        GatedSteering(tiny, [1], init={"z": {1: torch.zeros(3)}})


@pytest.mark.slow
def test_system_prompt_end_on_the_chat_template(embedded):
    lm = embedded
    for system, tail in ((None, "trained by Hugging Face"), ("You are an evil assistant.", "evil assistant.")):
        end = system_prompt_end(lm, system)
        ids = lm.tokenizer(lm.format_prompt("Q", chat=True, system=system), add_special_tokens=False)["input_ids"]
        assert lm.tokenizer.decode(ids[: end + 1]).endswith(tail)
        assert lm.tokenizer.decode(ids[end + 1:]).startswith("<|im_end|>")
    assert system_prompt_end(lm, None) == 18
    assert system_prompt_end(lm, "You are an evil assistant.") == 8
