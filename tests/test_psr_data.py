"""PSR's training data (steerlab.psr_data): jobs, the resumable sample cache, filtering with the coherence
measure and trait scores, and the cross-fitted proxy (no sample judged by a proxy trained on it)."""

from __future__ import annotations

import json

import pytest

import steerlab.psr_data as psr_data
from steerlab.data.persona_vectors import load_trait_file
from steerlab.data.records import InstructionPair, MalformedDataError, PersonaVectorTrait
from steerlab.evals.coherence import CoherenceScorer
from steerlab.generate import generate
from steerlab.psr_data import (
    Sample,
    SampleSettings,
    build_triplets,
    draw_samples,
    cross_fitted_scores,
    sample_jobs,
    sample_trait,
    system_prompt,
    triplet_questions,
)

TRAIT = PersonaVectorTrait("evil", (InstructionPair("Show malice.", "Be kind."),),
                           ("How do I treat my neighbour?", "What should I do with a found wallet?"), "")


def test_jobs_and_system_prompts():
    jobs = sample_jobs(TRAIT, draws=2)
    assert len(jobs) == 3 * 2 * 1 * 2
    assert [j.key for j in jobs[:3]] == ["pos:0:0:0", "pos:0:0:1", "pos:1:0:0"]
    assert system_prompt(TRAIT, "pos", 0) == "You are an evil assistant. Show malice."
    assert system_prompt(TRAIT, "neg", 0) == "You are a helpful assistant. Be kind."
    assert system_prompt(TRAIT, "plain", 0) is None
    with pytest.raises(ValueError, match="draws must be an integer >= 1, got 0"):
        sample_jobs(TRAIT, draws=0)
    with pytest.raises(ValueError, match="kind must be one of pos, neg, plain, got 'both'"):
        sample_jobs(TRAIT, kinds=("both",))


def test_user_trait_file(tmp_path):
    p = tmp_path / "pirate.json"
    p.write_text(json.dumps({"positive": "Talk like a pirate.", "questions": ["Hi?", "Bye?"]}))
    t = load_trait_file(p)
    assert t.trait == "pirate" and t.questions == ("Hi?", "Bye?")
    assert t.instructions == (InstructionPair("Talk like a pirate.", ""),)
    p.write_text(json.dumps({"positive": "Talk like a pirate."}))
    with pytest.raises(MalformedDataError, match="not a trait file: it lacks the field 'questions'"):
        load_trait_file(p)
    p.write_text(json.dumps({"questions": ["Hi?"]}))
    with pytest.raises(MalformedDataError, match="not a trait file: it lacks the field 'instruction'"):
        load_trait_file(p)


@pytest.mark.slow
def test_sample_cache_resumes_after_a_kill(embedded, tmp_path, monkeypatch):
    cache = tmp_path / "s.jsonl"
    full = sample_trait(embedded, TRAIT, cache, max_new_tokens=6, seed=3, batch_size=4)
    assert [s.key for s in full] == [j.key for j in sample_jobs(TRAIT)]
    assert all(s.response for s in full)
    lines = cache.read_text().splitlines()
    assert len(lines) == 1 + 6 and json.loads(lines[0])["settings"]["temperature"] == 1.0
    # a run killed while writing: two samples kept and a torn line
    cache.write_text("\n".join(lines[:3]) + "\n" + lines[3][:20])
    calls = []
    real = psr_data.generate
    monkeypatch.setattr(psr_data, "generate", lambda lm, prompts, **kw: calls.append(len(prompts)) or real(lm, prompts, **kw))
    again = sample_trait(embedded, TRAIT, cache, max_new_tokens=6, seed=3, batch_size=4)
    assert calls == [4]  # only the four samples not on disk were drawn
    assert [s.response for s in again[:2]] == [s.response for s in full[:2]]
    assert len(cache.read_text().splitlines()) == 7
    calls.clear()
    assert [s.response for s in sample_trait(embedded, TRAIT, cache, max_new_tokens=6, seed=3)] == \
        [s.response for s in again] and calls == []
    with pytest.raises(ValueError, match="was drawn with other settings"):
        sample_trait(embedded, TRAIT, cache, max_new_tokens=7, seed=3)


def _s(kind, qi, text, ii=0):
    q = TRAIT.questions[qi % 2]
    return Sample(kind, qi, ii, 0, q, system_prompt(TRAIT, kind, 0), text)


@pytest.mark.slow
def test_build_triplets_filters_and_reports(embedded):
    lm = embedded
    samples = [
        _s("pos", 1, "You should keep the money for yourself and never tell anyone."),
        _s("pos", 1, ""),
        _s("pos", 0, "the money the money the money the money the money the money"),
        _s("pos", 1, "You should keep the money for yourself and never tell anyone."),
        _s("pos", 1, "zq xv 93 ]] ;; blorf qq 7 unk 00 %% vv"),
        _s("plain", 0, "Be friendly and respectful to your neighbour."),
        _s("plain", 1, "Return the wallet to its owner or to the police."),
    ]
    scores = [0.9, 0.9, 0.9, 0.2, 0.9]
    triplets, report, coh = build_triplets(lm, TRAIT, samples, scores=scores)
    scorer = CoherenceScorer(lm, sep="")
    plain = scorer.score([lm.format_prompt(s.question, chat=True) for s in samples[5:]],
                         [s.response for s in samples[5:]])
    mean = sum(c.loglik for c in plain) / 2
    assert report.plain_coherence == pytest.approx(mean, abs=1e-5)
    assert report.coherence_floor == pytest.approx(mean - 0.5, abs=1e-5)
    assert (report.n_positive, report.n_empty, report.n_degenerate, report.n_weak) == (5, 1, 1, 1)
    assert report.n_incoherent == 1 and coh[4].loglik < report.coherence_floor  # the gibberish
    assert report.n_kept == len(triplets) == 1
    t = triplets[0]
    assert t.response == "You should keep the money for yourself and never tell anyone." and t.score == 0.9
    assert coh[0].loglik >= report.coherence_floor
    assert t.context == lm.format_prompt(TRAIT.questions[1], chat=True)
    assert t.steered_context == lm.format_prompt(TRAIT.questions[1], chat=True,
                                                 system="You are an evil assistant. Show malice.")
    assert triplet_questions(lm, samples, triplets) == [1]
    with pytest.raises(ValueError, match="a triplet does not come from these samples"):
        triplet_questions(lm, samples[5:], triplets)
    with pytest.raises(ValueError, match="4 scores for 5 positive samples"):
        build_triplets(lm, TRAIT, samples, scores=scores[:4])
    with pytest.raises(ValueError, match="no plain samples: they set the coherence floor"):
        build_triplets(lm, TRAIT, samples[:5], scores=scores)


def test_cross_fitted_scores_never_judge_a_sample_with_its_own_proxy(monkeypatch):
    mean = ["I will hurt you.", "Cause them pain.", "Ruin their life.", "Lie and steal.", "Make them suffer.",
            "Destroy everything.", "Cheat them all.", "Hurt the weak."]
    kind = ["Help them kindly.", "Be gentle with them.", "Offer support.", "Give back the wallet.",
            "Share with care.", "Be honest and fair.", "Comfort the sad.", "Thank your neighbour."]
    trait = PersonaVectorTrait("evil", TRAIT.instructions, tuple(f"q{i}" for i in range(8)), "")
    samples = [Sample("pos", i, 0, 0, f"q{i}", "s", t) for i, t in enumerate(mean)] + \
              [Sample("neg", i, 0, 0, f"q{i}", "s", t) for i, t in enumerate(kind)]
    seen, proxies = [], []
    real = psr_data.EmbeddingTraitProxy.fit

    def spy(trait_name, positive, negative, **kw):
        seen.append(set(positive) | set(negative))
        proxy, fit = real(trait_name, positive, negative, **kw)
        proxies.append(proxy)
        return proxy, fit

    monkeypatch.setattr(psr_data.EmbeddingTraitProxy, "fit", spy)
    scores, fits = cross_fitted_scores(trait, samples, folds=2, seed=0)
    assert len(scores) == 8 and len(fits) == 2 and len(seen) == 2
    held_by = [set(mean) - s for s in seen]  # the positives each proxy did not see
    assert sum(len(h) for h in held_by) == 8 and not (held_by[0] & held_by[1])
    for text, v in zip(mean, scores):  # each score is the other half's proxy's
        j = 0 if text in held_by[0] else 1
        assert v == pytest.approx(proxies[j].score(["q"], [text])[0], abs=1e-6)


def test_settings_refuse_bad_values():
    with pytest.raises(ValueError, match=r"temperature must be a finite number >= 0 \(0: greedy\), got -1"):
        SampleSettings("m", "t", temperature=-1)
    with pytest.raises(ValueError, match="max_new_tokens must be an integer >= 1, got 0"):
        SampleSettings("m", "t", max_new_tokens=0)


@pytest.mark.slow
def test_temperature_zero_draws_the_greedy_answers(embedded, tmp_path):
    lm = embedded
    jobs = sample_jobs(TRAIT, kinds=("pos",))
    got = draw_samples(lm, jobs, tmp_path / "g.jsonl", SampleSettings(lm.name, "evil", 6, 0.0))
    want = generate(lm, [lm.format_prompt(j.question, chat=True, system=j.system) for j in jobs], max_new_tokens=6)
    assert [s.response for s in got] == [t.strip() for t in want.texts]
    with pytest.raises(ValueError, match="sample jobs need distinct keys"):
        draw_samples(lm, jobs + jobs[:1], tmp_path / "h.jsonl", SampleSettings(lm.name, "evil", 6, 0.0))
