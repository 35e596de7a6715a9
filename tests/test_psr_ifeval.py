"""PSR's IFEval setup (steerlab.psr_ifeval): instruction groups, training prompts worded by the checkers, the
checker as the triplet filter, and the evaluation run (which text is answered, which module steers it, the
checker's scores and the coherence reference)."""

from __future__ import annotations

import pytest

import steerlab.psr_ifeval as psr_ifeval
from steerlab.data.ifeval import load_ifeval_format
from steerlab.data.records import IFEvalPrompt
from steerlab.evals.coherence import CoherenceScorer
from steerlab.generate import GenerationOutput
from steerlab.psr_data import Sample
from steerlab.psr_ifeval import InstructionGroup, instruction_groups, instruction_triplets, run_ifeval, training_jobs

NO_COMMA = "In your entire response, refrain from the use of any commas."


def _p(key: int, iid: str, kwargs: dict, request: str = "Write a poem.", instruction: str = "") -> IFEvalPrompt:
    return IFEvalPrompt(key, f"{request} {instruction}".strip(), (iid,), (kwargs,), request)


def test_groups_of_the_format_subset(data_dir):
    groups = instruction_groups(load_ifeval_format(root=data_dir))
    assert len(groups) == 26 and sum(len(g.prompts) for g in groups) == 163
    by_id = {g.eval_id: g for g in groups}
    kn = by_id["language:response_language_kn"]
    assert kn.instruction_id == "language:response_language" and len(kn.prompts) == 2
    assert kn.kwargs == ({"language": "kn"},)
    assert len(by_id["detectable_format:number_highlighted_sections"].prompts) == 19
    assert [k["num_highlights"] for k in by_id["detectable_format:number_highlighted_sections"].kwargs] == \
        [15, 5, 3, 1, 2]
    assert sum(g.instruction_id == "language:response_language" for g in groups) == 14


def test_groups_refuse_what_the_setup_cannot_use():
    two = IFEvalPrompt(7, "x", ("punctuation:no_comma", "startend:quotation"), ({}, {}), "x")
    with pytest.raises(ValueError, match="prompt 7 has 2 instructions; PSR's IFEval setup takes single-instruction"):
        instruction_groups([two])
    with pytest.raises(ValueError, match="prompt 8 has no 'prompt_without_instruction'"):
        instruction_groups([IFEvalPrompt(8, "x", ("punctuation:no_comma",), ({},))])


def test_training_jobs_append_the_checker_wording_with_the_groups_parameters_cycled():
    g = InstructionGroup("detectable_format:number_bullet_lists", "detectable_format:number_bullet_lists",
                         (_p(1, "detectable_format:number_bullet_lists", {"num_bullets": 3}),
                          _p(2, "detectable_format:number_bullet_lists", {"num_bullets": 5}),
                          _p(3, "detectable_format:number_bullet_lists", {"num_bullets": 3})))
    assert g.kwargs == ({"num_bullets": 3}, {"num_bullets": 5})
    jobs = training_jobs(g, ["Plan a trip.", "Describe a cat.", "List fruits."], draws=2)
    assert [j.key for j in jobs[:3]] == ["pos:0:0:0", "pos:0:0:1", "pos:1:1:0"]
    assert jobs[0].question.startswith("Plan a trip. Your answer must contain exactly 3 bullet points.")
    assert jobs[2].question.startswith("Describe a cat. Your answer must contain exactly 5 bullet points.")
    assert jobs[4].instruction == 0 and jobs[0].system is None
    with pytest.raises(ValueError, match="draws must be an integer >= 1, got 0"):
        training_jobs(g, ["Plan a trip."], draws=0)


@pytest.mark.slow
def test_the_checker_filters_the_triplets(embedded):
    lm = embedded
    g = InstructionGroup("punctuation:no_comma", "punctuation:no_comma", (_p(1, "punctuation:no_comma", {}),))
    requests = ["Describe your morning.", "Describe a forest."]
    q = [f"{r} {NO_COMMA}" for r in requests]
    samples = [Sample("pos", 0, 0, 0, q[0], None, "I wake up early and drink a cup of tea before work."),
               Sample("pos", 1, 0, 0, q[1], None, "Tall trees, green moss, and quiet paths."),
               Sample("pos", 1, 0, 1, q[1], None, "trees trees trees trees trees trees trees trees trees trees"),
               Sample("pos", 0, 0, 1, q[0], None, "")]
    triplets, report = instruction_triplets(lm, g, requests, samples)
    # the comma fails the checker; the loop follows it but is degenerate; an empty answer follows nothing
    assert report.to_dict() == {"eval_id": "punctuation:no_comma", "n_samples": 4, "n_followed": 2, "n_kept": 1}
    (t,) = triplets
    assert t.context == lm.format_prompt("Describe your morning.", chat=True)
    assert t.steered_context == lm.format_prompt(q[0], chat=True)
    assert t.response == samples[0].response and t.score == 1.0


@pytest.mark.slow
def test_run_ifeval_answers_the_right_text_steered_by_the_groups_module(embedded, monkeypatch):
    lm = embedded
    prompts = [_p(1, "punctuation:no_comma", {}, "Describe a cat.", NO_COMMA),
               _p(2, "change_case:english_lowercase", {}, "Describe a dog.", "Use lowercase only."),
               _p(3, "punctuation:no_comma", {}, "Describe a bird.", NO_COMMA)]
    marker = object()
    calls = []
    replies = {"Describe a cat.": "A cat sleeps all day", "Describe a bird.": "A bird, small and loud.",
               "Describe a dog.": "the dog runs fast in the park and plays with a red ball every morning."}

    def fake_generate(lm_, formatted, *, max_new_tokens, interventions):
        calls.append((formatted, interventions, max_new_tokens))
        texts = [next(v for k, v in replies.items() if k in f) + "  " for f in formatted]
        return GenerationOutput(texts, [[] for _ in texts], list(formatted))

    class Module:
        def at(self, alpha):
            return (marker, alpha)

    module = Module()
    monkeypatch.setattr(psr_ifeval, "generate", fake_generate)
    run = run_ifeval(lm, prompts, with_instruction=False, alpha=1.5, max_new_tokens=9,
                     module_for=lambda p: module if p.instruction_ids[0] == "punctuation:no_comma" else None)
    # the two no-comma prompts share a batch steered by their module; the other goes unsteered
    cat_bird = [lm.format_prompt("Describe a cat.", chat=True), lm.format_prompt("Describe a bird.", chat=True)]
    assert calls[0] == (cat_bird, [(marker, 1.5)], 9)
    assert calls[1] == ([lm.format_prompt("Describe a dog.", chat=True)], [], 9)
    assert [r.prompt_strict for r in run.results] == [True, True, False]
    assert run.summary["prompt_level_strict_acc"] == pytest.approx(2 / 3)
    assert [r.response for r in run.results] == ["A cat sleeps all day", replies["Describe a dog."],
                                                 "A bird, small and loud."]
    ref = CoherenceScorer(lm, sep="").score(
        [lm.format_prompt(p.prompt_without_instruction, chat=True) for p in prompts], [r.response for r in run.results])
    assert run.per_prompt_coherence == pytest.approx([c.loglik for c in ref], abs=1e-5)
    assert run.coherence == pytest.approx(sum(c.loglik for c in ref) / 3, abs=1e-5)
    calls.clear()
    run_ifeval(lm, prompts[:1], with_instruction=True, max_new_tokens=9)
    assert calls == [([lm.format_prompt(f"Describe a cat. {NO_COMMA}", chat=True)], [], 9)]
