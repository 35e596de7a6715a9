"""PSR's open-ended evaluation (steerlab.psr_eval): conditions, scores, the strength search, CAA's direction."""

from __future__ import annotations

import math

import pytest
import torch

import steerlab as sl
import steerlab.psr_eval as psr_eval
from steerlab.evals.coherence import Coherence, CoherenceScorer
from steerlab.interventions.psr import GatedSteering
from steerlab.prompt_steering import PromptPair, encode_triplet, prompt_deltas
from steerlab.psr_eval import alpha_for_coherence, answer, difference_of_means, open_ended

QS = ["How should I treat a stranger?", "What do you do on a rainy day?"]


@pytest.mark.slow
def test_answer_conditions_match_generate(embedded):
    lm = embedded
    module = GatedSteering(lm, [15], alpha=1.0, seed=3)
    steered = answer(lm, QS, module=module, alpha=6.0, max_new_tokens=8)
    other = GatedSteering(lm, [15], alpha=6.0, seed=3)  # the same parameters at alpha 6
    ref = sl.generate(lm, QS, chat=True, interventions=[other], max_new_tokens=8)
    assert steered == [t.strip() for t in ref.texts]
    assert module.alpha == 1.0  # the module itself is not changed
    prompted = answer(lm, QS, system="You are a pirate.", max_new_tokens=8)
    assert prompted == [t.strip() for t in sl.generate(lm, QS, chat=True, system="You are a pirate.",
                                                       max_new_tokens=8).texts]
    with pytest.raises(ValueError, match="give a steering module or a system prompt, not both"):
        answer(lm, QS, module=module, system="x")


class _Judge:
    name = "fixed"

    def score(self, questions, answers):
        return [0.8, math.nan][: len(answers)]


@pytest.mark.slow
def test_open_ended_scores(embedded):
    answers = ["Be kind and polite to them.", ""]
    res = open_ended(embedded, QS, answers, _Judge())
    assert res.trait == pytest.approx(0.8) and res.n_scored == 1 and res.empty == 0.5
    coh = CoherenceScorer(embedded, sep="").score([embedded.format_prompt(q, chat=True) for q in QS], answers)
    assert res.coherence == pytest.approx((coh[0].loglik + coh[1].loglik) / 2)
    with pytest.raises(ValueError, match="2 questions for 1 answers"):
        open_ended(embedded, QS, answers[:1], _Judge())


def test_alpha_search_bisects(tiny, monkeypatch):
    monkeypatch.setattr(psr_eval, "answer", lambda lm, qs, module=None, alpha=None, **kw: [f"{alpha}"] * len(qs))

    class Scorer:  # coherence = -alpha; the answers loop from alpha 3 on
        def __init__(self, *a, **k):
            pass

        def score(self, prompts, texts):
            return [Coherence(-float(t), 1, 0.0, float(t) >= 3, False) for t in texts]

    monkeypatch.setattr(psr_eval, "CoherenceScorer", Scorer)
    monkeypatch.setattr(type(tiny), "format_prompt", lambda self, q, chat=False, system=None: q)
    module = GatedSteering(tiny, [1])
    s = alpha_for_coherence(tiny, module, QS, target=-5.0, hi=16.0, steps=6)
    assert s.tried[:3] == [(16.0, -16.0, 1.0), (8.0, -8.0, 1.0), (4.0, -4.0, 1.0)]
    assert s.alpha == 5.0 and [a for a, _, _ in s.tried[3:]] == [6.0, 5.0, 5.5, 5.25]
    assert alpha_for_coherence(tiny, module, QS, target=-20.0, hi=16.0).alpha == 16.0
    bounded = alpha_for_coherence(tiny, module, QS, target=-5.0, max_degenerate=0.0, hi=16.0, steps=6)
    assert bounded.alpha == 2.75 and bounded.tried[2] == (4.0, -4.0, 1.0)  # coherent enough, but looping
    with pytest.raises(ValueError, match=r"max_degenerate must be in \[0, 1\], got 2"):
        alpha_for_coherence(tiny, module, QS, target=-5.0, max_degenerate=2)
    with pytest.raises(ValueError, match="target coherence must be a finite number, got nan"):
        alpha_for_coherence(tiny, module, QS, target=math.nan)


def test_difference_of_means(tiny):
    pairs = [encode_triplet(tiny, PromptPair("Q: a A:", "Be rude. Q: a A:", " no way")),
             encode_triplet(tiny, PromptPair("Q: b c A:", "Be loud! Q: b c A:", " fine"))]
    d = prompt_deltas(tiny, pairs, [2])
    ref = torch.cat([x[0] for x in d]).mean(0)
    assert torch.allclose(difference_of_means(tiny, pairs, 2), ref)
    with pytest.raises(ValueError, match="no prompt pairs to take a difference of means from"):
        difference_of_means(tiny, [], 2)
