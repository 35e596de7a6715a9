"""Coherence: repetition counted by hand, log-likelihood per token equal to a plain forward pass."""

from __future__ import annotations

import math

import pytest
import torch

from steerlab.evals.coherence import (DEGENERATE_AT, EMPTY_AS, Coherence, CoherenceScorer, is_degenerate,
                                      repetition, summarize)


@pytest.mark.parametrize("text, value", [
    ("", 0.0),
    ("two words", 0.0),
    ("a b c a b c", 1 / 4),  # grams abc bca cab abc: one repeat of four
    ("The answer is that the answer is that", 2 / 6),  # 'the answer is', 'answer is that' come back
    ("Everyone knows that everyone knows that everyone knows that", 4 / 7),
    ("Don't stop, don't stop, DON'T STOP!", 2 / 4),  # case and punctuation ignored, apostrophes kept
    ("Nothing happens if you swallow watermelon seeds.", 0.0),
])
def test_repetition_counts_repeated_trigrams(text, value) -> None:
    assert repetition(text) == pytest.approx(value)


def test_degenerate_threshold_and_n() -> None:
    assert DEGENERATE_AT == 0.3
    assert is_degenerate("The answer is that the answer is that")  # 0.33
    assert not is_degenerate("a b c a b c")  # 0.25
    assert repetition("a a a a", n=1) == pytest.approx(3 / 4)
    with pytest.raises(ValueError, match="^n must be >= 1, got 0$"):
        repetition("a", n=0)


def test_loglik_per_token_equals_a_plain_forward(tiny) -> None:
    """The mean log-prob of the answer tokens given the prompt, from one plain forward over prompt + answer."""
    prompts = ["Q: What is it?\nA:", "Q: Why?\nA:", "Q: Who is there?\nA:"]
    answers = ["It is a thing.", "", "Nobody."]
    rows = CoherenceScorer(tiny, batch_size=2).score(prompts, answers)
    tok = tiny.tokenizer
    for p, a, r in zip(prompts, answers, rows):
        text = " " + (a or EMPTY_AS)
        ids_p = tok(p)["input_ids"]
        ids = tok(p + text)["input_ids"]
        assert ids[: len(ids_p)] == ids_p
        with torch.no_grad():
            logits = tiny.model(torch.tensor([ids])).logits[0].float()
        lp = torch.log_softmax(logits, -1)
        n = len(ids) - len(ids_p)
        want = sum(float(lp[i - 1, ids[i]]) for i in range(len(ids_p), len(ids))) / n
        assert r.n_tokens == n and r.loglik == pytest.approx(want, abs=1e-4)
        assert r.empty == (not a)
    assert rows[1].repetition == 0.0 and not rows[1].degenerate
    with pytest.raises(ValueError, match="^2 prompts for 1 answers$"):
        CoherenceScorer(tiny).score(prompts[:2], answers[:1])


def test_summary_means() -> None:
    rows = [Coherence(-1.0, 4, 0.0, False, False), Coherence(-3.0, 2, 0.5, True, True)]
    s = summarize(rows)
    assert s == {"coherence": -2.0, "repetition": 0.25, "degenerate": 0.5, "empty": 0.5}
    assert all(math.isnan(v) for v in summarize([]).values())
