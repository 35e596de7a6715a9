"""ITI as a method: fit from labelled answers (one capture), steer through generate, fold into o_proj.bias."""

from __future__ import annotations

import pytest
import torch

import steerlab as sl
from steerlab.hooks import HookManager
from steerlab.interventions import iti as iti_mod
from steerlab.interventions.add import AddIntervention, Steer
from steerlab.interventions.iti import (ITIConfig, ITIExample, answer_steers, capture_heads, fit_iti,
                                        fold_into_bias, split_by_group)
from steerlab.testing import tiny_model

QUESTIONS = [f"Q: question number {i}?" for i in range(10)]


def _cfg(**kw) -> ITIConfig:
    # a random tiny model's activations are small (std ~0.1): with sklearn's C=1 penalty the raw
    # probes would predict the majority class, so these tests standardise the features
    return ITIConfig(standardize=True, batch_size=32, **kw)


def _records() -> list[ITIExample]:
    # true answers end in "!" and false ones in "?": the last-token head activations separate them
    out = []
    for i, q in enumerate(QUESTIONS):
        out += [ITIExample(q, f" A: yes {i}!", 1), ITIExample(q, f" A: sure{i}!", 1),
                ITIExample(q, f" A: no {i}?", 0)]
    return out


@pytest.fixture(scope="module")
def fitted(tiny):
    return fit_iti(tiny, _records(), _cfg(k=3, alpha=5.0, seed=0))


def test_fit_iti_one_capture_all_heads(tiny, monkeypatch) -> None:
    calls = []
    real = iti_mod.capture

    def spy(lm, items, sites, **kw):
        calls.append([s.key for s in sites])
        return real(lm, items, sites, **kw)

    monkeypatch.setattr(iti_mod, "capture", spy)
    fit = fit_iti(tiny, _records(), _cfg(k=4, alpha=2.0, seed=1))
    a = tiny.adapter
    assert calls == [[f"heads.{layer}" for layer in range(a.n_layers)]]  # one call, every layer
    assert fit.probes.shape == (a.n_layers, a.n_heads, a.head_dim)
    assert len(fit.heads) == 4 and fit.heads == fit.probes.top_k(4)
    assert all(fit.probes.val_acc[l, h] >= 0.99 for l, h in fit.heads)  # "!" vs "?" is easy
    vec = fit.vector
    assert vec.meta.method == "iti" and vec.meta.architecture == a.family and vec.meta.model_name == tiny.name
    assert sum(len(h) for h in vec.meta.heads.values()) == 4
    for key, v in vec.vectors.items():
        layer = int(key.split(".")[1])
        per_head = v.view(a.n_heads, a.head_dim)
        for h in range(a.n_heads):
            expected = 2.0 * fit.sigma[layer, h] * fit.directions[layer, h] if (layer, h) in fit.heads else 0 * v[:a.head_dim]
            assert torch.allclose(per_head[h], expected, atol=1e-5)


def test_split_by_question() -> None:
    groups = [r.key for r in _records()]
    tr, va = split_by_group(groups, 0.2, seed=42)
    assert len(set(groups[i] for i in va.tolist())) == 2  # 20% of 10 questions
    assert not set(groups[i] for i in tr.tolist()) & set(groups[i] for i in va.tolist())
    assert sorted(tr.tolist() + va.tolist()) == list(range(len(groups)))
    again = split_by_group(groups, 0.2, seed=42)
    assert torch.equal(again[0], tr) and torch.equal(again[1], va)
    assert not torch.equal(split_by_group(groups, 0.2, seed=7)[1], va)
    tr0, va0 = split_by_group(groups, 0.0)
    assert va0.numel() == 0 and tr0.numel() == len(groups)
    with pytest.raises(ValueError, match="at least 2"):
        split_by_group(["q"] * 5, 0.2)


def test_reuse_activations_and_probe_direction(tiny, fitted) -> None:
    recs = _records()
    x = capture_heads(tiny, [(r.prompt, r.answer) for r in recs], batch_size=32)
    again = fit_iti(tiny, recs, _cfg(k=3, alpha=5.0, seed=0), activations=x)
    assert again.heads == fitted.heads
    for k in fitted.vector.vectors:
        assert torch.allclose(again.vector.vectors[k], fitted.vector.vectors[k], atol=1e-6)
    probe = fit_iti(tiny, recs, _cfg(k=3, alpha=5.0, seed=0, direction="probe"), activations=x)
    assert probe.heads == fitted.heads and probe.vector.meta.extra["direction"] == "probe"
    with pytest.raises(ValueError, match="expected"):
        fit_iti(tiny, recs, ITIConfig(k=3), activations=x[:-1])


def test_bad_records_and_config(tiny) -> None:
    with pytest.raises(ValueError, match="both true"):
        fit_iti(tiny, [(q, " A: x", 1) for q in QUESTIONS])
    with pytest.raises(ValueError, match="larger than the number of heads"):
        fit_iti(tiny, _records(), ITIConfig(k=tiny.adapter.n_layers * tiny.adapter.n_heads + 1))
    with pytest.raises(ValueError, match="labels must be 0 or 1"):
        fit_iti(tiny, [("Q: a", " b", 2), ("Q: c", " d", 0)])
    with pytest.raises(ValueError, match="positive integer"):
        ITIConfig(k=0)
    with pytest.raises(ValueError, match="unknown direction"):
        ITIConfig(direction="mean")


def test_steers_generation_from_first_token(tiny, fitted) -> None:
    prompt = "Q: question number 3? A:"
    plain = sl.generate(tiny, prompt, max_new_tokens=6)
    steered = sl.generate(tiny, prompt, steer=fitted.steer(strength=40.0), max_new_tokens=6)
    assert steered.tokens[0][0] != plain.tokens[0][0]  # "generated" includes the last prompt token
    # the same as an explicit AddIntervention with where="generated"
    explicit = sl.generate(tiny, prompt, interventions=[AddIntervention([Steer(fitted.vector, 40.0, "generated")])],
                           max_new_tokens=6)
    assert explicit.tokens == steered.tokens


def _logits(lm, text: str, steer: Steer | None = None) -> torch.Tensor:
    enc = lm.encode([text])
    hm = HookManager(lm.model, lm.adapter)
    mask = enc["attention_mask"]
    if steer is not None:
        AddIntervention([steer]).install(hm, mask.sum(-1))
    hm.set_state(positions=torch.where(mask.bool(), mask.cumsum(-1) - 1, -1), prompt_lens=mask.sum(-1))
    with hm, torch.no_grad():
        return lm.model(**enc).logits


def test_answer_steers_start_at_answer(tiny, fitted) -> None:
    (s,) = answer_steers(fitted.vector, [5], strength=30.0)
    assert s.where == 5
    text = "Q: question number 1? A: yes"
    plain, steered = _logits(tiny, text), _logits(tiny, text, s)
    assert torch.allclose(plain[0, :5], steered[0, :5], atol=1e-6)
    assert not torch.allclose(plain[0, 5:], steered[0, 5:], atol=1e-3)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_fold_into_bias_equals_steering_everywhere_and_restores(family: str) -> None:
    lm = tiny_model(family)
    fit = fit_iti(lm, _records(), _cfg(k=3, alpha=10.0, seed=0))
    before = {k: v.clone() for k, v in lm.model.state_dict().items()}
    o_proj = lm.adapter.o_proj(lm.model, fit.vector.layers[0])
    had_bias = o_proj.bias is not None
    text = "Q: question number 2? A: yes"
    ref = _logits(lm, text, Steer(fit.vector, 1.0, "all"))
    with fold_into_bias(lm, fit.vector):
        folded = _logits(lm, text)
        assert o_proj.bias is not None
    assert torch.allclose(folded, ref, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(folded, _logits(lm, text), atol=1e-3)
    after = lm.model.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], before[k]) for k in before)  # bit-for-bit restored
    assert (o_proj.bias is not None) == had_bias
    # also restored when the block raises
    with pytest.raises(RuntimeError):
        with fold_into_bias(lm, fit.vector):
            raise RuntimeError("boom")
    assert all(torch.equal(lm.model.state_dict()[k], before[k]) for k in before)
    assert (o_proj.bias is not None) == had_bias


def test_fold_rejects_non_head_sites(tiny) -> None:
    a = tiny.adapter
    vec = sl.SteeringVector({"residual.1": torch.ones(a.hidden_size)},
                            sl.VectorMeta(architecture=a.family, hidden_size=a.hidden_size))
    with pytest.raises(ValueError, match="only heads sites"):
        with fold_into_bias(tiny, vec):
            pass


def test_reference_sigma_equals_a_plain_computation() -> None:
    """ITI's sigma from its own prompts: the std (ddof 0) of each head's last-token o_proj input on
    "Q: q A: a Q: q'" texts projected on the fitted direction, computed here with plain torch hooks; the
    vector's shift on a selected head is alpha * that sigma."""
    import numpy as np

    from steerlab.interventions.iti import reference_sigma_texts
    from steerlab.sites import Site, SiteKind, site_module
    from steerlab.testing import tiny_model

    lm = tiny_model("llama")
    qs = ["Is the sky blue?", "Can pigs fly?", "Is water wet?", "Do fish swim?"]
    records = [(f"Q: {q} A:", f" {a}", lab, q) for q in qs for a, lab in (("Yes.", 1), ("No.", 0), ("Maybe.", 0))]
    qa = [(q, a) for _, a, _, q in [(r[0], r[1], r[2], r[3]) for r in records]]
    texts = reference_sigma_texts(qa, seed=0)
    assert texts[0].startswith("Q: Is the sky blue? A: Yes. Q: ") and texts[0][len("Q: Is the sky blue? A: Yes. Q: "):] in qs
    assert reference_sigma_texts(qa, seed=0) == texts  # seeded
    fit = fit_iti(lm, records, ITIConfig(k=3, alpha=5.0, val_fraction=0.0), sigma_texts=texts)
    a = lm.adapter
    acts = np.zeros((len(texts), a.n_layers, a.n_heads, a.head_dim))
    for i, t in enumerate(texts):
        store = {}
        handles = []
        for layer in range(a.n_layers):
            module, _ = site_module(a, lm.model, Site(SiteKind.HEADS, layer))
            handles.append(module.register_forward_pre_hook(
                lambda m, args, layer=layer: store.__setitem__(layer, args[0][0, -1].double().numpy().copy())))
        try:
            with torch.no_grad():
                lm.model(torch.tensor([lm.tokenizer(t)["input_ids"]]))
        finally:
            for h in handles:
                h.remove()
        for layer in range(a.n_layers):
            acts[i, layer] = store[layer].reshape(a.n_heads, a.head_dim)
    proj = (acts * fit.directions.double().numpy()[None]).sum(-1)
    np.testing.assert_allclose(fit.sigma.numpy(), proj.std(0), rtol=1e-4, atol=1e-7)
    for layer, head in fit.heads:
        shift = fit.vector.vectors[f"heads.{layer}"].view(a.n_heads, a.head_dim)[head]
        assert float(shift.norm()) == pytest.approx(5.0 * float(fit.sigma[layer, head]), rel=1e-5)
    # the records' own spread is another number: the option matters
    on_records = fit_iti(lm, records, ITIConfig(k=3, alpha=5.0, val_fraction=0.0))
    assert not torch.allclose(on_records.sigma, fit.sigma)
    with pytest.raises(ValueError, match="^sigma_texts is empty"):
        fit_iti(lm, records, ITIConfig(k=3, val_fraction=0.0), sigma_texts=[])


def test_given_validation_groups_train_and_rank_the_probes(tiny) -> None:
    """val_groups: the probes are trained on the other groups' rows and ranked on these (ITI's split of the
    training fold), equal to fit_head_probes on those rows computed here."""
    from steerlab.probes import fit_head_probes

    records = _records()
    val_q = {QUESTIONS[1], QUESTIONS[4]}
    fit = fit_iti(tiny, records, _cfg(k=3, alpha=1.0), val_groups=val_q)
    is_val = [r.key in val_q for r in records]
    assert fit.val_idx.tolist() == [i for i, v in enumerate(is_val) if v]
    assert fit.train_idx.tolist() == [i for i, v in enumerate(is_val) if not v]
    x = capture_heads(tiny, [(r.prompt, r.answer) for r in records], 32)
    y = torch.tensor([r.label for r in records])
    plain = fit_head_probes(x, y, fit.train_idx, fit.val_idx, standardize=True)
    assert torch.equal(plain.val_acc, fit.probes.val_acc)
    assert fit.heads == plain.top_k(3)
    assert fit.vector.meta.extra["val_fraction"] == "given"
    with pytest.raises(ValueError, match="^every record is in val_groups"):
        fit_iti(tiny, records, _cfg(k=3), val_groups=set(QUESTIONS))


def test_harness_iti_probes_use_the_runners_split() -> None:
    """The harness ITI (probe_split="given") trains its probes on the training items only and ranks the
    heads on the validation items; "nested" draws its own split of both."""
    from steerlab.data.records import TruthfulQAMCItem
    from steerlab.methods import make_method

    lm = tiny_model("llama")
    items = [TruthfulQAMCItem(f"Is thing {i} true?", (f"Yes {i}.", f"No {i}."), (1, 0),
                              (f"Yes {i}.", f"Sure {i}.", f"No {i}."), (1, 1, 0)) for i in range(10)]
    given = make_method("iti", k=2, alpha=1.0, batch_size=32).fit(lm, items[:8], items[8:])
    assert given.info["probe_split"] == "given"
    assert (given.info["n_probe_train"], given.info["n_probe_val"]) == (8 * 3, 2 * 3)
    nested = make_method("iti", k=2, alpha=1.0, batch_size=32, probe_split="nested").fit(lm, items[:8], items[8:])
    assert nested.info["probe_split"] == "nested" and nested.info["n_probe_val"] == 2 * 3  # its own 20 %
    with pytest.raises(ValueError, match="^probe_split must be 'given' or 'nested', got 'x'$"):
        make_method("iti", probe_split="x")


def test_with_k_equals_a_fit_with_that_k(tiny) -> None:
    """A k / alpha sweep from one fit gives the vector a fit with that k and alpha gives."""
    big = fit_iti(tiny, _records(), _cfg(k=6, alpha=1.0, seed=0))
    small = fit_iti(tiny, _records(), _cfg(k=2, alpha=3.0, seed=0))
    swept = big.with_k(2, alpha=3.0, lm=tiny)
    assert swept.heads == small.heads and swept.config == small.config
    assert swept.vector.vectors.keys() == small.vector.vectors.keys()
    for key, v in small.vector.vectors.items():
        assert torch.allclose(swept.vector.vectors[key], v, atol=1e-6)
    assert swept.vector.meta.heads == small.vector.meta.heads
