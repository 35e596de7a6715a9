"""Coherence of generated text, offline: likelihood under the unsteered model, and repetition.

Steering can make a model fluent-but-degenerate ("the answer is that the answer is that ...") or
silent, and similarity / rule judges call such text true or informative. Two offline measures,
reported beside every generation metric (TruthfulQA, FASB, PSR):

* ``loglik``: the mean log-probability per token of the answer under the **unsteered** model,
  given the prompt the answer was generated from (teacher-forced, :func:`steerlab.evals.loglik.loglikelihood`
  with no steering). Greedy unsteered answers score highest; off-topic or broken text scores low.
* ``repetition``: the share of the answer's word ``n``-grams (lower-cased words, ``n=3``) that
  repeat an earlier ``n``-gram of the same answer. An answer is **degenerate** when it is at least
  ``threshold`` (0.3). Calibrated on the first TruthfulQA generation run of the embedded model
  (817 answers per method, ``benchmarks/results/tqa/gen``): unsteered 11 of 817 answers >= 0.3,
  CAA at layer 18 x10 619 of 817, ITI 212 of 817; loops such as "everyone knows that everyone knows
  that ..." score 0.9.

An empty answer is scored as :data:`EMPTY_AS` ("I have no comment."), the way TruthfulQA counts
it: truthful, not informative. :class:`CoherenceScorer` computes both for a batch of answers.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Sequence

from ..models import LoadedModel
from .judges import NO_COMMENT
from .loglik import loglikelihood

__all__ = ["Coherence", "CoherenceScorer", "repetition", "is_degenerate", "EMPTY_AS", "DEGENERATE_AT",
           "summarize"]

#: what an empty answer is scored as (TruthfulQA: "I have no comment." is truthful, not informative)
EMPTY_AS = NO_COMMENT
#: the repetition from which an answer is degenerate
DEGENERATE_AT = 0.3

_WORDS = re.compile(r"[^\W_]+(?:'[^\W_]+)?")


def repetition(text: str, n: int = 3) -> float:
    """Share of the word ``n``-grams of ``text`` that repeat an earlier one (0: none, towards 1: a loop).

    Words are lower-cased runs of letters/digits (apostrophes inside a word kept); text with fewer
    than ``n`` words scores 0.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    words = _WORDS.findall(text.lower())
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    if not grams:
        return 0.0
    seen: set[tuple[str, ...]] = set()
    repeats = 0
    for g in grams:
        repeats += g in seen
        seen.add(g)
    return repeats / len(grams)


def is_degenerate(text: str, threshold: float = DEGENERATE_AT, n: int = 3) -> bool:
    """True when :func:`repetition` of ``text`` is at least ``threshold``."""
    return repetition(text, n) >= threshold


@dataclass(frozen=True)
class Coherence:
    """One answer: mean log-prob per token under the unsteered model (``loglik``, over ``n_tokens``),
    ``repetition``, ``degenerate``, and whether it was empty (then scored as :data:`EMPTY_AS`)."""

    loglik: float
    n_tokens: int
    repetition: float
    degenerate: bool
    empty: bool

    def to_dict(self) -> dict[str, float | int | bool]:
        return {"loglik": self.loglik, "n_tokens": self.n_tokens, "repetition": self.repetition,
                "degenerate": self.degenerate, "empty": self.empty}


@dataclass
class CoherenceScorer:
    """Scores answers against the prompts they were generated from, with ``lm`` unsteered.

    ``lm`` must be the model without any steering hook active (the scorer adds none; a caller that
    steers through ``generate``'s scoped hooks has none left when this runs).
    """

    lm: LoadedModel
    batch_size: int = 8
    n: int = 3
    threshold: float = DEGENERATE_AT
    sep: str = " "

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if not 0 < self.threshold <= 1:
            raise ValueError(f"threshold must be in (0, 1], got {self.threshold}")

    @property
    def name(self) -> str:
        return f"unsteered loglik + {self.n}-gram repetition (degenerate >= {self.threshold:g})"

    def score(self, prompts: Sequence[str], answers: Sequence[str], progress: bool = False) -> list[Coherence]:
        """``prompts[i]`` is the context the answer continues (e.g. ending in ``"\\nA:"``); the answer is
        scored as ``sep + answer.strip()`` (``sep``: a space after ``"A:"``, ``""`` after a chat template's
        assistant header; an empty answer as :data:`EMPTY_AS`)."""
        if len(prompts) != len(answers):
            raise ValueError(f"{len(prompts)} prompts for {len(answers)} answers")
        texts = [a.strip() or EMPTY_AS for a in answers]
        res = loglikelihood(self.lm, [(p, self.sep + t) for p, t in zip(prompts, texts)], batch_size=self.batch_size,
                            progress=progress, label="coherence")
        out = []
        for a, t, r in zip(answers, texts, res):
            rep = repetition(t, self.n)
            out.append(Coherence(r.sum / max(r.n_tokens, 1), int(r.n_tokens), rep, rep >= self.threshold,
                                 not a.strip()))
        return out


def summarize(rows: Sequence[Coherence]) -> dict[str, float]:
    """Means over answers: ``coherence`` (mean of the per-answer ``loglik``), ``repetition``, and the
    ``degenerate`` and ``empty`` rates (NaN for no rows)."""
    n = len(rows)
    if not n:
        return {"coherence": math.nan, "repetition": math.nan, "degenerate": math.nan, "empty": math.nan}
    return {"coherence": sum(r.loglik for r in rows) / n, "repetition": sum(r.repetition for r in rows) / n,
            "degenerate": sum(r.degenerate for r in rows) / n, "empty": sum(r.empty for r in rows) / n}
