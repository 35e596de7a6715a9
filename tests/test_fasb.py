"""FASB: the fast path (generate + monitor + rewind, two-token unsteered-cache steps) against plain loops
written from the reference code (``FASB_utils.py``: ``tqa_run_answers`` and ``tqa_run_probs``), on the
embedded model; then the options, ablations, the artifact and bad input."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Sequence

import pytest
import torch

import steerlab as sl
from steerlab.artifacts import VectorError
from steerlab.data.registry import load_dataset
from steerlab.evals.loglik import loglikelihood
from steerlab.evals.truthfulqa import qa_prompt
from steerlab.evals.truthfulqa_gen import generation_prompt
from steerlab.generate import eos_ids
from steerlab.backtrack import fasb_generate
from steerlab.interventions.fasb import FASBConfig, FASBFit, FASBSteering, LinearSignal, fit_fasb, load_fasb, save_fasb
from steerlab.methods.pairs import labelled_questions, probe_records
from steerlab.runtime import encode_pair
from steerlab.sites import Site

S = 5  # tokens to back up (the reference uses 10 with 50 new tokens; smaller here to keep the loops short)
N_NEW = 12


@pytest.fixture(scope="module")
def fit(embedded) -> FASBFit:
    """FASB fitted on 40 TruthfulQA questions (probes, 8 heads, mass-mean directions, sigma)."""
    items = load_dataset("truthfulqa_mc")[:40]
    records = probe_records(labelled_questions(embedded, items, style="short"))
    return fit_fasb(embedded, records, FASBConfig(k=8, alpha=30.0, threshold=0.4, s=S))


def _prompts(lo: int, hi: int) -> list[str]:
    return [generation_prompt(it.question) for it in load_dataset("truthfulqa_mc")[lo:hi]]


class Reference:
    """The reference's pieces, written with plain torch hooks on ``o_proj`` (no steerlab hooks or sites)."""

    def __init__(self, lm: sl.LoadedModel, fit: FASBFit) -> None:
        self.lm, self.cfg = lm, fit.config
        a = lm.adapter
        self.h, self.d = a.n_heads, a.head_dim
        pr, sig, u = fit.iti.probes, fit.iti.sigma, fit.iti.directions
        self.heads = [(int(l), int(h)) for l, h in fit.heads]
        self.w = [pr.weights[l, h].double() for l, h in self.heads]
        self.b = [float(pr.biases[l, h]) for l, h in self.heads]
        self.shift = [(sig[l, h] * u[l, h]).float() for l, h in self.heads]
        self.layers = sorted({l for l, _ in self.heads})

    def o_proj(self, layer: int) -> torch.nn.Module:
        return self.lm.model.model.layers[layer].self_attn.o_proj

    def forward(self, ids: Sequence[int], edit_from: int | None = None, pro: float = 0.0
                ) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """Logits ``(seq, vocab)`` and the o_proj inputs ``{layer: (seq, H*D)}``; with ``edit_from``: every head
        shifted by ``alpha * pro * sigma * u`` on positions ``>= edit_from`` (-1: the last position only)."""
        acts: dict[int, torch.Tensor] = {}
        handles = []
        for layer in self.layers:
            def hook(module, args, layer=layer):
                x = args[0]
                if edit_from is not None:
                    x = x.clone()
                    for (l, h), v in zip(self.heads, self.shift):
                        if l == layer:
                            sl_ = slice(h * self.d, (h + 1) * self.d)
                            rows = slice(x.shape[1] - 1, None) if edit_from == -1 else slice(edit_from, None)
                            x[0, rows, sl_] += (self.cfg.alpha * pro * v).to(x.dtype)
                acts[layer] = x[0].detach().float()
                return (x,) if edit_from is not None else None
            handles.append(self.o_proj(layer).register_forward_pre_hook(hook))
        try:
            with torch.no_grad():
                logits = self.lm.model(input_ids=torch.tensor([list(ids)])).logits[0]
        finally:
            for hd in handles:
                hd.remove()
        return logits, acts

    def p_true(self, acts: dict[int, torch.Tensor], pos: int) -> float:
        ps = [torch.sigmoid(acts[l][pos, h * self.d:(h + 1) * self.d].double() @ w + b)
              for (l, h), w, b in zip(self.heads, self.w, self.b)]
        return float(sum(ps) / len(ps))

    def generate(self, prompt_ids: Sequence[int], max_new: int) -> tuple[list[int], dict[str, Any] | None]:
        """``tqa_run_answers`` for one prompt: greedy, no KV cache, full recompute at every step."""
        eos = set(eos_ids(self.lm))
        s, thr = self.cfg.s, self.cfg.threshold
        ids, gen = list(prompt_ids), []
        fired, pro, event = False, 1.0, None
        for pos in range(max_new):
            logits, acts = self.forward(ids)
            nxt = int(logits[-1].argmax())
            ids.append(nxt)
            gen.append(nxt)
            if pos != max_new - 1 and nxt not in eos:
                if len(gen) < s:
                    continue
            p = self.p_true(acts, -1)
            if p < thr:
                fired, pro = True, 1 - p
                event = {"length": len(gen), "p_true": p}
                if len(gen) > s:
                    ids, gen = ids[:-s], gen[:-s]
                else:
                    ids, gen = list(prompt_ids), []
                event["kept"] = len(gen)
                break
            if nxt in eos:
                break
        if fired:
            for _ in range(max_new - len(gen)):
                logits, _ = self.forward(ids, edit_from=-1, pro=pro)
                nxt = int(logits[-1].argmax())
                ids.append(nxt)
                gen.append(nxt)
                if nxt in eos:
                    break
        cut = next((i for i, t in enumerate(gen) if t in eos), len(gen))
        return gen[:cut], event

    def mc_score(self, context: str, answer: str, steer_from_offset: int = 1) -> tuple[float, dict[str, Any] | None]:
        """``tqa_run_probs`` for one answer: an unsteered pass, the scan, and the re-scored pass if triggered."""
        enc = encode_pair(self.lm.tokenizer, context, answer)
        ids, c = list(enc.ids), enc.context_len
        s, thr = self.cfg.s, self.cfg.threshold
        start = c + steer_from_offset
        logits, acts = self.forward(ids)
        trig = None
        num_gen = 0
        for pos in range(start, len(ids)):
            if pos != len(ids) - 1 and num_gen < s:
                num_gen += 1
                continue
            p = self.p_true(acts, pos)
            if p < thr:
                edit = pos - s if pos - s > start else start
                trig = {"position": pos, "p_true": p, "edit_start": edit}
                logits, _ = self.forward(ids, edit_from=edit, pro=1 - p)
                break
        lp = torch.log_softmax(logits.double(), -1)
        total = float(sum(lp[i - 1, ids[i]] for i in range(c, len(ids))))
        return total, trig


def test_generation_is_token_identical_to_the_reference_loop(embedded, fit) -> None:
    """Batched, rows that back up and rows that do not; one fires at the last allowed step (kept > 0)."""
    ref = Reference(embedded, fit)
    prompts = _prompts(100, 108)
    steering = fit.steering(embedded)
    out = fasb_generate(embedded, prompts, steering, max_new_tokens=N_NEW)
    lengths = []
    for r, p in enumerate(prompts):
        toks, event = ref.generate(embedded.encode([p])["input_ids"][0].tolist(), N_NEW)
        assert out.tokens[r] == toks, r
        ev = out.events[r]
        assert bool(ev) == (event is not None), r
        if event is not None:
            assert (ev[0].length, ev[0].kept) == (event["length"], event["kept"])
            assert ev[0].p_true == pytest.approx(event["p_true"], abs=1e-5)
            assert ev[0].strength == pytest.approx(30.0 * (1 - event["p_true"]), abs=1e-4)
            lengths.append(event["length"])
    assert 0 < sum(out.backtracked) < len(prompts)  # some rows back up, some do not
    assert N_NEW in lengths and any(n < N_NEW for n in lengths)  # one at the last step, one before
    # a backed-up row regenerates different tokens from the ones it dropped
    assert any(e[0].dropped != tuple(t[e[0].kept:e[0].kept + len(e[0].dropped)]) for e, t in zip(out.events, out.tokens) if e)


def test_generation_fires_at_eos_before_s_tokens(embedded, fit) -> None:
    """A short chat answer ends (EOS) before s tokens exist: the forced check fires and every token is dropped;
    a long row in the same batch fires at exactly s tokens (all dropped too)."""
    ref = Reference(embedded, fit)
    chat = embedded.format_prompt("What is 2+2? Answer with a number only.", chat=True)
    prompts = [chat, _prompts(100, 101)[0]]
    steering = fit.steering(embedded, threshold=0.95, s=10)
    ref.cfg = steering.config
    out = fasb_generate(embedded, prompts, steering, max_new_tokens=N_NEW)
    for r, p in enumerate(prompts):
        toks, event = ref.generate(embedded.encode([p])["input_ids"][0].tolist(), N_NEW)
        assert out.tokens[r] == toks, r
        assert event is not None and out.events[r][0].kept == 0 == event["kept"]
    e0, e1 = out.events[0][0], out.events[1][0]
    assert e0.length < 10 and e0.length == len(e0.dropped)  # at EOS, before s tokens (EOS counted)
    assert e1.length == 10 and len(e1.dropped) == 10


def test_cached_semantics_differs_from_the_reference(embedded, fit) -> None:
    prompts = _prompts(100, 108)
    ref = fasb_generate(embedded, prompts, fit.steering(embedded), max_new_tokens=N_NEW)
    cached = fasb_generate(embedded, prompts, fit.steering(embedded, semantics="cached"), max_new_tokens=N_NEW)
    # the decisions are made on the same unsteered text, so the events agree; the regenerated tokens may not
    assert [[(e.length, e.kept) for e in ev] for ev in ref.events] == [[(e.length, e.kept) for e in ev]
                                                                        for ev in cached.events]
    assert any(ev for ev in ref.events)
    assert ref.tokens != cached.tokens  # the steered rows' cached keys/values change what follows


def test_mc_scoring_equals_the_reference_loop(embedded, fit) -> None:
    ref = Reference(embedded, fit)
    steering = fit.steering(embedded, threshold=0.45, s=3)
    ref.cfg = steering.config
    items = load_dataset("truthfulqa_mc")[200:203]
    pairs = []
    for it in items:
        ctx = qa_prompt(it.question, True)
        pairs += [(ctx, " " + a) for a in it.mc2_choices[:4]]
    res = loglikelihood(embedded, pairs, adaptive=steering, steer_from="second_answer", batch_size=4)
    # the full-sequence path (no shared prefix cache) gives the same decisions and scores
    full = loglikelihood(embedded, pairs, adaptive=steering, steer_from="second_answer", batch_size=4,
                         share_context=False)
    def decisions(rs):
        return [None if r.trigger is None else (r.trigger.position, r.trigger.edit_start) for r in rs]

    assert decisions(res) == decisions(full)
    assert [r.trigger.p_true for r in res if r.trigger] == pytest.approx([r.trigger.p_true for r in full if r.trigger],
                                                                         abs=1e-5)
    assert [r.sum for r in res] == pytest.approx([r.sum for r in full], abs=2e-3)
    n_trig = 0
    for (ctx, ans), r in zip(pairs, res):
        total, trig = ref.mc_score(ctx, ans)
        assert r.sum == pytest.approx(total, abs=2e-3)
        assert (r.trigger is None) == (trig is None)
        if trig is not None:
            n_trig += 1
            assert (r.trigger.position, r.trigger.edit_start) == (trig["position"], trig["edit_start"])
            assert r.trigger.strength == pytest.approx(30.0 * (1 - trig["p_true"]), abs=1e-4)
    assert 0 < n_trig < len(pairs)
    plain = loglikelihood(embedded, pairs, batch_size=4)
    assert all((a.trigger is None) == (abs(a.sum - b.sum) < 1e-3) for a, b in zip(res, plain))


# ---------------------------------------------------------------------------------------------------------------
# options and ablations, on a tiny model with a scripted signal


class ScriptedSignal:
    """p_true per call from ``values[call][row]`` (1.0 once the script runs out): FASB's decisions made
    predictable. Reads one residual site so that the monitor hooks something."""

    def __init__(self, values: Sequence[Sequence[float]]) -> None:
        self.values, self.calls = [list(v) for v in values], 0
        self.sites = [Site.residual(1)]

    def p_true(self, acts: Any) -> torch.Tensor:
        b = acts[self.sites[0].key].shape[0]
        row = self.values[self.calls] if self.calls < len(self.values) else [1.0] * b
        self.calls += 1
        return torch.tensor(row[:b], dtype=torch.float32)


def _tiny_lm() -> sl.LoadedModel:
    from steerlab.testing import tiny_model

    lm = tiny_model("llama")
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in lm.model.parameters():
            if p.ndim == 2:
                p.normal_(0, 0.3, generator=g)
    return lm


@pytest.fixture(scope="module")
def tiny_lm() -> sl.LoadedModel:
    return _tiny_lm()


def _shift(lm: sl.LoadedModel) -> sl.SteeringVector:
    a = lm.adapter
    v = torch.randn(a.hidden_size, generator=torch.Generator().manual_seed(0))
    meta = sl.VectorMeta(model_name=lm.name, architecture=a.family, hidden_size=a.hidden_size, n_layers=a.n_layers)
    return sl.SteeringVector({"residual.2": v / v.norm()}, meta)


TINY = ["abc", "hello world, again", "x"]


def _run(lm: sl.LoadedModel, values: Sequence[Sequence[float]], n: int = 10, **cfg: Any):
    steering = FASBSteering(ScriptedSignal(values), _shift(lm), FASBConfig(**{"alpha": 8.0, "threshold": 0.5,
                                                                              "s": 3, **cfg}))
    return fasb_generate(lm, TINY, steering, max_new_tokens=n), steering


def test_decisions_follow_the_reference_rules(tiny_lm) -> None:
    plain = sl.generate(tiny_lm, TINY, max_new_tokens=10)
    # checks from the 3rd token on (call index 2); row 0 fires at 4 tokens, row 1 never, row 2 at 3 tokens
    out, _ = _run(tiny_lm, [[1, 1, 1]] * 2 + [[0.9, 0.9, 0.2], [0.3, 0.9, 0.9]])
    e0, e2 = out.events[0][0], out.events[2][0]
    assert (e0.length, e0.kept, e0.kind) == (4, 1, "backtrack") and e0.strength == pytest.approx(8.0 * 0.7)
    assert (e2.length, e2.kept, e2.dropped) == (3, 0, tuple(plain.tokens[2][:3]))
    assert out.events[1] == [] and out.tokens[1] == plain.tokens[1]
    assert out.tokens[0][:1] == plain.tokens[0][:1]
    assert [len(t) for t in out.tokens] == [10, 10, 10]  # the budget counts kept + regenerated tokens
    assert out.backtracked == [True, False, True]


def test_ablations_and_options(tiny_lm) -> None:
    plain = sl.generate(tiny_lm, TINY, max_new_tokens=10)
    fire = [[1, 1, 1]] * 2 + [[0.2, 0.9, 0.9]]
    out, _ = _run(tiny_lm, fire, backtrack=False)
    e = out.events[0][0]
    assert (e.kind, e.kept, e.dropped) == ("steer", 3, ()) and out.tokens[0][:3] == plain.tokens[0][:3]
    out, _ = _run(tiny_lm, fire, adaptive=False)
    assert out.events[0][0].strength == 8.0
    # question-only: decided on the first reading (the prompt's last token); the first token is chosen again
    out, _ = _run(tiny_lm, [[0.2, 0.9, 0.4]], detect="question")
    assert [[(e.kind, e.length, e.kept) for e in ev] for ev in out.events] == [[("question", 1, 0)], [],
                                                                                [("question", 1, 0)]]
    assert out.events[2][0].strength == pytest.approx(8.0 * 0.6)
    # several backtracks with monitoring after the first (s tokens after it at the earliest)
    many = [[1, 1, 1]] * 2 + [[0.2, 1, 1]] + [[1, 1, 1]] * 2 + [[0.1, 1, 1]]
    out, _ = _run(tiny_lm, many, n=12, max_backtracks=2, monitor_after=True)
    assert [(e.length, e.kept) for e in out.events[0]] == [(3, 0), (3, 0)]
    out, _ = _run(tiny_lm, [[1, 1, 1]] * 2 + [[0.2, 1, 1]] + [[0.6, 1, 1]] * 3, n=12, monitor_after=True,
                  reestimate=True)
    assert [e.kind for e in out.events[0]][:2] == ["backtrack", "reestimate"]
    assert out.events[0][1].strength == pytest.approx(8.0 * 0.4)


def test_always_steer_is_iti_in_both_semantics(tiny_lm) -> None:
    """detect='always' (the "all fixed" ablation) steers every generated token with alpha: plain generate with the
    vector, under the same cache semantics."""
    shift = _shift(tiny_lm)
    for semantics, kv in (("reference", "unsteered"), ("cached", "steered")):
        out, _ = _run(tiny_lm, [], detect="always", semantics=semantics)
        iti = sl.generate(tiny_lm, TINY, shift, strength=8.0, where="generated", max_new_tokens=10, kv_cache=kv)
        assert out.tokens == iti.tokens, semantics


def test_linear_signal_with_a_residual_vector(tiny_lm) -> None:
    """The mechanism with a residual probe and a residual (CAA-style) vector instead of ITI heads."""
    site = Site.residual(1)
    w = torch.zeros(tiny_lm.adapter.hidden_size)
    signal = LinearSignal(site, w, bias=-1.0)  # p_true = sigmoid(-1) = 0.269 everywhere: fires at the first check
    out = fasb_generate(tiny_lm, TINY, FASBSteering(signal, _shift(tiny_lm), FASBConfig(alpha=4.0, s=2)),
                        max_new_tokens=6)
    assert all(ev[0].length == 2 and ev[0].p_true == pytest.approx(0.2689, abs=1e-4) for ev in out.events)


def test_config_errors() -> None:
    with pytest.raises(ValueError, match=r"threshold must be in \(0, 1\), got 1.5"):
        FASBConfig(threshold=1.5)
    with pytest.raises(ValueError, match=r"threshold must be in \(0, 1\), got 0"):
        FASBConfig(threshold=0)
    with pytest.raises(ValueError, match=r"s \(tokens to back up\) must be an integer >= 1, got 0"):
        FASBConfig(s=0)
    with pytest.raises(ValueError, match="semantics must be one of reference, cached, got 'x'"):
        FASBConfig(semantics="x")
    with pytest.raises(ValueError, match="max_backtracks > 1 needs monitor_after=True"):
        FASBConfig(max_backtracks=2)


def _tiny_records() -> list[tuple[str, str, int, str]]:
    out = []
    for i in range(12):
        q = f"Q: question {i} A:"
        out += [(q, f" true answer {i}", 1, q), (q, f" false reply {i % 3}", 0, q)]
    return out


def test_artifact_round_trip_and_other_model(tiny_lm, tmp_path) -> None:
    fit = fit_fasb(tiny_lm, _tiny_records(), FASBConfig(k=3, alpha=5.0, threshold=0.55, s=4))
    path = save_fasb(fit, tmp_path / "f.safetensors", {"records": 24})
    back = load_fasb(path, tiny_lm)
    assert back.config == fit.config and back.heads == fit.heads
    assert torch.equal(back.iti.sigma, fit.iti.sigma) and torch.equal(back.iti.probes.weights, fit.iti.probes.weights)
    a = fasb_generate(tiny_lm, TINY, fit, max_new_tokens=8)
    b = fasb_generate(tiny_lm, TINY, back, max_new_tokens=8)
    assert a.tokens == b.tokens and [[e.to_dict() for e in ev] for ev in a.events] == [[e.to_dict() for e in ev]
                                                                                       for ev in b.events]
    from steerlab.testing import tiny_model

    with pytest.raises(VectorError, match=r"fasb artifact was made for another model: a llama model \('tiny-llama'\), "
                                          r"not this qwen2 model \('tiny-qwen2'\)"):
        load_fasb(path, tiny_model("qwen2"))
    with pytest.raises(ValueError, match=r"k=99 is larger than the number of heads \(4 x 4 = 16\)"):
        fit_fasb(tiny_lm, _tiny_records(), FASBConfig(k=99))


def test_stop_strings_keep_the_cut_text_of_a_full_run(embedded, fit) -> None:
    """Ending rows at "Q:" (once no backtrack can reach it) gives the texts of the full-budget run, cut there."""
    prompts = _prompts(100, 108)
    steering = fit.steering(embedded, s=4)
    full = fasb_generate(embedded, prompts, steering, max_new_tokens=30)
    fast = fasb_generate(embedded, prompts, steering, max_new_tokens=30, stop="Q:")
    assert fast.texts == [t.split("Q:")[0] for t in full.texts]
    assert sum(len(t) for t in fast.tokens) < sum(len(t) for t in full.tokens)
    assert any(fast.backtracked)


def test_fit_linear_signal_matches_scikit_learn(tiny_lm) -> None:
    """The residual-stream probe: scikit-learn's LogisticRegression(C=1) on the same activations."""
    from sklearn.linear_model import LogisticRegression

    from steerlab.capture import capture
    from steerlab.interventions.fasb import fit_linear_signal

    recs = _tiny_records()
    signal = fit_linear_signal(tiny_lm, recs, "residual.2")
    x = capture(tiny_lm, [(p, a) for p, a, _, _ in recs], ["residual.2"], positions="last").acts["residual.2"]
    y = [label for _, _, label, _ in recs]
    ref = LogisticRegression(C=1.0, max_iter=5000, tol=1e-10).fit(x.double().numpy(), y)
    p_ref = torch.tensor(ref.predict_proba(x.double().numpy())[:, 1], dtype=torch.float32)
    assert torch.allclose(signal.p_true({"residual.2": x}), p_ref, atol=1e-4)
    assert signal.sites == [Site.residual(2)]
