"""IFEval format checkers: lm-eval's official checkers on hand-written responses, strict and loose, the
summary numbers, the errors, and every one of the 163 format prompts resolving to a checker."""

from __future__ import annotations

import math
import re
from collections import Counter

import langdetect
import nltk
import pytest

from steerlab.data.ifeval import load_ifeval_format
from steerlab.data.records import IFEvalPrompt
from steerlab.evals import ifeval as ifeval_mod
from steerlab.evals.ifeval import (INSTRUCTION_IDS, LANGDETECT_SEED, PUNKT_TAB, IFEvalResult, checker_id,
                                   describe_instruction, score_ifeval, summarize_ifeval)


def _prompt(iid: str, key: int = 1, for_eval: str | None = None, **kwargs) -> IFEvalPrompt:
    return IFEvalPrompt(key=key, prompt="Write something.", instruction_ids=(iid,), kwargs=(kwargs,),
                        instruction_ids_for_eval=(for_eval or iid,))


LOWER = "the quick brown fox jumps over the lazy dog. it was a sunny day and we walked in the park."
GERMAN = "Das ist ein schöner Tag, und wir gehen heute mit dem Hund in den Park spazieren."
KANNADA = "ನಮಸ್ಕಾರ, ನೀವು ಹೇಗಿದ್ದೀರಿ? ಇಂದು ಹವಾಮಾನ ತುಂಬಾ ಚೆನ್ನಾಗಿದೆ."

# (instruction id, kwargs, a response that follows it, one that does not): 13 format types of the data
CASES = [
    ("change_case:english_lowercase", {}, LOWER, "The quick brown fox jumps over the lazy dog. It was sunny"),
    ("change_case:english_capital", {}, LOWER.upper(), LOWER),
    ("change_case:capital_word_frequency", {"capital_frequency": 2, "capital_relation": "at least"},
     "I LOVE NEW York.", "i love new york."),  # I, LOVE, NEW: 3 all-capital words (nltk.word_tokenize)
    ("change_case:capital_word_frequency", {"capital_frequency": 2, "capital_relation": "less than"},
     "I love New York.", "I LOVE NEW York."),  # 1 capital word < 2; 3 is not
    ("detectable_format:json_format", {}, '```json\n{"name": "fox", "legs": 4}\n```', "{name: fox}"),
    ("detectable_format:number_bullet_lists", {"num_bullets": 3}, "* one\n* two\n- three", "* one\n* two"),
    ("detectable_format:title", {}, "<<Ode to Joy>>\nRoses are red.", "Ode to Joy\nRoses are red."),
    ("detectable_format:number_highlighted_sections", {"num_highlights": 2},
     "*first part* and **second part**", "*only one* and ** **"),
    ("detectable_format:multiple_sections", {"section_spliter": "Section", "num_sections": 2},
     "Section 1\nThe fox.\nSection 2\nThe dog.", "Section 1\nThe fox and the dog."),
    ("detectable_format:constrained_response", {}, "My answer is maybe.", "Maybe."),
    ("punctuation:no_comma", {}, "No commas here at all.", "Yes, a comma."),
    ("startend:quotation", {}, '"Hello there."', 'Hello "there".'),
    ("startend:end_checker", {"end_phrase": "Any other questions?"}, "Done.\nAny other questions?",
     "Any other questions? Bye."),
    ("language:response_language", {"language": "de"}, GERMAN, LOWER),
]


@pytest.mark.parametrize("iid, kwargs, good, bad", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_a_response_that_follows_passes_and_one_that_does_not_fails(iid, kwargs, good, bad) -> None:
    p = _prompt(iid, **kwargs)
    yes, no = score_ifeval([p, p], [good, bad])
    assert (yes.followed_strict, yes.followed_loose) == ((True,), (True,))
    assert (no.followed_strict, no.followed_loose) == ((False,), (False,))
    assert yes.instruction_ids == (iid,) and yes.response == good
    assert yes.prompt_strict and not no.prompt_loose


def test_the_cases_cover_the_13_format_types_of_the_data(data_dir) -> None:
    in_data = {iid for p in load_ifeval_format(root=data_dir) for iid in p.instruction_ids}
    assert {c[0] for c in CASES} == in_data and len(in_data) == 13


@pytest.mark.parametrize("iid, kwargs, response", [
    # loose drops the first line ("Sure! ..." before the quoted answer / the JSON)
    ("startend:quotation", {}, 'Sure! Here it is:\n"Hello there."'),
    ("detectable_format:json_format", {}, 'Here is the JSON:\n{"name": "fox"}'),
    # loose drops the last line after the end phrase
    ("startend:end_checker", {"end_phrase": "Any other questions?"}, "Done.\nAny other questions?\n(end)"),
    # loose removes every '*' (markdown emphasis around the quoted answer)
    ("startend:quotation", {}, '*"Hello there."*'),
])
def test_loose_accepts_what_strict_rejects_for_the_ifeval_reasons(iid, kwargs, response) -> None:
    (r,) = score_ifeval([_prompt(iid, **kwargs)], [response])
    assert r.followed_strict == (False,) and r.followed_loose == (True,)
    assert not r.prompt_strict and r.prompt_loose


def test_an_empty_response_follows_nothing_strict_or_loose() -> None:
    """IFEval counts a blank response as not following, even 'no comma' that it trivially satisfies."""
    (r,) = score_ifeval([_prompt("punctuation:no_comma")], ["  \n "])
    assert r.followed_strict == (False,) and r.followed_loose == (False,)


def test_a_language_eval_id_maps_to_the_registry_checker_with_its_kwargs_language() -> None:
    p = _prompt("language:response_language", for_eval="language:response_language_kn", language="kn")
    kn, de = score_ifeval([p, p], [KANNADA, GERMAN])
    assert kn.instruction_ids == ("language:response_language",)
    assert kn.followed_strict == (True,) and de.followed_strict == (False,)
    assert checker_id("language:response_language_kn", {"language": "kn"}) == "language:response_language"
    assert checker_id("punctuation:no_comma", {}) == "punctuation:no_comma"
    with pytest.raises(ValueError, match=r"^unknown IFEval instruction id 'language:response_language_kn'$"):
        checker_id("language:response_language_kn", {"language": "hi"})


def test_scoring_is_seeded_and_leaves_langdetect_as_it_was() -> None:
    assert langdetect.DetectorFactory.seed is None and LANGDETECT_SEED == 0
    p = _prompt("change_case:english_lowercase")
    runs = [score_ifeval([p] * 3, [LOWER, LOWER.upper(), "ok"]) for _ in range(2)]
    assert runs[0] == runs[1]
    assert langdetect.DetectorFactory.seed is None


def test_summary_numbers_by_hand() -> None:
    rows = [
        IFEvalResult(1, ("punctuation:no_comma", "startend:quotation"), (True, False), (True, True), "a"),
        IFEvalResult(2, ("punctuation:no_comma",), (False,), (False,), "b"),
        IFEvalResult(3, ("detectable_format:title",), (True,), (True,), "c"),
    ]
    s = summarize_ifeval(rows)
    assert (s["n_prompts"], s["n_instructions"]) == (3, 4)
    assert s["prompt_level_strict_acc"] == pytest.approx(1 / 3)  # only prompt 3 has every flag strict
    assert s["prompt_level_loose_acc"] == pytest.approx(2 / 3)  # prompts 1 and 3
    assert s["inst_level_strict_acc"] == pytest.approx(2 / 4)
    assert s["inst_level_loose_acc"] == pytest.approx(3 / 4)
    assert s["per_instruction"] == {
        "detectable_format:title": {"n": 1, "strict_acc": 1.0, "loose_acc": 1.0},
        "punctuation:no_comma": {"n": 2, "strict_acc": 0.5, "loose_acc": 0.5},
        "startend:quotation": {"n": 1, "strict_acc": 0.0, "loose_acc": 1.0},
    }
    assert list(s["per_instruction"]) == sorted(s["per_instruction"])
    assert rows[0].to_dict()["prompt_loose"] is True and rows[0].to_dict()["prompt_strict"] is False
    empty = summarize_ifeval([])
    assert empty["n_prompts"] == 0 and empty["per_instruction"] == {}
    assert math.isnan(empty["prompt_level_strict_acc"]) and math.isnan(empty["inst_level_loose_acc"])


def test_summary_of_scored_responses() -> None:
    ps = [_prompt("punctuation:no_comma", key=1), _prompt("startend:quotation", key=2),
          _prompt("detectable_format:title", key=3)]
    res = score_ifeval(ps, ["No commas.", 'Sure:\n"Quoted."', "No title, and a comma."])
    assert [r.key for r in res] == [1, 2, 3]
    s = summarize_ifeval(res)
    assert (s["prompt_level_strict_acc"], s["prompt_level_loose_acc"]) == pytest.approx((1 / 3, 2 / 3))


def test_errors_are_one_line_value_errors() -> None:
    p = _prompt("punctuation:no_comma", key=3)
    with pytest.raises(ValueError, match=r"^2 prompts for 1 responses$"):
        score_ifeval([p, p], ["a"])
    unknown = IFEvalPrompt(key=7, prompt="x", instruction_ids=("format:sparkles",), kwargs=({},))
    with pytest.raises(ValueError, match=r"^prompt 7: unknown IFEval instruction id 'format:sparkles'$"):
        score_ifeval([p, unknown], ["a", "b"])  # checked before anything is scored
    bad = _prompt("punctuation:no_comma", key=3, for_eval="startend:quotation")
    msg = "prompt 3: eval ids ['startend:quotation'] do not match instruction ids ['punctuation:no_comma']"
    with pytest.raises(ValueError, match="^" + re.escape(msg) + "$"):
        score_ifeval([bad], ["a"])


def test_without_punkt_tab_the_import_check_names_the_fix(monkeypatch, tmp_path) -> None:
    """The check runs before lm-eval's modules are imported (they would download punkt_tab)."""
    nltk.data.find(PUNKT_TAB)  # installed by `make install` (tools/install_punkt_tab.py)
    monkeypatch.setattr(nltk.data, "path", [str(tmp_path)])
    with pytest.raises(ImportError, match=r"needs NLTK's English punkt_tab model .*`make install`.*never "
                                          r"downloaded at run time$"):
        ifeval_mod._require_punkt_tab()


def test_all_163_format_prompts_resolve_and_score_their_own_text(data_dir) -> None:
    """Each prompt's own text as its response: the counts are what the prompt text itself satisfies.

    Strict 47 of 163: every ``title`` prompt shows a ``<<title>>`` example (13) and every
    ``constrained_response`` prompt lists the answer options (10); 12 of 16 ``no_comma`` prompts have no
    comma; 6 of 17 ``end_checker`` prompts end with their phrase; 4 highlight prompts contain a
    ``*highlighted*`` example, one bullet prompt has exactly its one ``* Bullet point``, one capital-word
    prompt has fewer than 20 capital words. Nothing else can pass: prompts are English in mixed case
    (lowercase, capital, language: 0), not JSON, not quoted, and write ``Section X`` / ``SECTION X``
    (a letter, where the checker splits on the word followed by a number).
    Loose adds one: key 3198 ends with its phrase once its last line ("No other words should follow
    that phrase.") is dropped.
    """
    ps = load_ifeval_format(root=data_dir)
    assert len(ps) == 163
    assert all(iid in INSTRUCTION_IDS for p in ps for iid in p.instruction_ids)
    assert all(checker_id(e, kw) == iid for p in ps
               for e, kw, iid in zip(p.instruction_ids_for_eval, p.kwargs, p.instruction_ids))
    # only the 17 language prompts carry an eval id the registry lacks: one per target language
    special = Counter(e for p in ps for e in p.instruction_ids_for_eval if e not in INSTRUCTION_IDS)
    assert sum(special.values()) == 17 and len(special) == 14
    assert all(e.startswith("language:response_language_") for e in special)
    res = score_ifeval(ps, [p.prompt for p in ps])
    s = summarize_ifeval(res)
    assert (s["n_prompts"], s["n_instructions"]) == (163, 163)
    assert sum(r.prompt_strict for r in res) == 47 and sum(r.prompt_loose for r in res) == 48
    assert [r.key for r in res if r.followed_strict != r.followed_loose] == [3198]
    strict = {iid: round(v["strict_acc"] * v["n"]) for iid, v in s["per_instruction"].items()}
    n = {iid: v["n"] for iid, v in s["per_instruction"].items()}
    assert n == {"change_case:capital_word_frequency": 7, "change_case:english_capital": 11,
                 "change_case:english_lowercase": 13, "detectable_format:constrained_response": 10,
                 "detectable_format:json_format": 8, "detectable_format:multiple_sections": 5,
                 "detectable_format:number_bullet_lists": 13,
                 "detectable_format:number_highlighted_sections": 19,
                 "detectable_format:title": 13, "language:response_language": 17, "punctuation:no_comma": 16,
                 "startend:end_checker": 17, "startend:quotation": 14}
    assert strict == {"change_case:capital_word_frequency": 1, "change_case:english_capital": 0,
                      "change_case:english_lowercase": 0, "detectable_format:constrained_response": 10,
                      "detectable_format:json_format": 0, "detectable_format:multiple_sections": 0,
                      "detectable_format:number_bullet_lists": 1,
                      "detectable_format:number_highlighted_sections": 4, "detectable_format:title": 13,
                      "language:response_language": 0, "punctuation:no_comma": 12, "startend:end_checker": 6,
                      "startend:quotation": 0}
    assert score_ifeval(ps, [p.prompt for p in ps]) == res  # langdetect is seeded: the same flags again


def test_instructions_are_worded_by_their_own_checker() -> None:
    assert describe_instruction("punctuation:no_comma", {}) == \
        "In your entire response, refrain from the use of any commas."
    assert describe_instruction("detectable_format:number_bullet_lists", {"num_bullets": 3}).startswith(
        "Your answer must contain exactly 3 bullet points.")
    assert describe_instruction("language:response_language", {"language": "kn"}) == \
        "Your ENTIRE response should be in Kannada language, no other language is allowed."
    with pytest.raises(ValueError, match="unknown IFEval instruction id 'format:nothing'"):
        describe_instruction("format:nothing", {})
