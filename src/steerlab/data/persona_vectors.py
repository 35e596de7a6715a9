"""Persona Vectors trait files (Chen et al. 2025): ``persona_vectors/trait_data_{extract,eval}/<trait>.json``.

Each file holds ``instruction`` (5 ``{pos, neg}`` system-prompt pairs), ``questions`` (20) and
``eval_prompt`` (the judge template with ``{question}`` and ``{answer}`` slots). Split
``extract`` is for building the vectors, ``eval`` for evaluating them (disjoint questions).
"""

from __future__ import annotations

import json
import os
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

__all__ = ["PV_SPLITS", "persona_vector_traits", "load_trait", "load_persona_vectors"]

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
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
        instr, questions, judge = d["instruction"], d["questions"], as_str(d["eval_prompt"], "eval_prompt")
        if not isinstance(instr, list) or not isinstance(questions, list):
            raise TypeError("'instruction' and 'questions' must be lists")
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
        raise MalformedDataError(f"{path}: not a Persona Vectors trait file ({type(e).__name__}: {e})") from e
    pairs = parse_rows(f"{path} (instruction)", enumerate(instr), _pair)
    qs = parse_rows(f"{path} (questions)", enumerate(questions), lambda q: as_str(q, "question"))
    return PersonaVectorTrait(trait, tuple(pairs), tuple(qs), judge)


def load_persona_vectors(trait: str, split: str = "extract", root: PathLike = None) -> list[PersonaVectorQuestion]:
    """One record per question of a trait, carrying the trait's instruction pairs and judge template."""
    t = load_trait(trait, split, root)
    return [PersonaVectorQuestion(t.trait, q, t.instructions, t.eval_prompt) for q in t.questions]
