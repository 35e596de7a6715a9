"""Trainable interventions (issue #10 section 3): parameters learn through the frozen model."""

from __future__ import annotations

import pytest
import torch

import steerlab as sl
from steerlab.artifacts import load_intervention, load_vector, save_intervention
from steerlab.hooks import HookManager, positions_from_mask
from steerlab.interventions.add import AddIntervention, Steer
from steerlab.interventions.trainable import TrainableAdd
from steerlab.runtime import forward, token_logprobs
from steerlab.testing import tiny_model
from steerlab.train import example_batch, fit_intervention, frozen, intervention_loss, nll_loss

EXAMPLE = [("The weather today is", " absolutely wonderful and sunny")]


def _snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_embedded_loss_falls_and_model_is_untouched(embedded) -> None:
    """5 Adam steps on one residual vector of the embedded model: the continuation's NLL falls at every
    step; the model's weights are bit-identical afterwards, their requires_grad flags are restored and no
    .grad is left on them."""
    model = embedded.model
    before = _snapshot(model)
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    module = TrainableAdd(embedded, ["residual.15"], where="generated")
    frozen_seen: list[bool] = []

    def loss_fn(rows: list[torch.Tensor]) -> torch.Tensor:
        frozen_seen.append(not any(p.requires_grad for p in model.parameters()))
        return nll_loss(rows)

    result = fit_intervention(embedded, module, EXAMPLE, steps=5, lr=0.2, loss_fn=loss_fn)
    losses = result.losses + [result.final_loss]
    # measured: 5.1105, 4.5079, 4.0026, 3.5703, 3.1873 -> 2.8407
    assert result.steps == 5 and frozen_seen == [True] * 6
    assert all(b < a for a, b in zip(losses, losses[1:])), losses
    assert losses[-1] < losses[0] - 0.5
    assert float(module.vector("residual.15").detach().norm()) > 0
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert all(p.grad is None for p in model.parameters())


def _loss64(lm, module: TrainableAdd, batch) -> float:
    """nll_loss of the batch in float64 end to end (token_logprobs' log-softmax is float32, too coarse for
    finite differences), through runtime.forward with the module installed."""
    hooks = module.hooks(lm, batch.context_lens)
    hooks.set_state(positions=positions_from_mask(batch.attention_mask), prompt_lens=batch.context_lens)
    out = forward(lm, hooks, input_ids=batch.input_ids,
                  attention_mask=batch.attention_mask, position_ids=batch.position_ids, use_cache=False)
    logp = torch.log_softmax(out.logits[:, :-1].double(), -1).gather(-1, batch.input_ids[:, 1:, None])[..., 0]
    rows = [logp[r, -n:] for r, n in enumerate(batch.cont_lens.tolist())]
    return float(-torch.stack([x.mean() for x in rows]).mean())


def test_gradient_matches_finite_differences_and_activation_gradient() -> None:
    """On a float64 tiny Llama, the parameter's gradient equals (1) the gradient of the loss w.r.t. the edited
    residual summed over the steered positions, and (2) central finite differences along random directions."""
    lm = tiny_model("llama", dtype=torch.float64)
    module = TrainableAdd(lm, ["residual.1"], where="generated", dtype=torch.float64,
                          init={"residual.1": torch.randn(64, generator=torch.Generator().manual_seed(1)) * 0.5})
    batch = example_batch(lm, [("ab", "cdef"), ("hello", "xyz")])
    with frozen(lm.model):
        captured: list[torch.Tensor] = []

        def keep(x: torch.Tensor, site, state) -> None:
            x.retain_grad()
            captured.append(x)

        hooks = HookManager(lm.model, lm.adapter)
        module.install(hooks, batch.context_lens)
        hooks.add(sl.Site.residual(1), keep)  # runs after the edit: sees x + v
        rows, _ = token_logprobs(lm, batch, hooks, grad=True)
        loss = nll_loss(rows)
        loss.backward()
        g = module.vector("residual.1").grad.detach().clone()
        (edited,) = captured
        pos = torch.where(batch.attention_mask.bool(), batch.attention_mask.cumsum(-1) - 1, -1)
        steered = (pos >= (batch.context_lens - 1)[:, None]).to(edited.dtype)[..., None]
        from_acts = (edited.grad * steered).sum((0, 1))
        torch.testing.assert_close(g.to(from_acts.dtype), from_acts, rtol=1e-6, atol=1e-9)

        gen = torch.Generator().manual_seed(2)
        p = module.vector("residual.1")
        eps = 1e-2  # the model's RMSNorm runs in float32 even in a float64 model: ~1e-8 noise per loss
        for _ in range(3):
            d = torch.randn(64, generator=gen, dtype=torch.float64)
            d = d / d.norm()
            with torch.no_grad():
                p.add_(eps * d)
                up = _loss64(lm, module, batch)
                p.sub_(2 * eps * d)
                down = _loss64(lm, module, batch)
                p.add_(eps * d)
            fd = (up - down) / (2 * eps)
            analytic = float(g.double() @ d)
            # measured: 0.02285674 vs 0.02285668, -0.00066744 vs -0.00066729, -0.00078774 vs -0.00078715
            assert fd == pytest.approx(analytic, rel=1e-4, abs=1e-6), (fd, analytic)
    assert float(g.norm()) > 1e-4


def test_trained_module_converts_to_a_vector(tiny, tmp_path) -> None:
    """to_vector() steers exactly as the module does (same log-probs through AddIntervention), saves with
    save_vector semantics (load_vector reads the trainable_add artifact) and drives generate."""
    module = TrainableAdd(tiny, ["residual.2", "heads.1"], where="generated")
    result = fit_intervention(tiny, module, [("ab", "cdcd")], steps=3, lr=0.1, optimizer="sgd")
    assert result.losses[0] > result.final_loss
    after = float(intervention_loss(tiny, module, example_batch(tiny, [("ab", "cdcd")])).detach())
    assert after == pytest.approx(result.final_loss, rel=1e-6)  # final_loss: the loss after the last step
    vec = module.to_vector()
    assert vec.meta.method == "trainable_add" and vec.meta.extra == {"where": "generated"}
    assert sorted(vec.vectors) == ["heads.1", "residual.2"] and vec.meta.hidden_size == 64
    again = TrainableAdd.from_vector(tiny, vec, where="generated")
    assert all(torch.equal(again.vector(k).detach(), module.vector(k).detach()) for k in vec.vectors)
    batch = example_batch(tiny, [("ab", "cdcd"), ("xyz", "w")])
    with_module, _ = token_logprobs(tiny, batch, module.hooks(tiny, batch.context_lens))
    hm = HookManager(tiny.model, tiny.adapter)
    AddIntervention([Steer(vec, 1.0, "generated")] * 2).install(hm, batch.context_lens)
    with_vector, _ = token_logprobs(tiny, batch, hm)
    for a, b in zip(with_module, with_vector):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)

    path = save_intervention(module.to_artifact(params={"lr": 0.1, "steps": 3}, data={"examples": [["ab", "cdcd"]]},
                                                extra={"losses": result.losses}), tmp_path / "t")
    art = load_intervention(path, tiny, kind="trainable_add")
    assert art.params == {"where": "generated", "lr": 0.1, "steps": 3} and art.extra["losses"] == result.losses
    back = TrainableAdd.from_artifact(art, tiny)
    assert back.where == "generated" and sorted(s.key for s in back.sites) == ["heads.1", "residual.2"]
    for s in module.sites:
        assert torch.equal(back.vector(s.key).detach(), module.vector(s.key).detach())
    loaded = load_vector(path, tiny)
    assert all(torch.equal(loaded.vectors[k], vec.vectors[k]) for k in vec.vectors)
    out = sl.generate(tiny, ["ab"], steer=loaded, where="generated", max_new_tokens=3)
    assert len(out.texts) == 1


def test_errors(tiny) -> None:
    with pytest.raises(ValueError, match="^bad steering position 'later'"):
        TrainableAdd(tiny, ["residual.1"], where="later")
    with pytest.raises(ValueError, match=r"^init at residual.1 has shape \(3,\); the site is 64 wide$"):
        TrainableAdd(tiny, ["residual.1"], init={"residual.1": torch.zeros(3)})
    with pytest.raises(ValueError, match="^init names site residual.2, which is not one of residual.1$"):
        TrainableAdd(tiny, ["residual.1"], init={"residual.2": torch.zeros(64)})
    with pytest.raises(ValueError, match="^a site is given twice: residual.1, residual.1$"):
        TrainableAdd(tiny, ["residual.1", sl.Site.residual(1)])
    with pytest.raises(ValueError, match="layer 9"):
        TrainableAdd(tiny, ["residual.9"])
    module = TrainableAdd(tiny, ["residual.1"])
    with pytest.raises(ValueError, match="^steps must be a positive integer, got 0$"):
        fit_intervention(tiny, module, EXAMPLE, steps=0)
    with pytest.raises(ValueError, match="^unknown optimizer 'lbfgs': use 'adam' or 'sgd'$"):
        fit_intervention(tiny, module, EXAMPLE, optimizer="lbfgs")
    with pytest.raises(ValueError, match="^no training examples given$"):
        fit_intervention(tiny, module, [])
    with pytest.raises(RuntimeError, match="^1 model parameter\\(s\\) received gradients while frozen$"):
        with frozen(tiny.model):
            tiny.model.lm_head.weight.grad = torch.zeros_like(tiny.model.lm_head.weight)
    tiny.model.lm_head.weight.grad = None
    assert all(p.requires_grad for p in tiny.model.parameters())
    module.vectors.append(tiny.model.lm_head.weight)
    with pytest.raises(ValueError, match="include the model's own weights"):
        fit_intervention(tiny, module, EXAMPLE)
