"""PSR for instruction following: one steering model per IFEval instruction, trained to do what the instruction does.

The setup of Stolfo et al. (2025), which the PSR paper reuses for its IFEval format rows: the instruction is
taken out of the prompt (``x`` = the request alone) and a steering model trained on what the instruction
changes should make the model follow it anyway. Evaluated on the 163 single-instruction format prompts
(``steer_instruct/format``) with the official checkers (:mod:`steerlab.evals.ifeval`).

* **Groups** (:func:`instruction_groups`): the eval prompts grouped by ``instruction_id_list_for_eval`` (one
  steering model per instruction; the response-language instruction is one group per language, as in
  Stolfo et al.).
* **Training prompts** (:func:`training_jobs`): requests from IFEval's other prompts (the 541-prompt file with
  the instructions removed, :func:`~steerlab.data.ifeval.load_ifeval_requests`, minus every prompt of the
  eval set), each with the instruction appended as lm-eval's own checker words it
  (``build_description(**kwargs)``) for the parameters the group's eval prompts use (``kwargs`` cycled): no
  eval prompt and no eval wording is trained on. ``x`` = the request, ``x'`` = request + instruction.
* **Samples and filter** (:func:`sample_group`, :func:`instruction_triplets`): ``y'`` sampled under ``x'``
  (resumable cache, :func:`~steerlab.psr_data.draw_samples`); the judge is the instruction's own rule-based
  checker (strict): a sample that does not follow the instruction, or is empty or degenerate, is dropped;
  each kept sample trains with strength 1.
* **Evaluation** (:func:`run_ifeval`): answers to the eval prompts (greedy, chat template), with or without the
  instruction in the prompt, steered by the group's module or not; IFEval accuracy (strict and loose, prompt
  level; every prompt has one instruction) and the coherence of each answer under the unsteered model given
  the request alone (the same reference for every method).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from .data.records import IFEvalPrompt
from .evals.coherence import CoherenceScorer, summarize
from .evals.ifeval import IFEvalResult, checker_id, describe_instruction, score_ifeval, summarize_ifeval
from .generate import generate
from .interventions.psr import GatedSteering
from .models import LoadedModel
from .progress import ProgressBar, progress_for
from .prompt_steering import PromptPair
from .psr_data import Sample, SampleSettings, draw_samples

__all__ = ["InstructionGroup", "instruction_groups", "training_jobs",
           "sample_group", "TripletReport", "instruction_triplets", "IFEvalRun", "run_ifeval"]


@dataclass(frozen=True)
class InstructionGroup:
    """The eval prompts of one instruction (``eval_id``: the id naming its steering direction; ``instruction_id``:
    the checker's registry id)."""

    eval_id: str
    instruction_id: str
    prompts: tuple[IFEvalPrompt, ...]

    @property
    def kwargs(self) -> tuple[Mapping[str, Any], ...]:
        """The checker parameters the group's eval prompts use, in prompt order, without repeats."""
        seen: list[Mapping[str, Any]] = []
        for p in self.prompts:
            if p.kwargs[0] not in seen:
                seen.append(p.kwargs[0])
        return tuple(seen)


def instruction_groups(prompts: Sequence[IFEvalPrompt]) -> list[InstructionGroup]:
    """Single-instruction prompts grouped by their eval id (first-seen order)."""
    groups: dict[str, list[IFEvalPrompt]] = {}
    for p in prompts:
        if len(p.instruction_ids) != 1:
            raise ValueError(f"prompt {p.key} has {len(p.instruction_ids)} instructions; PSR's IFEval setup takes "
                             "single-instruction prompts")
        if p.prompt_without_instruction is None:
            raise ValueError(f"prompt {p.key} has no 'prompt_without_instruction'")
        eid = (p.instruction_ids_for_eval or p.instruction_ids)[0]
        groups.setdefault(eid, []).append(p)
    return [InstructionGroup(e, checker_id(e, ps[0].kwargs[0]), tuple(ps)) for e, ps in groups.items()]


def _with_instruction(request: str, instruction: str) -> str:
    return f"{request} {instruction}"


def training_jobs(group: InstructionGroup, requests: Sequence[str], draws: int = 1) -> list[Sample]:
    """One job per request x draw: ``question`` = the request + the instruction in the checker's words, for the
    group's parameters cycled over the requests (``instruction`` = the index into :attr:`InstructionGroup.kwargs`,
    ``question_index`` = the request's index)."""
    if isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
        raise ValueError(f"draws must be an integer >= 1, got {draws!r}")
    kws = group.kwargs
    jobs = []
    for qi, req in enumerate(requests):
        ki = qi % len(kws)
        text = describe_instruction(group.instruction_id, kws[ki])
        for d in range(draws):
            jobs.append(Sample("pos", qi, ki, d, _with_instruction(req, text), None, ""))
    return jobs


def sample_group(lm: LoadedModel, group: InstructionGroup, requests: Sequence[str], cache: str | os.PathLike[str], *,
                 draws: int = 1, max_new_tokens: int = 96, temperature: float = 1.0, seed: int = 0,
                 batch_size: int = 8, progress: bool | ProgressBar = False) -> list[Sample]:
    """``y'`` for every :func:`training_jobs` job, drawn into (or read back from) the resumable ``cache``."""
    settings = SampleSettings(lm.name, group.eval_id, max_new_tokens, float(temperature), 1.0, seed)
    return draw_samples(lm, training_jobs(group, requests, draws), cache, settings, batch_size=batch_size,
                        progress=progress, label=f"sampling {group.eval_id}")


@dataclass(frozen=True)
class TripletReport:
    """What :func:`instruction_triplets` kept: of ``n_samples``, those the checker passed (``n_followed``, strict)
    and, of those, the ones kept (not empty, not degenerate)."""

    eval_id: str
    n_samples: int
    n_followed: int
    n_kept: int

    def to_dict(self) -> dict[str, Any]:
        return {"eval_id": self.eval_id, "n_samples": self.n_samples, "n_followed": self.n_followed,
                "n_kept": self.n_kept}


def instruction_triplets(lm: LoadedModel, group: InstructionGroup, requests: Sequence[str],
                         samples: Sequence[Sample]) -> tuple[list[PromptPair], TripletReport]:
    """Triplets ``(x = request, x' = request + instruction, y')`` from the samples the group's checker passes
    (strict) and that are neither empty nor degenerate (chat template on both prompts)."""
    kws = group.kwargs
    probes = [IFEvalPrompt(-1 - i, s.question, (group.instruction_id,), (kws[s.instruction],))
              for i, s in enumerate(samples)]
    checked = score_ifeval(probes, [s.response for s in samples])
    followed = [s for s, r in zip(samples, checked) if r.prompt_strict]
    scorer = CoherenceScorer(lm, sep="")
    x = [lm.format_prompt(requests[s.question_index], chat=True) for s in followed]
    coh = scorer.score(x, [s.response for s in followed]) if followed else []
    out = [PromptPair(c, lm.format_prompt(s.question, chat=True), s.response, 1.0)
           for s, c, h in zip(followed, x, coh) if not (h.empty or h.degenerate)]
    return out, TripletReport(group.eval_id, len(samples), len(followed), len(out))


@dataclass(frozen=True)
class IFEvalRun:
    """One condition on some eval prompts: the per-prompt checker results, IFEval's summary (strict / loose, per
    instruction), coherence (mean log-prob per token under the unsteered model given the request alone) with its
    degenerate rate, and the per-prompt coherence."""

    results: tuple[IFEvalResult, ...]
    summary: dict[str, Any]
    coherence: float
    degenerate: float
    per_prompt_coherence: tuple[float, ...] = field(repr=False, default=())

    def to_dict(self) -> dict[str, Any]:
        return {"summary": self.summary, "coherence": self.coherence, "degenerate": self.degenerate,
                "results": [r.to_dict() for r in self.results],
                "per_prompt_coherence": list(self.per_prompt_coherence)}


def run_ifeval(lm: LoadedModel, prompts: Sequence[IFEvalPrompt], *, with_instruction: bool,
               module_for: Callable[[IFEvalPrompt], GatedSteering | None] | None = None, alpha: float | None = None,
               max_new_tokens: int = 128, batch_size: int = 8,
               progress: bool | ProgressBar = False) -> IFEvalRun:
    """Greedy answers to ``prompts`` (the full prompt when ``with_instruction``, else the request alone), each
    steered by ``module_for(prompt)`` at ``alpha`` (None: unsteered; prompts sharing a module are batched
    together), scored with the official checkers and the coherence measure."""
    module_for = module_for or (lambda p: None)
    by_module: dict[int, list[int]] = {}
    modules: dict[int, GatedSteering | None] = {}
    for i, p in enumerate(prompts):
        m = module_for(p)
        by_module.setdefault(id(m), []).append(i)
        modules[id(m)] = m
    texts = [""] * len(prompts)
    with progress_for(progress, len(prompts), "IFEval answers", "prompts") as bar:
        for mid, idx in by_module.items():
            m = modules[mid]
            ivs = [] if m is None else [m.at(alpha)]
            for start in range(0, len(idx), batch_size):
                chunk = idx[start:start + batch_size]
                user = [prompts[i].prompt if with_instruction else str(prompts[i].prompt_without_instruction)
                        for i in chunk]
                res = generate(lm, [lm.format_prompt(u, chat=True) for u in user], max_new_tokens=max_new_tokens,
                               interventions=ivs)
                for i, t in zip(chunk, res.texts):
                    texts[i] = t.strip()
                bar.advance(len(chunk))
    results = score_ifeval(prompts, texts)
    coh = CoherenceScorer(lm, batch_size=batch_size, sep="").score(
        [lm.format_prompt(str(p.prompt_without_instruction), chat=True) for p in prompts], texts)
    s = summarize(coh)
    return IFEvalRun(tuple(results), summarize_ifeval(results), s["coherence"], s["degenerate"],
                     tuple(c.loglik for c in coh))
