"""Typed loaders on the real shared data: counts, fields, joins and format details."""

from __future__ import annotations

import pytest

from steerlab.data import DataNotFoundError
from steerlab.data.ifeval import load_ifeval_format, load_ifeval_requests
from steerlab.data.multiple_choice import (
    load_copa,
    load_mmlu,
    load_snli,
    load_sst2,
    load_storycloze,
    load_winogrande,
    mmlu_subjects,
)
from steerlab.data.persona import ai_risk_names, caa_behaviors, load_ai_risk, load_caa, load_persona, persona_traits
from steerlab.data.persona_vectors import load_persona_vectors, load_trait, persona_vector_traits
from steerlab.data.records import ABItem, NLI_LABELS, OpenEndedItem, PersonaStatement, TruthfulQAMCItem
from steerlab.data.truthfulqa import join_on_question, load_truthfulqa, load_truthfulqa_mc, split_answers


def test_truthfulqa_csv_and_mc(data_dir):
    rows = load_truthfulqa(root=data_dir)
    assert len(rows) == 817
    first = rows[0]
    assert first.question == "What happens to you if you eat watermelon seeds?"
    assert first.best_answer == "The watermelon seeds pass through your digestive system"
    assert first.correct_answers[0] == "Nothing happens" and "You die" in first.incorrect_answers
    assert first.type == "Adversarial" and first.category == "Misconceptions"
    mc = load_truthfulqa_mc(root=data_dir)
    assert len(mc) == 817 and len(load_truthfulqa_mc("v0", root=data_dir)) == 817
    assert isinstance(mc[0], TruthfulQAMCItem) and mc[0].mc1_labels.count(1) == 1
    assert mc[0].mc1_true == "Nothing in particular happens when you eat a pomegranate."
    # the orders differ, but a strip() join pairs all 817, and mc1's answer is the CSV best answer
    joined = list(join_on_question(rows, mc))
    assert len(joined) == 817
    assert sum(r.question != m.question for r, m in zip(rows, mc)) > 800
    assert all(r.best_answer.rstrip(".") == m.mc1_true.rstrip(".") for r, m in joined)
    assert split_answers(" a; b ;; c ") == ("a", "b", "c")


def test_multiple_choice_loaders(data_dir):
    copa = load_copa(root=data_dir)
    assert len(copa) == 100 and copa[0].question == "effect" and copa[0].label == 1
    assert len(load_copa("train", root=data_dir)) == 400
    sc = load_storycloze(root=data_dir)
    assert len(sc) == 1871 and len(sc[0].sentences) == 4 and sc[0].label in (0, 1)
    assert len(load_storycloze("val2018", root=data_dir)) == 1571
    snli = load_snli(root=data_dir)
    assert len(snli) == 9824 and NLI_LABELS[snli[0].label] == "neutral"
    assert snli[0].hypothesis == "The church has cracks in the ceiling ."
    subjects = mmlu_subjects(root=data_dir)
    assert len(subjects) == 57
    mmlu = load_mmlu(root=data_dir, subjects=["abstract_algebra"])
    assert len(mmlu) == 100 and mmlu[0].choices == ("0", "4", "2", "6") and mmlu[0].label == 1
    with pytest.raises(ValueError, match="unknown MMLU subject"):
        load_mmlu(root=data_dir, subjects=["astrology"])
    sst = load_sst2(root=data_dir)
    assert len(sst) == 872 and sst[0].sentence == "it 's a charming and often affecting journey ." and sst[0].label == 1
    assert len(load_sst2("senteval_test", root=data_dir)) == 1821
    wg = load_winogrande(root=data_dir)
    labels = [int(x) for x in (data_dir / "mc/winogrande/dev-labels.lst").read_text().split()]
    assert len(wg) == 1267 and [w.label + 1 for w in wg] == labels
    assert wg[0].context_options[1].endswith("so Maria") and wg[0].continuation == "always got the easier cases."


def test_mmlu_original_layout_and_winogrande_original_rows(tmp_path):
    root = tmp_path
    (root / "mc/mmlu/test").mkdir(parents=True)
    (root / "mc/mmlu/test/anatomy_test.csv").write_text('"What is 1+1?",1,2,3,4,B\n')
    items = load_mmlu(root=root)
    assert items[0].label == 1 and items[0].subject == "anatomy"
    (root / "mc/winogrande").mkdir(parents=True)
    (root / "mc/winogrande/dev_llmfoundry.jsonl").write_text(
        '{"sentence": "The cup fell because _ was slippery.", "option1": "it", "option2": "he", "answer": "1"}\n')
    (w,) = load_winogrande(root=root)
    assert w.context_options == ("The cup fell because it", "The cup fell because he")
    assert w.continuation == "was slippery." and w.label == 0


def test_persona_and_caa(data_dir):
    assert len(persona_traits(data_dir)) == 15 and len(ai_risk_names(data_dir)) == 16
    assert caa_behaviors(data_dir) == sorted(["sycophancy", "hallucination", "refusal", "myopic-reward",
                                               "survival-instinct", "corrigible-neutral-HHH", "coordinate-other-ais"])
    p = load_persona("narcissism", root=data_dir)
    assert len(p) == 1000 and isinstance(p[0], PersonaStatement)
    assert p[0].answer_matching == " Yes" and p[0].statement.startswith("I should be entitled")
    ab = load_ai_risk("survival-instinct", root=data_dir)
    assert len(ab) == 953 and ab[0].answer_matching == " (A)"
    caa = load_caa("sycophancy", root=data_dir)
    assert len(caa) == 50 and isinstance(caa[0], ABItem) and caa[0].answer_matching == "(B)"
    assert len(load_caa("refusal", "generate", root=data_dir)) == 408
    oe = load_caa("sycophancy", "open_ended", root=data_dir)
    assert len(oe) == 53 and isinstance(oe[0], OpenEndedItem)


def test_ifeval_and_persona_vectors(data_dir):
    ife = load_ifeval_format(root=data_dir)
    assert len(ife) == 163 and ife[0].instruction_ids == ("punctuation:no_comma",)
    kn = next(x for x in ife if x.key == 1108)
    assert kn.kwargs[0]["language"] == "kn" and kn.instruction_ids_for_eval == ("language:response_language_kn",)
    with pytest.raises(TypeError):
        kn.kwargs[0]["language"] = "en"  # records are read-only
    assert persona_vector_traits(root=data_dir) == ["apathetic", "evil", "hallucinating", "humorous", "impolite",
                                                    "optimistic", "sycophantic"]
    t = load_trait("evil", root=data_dir)
    assert len(t.instructions) == 5 and len(t.questions) == 20 and "{question}" in t.eval_prompt
    qs = load_persona_vectors("evil", "eval", root=data_dir)
    assert len(qs) == 20 and qs[0].instructions[0].pos.startswith("Your responses should demonstrate evil")
    assert set(q.question for q in qs).isdisjoint(t.questions)


def test_ifeval_requests_leave_out_the_eval_prompts(data_dir, tmp_path):
    ife = load_ifeval_format(root=data_dir)
    all_requests = load_ifeval_requests(root=data_dir)
    rest = load_ifeval_requests([p.key for p in ife], root=data_dir)
    assert len(all_requests) == 541 and len(rest) == 541 - 163
    assert rest[1] == "Write a resume for a fresh high school graduate who is seeking their first job."
    assert not {p.prompt_without_instruction for p in ife} & set(rest)
    with pytest.raises(DataNotFoundError, match="IFEval requests file not found"):
        load_ifeval_requests(root=tmp_path)
