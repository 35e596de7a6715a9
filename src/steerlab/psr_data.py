"""PSR's training data: ``(x, x', y')`` triplets sampled from the model itself, filtered by a judge.

From a trait definition (a Persona Vectors trait file, or a user's own positive instruction + questions;
:func:`~steerlab.data.persona_vectors.load_trait_file`):

1. **Sample** (:func:`sample_trait`): for every question, a response under each positive system instruction
   (``x'`` = the chat prompt with ``"You are a(n) <trait> assistant. <instruction>"`` as the system prompt, the
   Persona Vectors wording), under each negative one (``"You are a helpful assistant. <negative>"``; these only
   train the trait proxy), and under the plain prompt ``x`` (the template's default system prompt; the
   coherence reference). Sampling, ``temperature`` 1 by default (0: greedy). Every batch is appended to a
   JSON-lines cache (the first line records the settings): a killed run continues where it stopped (the samples
   written are kept; the rest are drawn afresh).
2. **Filter** (:func:`build_triplets`): drop positive samples that are empty, degenerate (word 3-gram
   repetition >= 0.3) or less coherent than the unsteered model's typical level (mean log-likelihood per token
   under the unsteered model given the prompt the sample came from, below the plain samples' mean minus
   ``floor_margin`` nats); with a trait judge, drop positives it scores below ``trait_min`` (0.5). Each kept
   sample's score becomes its training strength. The default judge is the offline proxy of
   :mod:`steerlab.evals.trait`, **cross-fitted by question** (:func:`cross_fitted_scores`: a proxy trained on
   the answers to half of the questions scores the other half) so that no sample is judged by a proxy trained
   on it; any OpenAI-compatible judge with the trait file's eval prompt plugs in the same way.
"""

from __future__ import annotations

import json
import math
import os
import random
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Sequence

from .data.records import PersonaVectorTrait
from .evals.coherence import Coherence, CoherenceScorer
from .evals.trait import EmbeddingTraitProxy, ProxyFit, TraitJudge
from .files import atomic_write_text
from .generate import generate
from .models import LoadedModel
from .progress import ProgressBar, progress_for
from .prompt_steering import PromptPair

__all__ = ["KINDS", "Sample", "SampleSettings", "system_prompt", "sample_jobs", "sample_trait", "draw_samples",
           "read_samples", "FilterReport", "build_triplets", "cross_fitted_scores", "triplet_questions"]

#: what a sample was drawn under: a positive instruction, a negative one, or the plain prompt
KINDS: tuple[str, ...] = ("pos", "neg", "plain")


def system_prompt(trait: PersonaVectorTrait, kind: str, index: int) -> str | None:
    """The system prompt of a sample of ``kind`` with instruction ``index`` (None: the template's default)."""
    if kind == "plain":
        return None
    pair = trait.instructions[index]
    if kind == "pos":
        article = "an" if trait.trait[:1].lower() in "aeiou" else "a"
        return f"You are {article} {trait.trait} assistant. {pair.pos}".strip()
    if kind == "neg":
        return f"You are a helpful assistant. {pair.neg}".strip()
    raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")


@dataclass(frozen=True)
class SampleSettings:
    """What a sample cache was drawn with (its first line); a cache made with other settings is refused."""

    model: str
    trait: str
    max_new_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.max_new_tokens, bool) or not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be an integer >= 1, got {self.max_new_tokens!r}")
        t = self.temperature
        if not (isinstance(t, (int, float)) and math.isfinite(t) and t >= 0):
            raise ValueError(f"temperature must be a finite number >= 0 (0: greedy), got {self.temperature!r}")


@dataclass(frozen=True)
class Sample:
    """One response: ``kind`` (pos / neg / plain), question ``question_index``, instruction ``instruction``
    (the draw number for plain samples), ``system`` prompt (None: default), ``response``."""

    kind: str
    question_index: int
    instruction: int
    draw: int
    question: str
    system: str | None
    response: str

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.question_index}:{self.instruction}:{self.draw}"


def sample_jobs(trait: PersonaVectorTrait, draws: int = 1, kinds: Sequence[str] = KINDS) -> list[Sample]:
    """Every sample to draw (responses empty): per question, each instruction x ``draws`` for pos and neg, and
    as many plain draws as there are positive ones."""
    if isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
        raise ValueError(f"draws must be an integer >= 1, got {draws!r}")
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {bad[0]!r}")
    if not trait.questions:
        raise ValueError(f"trait '{trait.trait}' has no questions")
    n_instr = len(trait.instructions)
    jobs = []
    for kind in kinds:  # instruction-major: the first jobs of a kind cover every question once
        for ii in range(n_instr):
            for qi, q in enumerate(trait.questions):
                for d in range(draws):
                    jobs.append(Sample(kind, qi, ii, d, q, system_prompt(trait, kind, ii), ""))
    return jobs


def read_samples(path: str | os.PathLike[str], settings: SampleSettings | None = None) -> list[Sample]:
    """The samples of a cache file (a torn last line, from a killed run, is skipped); with ``settings``,
    refused when the cache was drawn with others."""
    p = Path(path)
    if not p.is_file():
        return []
    lines = p.read_text(encoding="utf-8").splitlines()
    if not lines:
        return []
    try:
        head = json.loads(lines[0])["settings"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise ValueError(f"'{p}' is not a PSR sample cache (its first line holds no settings)") from None
    if settings is not None and head != asdict(settings):
        raise ValueError(f"sample cache '{p}' was drawn with other settings ({head}); delete it or pass another path")
    names = {f.name for f in fields(Sample)}
    out: list[Sample] = []
    for i, line in enumerate(lines[1:], start=2):
        try:
            d = json.loads(line)
            out.append(Sample(**{k: d[k] for k in names}))
        except (json.JSONDecodeError, KeyError, TypeError):
            if i != len(lines):
                raise ValueError(f"sample cache '{p}' line {i} is malformed") from None
    return out


def _append(path: Path, samples: Sequence[Sample], settings: SampleSettings) -> None:
    """Append samples (creating the file with its settings line), flushed to disk before returning."""
    if not path.exists():
        atomic_write_text(path, json.dumps({"settings": asdict(settings)}) + "\n")
    else:  # a torn last line from a killed run: drop it before appending
        text = path.read_text(encoding="utf-8")
        if text and not text.endswith("\n"):
            atomic_write_text(path, text[: text.rfind("\n") + 1])
    with path.open("a", encoding="utf-8") as f:
        for s in samples:
            f.write(json.dumps(asdict(s)) + "\n")
        f.flush()
        os.fsync(f.fileno())


def sample_trait(lm: LoadedModel, trait: PersonaVectorTrait, cache: str | os.PathLike[str], *, draws: int = 1,
                 kinds: Sequence[str] = KINDS, max_new_tokens: int = 64, temperature: float = 1.0,
                 top_p: float = 1.0, seed: int = 0, batch_size: int = 8, limit: int | None = None,
                 progress: bool | ProgressBar = False) -> list[Sample]:
    """Draw every sample of :func:`sample_jobs` (the first ``limit`` of each kind) not yet in ``cache`` (see the
    module doc); returns all of them in job order."""
    settings = SampleSettings(lm.name, trait.trait, max_new_tokens, float(temperature), float(top_p), seed)
    jobs = sample_jobs(trait, draws, kinds)
    if limit is not None:
        jobs = [j for k in kinds for j in [x for x in jobs if x.kind == k][:limit]]
    return draw_samples(lm, jobs, cache, settings, batch_size=batch_size, progress=progress,
                        label=f"sampling {trait.trait}")


def draw_samples(lm: LoadedModel, jobs: Sequence[Sample], cache: str | os.PathLike[str], settings: SampleSettings, *,
                 batch_size: int = 8, progress: bool | ProgressBar = False, label: str = "sampling") -> list[Sample]:
    """Sample a response to every job (its ``question`` as the user message under its ``system`` prompt, chat
    template, ``settings``' decoding) that ``cache`` does not hold yet, appending each batch to ``cache`` as it
    is drawn; returns all of them in job order (temperature 0: greedy). Jobs need distinct keys."""
    path = Path(cache)
    if len({j.key for j in jobs}) != len(jobs):
        raise ValueError("sample jobs need distinct keys")
    have = {s.key: s for s in read_samples(path, settings)}
    todo = [j for j in jobs if j.key not in have]
    with progress_for(progress, len(jobs), label, "samples") as bar:
        bar.advance(len(jobs) - len(todo))
        for start in range(0, len(todo), batch_size):
            chunk = todo[start:start + batch_size]
            prompts = [lm.format_prompt(j.question, chat=True, system=j.system) for j in chunk]
            greedy = settings.temperature == 0
            out = generate(lm, prompts, max_new_tokens=settings.max_new_tokens, do_sample=not greedy,
                           temperature=1.0 if greedy else settings.temperature, top_p=settings.top_p,
                           seed=settings.seed * 1_000_003 + len(have) + start)
            done = [Sample(j.kind, j.question_index, j.instruction, j.draw, j.question, j.system, text.strip())
                    for j, text in zip(chunk, out)]
            _append(path, done, settings)
            have.update((s.key, s) for s in done)
            bar.advance(len(chunk))
    return [have[j.key] for j in jobs]


@dataclass(frozen=True)
class FilterReport:
    """What :func:`build_triplets` kept and why it dropped the rest (counts over the positive samples)."""

    n_positive: int
    n_kept: int
    n_empty: int
    n_degenerate: int
    n_incoherent: int
    n_weak: int
    coherence_floor: float
    plain_coherence: float
    positive_coherence: float
    judge: str
    mean_score_kept: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def cross_fitted_scores(trait: PersonaVectorTrait, samples: Sequence[Sample], folds: int = 2,
                        seed: int = 0) -> tuple[list[float], list[ProxyFit]]:
    """Trait-proxy scores of the positive samples (in their order), each from a proxy trained on the pos / neg
    answers to the *other* questions (questions split into ``folds`` seeded groups); and each proxy's fit."""
    qs = sorted({s.question_index for s in samples})
    order = qs[:]
    random.Random(seed).shuffle(order)
    group = {q: i % folds for i, q in enumerate(order)}
    pos = [s for s in samples if s.kind == "pos"]
    scores: dict[str, float] = {}
    fits: list[ProxyFit] = []
    for f in range(folds):
        train = [s for s in samples if group[s.question_index] != f and s.response]
        proxy, fit = EmbeddingTraitProxy.fit(trait.trait, [s.response for s in train if s.kind == "pos"],
                                             [s.response for s in train if s.kind == "neg"], seed=seed)
        fits.append(fit)
        held = [s for s in pos if group[s.question_index] == f]
        if held:
            for s, v in zip(held, proxy.score([s.question for s in held], [s.response for s in held])):
                scores[s.key] = v
    return [scores[s.key] for s in pos], fits


def build_triplets(lm: LoadedModel, trait: PersonaVectorTrait, samples: Sequence[Sample], *,
                   scores: Sequence[float] | None = None, judge: TraitJudge | None = None,
                   floor_margin: float = 0.5, trait_min: float = 0.5, batch_size: int = 8,
                   progress: bool = False) -> tuple[list[PromptPair], FilterReport, list[Coherence]]:
    """Filter the positive samples into training triplets (module doc). Trait scores come from ``scores`` (one
    per positive sample, e.g. :func:`cross_fitted_scores`), else from ``judge``, else every kept sample gets 1
    and nothing is dropped as weak. Returns the triplets, the report and the positives' coherence."""
    pos = [s for s in samples if s.kind == "pos"]
    plain = [s for s in samples if s.kind == "plain"]
    if not pos:
        raise ValueError("no positive samples to build triplets from")
    if not plain:
        raise ValueError("no plain samples: they set the coherence floor (sample with kind 'plain')")
    if not math.isfinite(floor_margin) or floor_margin < 0:
        raise ValueError(f"floor_margin must be a finite number >= 0, got {floor_margin!r}")
    scorer = CoherenceScorer(lm, batch_size=batch_size, sep="")
    fmt = [lm.format_prompt(s.question, chat=True, system=s.system) for s in pos + plain]
    coh = scorer.score(fmt, [s.response for s in pos + plain], progress=progress)
    pos_coh, plain_coh = coh[: len(pos)], coh[len(pos):]
    plain_mean = sum(c.loglik for c in plain_coh) / len(plain_coh)
    floor = plain_mean - floor_margin
    name = "none (every sample scored 1)"
    if scores is not None:
        if len(scores) != len(pos):
            raise ValueError(f"{len(scores)} scores for {len(pos)} positive samples")
        vals = [float(v) for v in scores]
        name = "given scores"
    elif judge is not None:
        vals = judge.score([s.question for s in pos], [s.response for s in pos])
        name = judge.name
    else:
        vals = [1.0] * len(pos)
    counts = {"empty": 0, "degenerate": 0, "incoherent": 0, "weak": 0}
    out: list[PromptPair] = []
    for s, c, v in zip(pos, pos_coh, vals):
        if c.empty:
            counts["empty"] += 1
        elif c.degenerate:
            counts["degenerate"] += 1
        elif c.loglik < floor:
            counts["incoherent"] += 1
        elif (scores is not None or judge is not None) and not (math.isfinite(v) and v >= trait_min):
            counts["weak"] += 1
        else:
            out.append(PromptPair(lm.format_prompt(s.question, chat=True), lm.format_prompt(s.question, chat=True,
                                                                                           system=s.system),
                                  s.response, float(v)))
    report = FilterReport(len(pos), len(out), counts["empty"], counts["degenerate"], counts["incoherent"],
                          counts["weak"], floor, plain_mean, sum(c.loglik for c in pos_coh) / len(pos_coh), name,
                          sum(p.score for p in out) / len(out) if out else math.nan)
    return out, report, pos_coh


def triplet_questions(lm: LoadedModel, samples: Sequence[Sample], triplets: Sequence[PromptPair]) -> list[int]:
    """The question index of each triplet :func:`build_triplets` made from ``samples`` (for splits by question)."""
    index = {(lm.format_prompt(s.question, chat=True, system=s.system), s.response): s.question_index
             for s in samples if s.kind == "pos"}
    try:
        return [index[(t.steered_context, t.response)] for t in triplets]
    except KeyError:
        raise ValueError("a triplet does not come from these samples") from None
