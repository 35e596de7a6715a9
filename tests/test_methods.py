"""Methods for the evaluation harness: registry, contrast answers, none / CAA / ITI fits."""

from __future__ import annotations

import pytest
import torch

from steerlab.data.records import ABItem, COPAItem, TruthfulQAMCItem, WinograndeItem
from steerlab.evals.multiple_choice import evaluate_prompts, to_prompts
from steerlab.evals.truthfulqa import qa_prompt
from steerlab.fit import ContrastPair, fit_vector
from steerlab.interventions.add import Steer
from steerlab.methods import CAA, ITI, FittedMethod, Method, make_method, method_names, register_method
from steerlab.methods.none import NoneConfig, NoSteering
from steerlab.methods.pairs import contrast_pairs, labelled_questions, probe_records

TQA = [
    TruthfulQAMCItem("Is the sky blue?", ("Yes.", "No.", "Green."), (1, 0, 0),
                     ("Yes.", "It is blue.", "No.", "Green."), (1, 1, 0, 0)),
    TruthfulQAMCItem("Can pigs fly?", ("No.", "Yes."), (1, 0), ("No.", "Yes.", "Always."), (1, 0, 0)),
]
COPA = [
    COPAItem(0, "The man broke his toe.", "He dropped a hammer on his foot.", "He got a hole in his sock.", "cause", 0),
    COPAItem(1, "I tipped the bottle.", "The liquid in the bottle froze.", "The liquid poured out.", "effect", 1),
    COPAItem(2, "The sun was rising.", "The sky turned pink.", "The dog barked.", "effect", 0),
    COPAItem(3, "She was thirsty.", "She drank water.", "She read a book.", "effect", 0),
]


def test_registry_and_options():
    assert {"none", "caa", "iti"} <= set(method_names())
    m = make_method("caa", layer="2", multiplier="-1.5", max_pairs="none")
    assert isinstance(m, Method) and m.config.layer == 2 and m.config.multiplier == -1.5 and m.config.max_pairs is None
    assert make_method("iti", k="3", alpha=2).config_dict()["k"] == 3
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        make_method("nope")
    with pytest.raises(ValueError, match="unknown option"):
        make_method("caa", lyer=3)
    with pytest.raises(ValueError, match="expected float"):
        make_method("caa", multiplier="big")
    with pytest.raises(ValueError, match="steer_from"):
        make_method("caa", steer_from="prompt")
    from steerlab.methods import METHODS

    register_method("none2", NoSteering, NoneConfig)
    try:
        assert "none2" in method_names() and make_method("none2").name == "none"
    finally:
        METHODS.pop("none2")


def test_none_fits_nothing(tiny):
    fm = make_method("none").fit(tiny, [], [])
    assert not fm.steered and fm.eval_kwargs()["steer"] is None and fm.generate_steer() is None


def test_labelled_questions_formats(tiny):
    qs = labelled_questions(tiny, TQA)
    p = qa_prompt("Is the sky blue?")
    assert qs[0].group == "Is the sky blue?"
    assert qs[0].positive == ((p, " Yes."), (p, " It is blue."))
    assert qs[0].negative == ((p, " No."), (p, " Green."))
    short = labelled_questions(tiny, TQA[:1], style="short")[0]
    assert short.positive[0] == ("Q: Is the sky blue? A:", " Yes.")
    c = labelled_questions(tiny, COPA[:1])[0]
    assert c.positive == (("The man broke his toe because", " he dropped a hammer on his foot."),)
    w = labelled_questions(tiny, [WinograndeItem(("Ann took it", "Bo took it"), "home.", 1)])[0]
    assert w.positive == (("Bo took it", " home."),) and w.negative == (("Ann took it", " home."),)
    assert contrast_pairs([w]) == [ContrastPair("Bo took it home.", "Ann took it home.")]
    ab = labelled_questions(tiny, [ABItem("syc", "Q? (A) x (B) y", "(A)", "(B)")])[0]
    assert ab.positive[0][1].strip() == "(A)" and ab.negative[0][1].strip() == "(B)"


def test_contrast_pairs_cycle_and_whole_texts(tiny):
    qs = labelled_questions(tiny, TQA)
    pairs = contrast_pairs(qs)
    p0 = qa_prompt("Is the sky blue?")
    assert pairs[:2] == [ContrastPair(" Yes.", " No.", p0), ContrastPair(" It is blue.", " Green.", p0)]
    assert len(pairs) == 2 + 2  # second question: 1 true, 2 false -> 2 pairs (true answer reused)
    from steerlab.methods.pairs import LabelledQuestion

    whole = contrast_pairs([LabelledQuestion("g", (("Ann took it", " home"),), (("Bo took it", " home"),))])
    assert whole == [ContrastPair("Ann took it home", "Bo took it home")]
    recs = probe_records(qs[:1])
    assert [r[2] for r in recs] == [1, 1, 0, 0] and all(r[3] == "Is the sky blue?" for r in recs)
    with pytest.raises(ValueError, match="no contrast pairs"):
        contrast_pairs([])


def test_caa_is_mean_difference_at_layer(tiny):
    m = make_method("caa", layer=2, multiplier=3.0)
    fm = m.fit(tiny, TQA, [])
    assert isinstance(fm, FittedMethod) and fm.strength == 3.0 and fm.steer_from == "last_prompt"
    assert [s.key for s in fm.steer.sites] == ["residual.2"]
    ref = fit_vector(tiny, contrast_pairs(labelled_questions(tiny, TQA)), 2, positions="last")
    (k, v), = fm.steer.vectors.items()
    torch.testing.assert_close(v, ref.vectors[k])
    assert fm.info["layer"] == 2 and fm.info["n_pairs"] == 4
    gs = fm.generate_steer()
    assert isinstance(gs, Steer) and gs.strength == 3.0 and gs.where == "generated"
    # default layer: the middle one; negative layers count from the end
    assert CAA().layer(tiny) == tiny.adapter.n_layers // 2
    assert make_method("caa", layer=-1).layer(tiny) == tiny.adapter.n_layers - 1


@pytest.mark.slow
def test_caa_method_steers_toward_the_behaviour(embedded, data_dir):
    """The harness path (make_method -> fit -> eval_kwargs) steers toward the behaviour it was fitted on:
    caa/refusal, layer 12, multiplier +8 raises p(matching) on held-out items, -8 gives less than +8
    (measured, reading A/B answers at the letter as CAA does: none 0.511, +8 0.610, -8 0.408; reading at ")"
    as before: +8 0.587, -8 0.516)."""
    from steerlab.data.registry import load_dataset
    from steerlab.evals.persona import evaluate_behavior

    items = load_dataset("caa/refusal", "train", root=data_dir, limit=36, seed=0)
    train, test = items[:24], items[24:]
    base = evaluate_behavior(embedded, test, **make_method("none").fit(embedded, [], []).eval_kwargs())
    up_fm = make_method("caa", layer=12, multiplier=8.0).fit(embedded, train, [])
    up = evaluate_behavior(embedded, test, **up_fm.eval_kwargs())
    down = evaluate_behavior(embedded, test, **make_method("caa", layer=12, multiplier=-8.0).fit(embedded, train,
                                                                                                 []).eval_kwargs())
    assert up_fm.info["n_pairs"] == 24 and up.config["steered"]
    assert up.p_matching > base.p_matching + 0.05
    assert down.p_matching < base.p_matching - 0.05


def test_iti_wrapper_equals_fit_iti(tiny):
    """The harness's ITI is fit_iti on the items' short-prompt probe records: same heads, same vector."""
    from steerlab.interventions.iti import ITIConfig, fit_iti, reference_sigma_texts

    m = make_method("iti", k=3, alpha=5.0)
    assert isinstance(m, ITI)
    fm = m.fit(tiny, TQA, TQA[:0])
    assert fm.steer_from == "second_answer" and fm.strength == 1.0
    questions = labelled_questions(tiny, TQA, style="short")
    qa = [(q.group, a) for q in questions for _, a in (*q.positive, *q.negative)]
    ref = fit_iti(tiny, probe_records(questions), ITIConfig(k=3, alpha=5.0),
                  sigma_texts=reference_sigma_texts(qa, 42))
    assert fm.info["sigma_from"] == "reference"
    assert fm.info["heads"] == [list(map(int, h)) for h in ref.heads] and len(fm.info["heads"]) == 3
    assert fm.steer.vectors.keys() == ref.vector.vectors.keys()
    for key, vec in ref.vector.vectors.items():
        torch.testing.assert_close(fm.steer.vectors[key], vec)
    assert all(s.kind.value == "heads" for s in fm.steer.sites)
    with pytest.raises(ValueError, match="k must be"):
        make_method("iti", k=0)


@pytest.mark.slow
def test_caa_reads_ab_answers_at_the_letter(embedded, data_dir):
    """CAA on A/B sets reads the block output at the answer letter (CAA's position -2 of prompt + "(A)"),
    not at ")": equal to a plain forward with a hook on block 12, read at the letter token of the full answer."""
    from steerlab.data.registry import load_dataset
    from steerlab.evals.persona import behavior_prompt
    from steerlab.methods.pairs import letter_pairs
    from steerlab.sites import Site, SiteKind, site_module

    items = load_dataset("caa/sycophancy", "train", root=data_dir, limit=6, seed=0)
    fm = make_method("caa", layer=12).fit(embedded, items, [])
    module, _ = site_module(embedded.adapter, embedded.model, Site(SiteKind.RESIDUAL, 12))
    diffs = []
    for it in items:
        ctx, m, n = behavior_prompt(embedded, it)
        reads = []
        for ans in (m, n):
            ids = embedded.tokenizer(ctx + ans, add_special_tokens=False)["input_ids"]
            letter = len(ids) - 2
            assert embedded.tokenizer.decode(ids[letter:]) == ans.strip()[1:]  # "A)" : the letter, then ")"
            got = {}
            h = module.register_forward_hook(lambda mod, a, o: got.__setitem__("x", o[0] if isinstance(o, tuple) else o))
            try:
                with torch.no_grad():
                    embedded.model(torch.tensor([ids]))
            finally:
                h.remove()
            reads.append(got["x"][0, letter].float())
        diffs.append(reads[0] - reads[1])
    ref = torch.stack(diffs).mean(0)
    (vec,) = fm.steer.vectors.values()
    assert float((vec - ref).norm() / ref.norm()) < 1e-4
    # and it is not the old read at ")"
    from steerlab.fit import ContrastPair

    assert letter_pairs([ContrastPair("(A)", "(B)", "Q")]) == [ContrastPair("(A", "(B", "Q")]
    assert letter_pairs([ContrastPair(" Yes", " No", "Q")]) == [ContrastPair(" Yes", " No", "Q")]
