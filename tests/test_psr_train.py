"""PSR training (steerlab.psr_train): both objectives against plain computations, the regulariser, learning,
determinism, resuming from a checkpoint, the model left untouched, and bad settings."""

from __future__ import annotations

import pytest
import torch

import steerlab.psr_train as psr_train
from steerlab.interventions.psr import GatedSteering
from steerlab.prompt_steering import PromptPair, encode_triplet
from steerlab.psr_train import PSRTrainConfig, psr_loss, train_psr

PAIRS = [PromptPair("Q: hi A:", "Be rude. Q: hi A:", " no way", 0.5),
         PromptPair("Q: how are you A:", "Say it loud! Q: how are you A:", " fine thanks", 1.0),
         PromptPair("Q: a b c A:", "Be rude. Q: a b c A:", " d e", 0.8)]


def _open_module(lm, layers, seed=1, gate="relu"):
    m = GatedSteering(lm, layers, seed=seed, gate=gate)
    if gate == "relu":
        with torch.no_grad():
            for b in m.b:
                b.fill_(1.0)  # the tiny random model's states are alike: open the gates so that training moves
    return m


def _plain_run(lm, ids, module=None, alpha=1.0, n_steer=0):
    """Block outputs and logits of one sequence, with the module's formula applied by plain forward hooks on
    the last ``n_steer`` positions; returns (hidden per layer, logits, gates per layer)."""
    blocks = lm.adapter.layers(lm.model)
    got, gates, handles = {}, {}, []
    for i, blk in enumerate(blocks):
        def hook(mod, args, out, i=i):
            h = out[0] if isinstance(out, tuple) else out
            if module is not None and i in module.layers:
                j = module.layers.index(i)
                h = h.clone()
                v = h[:, -n_steer:].float()
                g = torch.relu(v @ module.w[j] + module.b[j]) if module.gate == "relu" else torch.ones(v.shape[:2])
                gates[i] = g
                h[:, -n_steer:] = v + alpha * g[..., None] * module.z[j]
            got[i] = h
            return (h, *out[1:]) if isinstance(out, tuple) else h

        handles.append(blk.register_forward_hook(hook))
    try:
        logits = lm.model(input_ids=torch.tensor([ids])).logits
    finally:
        for h in handles:
            h.remove()
    return got, logits, gates


@pytest.mark.parametrize("layers", [[1], [0, 2]])
def test_mse_and_regulariser_equal_a_plain_computation(tiny, layers):
    m = _open_module(tiny, layers)
    t = encode_triplet(tiny, PAIRS[0])
    loss, parts = psr_loss(tiny, m, [t], "mse", mse_scale=2.0, reg_weight=0.1)
    n = len(t.response) + 1  # "generated": the last prompt token and the response
    with torch.no_grad():
        target, _, _ = _plain_run(tiny, list(t.steered + t.response))
    pred, _, gates = _plain_run(tiny, list(t.context + t.response), m, alpha=t.score, n_steer=n)
    mse = sum(((pred[k][0, -n:] - target[k][0, -n:]) ** 2).mean() for k in range(min(layers), 4))
    reg = 0.1 * sum(torch.relu(1 - gates[k].sum()) for k in layers)
    mse = float(mse.detach())
    assert parts["objective"] == pytest.approx(mse / 2.0, rel=1e-5)
    reg = reg.detach()
    assert parts["reg"] == pytest.approx(float(reg), rel=1e-5, abs=1e-7)
    assert float(loss.detach()) == pytest.approx(mse / 2.0 + float(reg), rel=1e-5)


def test_ll_equals_a_plain_computation(tiny):
    m = _open_module(tiny, [2])
    t = encode_triplet(tiny, PAIRS[1])
    _, parts = psr_loss(tiny, m, [t], "ll")
    n = len(t.response)
    _, logits, _ = _plain_run(tiny, list(t.context + t.response), m, alpha=t.score, n_steer=n + 1)
    logp = torch.log_softmax(logits[0, -n - 1:-1].float(), -1)
    ref = -logp.gather(-1, torch.tensor(t.response)[:, None]).mean()
    assert parts["objective"] == pytest.approx(float(ref.detach()), rel=1e-5)


def test_a_padded_batch_gives_the_mean_of_its_rows(tiny):
    m = _open_module(tiny, [1])
    ts = [encode_triplet(tiny, p) for p in PAIRS]
    for objective in ("mse", "ll"):
        _, batch = psr_loss(tiny, m, ts, objective, reg_weight=0.1)
        rows = [psr_loss(tiny, m, [t], objective, reg_weight=0.1)[1] for t in ts]
        for part in ("objective", "reg"):
            assert batch[part] == pytest.approx(sum(r[part] for r in rows) / 3, rel=1e-4, abs=1e-6)


def test_training_learns_and_leaves_the_model_untouched(tiny):
    ts = [encode_triplet(tiny, p) for p in PAIRS]
    before = {k: v.clone() for k, v in tiny.model.state_dict().items()}
    for layers, cfg in (([1], PSRTrainConfig(epochs=12, lr=1e-2)), ([0, 1, 2, 3], PSRTrainConfig(epochs=12, lr=1e-2)),
                        ([2], PSRTrainConfig(objective="ll", epochs=12, lr=1e-2))):
        m = _open_module(tiny, layers)
        res = train_psr(tiny, m, ts, ts, cfg)
        assert res.steps == 36 and len(res.losses) == 36 and len(res.epoch_losses) == 12
        assert len(res.dev_losses) == 13
        if cfg.objective == "mse":
            assert res.dev_losses[0] == pytest.approx(1.0)  # normalised by its own pre-training value
            assert res.dev_losses[-1] < 0.8
        else:
            assert res.dev_losses[-1] < res.dev_losses[0] - 0.2
    after = tiny.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in tiny.model.parameters())


def test_deterministic_and_resumable(tiny, tmp_path, monkeypatch):
    ts = [encode_triplet(tiny, p) for p in PAIRS]
    cfg = PSRTrainConfig(epochs=3, lr=1e-2, checkpoint_every=2)
    a, b = _open_module(tiny, [1]), _open_module(tiny, [1])
    ra = train_psr(tiny, a, ts, ts[:1], cfg)
    rb = train_psr(tiny, b, ts, ts[:1], cfg)
    assert ra.losses == rb.losses
    assert all(torch.equal(x, y) for x, y in zip(a.state_tensors().values(), b.state_tensors().values()))

    ckpt = tmp_path / "run.ckpt"
    real = psr_train.psr_loss
    calls = {"n": 0}

    def dying(*args, **kw):
        if len(args) == 6:  # a training step (dev passes give no regulariser weight)
            calls["n"] += 1
            if calls["n"] == 6:  # five steps done, killed in the sixth
                raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(psr_train, "psr_loss", dying)
    c = _open_module(tiny, [1])
    with pytest.raises(KeyboardInterrupt):
        train_psr(tiny, c, ts, ts[:1], cfg, checkpoint=ckpt)
    monkeypatch.setattr(psr_train, "psr_loss", real)
    d = _open_module(tiny, [1])  # a fresh process: the module starts from its initial values again
    rd = train_psr(tiny, d, ts, ts[:1], cfg, checkpoint=ckpt)
    assert rd.resumed_at == 4  # the last checkpoint before the kill (every 2 steps)
    assert rd.losses == ra.losses and rd.dev_losses == ra.dev_losses
    assert all(torch.equal(x, y) for x, y in zip(a.state_tensors().values(), d.state_tensors().values()))
    with pytest.raises(ValueError, match="belongs to another training run"):
        train_psr(tiny, _open_module(tiny, [1]), ts, ts[:1], PSRTrainConfig(epochs=4), checkpoint=ckpt)


@pytest.mark.parametrize("kw, message", [
    ({"objective": "kl"}, "objective must be one of 'mse', 'll', got 'kl'"),
    ({"epochs": 0}, "epochs must be an integer >= 1, got 0"),
    ({"batch_size": 1.5}, "batch_size must be an integer >= 1, got 1.5"),
    ({"lr": float("nan")}, "lr must be a finite number >= 0, got nan"),
    ({"lr": 0}, "lr must be > 0, got 0"),
    ({"reg_weight": -1}, "reg_weight must be a finite number >= 0, got -1"),
])
def test_bad_config(kw, message):
    with pytest.raises(ValueError, match=message):
        PSRTrainConfig(**kw)


def test_no_examples(tiny):
    with pytest.raises(ValueError, match="no training examples: every prompt pair was filtered out"):
        train_psr(tiny, _open_module(tiny, [1]), [], [])
    assert PSRTrainConfig().n_epochs == 15 and PSRTrainConfig(objective="ll").n_epochs == 7
