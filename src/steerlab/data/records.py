"""Typed records returned by the dataset loaders, and row-level parsing with malformed-row accounting.

Every loader turns the rows of its files into one of the frozen dataclasses below; raw dicts
never leave :mod:`steerlab.data`. :func:`parse_rows` runs a row parser over a file's rows,
skips and counts the rows that do not parse, warns with the count, and refuses the file
(:class:`MalformedDataError`) when more than half of its rows are malformed.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Iterable, Mapping, TypeVar

__all__ = [
    "MalformedDataError",
    "MalformedRowsWarning",
    "ParseReport",
    "parse_rows",
    "TruthfulQAItem",
    "TruthfulQAMCItem",
    "COPAItem",
    "StoryClozeItem",
    "NLIItem",
    "NLI_LABELS",
    "MMLUItem",
    "SST2Item",
    "WinograndeItem",
    "PersonaStatement",
    "ABItem",
    "OpenEndedItem",
    "IFEvalPrompt",
    "InstructionPair",
    "PersonaVectorQuestion",
    "PersonaVectorTrait",
    "frozen_mapping",
    "as_str",
    "ROW_ERRORS",
]

R = TypeVar("R")

#: errors a row parser may raise for a malformed row (anything else is a bug and propagates)
ROW_ERRORS: tuple[type[BaseException], ...] = (KeyError, ValueError, TypeError, IndexError, AttributeError)


class MalformedDataError(ValueError):
    """A data file is unusable: unreadable as a whole, empty, or mostly malformed rows."""


class MalformedRowsWarning(UserWarning):
    """Some rows of a data file were malformed and skipped."""


@dataclass(frozen=True)
class ParseReport:
    """How many rows a file had, how many parsed, and the first few errors."""

    source: str
    total: int
    malformed: int
    examples: tuple[str, ...] = ()

    @property
    def ok(self) -> int:
        return self.total - self.malformed


def parse_rows(
    source: str | os.PathLike[str],
    rows: Iterable[tuple[int, Any]],
    parse: Callable[[Any], R],
    max_malformed_fraction: float = 0.5,
) -> list[R]:
    """Parse ``(line_number, raw_row)`` pairs with ``parse``; skip, count and report bad rows.

    A row is malformed when ``parse`` raises one of ``KeyError, ValueError, TypeError,
    IndexError, AttributeError`` (missing field, wrong type, bad label, undecodable JSON line).
    Malformed rows are skipped with one :class:`MalformedRowsWarning` giving the count and the
    first errors. When more than ``max_malformed_fraction`` of the rows are malformed (or the
    file has no rows at all) the file is refused with :class:`MalformedDataError`.
    """
    out: list[R] = []
    bad: list[str] = []
    total = 0
    for lineno, raw in rows:
        total += 1
        try:
            out.append(parse(raw))
        except ROW_ERRORS as e:
            bad.append(f"row {lineno}: {type(e).__name__}: {e}")
    name = str(source)
    if total == 0:
        raise MalformedDataError(f"{name}: no data rows")
    report = ParseReport(name, total, len(bad), tuple(bad[:3]))
    if report.malformed > max_malformed_fraction * total:
        raise MalformedDataError(
            f"{name}: {report.malformed} of {total} rows are malformed; refusing the file "
            f"(first: {'; '.join(report.examples)}). Is it the right file and format?"
        )
    if report.malformed:
        warnings.warn(
            f"{name}: skipped {report.malformed} malformed row(s) of {total} (first: {'; '.join(report.examples)})",
            MalformedRowsWarning,
            stacklevel=3,
        )
    return out


def frozen_mapping(d: Mapping[str, Any]) -> Mapping[str, Any]:
    """A read-only view of a copy of ``d`` (records are immutable)."""
    return MappingProxyType(dict(d))


def as_str(v: Any, name: str) -> str:
    """``v`` if it is a string, else a TypeError naming the field (a malformed row)."""
    if not isinstance(v, str):
        raise TypeError(f"field '{name}' must be a string, got {type(v).__name__}")
    return v


# --------------------------------------------------------------------------- TruthfulQA


@dataclass(frozen=True)
class TruthfulQAItem:
    """One row of ``TruthfulQA.csv`` (answers split on ``;`` and stripped, as in the file)."""

    question: str
    best_answer: str
    correct_answers: tuple[str, ...]
    incorrect_answers: tuple[str, ...]
    type: str = ""
    category: str = ""
    source: str = ""


@dataclass(frozen=True)
class TruthfulQAMCItem:
    """One item of ``mc_task.json``: MC1 targets (one true) and MC2 targets (several true)."""

    question: str
    mc1_choices: tuple[str, ...]
    mc1_labels: tuple[int, ...]
    mc2_choices: tuple[str, ...]
    mc2_labels: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.mc1_choices) != len(self.mc1_labels) or len(self.mc2_choices) != len(self.mc2_labels):
            raise ValueError("choices and labels differ in length")
        if sum(self.mc1_labels) != 1:
            raise ValueError(f"mc1 targets need exactly one true answer, got {sum(self.mc1_labels)}")
        if not any(self.mc2_labels) or all(self.mc2_labels):
            raise ValueError("mc2 targets need at least one true and one false answer")

    @property
    def mc1_true(self) -> str:
        return self.mc1_choices[self.mc1_labels.index(1)]

    @property
    def mc1_false(self) -> tuple[str, ...]:
        return tuple(c for c, y in zip(self.mc1_choices, self.mc1_labels) if not y)

    @property
    def mc2_true(self) -> tuple[str, ...]:
        return tuple(c for c, y in zip(self.mc2_choices, self.mc2_labels) if y)

    @property
    def mc2_false(self) -> tuple[str, ...]:
        return tuple(c for c, y in zip(self.mc2_choices, self.mc2_labels) if not y)


# --------------------------------------------------------------------------- multiple choice


@dataclass(frozen=True)
class COPAItem:
    """SuperGLUE COPA: pick the more plausible cause/effect (``label`` 0 -> choice1, 1 -> choice2)."""

    idx: int
    premise: str
    choice1: str
    choice2: str
    question: str  # "cause" | "effect"
    label: int

    def __post_init__(self) -> None:
        if self.question not in ("cause", "effect"):
            raise ValueError(f"COPA question must be 'cause' or 'effect', got {self.question!r}")
        if self.label not in (0, 1):
            raise ValueError(f"COPA label must be 0 or 1, got {self.label!r}")


@dataclass(frozen=True)
class StoryClozeItem:
    """Story Cloze: four story sentences and two endings (``label`` 0 or 1 is the right one)."""

    id: str
    sentences: tuple[str, str, str, str]
    endings: tuple[str, str]
    label: int

    def __post_init__(self) -> None:
        if len(self.sentences) != 4 or len(self.endings) != 2:
            raise ValueError("a story has 4 sentences and 2 endings")
        if self.label not in (0, 1):
            raise ValueError(f"label must be 0 or 1, got {self.label!r}")


#: NLI label names by index
NLI_LABELS: tuple[str, str, str] = ("entailment", "neutral", "contradiction")


@dataclass(frozen=True)
class NLIItem:
    """A premise/hypothesis pair with a 3-way label (index into :data:`NLI_LABELS`)."""

    premise: str
    hypothesis: str
    label: int

    def __post_init__(self) -> None:
        if self.label not in (0, 1, 2):
            raise ValueError(f"NLI label must be 0, 1 or 2, got {self.label!r}")


@dataclass(frozen=True)
class MMLUItem:
    """An MMLU question with four choices (``label`` 0-3)."""

    subject: str
    question: str
    choices: tuple[str, str, str, str]
    label: int

    def __post_init__(self) -> None:
        if len(self.choices) != 4:
            raise ValueError(f"MMLU has 4 choices, got {len(self.choices)}")
        if self.label not in (0, 1, 2, 3):
            raise ValueError(f"MMLU label must be 0-3, got {self.label!r}")


@dataclass(frozen=True)
class SST2Item:
    """A sentence and its binary sentiment (0 negative, 1 positive)."""

    sentence: str
    label: int

    def __post_init__(self) -> None:
        if self.label not in (0, 1):
            raise ValueError(f"SST-2 label must be 0 or 1, got {self.label!r}")


@dataclass(frozen=True)
class WinograndeItem:
    """WinoGrande in partial-scoring form: two contexts (option substituted) and a shared continuation."""

    context_options: tuple[str, str]
    continuation: str
    label: int

    def __post_init__(self) -> None:
        if len(self.context_options) != 2:
            raise ValueError("WinoGrande has 2 context options")
        if self.label not in (0, 1):
            raise ValueError(f"label must be 0 or 1, got {self.label!r}")


# --------------------------------------------------------------------------- persona / behaviour


@dataclass(frozen=True)
class PersonaStatement:
    """An Anthropic persona item: would the model say ``statement``? (answers ``" Yes"``/``" No"``)."""

    trait: str
    question: str
    statement: str
    answer_matching: str
    answer_not_matching: str
    label_confidence: float | None = None


@dataclass(frozen=True)
class ABItem:
    """A two-answer behaviour item (CAA, Anthropic advanced-AI-risk): which answer matches the behaviour."""

    behavior: str
    question: str
    answer_matching: str
    answer_not_matching: str


@dataclass(frozen=True)
class OpenEndedItem:
    """An open-ended behaviour prompt (CAA ``test_dataset_open_ended.json``)."""

    behavior: str
    question: str


# --------------------------------------------------------------------------- instructions / traits


@dataclass(frozen=True)
class IFEvalPrompt:
    """An IFEval-format prompt: the instruction ids and their kwargs (read-only mappings)."""

    key: int
    prompt: str
    instruction_ids: tuple[str, ...]
    kwargs: tuple[Mapping[str, Any], ...]
    prompt_without_instruction: str | None = None
    instruction_ids_for_eval: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if len(self.instruction_ids) != len(self.kwargs):
            raise ValueError(f"{len(self.instruction_ids)} instruction ids but {len(self.kwargs)} kwargs")


@dataclass(frozen=True)
class InstructionPair:
    """A positive (trait-eliciting) and negative system prompt."""

    pos: str
    neg: str


@dataclass(frozen=True)
class PersonaVectorTrait:
    """A Persona Vectors trait file: system-prompt pairs, questions and the judge template."""

    trait: str
    instructions: tuple[InstructionPair, ...]
    questions: tuple[str, ...]
    eval_prompt: str


@dataclass(frozen=True)
class PersonaVectorQuestion:
    """One question of a Persona Vectors trait, with the trait's prompts (shared, read-only)."""

    trait: str
    question: str
    instructions: tuple[InstructionPair, ...] = field(repr=False)
    eval_prompt: str = field(repr=False)

