"""Turn task items into labelled answers: what CAA contrasts and what ITI probes.

Every supported item becomes a :class:`LabelledQuestion`: a group key (the question, so folds
and validation splits never separate its answers) and ``(prompt, answer)`` texts of desired
(``positive``) and undesired (``negative``) answers, formatted exactly as the evaluator scores
them (the answer carries its leading space):

* TruthfulQA (CSV or MC-json): the TruthfulQA MC prompt (``qa_prompt``, 6-shot primer) with the
  true answers vs the false answers (``style="short"``: ITI's ``"Q: {question} A:"``);
* the six MC tasks: the right option vs each wrong option (WinoGrande options differ in their
  context, so their texts are whole);
* persona statements / A/B items: the behaviour-matching answer vs the other one, in the
  prompt style of :func:`steerlab.evals.persona.behavior_prompt`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any, Literal, Sequence

from ..data.records import (ABItem, COPAItem, MMLUItem, NLIItem, PersonaStatement, SST2Item, StoryClozeItem,
                            TruthfulQAItem, TruthfulQAMCItem, WinograndeItem)
from ..models import LoadedModel

__all__ = ["LabelledQuestion", "labelled_questions", "contrast_pairs", "probe_records", "MC_ITEM_TASKS",
           "letter_pairs"]

Text = tuple[str, str]  # (prompt, answer)

MC_ITEM_TASKS: dict[type, str] = {COPAItem: "copa", StoryClozeItem: "storycloze", NLIItem: "snli",
                                   MMLUItem: "mmlu", SST2Item: "sst2", WinograndeItem: "winogrande"}


@dataclass(frozen=True)
class LabelledQuestion:
    group: str
    positive: tuple[Text, ...]
    negative: tuple[Text, ...]


def labelled_questions(lm: LoadedModel, items: Sequence[Any],
                       style: Literal["eval", "short"] = "eval") -> list[LabelledQuestion]:
    """:class:`LabelledQuestion` per item (see the module docstring)."""
    from ..evals.multiple_choice import to_prompts
    from ..evals.persona import behavior_prompt
    from ..evals.truthfulqa import qa_prompt, to_questions

    out: list[LabelledQuestion] = []
    for i, it in enumerate(items):
        if isinstance(it, (TruthfulQAItem, TruthfulQAMCItem)):
            q = to_questions([it])[0]
            prompt = qa_prompt(q.question) if style == "eval" else f"Q: {q.question} A:"
            true = tuple(dict.fromkeys((q.best, *q.true)))
            out.append(LabelledQuestion(q.question.strip(), tuple((prompt, " " + a) for a in true),
                                        tuple((prompt, " " + a) for a in q.false)))
        elif type(it) in MC_ITEM_TASKS:
            p = to_prompts(MC_ITEM_TASKS[type(it)], [it])[0]
            neg = tuple(o for j, o in enumerate(p.options) if j != p.label)
            out.append(LabelledQuestion(f"{MC_ITEM_TASKS[type(it)]}:{i}", (p.options[p.label],), neg))
        elif isinstance(it, (PersonaStatement, ABItem)):
            ctx, m, n = behavior_prompt(lm, it)
            out.append(LabelledQuestion(it.question.strip(), ((ctx, m),), ((ctx, n),)))
        else:
            raise TypeError(f"no contrast answers for items of type {type(it).__name__}")
    return out


def contrast_pairs(questions: Sequence[LabelledQuestion]) -> list[Any]:
    """CAA contrast pairs: each positive and each negative answer used at least once (cycled)."""
    from ..fit import ContrastPair

    pairs = []
    for q in questions:
        if not q.positive or not q.negative:
            continue
        for k in range(max(len(q.positive), len(q.negative))):
            (pp, pa), (np_, na) = q.positive[k % len(q.positive)], q.negative[k % len(q.negative)]
            if pp == np_ and pp.strip():
                pairs.append(ContrastPair(pa, na, pp))
            else:
                pairs.append(ContrastPair(pp + pa, np_ + na))
    if not pairs:
        raise ValueError("no contrast pairs could be built from the training items")
    return pairs


_AB_ANSWER = re.compile(r"^(\s*\([A-Za-z])\)\s*$")


def letter_pairs(pairs: Sequence[Any]) -> list[Any]:
    """CAA's read position on A/B answers: the answer **letter**, not the closing parenthesis. CAA's
    ``generate_vectors.py`` reads position -2 of prompt + ``"(A)"``, i.e. the token ``A``; with causal
    attention that is the last token of prompt + ``"(A"``, so answers of the form ``(X)`` lose their ``)``
    (other answers are left as they are)."""
    out = []
    for p in pairs:
        pos, neg = _AB_ANSWER.match(p.positive), _AB_ANSWER.match(p.negative)
        if pos and neg and p.prompt is not None:
            p = replace(p, positive=pos.group(1), negative=neg.group(1))
        out.append(p)
    return out


def probe_records(questions: Sequence[LabelledQuestion]) -> list[tuple[str, str, int, str]]:
    """ITI records ``(prompt, answer, label, group)``; each distinct text once."""
    seen: set[tuple[str, str]] = set()
    out = []
    for q in questions:
        for label, texts in ((1, q.positive), (0, q.negative)):
            for t in texts:
                if t not in seen:
                    seen.add(t)
                    out.append((t[0], t[1], label, q.group))
    return out
