"""Zero-shot multiple choice by option log-likelihood: COPA, StoryCloze, SNLI, MMLU, SST-2, WinoGrande.

Each item becomes a :class:`MCPrompt`: one ``(context, continuation)`` pair per option. The
predicted option maximises the continuation's log-likelihood given its context, computed three
ways and all reported:

* ``acc``       - raw sum of the continuation's token log-probabilities;
* ``acc_norm``  - mean per continuation token (length-normalised by tokens);
* ``acc_char``  - sum divided by the continuation's length in characters
  (lm-evaluation-harness's ``acc_norm``).

Prompt formats (those of lm-evaluation-harness where it has the task; ``⎵`` = a space):

============ =========================================================== =====================================
task         context                                                     options (continuations)
============ =========================================================== =====================================
COPA         premise without its final period + ``⎵because`` (cause) /   ``⎵`` + choice with a lower-cased
             ``⎵therefore`` (effect)                                     first letter
StoryCloze   the 4 story sentences joined by spaces                       ``⎵`` + ending
SNLI         ``{premise}\\nQuestion: {hypothesis} True, False or          ``⎵True`` (entailment), ``⎵Neither``
             Neither?\\nAnswer:`` (lm-eval's ANLI/RTE-style prompt)      (neutral), ``⎵False`` (contradiction)
MMLU         ``The following are multiple choice questions (with         ``⎵A`` ``⎵B`` ``⎵C`` ``⎵D``
             answers) about {subject}.\\n\\n{question}\\nA. {c0}\\nB.
             {c1}\\nC. {c2}\\nD. {c3}\\nAnswer:``
SST-2        ``{sentence}\\nQuestion: Is this sentence positive or        ``⎵negative``, ``⎵positive``
             negative?\\nAnswer:``
WinoGrande   the sentence up to the blank with the option filled in      ``⎵`` + the rest of the sentence
             (one context per option; partial scoring)                   (shared by both options)
============ =========================================================== =====================================

SNLI and SST-2 text in the shared data is tokenized (``a church .``); it is detokenized
(spaces before punctuation and clitics removed) before prompting. WinoGrande compares the same
continuation under two contexts, so its three accuracies coincide.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..data.records import COPAItem, MMLUItem, NLIItem, SST2Item, StoryClozeItem, WinograndeItem
from ..interventions.fasb import FASBSteering
from ..interventions.add import Steer
from ..interventions.base import Intervention
from ..models import LoadedModel
from ..vectors import SteeringVector
from .loglik import LoglikResult, SteerFrom, loglikelihood

__all__ = [
    "MC_TASKS",
    "MCPrompt",
    "MCResult",
    "detokenize",
    "format_copa",
    "format_storycloze",
    "format_snli",
    "format_mmlu",
    "format_sst2",
    "format_winogrande",
    "to_prompts",
    "score_items",
    "evaluate_prompts",
    "evaluate_task",
]

#: the six tasks, by registry name
MC_TASKS: tuple[str, ...] = ("copa", "storycloze", "snli", "mmlu", "sst2", "winogrande")


@dataclass(frozen=True)
class MCPrompt:
    """One item: a ``(context, continuation)`` pair per option and the index of the right option."""

    options: tuple[tuple[str, str], ...]
    label: int

    def __post_init__(self) -> None:
        if len(self.options) < 2:
            raise ValueError("a multiple-choice item needs at least 2 options")
        if not 0 <= self.label < len(self.options):
            raise ValueError(f"label {self.label} out of range for {len(self.options)} options")

    @classmethod
    def shared(cls, context: str, continuations: Sequence[str], label: int) -> "MCPrompt":
        return cls(tuple((context, c) for c in continuations), label)


_DETOK = [
    (re.compile(r" ([.,!?;:%)\]}])"), r"\1"),
    (re.compile(r"([(\[{$]) "), r"\1"),
    (re.compile(r" (n't|'s|'re|'ve|'m|'ll|'d)\b", re.IGNORECASE), r"\1"),
    (re.compile(r"`` ?| ?''"), '"'),
    (re.compile(r" -- "), " - "),
]


def detokenize(text: str) -> str:
    """Undo PTB-style tokenization (``a church .`` -> ``a church.``); whitespace normalised."""
    text = " ".join(text.split())
    for pat, rep in _DETOK:
        text = pat.sub(rep, text)
    return text.strip()


def format_copa(it: COPAItem) -> MCPrompt:
    connector = {"cause": "because", "effect": "therefore"}[it.question]
    premise = it.premise.strip()
    ctx = (premise[:-1] if premise.endswith((".", "!", "?")) else premise) + f" {connector}"

    def choice(c: str) -> str:
        return " " + c[0].lower() + c[1:]

    return MCPrompt.shared(ctx, (choice(it.choice1), choice(it.choice2)), it.label)


def format_storycloze(it: StoryClozeItem) -> MCPrompt:
    return MCPrompt.shared(" ".join(it.sentences), tuple(" " + e for e in it.endings), it.label)


SNLI_ANSWERS: tuple[str, str, str] = (" True", " Neither", " False")  # entailment, neutral, contradiction


def format_snli(it: NLIItem) -> MCPrompt:
    ctx = f"{detokenize(it.premise)}\nQuestion: {detokenize(it.hypothesis)} True, False or Neither?\nAnswer:"
    return MCPrompt.shared(ctx, SNLI_ANSWERS, it.label)


def format_mmlu(it: MMLUItem) -> MCPrompt:
    subject = it.subject.replace("_", " ")
    lines = [f"The following are multiple choice questions (with answers) about {subject}.", "", it.question.strip()]
    lines += [f"{letter}. {c}" for letter, c in zip("ABCD", it.choices)]
    lines.append("Answer:")
    return MCPrompt.shared("\n".join(lines), (" A", " B", " C", " D"), it.label)


def format_sst2(it: SST2Item) -> MCPrompt:
    ctx = f"{detokenize(it.sentence)}\nQuestion: Is this sentence positive or negative?\nAnswer:"
    return MCPrompt.shared(ctx, (" negative", " positive"), it.label)


def format_winogrande(it: WinograndeItem) -> MCPrompt:
    cont = " " + it.continuation.strip()
    return MCPrompt(tuple((c, cont) for c in it.context_options), it.label)


_FORMATTERS: Mapping[str, Callable[[Any], MCPrompt]] = {
    "copa": format_copa,
    "storycloze": format_storycloze,
    "snli": format_snli,
    "mmlu": format_mmlu,
    "sst2": format_sst2,
    "winogrande": format_winogrande,
}


def to_prompts(task: str, items: Sequence[Any]) -> list[MCPrompt]:
    """Format loader records of ``task`` (one of :data:`MC_TASKS`) as :class:`MCPrompt`."""
    if task not in _FORMATTERS:
        raise ValueError(f"unknown multiple-choice task '{task}': choose from {', '.join(MC_TASKS)}")
    return [_FORMATTERS[task](it) for it in items]


@dataclass
class MCResult:
    """Accuracies (0-1) of one task: raw sum, per-token mean, per-character; with per-item predictions."""

    task: str
    n: int
    acc: float
    acc_norm: float
    acc_char: float
    predictions: list[dict[str, Any]] = field(default_factory=list, repr=False)
    config: dict[str, Any] = field(default_factory=dict)

    def to_dict(self, predictions: bool = False) -> dict[str, Any]:
        d: dict[str, Any] = {"task": self.task, "n": self.n, "acc": self.acc, "acc_norm": self.acc_norm,
                             "acc_char": self.acc_char, "config": self.config}
        if predictions:
            d["predictions"] = self.predictions
        return d


def _argmax(xs: Sequence[float]) -> int:
    return int(np.argmax(np.asarray(xs, dtype=np.float64)))


def score_items(prompts: Sequence[MCPrompt], results: Sequence[Sequence[LoglikResult]], task: str = "") -> MCResult:
    """Accuracies from per-option log-likelihoods (``results[i][j]`` for option j of item i)."""
    preds = []
    hits = np.zeros((len(prompts), 3))
    for i, (p, rs) in enumerate(zip(prompts, results)):
        raw, mean, char = _argmax([r.sum for r in rs]), _argmax([r.mean for r in rs]), _argmax([r.per_char for r in rs])
        hits[i] = (raw == p.label, mean == p.label, char == p.label)
        preds.append({"label": p.label, "pred": raw, "pred_norm": mean, "pred_char": char,
                      "loglik": [r.sum for r in rs], "n_tokens": [r.n_tokens for r in rs]})
    m = hits.mean(0) if len(prompts) else np.full(3, np.nan)
    return MCResult(task, len(prompts), float(m[0]), float(m[1]), float(m[2]), preds)


def evaluate_prompts(
    lm: LoadedModel,
    prompts: Sequence[MCPrompt],
    steer: SteeringVector | Steer | None = None,
    *,
    task: str = "",
    strength: float | None = None,
    interventions: Sequence[Intervention] = (),
    steer_from: SteerFrom = "last_prompt",
    adaptive: FASBSteering | None = None,
    batch_size: int = 8,
    progress: bool = False,
) -> MCResult:
    """Accuracy of ``lm`` on formatted prompts, optionally steering the option tokens."""
    pairs = [pair for p in prompts for pair in p.options]
    flat = loglikelihood(lm, pairs, steer, strength=strength, interventions=interventions, steer_from=steer_from,
                            adaptive=adaptive,
                         batch_size=batch_size, progress=progress, label=task or "multiple choice")
    grouped, k = [], 0
    for p in prompts:
        grouped.append(flat[k:k + len(p.options)])
        k += len(p.options)
    res = score_items(prompts, grouped, task)
    res.config.update({"steered": steer is not None or bool(interventions) or adaptive is not None, "steer_from": steer_from})
    return res


def evaluate_task(
    lm: LoadedModel,
    task: str,
    steer: SteeringVector | Steer | None = None,
    *,
    split: str | None = None,
    root: Any = None,
    limit: int | None = None,
    seed: int = 0,
    strength: float | None = None,
    interventions: Sequence[Intervention] = (),
    steer_from: SteerFrom = "last_prompt",
    batch_size: int = 8,
    progress: bool = False,
) -> MCResult:
    """Load ``task`` from the registry (``limit`` items drawn with ``seed``), format and evaluate it."""
    from ..data.registry import get_spec, load_dataset

    spec = get_spec(task)
    items = load_dataset(task, split, root=root, limit=limit, seed=seed)
    res = evaluate_prompts(lm, to_prompts(task, items), steer, task=task, strength=strength,
                           interventions=interventions, steer_from=steer_from, batch_size=batch_size,
                           progress=progress)
    res.config.update({"split": spec.split_name(split), "limit": limit, "seed": seed})
    return res
