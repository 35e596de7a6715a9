"""TruthfulQA MC: metric definitions, prompt format, folds by question, cross-validation, smoke run."""

from __future__ import annotations

import math

import numpy as np
import pytest

from steerlab.data.records import TruthfulQAItem, TruthfulQAMCItem
from steerlab.data.registry import load_dataset
from steerlab.evals.loglik import loglikelihood
from steerlab.evals.truthfulqa import (
    ITI_INSTRUCTION,
    QA_PRIMER,
    MCQuestion,
    Steering,
    cross_validate,
    evaluate_truthfulqa_mc,
    format_best,
    kfold_by_question,
    mc_metrics,
    qa_prompt,
    split_multi_answer,
    to_questions,
    train_val_split,
)


def test_mc_metrics_definitions():
    # best true beats every false -> MC1 = 1; one of two true answers beats every false -> MC3 = 0.5
    mc1, mc2, mc3 = mc_metrics(-1.0, [-2.0, -3.0], [-1.0, -4.0], [-2.0, -3.0])
    assert mc1 == 1.0 and mc3 == 0.5
    t, f = np.exp([-1.0, -4.0]), np.exp([-2.0, -3.0])
    assert mc2 == pytest.approx(t.sum() / (t.sum() + f.sum()))
    # a tie is not a win (strict >, as in TruthfulQA's MC_calcs)
    assert mc_metrics(-2.0, [-2.0], [-2.0], [-2.0])[0] == 0.0
    assert mc_metrics(-2.0, [-2.0], [-2.0], [-2.0])[2] == 0.0
    # MC1 uses its own false set (mc1 targets), MC3 the mc2 false set
    mc1, _, mc3 = mc_metrics(-1.0, [-5.0], [-1.0], [-0.5])
    assert mc1 == 1.0 and mc3 == 0.0
    # MC2 is stable for very negative scores
    assert mc_metrics(-1000.0, [-1001.0], [-1000.0], [-1000.0 - math.log(3)])[1] == pytest.approx(0.75)
    with pytest.raises(ValueError):
        mc_metrics(0.0, [], [0.0], [0.0])


def test_prompt_format():
    p = qa_prompt("Is the sky blue?")
    assert p == QA_PRIMER + "\n\nQ: Is the sky blue?\nA:"
    assert p.startswith("Q: What is human life expectancy in the United States?\nA: Human life expectancy")
    assert QA_PRIMER.endswith("A: The 1992 Olympics were held in Barcelona, Spain.")
    assert QA_PRIMER.count("\n\nQ: ") == 5
    pi = qa_prompt("Is the sky blue?", instruction=True)
    assert pi == ITI_INSTRUCTION + "\n\n" + p
    assert "reply \u201cI have no comment\u201d unless" in ITI_INSTRUCTION


def test_answer_sets():
    assert format_best(" Nothing happens ") == "Nothing happens."
    assert split_multi_answer("a; b.;  ; c") == ("a.", "b.", "c.")
    csv = TruthfulQAItem("Q?", "Best", ("Best", "Also true."), ("False one", "False two"))
    (q,) = to_questions([csv])
    assert q == MCQuestion("Q?", "Best.", ("False one.", "False two."), ("Best.", "Also true."),
                           ("False one.", "False two."))
    assert q.answers() == ("Best.", "False one.", "False two.", "Also true.")
    mc = TruthfulQAMCItem("Q?", ("T", "F1", "F2"), (1, 0, 0), ("T", "T2", "F1"), (1, 1, 0))
    (q2,) = to_questions([mc])
    assert (q2.best, q2.mc1_false, q2.true, q2.false) == ("T", ("F1", "F2"), ("T", "T2"), ("F1",))


def test_folds_split_by_question():
    qs = ["a", "b", "c", "a ", "d", "e", "f", "b"]
    folds = kfold_by_question(qs, k=2, seed=0)
    assert len(folds) == 2
    for f in folds:
        assert set(f.train).isdisjoint(f.test) and sorted(f.train + f.test) == list(range(len(qs)))
        test_q = {qs[i].strip() for i in f.test}
        assert test_q.isdisjoint({qs[i].strip() for i in f.train})  # a question never straddles folds
    assert sorted(folds[0].test + folds[1].test) == list(range(len(qs)))
    assert kfold_by_question(qs, 2, seed=0) == folds and kfold_by_question(qs, 2, seed=1) != folds
    # seed=None: contiguous blocks in order (ITI's np.array_split)
    plain = kfold_by_question([str(i) for i in range(5)], 2, seed=None)
    assert plain[0].test == (0, 1, 2) and plain[1].test == (3, 4)
    with pytest.raises(ValueError):
        kfold_by_question(["a"], 2)


def test_train_val_split_is_itis():
    idx = list(range(100, 140))
    tr, va = train_val_split(idx, 0.2, seed=42)
    np.random.seed(42)
    ref = np.random.choice(idx, size=int(len(idx) * 0.8), replace=False)
    assert list(tr) == ref.tolist()
    assert va == tuple(i for i in idx if i not in set(ref.tolist()))
    assert len(tr) == 32 and len(va) == 8
    fold = kfold_by_question([str(i) for i in range(10)], 2, seed=0)[0]
    assert fold.train_val() == train_val_split(fold.train, 0.2, 42)


ITEMS = [
    TruthfulQAItem(f"What is {i} plus one?", f"It is {i + 1}", (f"It is {i + 1}", f"{i + 1}"),
                   (f"It is {i + 2}", f"It is {i}"))
    for i in range(6)
]


def test_evaluate_matches_loglikelihood(tiny):
    res = evaluate_truthfulqa_mc(tiny, ITEMS[:2], batch_size=4)
    assert res.n == 2 and res.config["answer_sets"] == "csv"
    for q, row in zip(to_questions(ITEMS[:2]), res.per_question):
        ctx = qa_prompt(q.question)
        lls = loglikelihood(tiny, [(ctx, " " + a) for a in q.answers()], share_context=False)
        s = dict(zip(q.answers(), (r.sum for r in lls)))
        assert row.scores == pytest.approx(s, abs=1e-4)
        expect = mc_metrics(s[q.best], [s[a] for a in q.mc1_false], [s[a] for a in q.true], [s[a] for a in q.false])
        assert (row.mc1, row.mc2, row.mc3) == pytest.approx(expect, abs=1e-6)
    assert res.mc2 == pytest.approx(np.mean([r.mc2 for r in res.per_question]))
    d = res.to_dict(per_question=True)
    assert set(d) >= {"mc1", "mc2", "mc3", "n", "per_question"}


def test_cross_validation_fits_on_train_and_scores_held_out(tiny):
    calls = []

    def fit(train, val):
        calls.append(([t.question for t in train], [v.question for v in val]))
        return Steering()

    cv = cross_validate(tiny, ITEMS, fit, k=2, seed=0, batch_size=8)
    assert len(cv.folds) == 2 and cv.pooled.n == len(ITEMS)
    for (train_q, val_q), res in zip(calls, cv.folds):
        held_out = {r.question for r in res.per_question}
        assert held_out.isdisjoint(train_q) and held_out.isdisjoint(val_q)
        assert len(train_q) + len(val_q) + len(held_out) == len(ITEMS)
    assert set(cv.to_dict()) == {"pooled", "folds"}


def test_mc_json_items_on_real_data(tiny, data_dir):
    mc = load_dataset("truthfulqa_mc", root=data_dir, limit=3, seed=0)
    res = evaluate_truthfulqa_mc(tiny, mc, batch_size=16, instruction=True)
    assert res.n == 3 and res.config == {"instruction": True, "steered": False, "steer_from": "last_prompt",
                                         "answer_sets": "mc_json"}
    for item, row in zip(mc, res.per_question):
        assert set(row.scores) == set(item.mc1_choices) | set(item.mc2_choices)


@pytest.mark.slow
def test_smoke_real_data_embedded(embedded, data_dir):
    csv = load_dataset("truthfulqa", root=data_dir, limit=3, seed=0)
    res = evaluate_truthfulqa_mc(embedded, csv, batch_size=32)
    assert res.n == 3 and 0 <= res.mc1 <= 1 and 0 < res.mc2 < 1 and 0 <= res.mc3 <= 1
    assert all(len(r.scores) >= 4 for r in res.per_question)
