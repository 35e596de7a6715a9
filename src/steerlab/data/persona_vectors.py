"""Persona Vectors trait files (Chen et al. 2025): ``persona_vectors/trait_data_{extract,eval}/<trait>.json``.

Each file holds ``instruction`` (5 ``{pos, neg}`` system-prompt pairs), ``questions`` (20) and
``eval_prompt`` (the judge template with ``{question}`` and ``{answer}`` slots). Split
``extract`` is for building the vectors, ``eval`` for evaluating them (disjoint questions).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

from . import DataNotFoundError, data_dir
from .records import (
    InstructionPair,
    MalformedDataError,
    PersonaVectorQuestion,
    PersonaVectorTrait,
    as_str,
    parse_rows,
)

__all__ = ["PV_SPLITS", "persona_vector_traits", "load_trait", "load_trait_file", "load_persona_vectors"]

PathLike = str | os.PathLike[str] | None
PV_SPLITS: Mapping[str, str] = {"extract": "persona_vectors/trait_data_extract",
                                "eval": "persona_vectors/trait_data_eval"}


def persona_vector_traits(split: str = "extract", root: PathLike = None) -> list[str]:
    """Traits present for ``split``."""
    folder = data_dir(root) / PV_SPLITS[split]
    return sorted(p.stem for p in folder.glob("*.json")) if folder.is_dir() else []


def _pair(d: Any) -> InstructionPair:
    if not isinstance(d, Mapping):
        raise TypeError("instruction must be an object with 'pos' and 'neg'")
    return InstructionPair(as_str(d["pos"], "pos"), as_str(d["neg"], "neg"))


def load_trait(trait: str, split: str = "extract", root: PathLike = None) -> PersonaVectorTrait:
    """One trait file as a :class:`PersonaVectorTrait` (malformed instruction pairs / questions skipped)."""
    if split not in PV_SPLITS:
        raise ValueError(f"persona_vectors has splits {', '.join(PV_SPLITS)}; got '{split}'")
    path = data_dir(root) / PV_SPLITS[split] / f"{trait}.json"
    if not path.is_file():
        raise DataNotFoundError(f"Persona Vectors file not found: {path}")
    return load_trait_file(path, trait)


def _instructions(d: Mapping[str, Any]) -> list[Any]:
    """``instruction`` (``[{pos, neg}, ...]``), or a user's ``positive`` (+ optional ``negative``) text(s)."""
    if "instruction" in d:
        if not isinstance(d["instruction"], list):
            raise TypeError("'instruction' must be a list of {pos, neg} objects")
        return list(d["instruction"])
    if "positive" not in d:
        raise KeyError("instruction")
    pos, neg = d["positive"], d.get("negative", "")
    pos_list = pos if isinstance(pos, list) else [pos]
    neg_list = neg if isinstance(neg, list) else [neg] * len(pos_list)
    if len(neg_list) != len(pos_list):
        raise TypeError("'positive' and 'negative' must have the same number of entries")
    return [{"pos": p, "neg": n} for p, n in zip(pos_list, neg_list)]


def load_trait_file(path: str | os.PathLike[str], trait: str | None = None) -> PersonaVectorTrait:
    """A trait definition file: the Persona Vectors format (``instruction``: ``[{pos, neg}]``, ``questions``,
    ``eval_prompt``) or a user's own (``positive`` instruction(s), optional ``negative``, ``questions``, optional
    ``eval_prompt``). ``trait`` defaults to the file's ``trait`` field or its name."""
    p = Path(path)
    if not p.is_file():
        raise DataNotFoundError(f"trait file not found: {p}")
    try:
        d = json.loads(p.read_text(encoding="utf-8"))
        if not isinstance(d, Mapping):
            raise TypeError("expected a JSON object")
        instr = _instructions(d)
        questions = d["questions"]
        if not isinstance(questions, list):
            raise TypeError("'questions' must be a list")
        judge = as_str(d.get("eval_prompt", ""), "eval_prompt")
        name = as_str(d.get("trait", trait or p.stem), "trait")
    except KeyError as e:
        raise MalformedDataError(f"{p}: not a trait file: it lacks the field {e.args[0]!r}") from None
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError) as e:
        raise MalformedDataError(f"{p}: not a trait file ({type(e).__name__}: {e})") from None
    pairs = parse_rows(f"{p} (instruction)", enumerate(instr), _pair)
    qs = parse_rows(f"{p} (questions)", enumerate(questions), lambda q: as_str(q, "question"))
    return PersonaVectorTrait(name, tuple(pairs), tuple(qs), judge)


def load_persona_vectors(trait: str, split: str = "extract", root: PathLike = None) -> list[PersonaVectorQuestion]:
    """One record per question of a trait, carrying the trait's instruction pairs and judge template."""
    t = load_trait(trait, split, root)
    return [PersonaVectorQuestion(t.trait, q, t.instructions, t.eval_prompt) for q in t.questions]
