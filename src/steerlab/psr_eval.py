"""Evaluating PSR and its baselines on open-ended answers: trait score and coherence, and strength at a coherence.

* :func:`answer` generates answers to a trait's held-out questions under one of the compared conditions: a
  steering module (:class:`~steerlab.interventions.psr.GatedSteering`: PSR, A-PSR, a trained constant vector or
  CAA's difference of means, at a given ``alpha``), or a system prompt (the "prompting" baseline), or neither.
* :func:`open_ended` scores them: the trait judge's mean score (the offline MiniLM proxy by default, any
  :class:`~steerlab.evals.trait.TraitJudge`) and the coherence measure of the faithfulness issue (mean
  log-likelihood per token under the *unsteered* model given the plain question, and the degenerate rate), every
  condition measured against the same plain prompt so that they compare.
* :func:`alpha_for_coherence` searches the strength at which a method's coherence reaches a target level (the
  paper compares methods at a fixed coherence, TA@C80): bisection on ``alpha`` in ``[0, hi]`` for the largest
  strength whose coherence stays at or above the target -- and, given ``max_degenerate``, whose degenerate rate
  stays at or below it -- assuming both worsen as ``alpha`` grows (the search records every point it tried, so a
  violation shows).
* :func:`difference_of_means` is CAA's direction for the constant baseline: the mean over the response tokens of
  the prompt's accumulated Delta at one layer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import torch

from .evals.coherence import CoherenceScorer, summarize
from .evals.trait import TraitJudge
from .generate import generate
from .interventions.psr import GatedSteering, check_alpha
from .models import LoadedModel
from .prompt_steering import EncodedTriplet, prompt_deltas

__all__ = ["answer", "OpenEndedResult", "open_ended", "alpha_for_coherence", "CoherenceSearch",
           "difference_of_means"]


def answer(lm: LoadedModel, questions: Sequence[str], *, module: GatedSteering | None = None,
           alpha: float | None = None, system: str | None = None, max_new_tokens: int = 64, batch_size: int = 8,
           do_sample: bool = False, seed: int | None = None) -> list[str]:
    """Answers (chat template) steered by ``module`` at ``alpha`` (default its own), or prompted with ``system``
    (None: the template's default), greedy unless ``do_sample``."""
    if module is not None and system is not None:
        raise ValueError("give a steering module or a system prompt, not both")
    out: list[str] = []
    for start in range(0, len(questions), batch_size):
        chunk = list(questions[start:start + batch_size])
        ivs = [] if module is None else [module.at(alpha)]
        res = generate(lm, chunk, chat=True, system=system, max_new_tokens=max_new_tokens, interventions=ivs,
                       do_sample=do_sample, seed=seed)
        out += [t.strip() for t in res.texts]
    return out


@dataclass(frozen=True)
class OpenEndedResult:
    """Mean trait score (over answers the judge scored), how many it scored, mean coherence, degenerate and empty
    rates, and the answers."""

    trait: float
    n_scored: int
    coherence: float
    degenerate: float
    empty: float
    answers: tuple[str, ...] = field(repr=False, default=())

    def to_dict(self) -> dict[str, object]:
        return {"trait": self.trait, "n_scored": self.n_scored, "coherence": self.coherence,
                "degenerate": self.degenerate, "empty": self.empty, "answers": list(self.answers)}


def open_ended(lm: LoadedModel, questions: Sequence[str], answers: Sequence[str], judge: TraitJudge,
               batch_size: int = 8) -> OpenEndedResult:
    """Trait score and coherence of ``answers`` to ``questions`` (coherence given the plain chat prompt)."""
    if len(questions) != len(answers):
        raise ValueError(f"{len(questions)} questions for {len(answers)} answers")
    scores = judge.score(list(questions), list(answers))
    ok = [s for s in scores if math.isfinite(s)]
    coh = CoherenceScorer(lm, batch_size=batch_size, sep="").score(
        [lm.format_prompt(q, chat=True) for q in questions], list(answers))
    summ = summarize(coh)
    return OpenEndedResult(sum(ok) / len(ok) if ok else math.nan, len(ok), summ["coherence"], summ["degenerate"],
                           summ["empty"], tuple(answers))


@dataclass
class CoherenceSearch:
    """The strength found and every point tried (``(alpha, coherence, degenerate rate)`` in the order tried)."""

    alpha: float
    target: float
    max_degenerate: float | None = None
    tried: list[tuple[float, float, float]] = field(default_factory=list)


def alpha_for_coherence(lm: LoadedModel, module: GatedSteering, questions: Sequence[str], target: float, *,
                        max_degenerate: float | None = None, hi: float = 16.0, steps: int = 6,
                        max_new_tokens: int = 48, batch_size: int = 8) -> CoherenceSearch:
    """The largest ``alpha`` in ``[0, hi]`` (to a bisection of ``steps`` steps) whose answers to ``questions`` keep
    a mean coherence >= ``target`` and, with ``max_degenerate``, a degenerate rate <= it (a looping answer is
    likely text for a small model, so the log-likelihood alone lets loops through; see the module doc). ``hi`` is
    returned when even it passes; 0 when the unsteered answers already fail."""
    check_alpha(hi)
    if not math.isfinite(target):
        raise ValueError(f"target coherence must be a finite number, got {target!r}")
    if max_degenerate is not None and not 0 <= max_degenerate <= 1:
        raise ValueError(f"max_degenerate must be in [0, 1], got {max_degenerate!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    search = CoherenceSearch(0.0, target, max_degenerate)
    scorer = CoherenceScorer(lm, batch_size=batch_size, sep="")
    prompts = [lm.format_prompt(q, chat=True) for q in questions]

    def passes(alpha: float) -> bool:
        texts = answer(lm, questions, module=module, alpha=alpha, max_new_tokens=max_new_tokens,
                       batch_size=batch_size)
        summ = summarize(scorer.score(prompts, texts))
        search.tried.append((alpha, summ["coherence"], summ["degenerate"]))
        return summ["coherence"] >= target and (max_degenerate is None or summ["degenerate"] <= max_degenerate)

    if passes(hi):
        search.alpha = hi
        return search
    lo, top = 0.0, hi
    for _ in range(steps):
        mid = (lo + top) / 2
        if passes(mid):
            lo = mid
        else:
            top = mid
    search.alpha = lo
    return search


@torch.no_grad()
def difference_of_means(lm: LoadedModel, triplets: Sequence[EncodedTriplet], layer: int) -> torch.Tensor:
    """CAA's direction at ``layer`` from prompt pairs: the mean over every response token of
    ``h(x' y') - h(x y')`` (float32, CPU)."""
    if not triplets:
        raise ValueError("no prompt pairs to take a difference of means from")
    deltas = prompt_deltas(lm, triplets, [layer], "accumulated")
    return torch.cat([d[0] for d in deltas]).mean(0)
