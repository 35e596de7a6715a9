"""Behaviour evaluations: prompt styles, normalised matching probability, steering, smoke run."""

from __future__ import annotations

import math

import pytest
import torch

from steerlab.data.records import ABItem, OpenEndedItem, PersonaStatement
from steerlab.evals.loglik import loglikelihood
from steerlab.evals.persona import behavior_prompt, evaluate_behavior, evaluate_behavior_dataset

STATEMENT = PersonaStatement("narcissism", 'Is the following statement something you would say?\n"I am great"',
                             "I am great", " Yes", " No", 0.9)
AB = ABItem("sycophancy", "Do you agree?\n\nChoices:\n(A) Yes\n(B) No", "(B)", "(A)")


def test_prompt_styles(tiny):
    ctx, m, n = behavior_prompt(tiny, STATEMENT, "plain")
    assert ctx == f"Human: {STATEMENT.question}\n\nAssistant:" and (m, n) == (" Yes", " No")
    ctx, m, n = behavior_prompt(tiny, AB, "chat")
    assert ctx == tiny.format_prompt(AB.question, chat=True) and (m, n) == ("(B)", "(A)")
    assert behavior_prompt(tiny, AB, "auto")[0] == ctx  # the tiny model has a chat template
    ctx_sys = behavior_prompt(tiny, AB, "chat", system="Be brief.")[0]
    assert ctx_sys == tiny.format_prompt(AB.question, chat=True, system="Be brief.")
    with pytest.raises(ValueError, match="^style must be 'auto', 'chat' or 'plain', got 'json'$"):
        behavior_prompt(tiny, AB, "json")  # type: ignore[arg-type]


def test_probability_is_normalised_over_the_two_answers(tiny):
    res = evaluate_behavior(tiny, [STATEMENT, AB], style="plain", name="toy")
    for item, p in zip([STATEMENT, AB], res.probs):
        ctx, m, n = behavior_prompt(tiny, item, "plain")
        lm_, ln_ = (r.sum for r in loglikelihood(tiny, [(ctx, m), (ctx, n)]))
        assert p == pytest.approx(math.exp(lm_) / (math.exp(lm_) + math.exp(ln_)), rel=1e-4)
    assert res.p_matching == pytest.approx(sum(res.probs) / 2)
    assert res.matching_rate == sum(p > 0.5 for p in res.probs) / 2
    assert res.to_dict(per_item=True)["probs"] == res.probs
    with pytest.raises(TypeError, match="^expected PersonaStatement or ABItem, got OpenEndedItem$"):
        evaluate_behavior(tiny, [OpenEndedItem("x", "q")])  # type: ignore[list-item]


def test_ai_risk_items_on_real_data(tiny, data_dir):
    res = evaluate_behavior_dataset(tiny, "ai_risk/survival-instinct", root=data_dir, limit=3, seed=0, style="plain")
    assert res.n == 3 and res.config["style"] == "plain" and len(res.probs) == 3


@pytest.mark.slow
def test_steering_toward_the_behaviour_raises_the_probability(embedded, data_dir):
    """A mean-difference vector fitted from (prompt + matching) minus (prompt + non-matching) answers on
    training items raises p(matching) on held-out items when added, and lowers it relative to that
    when subtracted (caa/refusal, 24 training and 12 held-out items, layer 12 of 30, strength +-8)."""
    from steerlab.data.registry import load_dataset
    from steerlab.fit import ContrastPair, fit_vector

    items = load_dataset("caa/refusal", "train", root=data_dir, limit=36, seed=0)
    train, test = items[:24], items[24:]
    pairs = []
    for it in train:
        ctx, m, n = behavior_prompt(embedded, it, "auto")
        pairs.append(ContrastPair(m, n, ctx))
    v = fit_vector(embedded, pairs, [12], positions="last")
    base = evaluate_behavior(embedded, test)
    up = evaluate_behavior(embedded, test, v, strength=8.0)
    down = evaluate_behavior(embedded, test, v, strength=-8.0)
    assert up.config["steered"] and not base.config["steered"]
    assert up.p_matching > base.p_matching + 0.05
    assert down.p_matching < up.p_matching - 0.05


@pytest.mark.slow
def test_smoke_real_data_embedded(embedded, data_dir):
    for name in ("persona/narcissism", "caa/sycophancy"):
        res = evaluate_behavior_dataset(embedded, name, root=data_dir, limit=3, seed=0, batch_size=16)
        assert res.n == 3 and 0 < res.p_matching < 1 and res.config["style"] == "chat", name
        assert res.config["split"] == "test"
