"""Prompt templates, placeholder insertion and sentence clean-up."""

from __future__ import annotations

import pytest

from steerlab.embed.prompts import AUX_PROMPT, PROMPTS, PST, fill, get_prompt, preprocess_sentence, with_placeholder


def test_named_prompts():
    assert get_prompt("prompteol").templates == ('This sentence : "{s}" means in one word:"',)
    assert get_prompt("PretCoT").templates[0].startswith("After thinking step by step , this sentence :")
    assert get_prompt("ke").templates[0].startswith("The essence of a sentence is often captured")
    assert len(get_prompt("metaeol").templates) == 8
    assert get_prompt("cot").name == "pretcot"
    for name, templates in PROMPTS.items():
        assert all(t.count("{s}") == 1 and t.endswith('in one word:"') for t in templates), name
    assert AUX_PROMPT == 'The irrelevant information of this sentence : "{s}" means in one word:"'


def test_custom_templates():
    spec = get_prompt('Summarise "{s}" in one word:"')
    assert spec.name == "custom"
    assert get_prompt(["A {s}", "B {s}"]).templates == ("A {s}", "B {s}")
    with pytest.raises(ValueError, match="unknown prompt"):
        get_prompt("nonsense")
    with pytest.raises(ValueError, match="exactly once"):
        get_prompt("{s} and {s}")
    with pytest.raises(ValueError, match="empty"):
        get_prompt([])


def test_fill_is_plain_replacement():
    assert fill('x "{s}" y', "a {b} c") == 'x "a {b} c" y'
    assert fill("json {{}} {s}", "z") == "json {{}} z"


def test_with_placeholder():
    assert with_placeholder(PROMPTS["prompteol"][0]) == 'This sentence : <PST> "{s}" means in one word:"'
    assert with_placeholder("Embed {s} now") == "Embed <PST> {s} now"
    t = 'x <PST> "{s}"'
    assert with_placeholder(t) == t
    for templates in PROMPTS.values():
        for tpl in templates:
            assert with_placeholder(tpl).count(PST) == 1


@pytest.mark.parametrize(
    "raw, clean",
    [("a man is dancing", "a man is dancing."), ("is it?", "is it."), ('he said "hi" .', "he said 'hi' ."),
     ("end.", "end."), ("  x  ", "x."), ("", "")],
)
def test_preprocess(raw, clean):
    assert preprocess_sentence(raw) == clean
