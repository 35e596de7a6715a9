"""Prompt templates for training-free sentence embeddings (PromptEOL family).

A template is a string with ``{s}`` where the sentence goes (filled with ``str.replace``, so
other braces in a custom template are left alone). The embedding is read at the last prompt
token. ``PST`` is the Token Prepending placeholder: :func:`with_placeholder` puts it just
before the quoted sentence.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "PROMPTS",
    "AUX_PROMPT",
    "PST",
    "PromptSpec",
    "get_prompt",
    "fill",
    "with_placeholder",
    "preprocess_sentence",
]

PST = "<PST>"

_EOL = 'this sentence : "{s}" means in one word:"'

#: named prompts: each is a tuple of templates (several are averaged, as in MetaEOL)
PROMPTS: dict[str, tuple[str, ...]] = {
    "prompteol": ('This sentence : "{s}" means in one word:"',),
    "pretcot": ("After thinking step by step , " + _EOL,),
    "ke": (
        "The essence of a sentence is often captured by its main subjects and actions, while descriptive terms "
        "provide additional but less central details. With this in mind , " + _EOL,
    ),
    # MetaEOL (Lei et al., 2024): eight task-oriented prompts, embeddings averaged
    "metaeol": (
        "In this task, you're presented with a text excerpt. Your task is to categorize the excerpt into a broad "
        "category such as 'Education', 'Technology', 'Health', 'Business', 'Environment', 'Politics', or "
        "'Culture'. These categories help in organizing content for better accessibility and targeting. For this "
        'task, this sentence : "{s}" should be classified under one general category in one word:"',
        "In this task, you're given a statement and you need to determine whether it's presenting an 'Opinion' or "
        "a 'Fact'. This distinction is vital for information verification, educational purposes, and content "
        'analysis. For this task, this sentence : "{s}" discriminates between opinion and fact in one word:"',
        "In this task, you're given a review from an online platform. Your task is to generate a rating for the "
        "product based on the review on a scale of 1-5, where 1 means 'extremely negative' and 5 means 'extremely "
        "positive'. For this task, this sentence : \"{s}\" reflects the sentiment in one word:\"",
        "In this task, you're reading a personal diary entry. Your task is to identify the predominant emotion "
        "expressed, such as joy, sadness, anger, fear, or love. For this task, this sentence : \"{s}\" conveys the "
        'emotion in one word:"',
        "In this task, you're presented with two sentences. Your task is to assess whether the sentences convey "
        "the same meaning. Use 'identical', 'similar', 'different', or 'unrelated' to describe the relationship. "
        'To enhance the performance of this task, this sentence : "{s}" means in one word:"',
        "In this task, you're given a sentence and a phrase. Your task is to determine if the phrase can be a "
        "contextual synonym within the given sentence. Options include 'yes', 'no', or 'partially'. To enhance "
        'the performance of this task, this sentence : "{s}" means in one word:"',
        "In this task, you're examining a news article. Your task is to extract the most critical fact from the "
        'article. For this task, this sentence : "{s}" encapsulates the key fact in one word:"',
        "In this task, you're reviewing a scientific abstract. Your task is to identify the main entities (e.g., "
        "proteins, diseases) and their relations (e.g., causes, treats). For this task, this sentence : \"{s}\" "
        'highlights the primary entity or relation in one word:"',
    ),
}

#: Contrastive Prompting's auxiliary prompt (arXiv 2505.12831)
AUX_PROMPT = 'The irrelevant information of this sentence : "{s}" means in one word:"'

_ALIASES = {"eol": "prompteol", "cot": "pretcot", "meta": "metaeol", "knowledge": "ke"}


@dataclass(frozen=True)
class PromptSpec:
    """A resolved prompt: its name (``"custom"`` for a user template) and its templates."""

    name: str
    templates: tuple[str, ...]


def _check_template(t: str) -> str:
    if not isinstance(t, str) or "{s}" not in t:
        raise ValueError(f"a prompt template must contain '{{s}}' where the sentence goes, got {t!r}")
    if t.count("{s}") != 1:
        raise ValueError(f"a prompt template must contain '{{s}}' exactly once, got {t!r}")
    return t


def get_prompt(prompt: str | tuple[str, ...] | list[str]) -> PromptSpec:
    """Resolve a prompt name (``prompteol``, ``pretcot``, ``ke``, ``metaeol``) or custom template(s)."""
    if isinstance(prompt, (tuple, list)):
        if not prompt:
            raise ValueError("empty list of prompt templates")
        return PromptSpec("custom", tuple(_check_template(t) for t in prompt))
    if not isinstance(prompt, str):
        raise ValueError(f"prompt must be a name or a template string, got {type(prompt).__name__}")
    key = _ALIASES.get(prompt.lower(), prompt.lower())
    if key in PROMPTS:
        return PromptSpec(key, PROMPTS[key])
    if "{s}" in prompt:
        return PromptSpec("custom", (_check_template(prompt),))
    raise ValueError(
        f"unknown prompt '{prompt}': use one of {', '.join(PROMPTS)} or a template containing '{{s}}'"
    )


def fill(template: str, sentence: str) -> str:
    """Put ``sentence`` into ``template`` (plain replacement; braces in the sentence are safe)."""
    return template.replace("{s}", sentence)


def with_placeholder(template: str, placeholder: str = PST) -> str:
    """The template with the TP placeholder just before the (quoted) sentence.

    ``This sentence : "{s}" ...`` becomes ``This sentence : <PST> "{s}" ...``; a template that
    already contains the placeholder is returned unchanged.
    """
    if placeholder in template:
        return template
    if '"{s}"' in template:
        return template.replace('"{s}"', f'{placeholder} "{{s}}"', 1)
    return template.replace("{s}", f"{placeholder} {{s}}", 1)


def preprocess_sentence(s: str) -> str:
    """PromptEOL's sentence clean-up, used by the PromptEOL/TP/CP reference code.

    Ends the sentence with a period unless it ends with ``. ? " '``, turns a final ``?`` into
    ``.``, and replaces double quotes with single quotes (the prompt quotes the sentence).
    """
    s = s.strip()
    if s and s[-1] not in ".?\"'":
        s += "."
    s = s.replace('"', "'")
    if s and s[-1] == "?":
        s = s[:-1] + "."
    return s
