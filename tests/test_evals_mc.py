"""Six zero-shot multiple-choice tasks: prompt formats, accuracy definitions, smoke runs."""

from __future__ import annotations

import pytest

from steerlab.data.records import COPAItem, MMLUItem, NLIItem, SST2Item, StoryClozeItem, WinograndeItem
from steerlab.data.registry import load_dataset
from steerlab.evals.loglik import LoglikResult, loglikelihood
from steerlab.evals.multiple_choice import (
    MC_TASKS,
    MCPrompt,
    detokenize,
    evaluate_prompts,
    evaluate_task,
    format_copa,
    format_mmlu,
    format_snli,
    format_sst2,
    format_storycloze,
    format_winogrande,
    score_items,
    to_prompts,
)


def test_prompt_formats():
    copa = format_copa(COPAItem(0, "The man turned on the faucet.", "The toilet filled with water.",
                                "Water flowed from the spout.", "effect", 1))
    assert copa.options == (("The man turned on the faucet therefore", " the toilet filled with water."),
                            ("The man turned on the faucet therefore", " water flowed from the spout."))
    assert format_copa(COPAItem(1, "I fell.", "A", "B", "cause", 0)).options[0][0] == "I fell because"
    sc = format_storycloze(StoryClozeItem("id", ("A.", "B.", "C.", "D."), ("E1.", "E2."), 1))
    assert sc.options == (("A. B. C. D.", " E1."), ("A. B. C. D.", " E2.")) and sc.label == 1
    nli = format_snli(NLIItem("A man is at a church .", "He is n't outside .", 2))
    assert nli.options[0][0] == "A man is at a church.\nQuestion: He isn't outside. True, False or Neither?\nAnswer:"
    assert [o[1] for o in nli.options] == [" True", " Neither", " False"] and nli.label == 2
    mmlu = format_mmlu(MMLUItem("high_school_physics", "What is g?", ("1", "9.8", "3", "4"), 1))
    assert mmlu.options[0][0] == ("The following are multiple choice questions (with answers) about high school "
                                  "physics.\n\nWhat is g?\nA. 1\nB. 9.8\nC. 3\nD. 4\nAnswer:")
    assert [o[1] for o in mmlu.options] == [" A", " B", " C", " D"]
    sst = format_sst2(SST2Item("it 's a charming journey .", 1))
    assert sst.options == (("it's a charming journey.\nQuestion: Is this sentence positive or negative?\nAnswer:",
                            " negative"),
                           ("it's a charming journey.\nQuestion: Is this sentence positive or negative?\nAnswer:",
                            " positive"))
    wg = format_winogrande(WinograndeItem(("X so Sarah", "X so Maria"), "got the cases.", 0))
    assert wg.options == (("X so Sarah", " got the cases."), ("X so Maria", " got the cases."))
    assert detokenize("he said `` hi '' ( loudly ) , did n't he ?") == 'he said "hi" (loudly), didn\'t he?'
    with pytest.raises(ValueError):
        to_prompts("boolq", [])
    with pytest.raises(ValueError):
        MCPrompt((("a", " b"),), 0)


def test_real_items_format(data_dir):
    for task in MC_TASKS:
        items = load_dataset(task, root=data_dir, limit=5, seed=0)
        prompts = to_prompts(task, items)
        assert len(prompts) == 5
        for p in prompts:
            assert all(cont.startswith(" ") and ctx == ctx.rstrip() for ctx, cont in p.options)
            assert len(p.options) == {"snli": 3, "mmlu": 4}.get(task, 2)


def _r(s: float, n: int, chars: int) -> LoglikResult:
    return LoglikResult(s, n, chars, False)


def test_accuracy_definitions():
    p = MCPrompt.shared("ctx", (" short", " a much longer answer"), 1)
    # raw sum prefers the short option; per-token mean and per-char prefer the long one
    res = score_items([p], [[_r(-2.0, 1, 6), _r(-6.0, 4, 21)]], "t")
    assert (res.acc, res.acc_norm, res.acc_char) == (0.0, 1.0, 1.0)
    assert res.predictions[0] == {"label": 1, "pred": 0, "pred_norm": 1, "pred_char": 1,
                                  "loglik": [-2.0, -6.0], "n_tokens": [1, 4]}
    res2 = score_items([p, p], [[_r(-2.0, 1, 6), _r(-6.0, 4, 21)], [_r(-9.0, 1, 6), _r(-6.0, 4, 21)]])
    assert res2.acc == 0.5 and res2.n == 2


def test_evaluate_prompts_matches_loglikelihood(tiny):
    prompts = [MCPrompt.shared("The sky is", (" blue", " green", " very loud"), 0),
               MCPrompt((("Tom gave it to Ann so Tom", " was kind."), ("Tom gave it to Ann so Ann", " was kind.")), 1)]
    res = evaluate_prompts(tiny, prompts, task="toy")
    for p, pred in zip(prompts, res.predictions):
        lls = [r.sum for r in loglikelihood(tiny, list(p.options), share_context=False)]
        assert pred["loglik"] == pytest.approx(lls, abs=1e-4)
        assert pred["pred"] == max(range(len(lls)), key=lambda i: lls[i])
    assert res.to_dict()["task"] == "toy"


@pytest.mark.slow
def test_smoke_each_task_embedded(embedded, data_dir):
    for task in MC_TASKS:
        res = evaluate_task(embedded, task, root=data_dir, limit=3, seed=0, batch_size=16)
        assert res.n == 3 and 0 <= res.acc <= 1 and 0 <= res.acc_norm <= 1 and 0 <= res.acc_char <= 1, task
        assert res.config["limit"] == 3 and res.config["split"] in ("val", "test", "dev")
