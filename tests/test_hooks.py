"""Scoped hook manager: edits apply inside the block only, modules untouched, thread/model isolation."""

from __future__ import annotations

import threading

import pytest
import torch

from steerlab.hooks import HookManager, StopForward, positions_from_mask
from steerlab.sites import Site, SiteKind, as_heads
from steerlab.testing import tiny_model


def _logits(lm, texts=("hello world", "hi")):
    with torch.no_grad():
        return lm.model(**lm.encode(list(texts))).logits


def _hook_count(model) -> int:
    """All forward (pre-)hooks on the model; transformers may keep its own output-capture hooks,
    so tests compare against the count before the block, not against zero."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_edit_applies_only_inside_block(tiny) -> None:
    base = _logits(tiny)
    before = _hook_count(tiny.model)
    v = torch.randn(64) * 3
    hm = HookManager(tiny.model).add(Site.residual(1), lambda x, site, st: x + v)
    with hm:
        steered = _logits(tiny)
        assert _hook_count(tiny.model) == before + 1
    assert _hook_count(tiny.model) == before
    assert not torch.allclose(base, steered)
    assert torch.equal(_logits(tiny), base)


def test_hooks_removed_on_exception_and_modules_untouched(tiny) -> None:
    before = {name: id(m) for name, m in tiny.model.named_modules()}
    n_hooks = _hook_count(tiny.model)
    hm = HookManager(tiny.model).add(Site("heads", 2), lambda x, s, st: None).add(Site("mlp_out", 0), lambda x, s, st: None)
    with pytest.raises(RuntimeError, match="boom"):
        with hm:
            assert _hook_count(tiny.model) == n_hooks + 2
            raise RuntimeError("boom")
    assert _hook_count(tiny.model) == n_hooks
    assert {name: id(m) for name, m in tiny.model.named_modules()} == before


def test_read_only_hooks_change_nothing(tiny) -> None:
    base = _logits(tiny)
    seen = []
    hm = HookManager(tiny.model)
    for kind in SiteKind:
        hm.add(Site(kind, 2), lambda x, s, st: seen.append((s.kind, tuple(x.shape))))
    with hm:
        out = _logits(tiny)
    assert torch.equal(out, base)
    assert sorted(k.value for k, _ in seen) == sorted(k.value for k in SiteKind)
    assert all(shape[-1] == 64 for _, shape in seen)


def test_heads_edit_equals_attn_out_edit_through_o_proj(tiny) -> None:
    """Adding v to the o_proj input is the same as adding W_o v to the attention output."""
    v = torch.randn(64)
    w = tiny.adapter.o_proj(tiny.model, 1).weight.detach()
    with HookManager(tiny.model).add(Site("heads", 1), lambda x, s, st: x + v):
        a = _logits(tiny)
    with HookManager(tiny.model).add(Site("attn_out", 1), lambda x, s, st: x + w @ v):
        b = _logits(tiny)
    assert torch.allclose(a, b, atol=1e-5)
    heads = as_heads(torch.arange(64.0).view(1, 1, 64), 4)
    assert heads.shape == (1, 1, 4, 16) and heads[0, 0, 1, 0] == 16


def test_stop_forward_is_swallowed_and_skips_later_layers(tiny) -> None:
    calls = []
    n_hooks = _hook_count(tiny.model)
    hm = HookManager(tiny.model)
    for layer in range(4):
        hm.add(Site.residual(layer), lambda x, s, st: calls.append(s.layer))
    def stop(x, s, st):
        raise StopForward
    hm.add(Site.residual(1), stop)
    with hm:
        tiny.model(**tiny.encode(["abc"]))
    assert calls == [0, 1]
    assert _hook_count(tiny.model) == n_hooks


def test_positions_from_left_padded_mask() -> None:
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    assert positions_from_mask(mask).tolist() == [[-1, -1, 0, 1], [0, 1, 2, 3]]


def test_manager_not_reentrant(tiny) -> None:
    hm = HookManager(tiny.model).add(Site.residual(0), lambda x, s, st: None)
    with hm:
        with pytest.raises(RuntimeError, match="already active"):
            hm.__enter__()


def test_two_threads_same_model_do_not_interfere(tiny) -> None:
    """Thread A steers while thread B runs the same model plainly: B sees no steering."""
    base = _logits(tiny)
    v = torch.randn(64) * 5
    with HookManager(tiny.model).add(Site.residual(1), lambda x, s, st: x + v):
        steered_ref = _logits(tiny)
    barrier = threading.Barrier(2)
    results: dict[str, list[torch.Tensor]] = {"a": [], "b": []}

    def steerer() -> None:
        with HookManager(tiny.model).add(Site.residual(1), lambda x, s, st: x + v):
            barrier.wait()
            for _ in range(5):
                results["a"].append(_logits(tiny))
            barrier.wait()

    def plain() -> None:
        barrier.wait()
        for _ in range(5):
            results["b"].append(_logits(tiny))
        barrier.wait()

    ts = [threading.Thread(target=steerer), threading.Thread(target=plain)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert all(torch.allclose(r, steered_ref, atol=1e-6) for r in results["a"])
    assert all(torch.allclose(r, base, atol=1e-6) for r in results["b"])


def test_two_models_two_threads(tiny) -> None:
    other = tiny_model("gpt2", seed=1)
    va, vb = torch.randn(64) * 4, torch.randn(64) * 4
    with HookManager(tiny.model).add(Site.residual(2), lambda x, s, st: x + va):
        ref_a = _logits(tiny)
    with HookManager(other.model).add(Site.residual(0), lambda x, s, st: x + vb):
        ref_b = _logits(other)
    out: dict[str, torch.Tensor] = {}
    barrier = threading.Barrier(2)

    def run(name, lm, site, v) -> None:
        with HookManager(lm.model).add(site, lambda x, s, st: x + v):
            barrier.wait()
            out[name] = _logits(lm)

    ts = [threading.Thread(target=run, args=("a", tiny, Site.residual(2), va)),
          threading.Thread(target=run, args=("b", other, Site.residual(0), vb))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert torch.allclose(out["a"], ref_a, atol=1e-6) and torch.allclose(out["b"], ref_b, atol=1e-6)


def test_block_in_is_the_previous_blocks_output(tiny) -> None:
    """``block_in.L`` reads (and edits) what enters block L: ``residual.{L-1}``; block 0 gets the embeddings."""
    got: dict[str, torch.Tensor] = {}
    hm = HookManager(tiny.model)
    for site in (Site("block_in", 2), Site("residual", 1), Site("block_in", 0)):
        hm.add(site, lambda x, s, st: got.__setitem__(s.key, x.detach().clone()))
    with hm:
        _logits(tiny)
    assert torch.equal(got["block_in.2"], got["residual.1"])
    with torch.no_grad():
        emb = tiny.model.get_input_embeddings()(tiny.encode(["hello world", "hi"])["input_ids"])
    assert torch.equal(got["block_in.0"], emb)
    # an edit of block_in.2 is an edit of residual.1 as the rest of the model sees it
    v = torch.randn(64)
    with HookManager(tiny.model).add(Site("block_in", 2), lambda x, s, st: x + v):
        a = _logits(tiny)
    with HookManager(tiny.model).add(Site("residual", 1), lambda x, s, st: x + v):
        b = _logits(tiny)
    assert torch.equal(a, b)
