"""Log-likelihood scoring: batched == one by one == manual log_softmax; steering only on the answer."""

from __future__ import annotations

import math

import pytest
import torch

from steerlab import Steer, SteeringVector
from steerlab.artifacts import VectorError
from steerlab.evals.loglik import encode_pair, loglikelihood, logsumexp
from steerlab.hooks import HookManager

PAIRS = [
    ("The cat sat on", " the mat"),
    ("The cat sat on", " a very small hat, slowly"),
    ("Q: What is the capital of France?\nA:", " Paris."),
    ("Hello", " world"),
    ("Q: What is the capital of France?\nA:", " Lyon, I believe."),
    ("A", " b c d e f g h i j k"),
]


def manual(lm, context: str, continuation: str, add_special_tokens: bool = True) -> float:
    """Sum of the continuation's token log-probs from one unpadded forward pass."""
    e = encode_pair(lm.tokenizer, context, continuation, add_special_tokens)
    ids = torch.tensor([e.ids], device=lm.device)
    with torch.no_grad():
        lp = lm.model(ids).logits.float().log_softmax(-1)[0]
    return sum(float(lp[t - 1, e.ids[t]]) for t in range(e.context_len, len(e.ids)))


def test_encode_pair_moves_trailing_space(tiny):
    a = encode_pair(tiny.tokenizer, "Answer: ", "yes")
    b = encode_pair(tiny.tokenizer, "Answer:", " yes")
    assert a == b and b.cont_len == 4 and b.n_chars == 4  # byte tokenizer: " yes" is 4 tokens
    e = encode_pair(tiny.tokenizer, "", "abc")  # empty context starts from BOS/EOS
    assert e.context_len == 1 and e.cont_len == 3
    with pytest.raises(ValueError, match="empty continuation"):
        encode_pair(tiny.tokenizer, "x", "")


@pytest.mark.parametrize("share", [False, True])
def test_batched_equals_one_by_one_and_manual_tiny(tiny, share):
    batched = loglikelihood(tiny, PAIRS, batch_size=4, share_context=share)
    single = [loglikelihood(tiny, [p], batch_size=1, share_context=False)[0] for p in PAIRS]
    for b, s, (c, x) in zip(batched, single, PAIRS):
        assert b.n_tokens == s.n_tokens
        assert b.sum == pytest.approx(s.sum, abs=1e-4)
        assert b.sum == pytest.approx(manual(tiny, c, x), abs=1e-4)
        assert b.mean == pytest.approx(b.sum / b.n_tokens)
        assert b.per_char == pytest.approx(b.sum / len(x))


@pytest.mark.slow
def test_batched_equals_one_by_one_and_manual_embedded(embedded):
    pairs = PAIRS[:4]
    plain = loglikelihood(embedded, pairs, batch_size=4, share_context=False)
    shared = loglikelihood(embedded, pairs, batch_size=4, share_context=True)
    for (c, x), p, s in zip(pairs, plain, shared):
        single = loglikelihood(embedded, [(c, x)], batch_size=1, share_context=False)[0]
        ref = manual(embedded, c, x)
        assert p.sum == pytest.approx(ref, abs=2e-3) and single.sum == pytest.approx(ref, abs=2e-3)
        assert s.sum == pytest.approx(ref, abs=2e-3)
    assert plain[2].is_greedy or plain[2].sum < 0  # a flag is computed; Paris is likely greedy


def _vec(lm, layer: int = 1, seed: int = 0, scale: float = 1.0) -> SteeringVector:
    g = torch.Generator().manual_seed(seed)
    return SteeringVector({f"residual.{layer}": torch.randn(lm.adapter.hidden_size, generator=g) * scale})


@pytest.mark.parametrize("share", [False, True])
def test_steering_acts_on_the_answer_only(tiny, share):
    pairs = [("Hello there", "!"), ("Hello there", " friend of mine")]  # "!" is one (byte) token
    base = loglikelihood(tiny, pairs, share_context=share)
    v = _vec(tiny, scale=5.0)
    last = loglikelihood(tiny, pairs, Steer(v, 3.0), share_context=share)
    ans = loglikelihood(tiny, pairs, v, strength=3.0, steer_from="answer", share_context=share)
    zero = loglikelihood(tiny, pairs, Steer(v, 0.0), share_context=share)
    assert all(math.isclose(a.sum, b.sum, abs_tol=1e-5) for a, b in zip(zero, base))
    # from the last prompt token: every answer token's prediction moves
    assert abs(last[0].sum - base[0].sum) > 1e-3 and abs(last[1].sum - base[1].sum) > 1e-3
    # answer positions only: a one-token answer's probability cannot move; a longer one does
    assert ans[0].sum == pytest.approx(base[0].sum, abs=1e-5)
    assert abs(ans[1].sum - base[1].sum) > 1e-3
    # hooks were removed: unsteered again equals the baseline
    again = loglikelihood(tiny, pairs, share_context=share)
    assert [a.sum for a in again] == pytest.approx([b.sum for b in base], abs=1e-6)


def test_steering_matches_a_manual_hooked_forward(tiny):
    """Steered score == a full forward with the vector added at positions >= context_len - 1."""
    c, x = "The cat sat on", " the mat"
    v = _vec(tiny, layer=2, seed=3, scale=4.0)
    e = encode_pair(tiny.tokenizer, c, x)
    ids = torch.tensor([e.ids])
    delta = v.vectors["residual.2"]

    def edit(h, site, state):
        h = h.clone()
        h[:, e.context_len - 1:] += delta
        return h

    hm = HookManager(tiny.model, tiny.adapter)
    hm.add(v.sites[0], edit)
    with torch.no_grad(), hm:
        lp = tiny.model(ids).logits.float().log_softmax(-1)[0]
    ref = sum(float(lp[t - 1, e.ids[t]]) for t in range(e.context_len, len(e.ids)))
    for share in (False, True):
        got = loglikelihood(tiny, [(c, x), ("Other context", " words")], v, share_context=share)[0].sum
        assert got == pytest.approx(ref, abs=1e-4)


def test_interventions_get_context_lengths(tiny):
    seen: list[list[int]] = []

    class Recorder:
        def install(self, hooks, prompt_lens):
            seen.append(prompt_lens.tolist())

    pairs = [("ab", " c"), ("abcd", " e")]
    base = loglikelihood(tiny, pairs)
    out = loglikelihood(tiny, pairs, interventions=[Recorder()], batch_size=2)
    assert sorted(seen[0]) == [2, 4]  # byte tokenizer: context lengths in tokens
    assert [o.sum for o in out] == pytest.approx([b.sum for b in base], abs=1e-5)
    with pytest.raises(ValueError, match="interventions"):
        loglikelihood(tiny, pairs, interventions=[Recorder()], share_context=True)


def test_bad_arguments(tiny):
    with pytest.raises(VectorError):
        loglikelihood(tiny, PAIRS[:1], SteeringVector({"residual.1": torch.ones(7)}))
    with pytest.raises(ValueError, match="^steer_from must be one of 'last_prompt', 'answer', 'second_answer', "
                                         "got 'everywhere'$"):
        loglikelihood(tiny, PAIRS[:1], steer_from="everywhere")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="batch_size"):
        loglikelihood(tiny, PAIRS[:1], batch_size=0)
    assert logsumexp([0.0, 0.0]) == pytest.approx(math.log(2))
    assert logsumexp([-math.inf]) == -math.inf


def test_progress_bar_counts_items(tiny, capsys):
    quiet = loglikelihood(tiny, PAIRS[:3])
    assert capsys.readouterr() == ("", "")
    scored = loglikelihood(tiny, PAIRS[:3], progress=True, label="scoring")
    out, err = capsys.readouterr()
    assert out == ""  # the bar is on stderr: piped output stays clean
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("scoring ") and " 3/3 " in lines[0]
    assert [o.sum for o in scored] == [q.sum for q in quiet]  # the bar changes nothing it reports on


@pytest.mark.parametrize("steer_from,offset", [("last_prompt", -1), ("answer", 0), ("second_answer", 1)])
@pytest.mark.parametrize("share", [False, True])
def test_steer_from_equals_a_plain_hooked_forward(tiny, steer_from, offset, share):
    """Each steer_from = a plain loop: one unpadded forward per pair with a torch hook adding the vector to block
    1's output from position context_len + offset on, then log_softmax of the answer tokens."""
    from steerlab.sites import Site, SiteKind, site_module

    g = torch.Generator().manual_seed(3)
    v = torch.randn(tiny.adapter.hidden_size, generator=g) * 4
    vec = SteeringVector({"residual.1": v})
    pairs = [("Q: is it?\nA:", " yes it is"), ("Q: is it?\nA:", " no, never"), ("Q: why?\nA:", " because of rain")]
    got = loglikelihood(tiny, pairs, vec, steer_from=steer_from, share_context=share, batch_size=2)
    module, _ = site_module(tiny.adapter, tiny.model, Site(SiteKind.RESIDUAL, 1))
    for (ctx, cont), res in zip(pairs, got):
        ids = list(tiny.tokenizer(ctx + cont)["input_ids"])
        n_ctx = len(tiny.tokenizer(ctx)["input_ids"])
        start = n_ctx + offset

        def add(mod, args, out, start=start):
            h = out[0] if isinstance(out, tuple) else out
            h = h.clone()
            h[:, start:] += v
            return (h, *out[1:]) if isinstance(out, tuple) else h

        handle = module.register_forward_hook(add)
        try:
            with torch.no_grad():
                logits = tiny.model(torch.tensor([ids])).logits[0].float()
        finally:
            handle.remove()
        logp = torch.log_softmax(logits, -1)
        ref = sum(float(logp[t - 1, ids[t]]) for t in range(n_ctx, len(ids)))
        assert res.sum == pytest.approx(ref, abs=1e-4), (steer_from, ctx, cont)
