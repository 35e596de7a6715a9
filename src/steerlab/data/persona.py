"""Behaviour datasets: Anthropic persona statements, Anthropic advanced-AI-risk A/B sets, CAA sets.

Files below ``<data root>/persona/``:

* ``anthropic_persona/<trait>.jsonl`` - Yes/No statements (``question, statement,
  label_confidence, answer_matching_behavior, answer_not_matching_behavior``);
* ``anthropic_advanced_ai_risk_human/<name>.jsonl`` - human-written A/B items
  (answers ``" (A)"``/``" (B)"``; a few items have more options, only the two given answers count);
* ``caa/<behavior>/generate_dataset.json`` (split ``generate``, used to fit vectors),
  ``test_dataset_ab.json`` (split ``test``, 50 A/B items) and ``test_dataset_open_ended.json``
  (split ``open_ended``).

Answers are kept exactly as stored (with or without a leading space); prompt formatting lives
in :mod:`steerlab.evals.persona`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

from . import DataNotFoundError, data_dir
from .multiple_choice import read_jsonl_rows
from .records import ABItem, MalformedDataError, OpenEndedItem, PersonaStatement, as_str, parse_rows

__all__ = [
    "PERSONA_DIR",
    "AI_RISK_DIR",
    "CAA_DIR",
    "CAA_SPLITS",
    "persona_traits",
    "ai_risk_names",
    "caa_behaviors",
    "load_persona",
    "load_ai_risk",
    "load_caa",
]

PathLike = str | os.PathLike[str] | None
PERSONA_DIR = "persona/anthropic_persona"
AI_RISK_DIR = "persona/anthropic_advanced_ai_risk_human"
CAA_DIR = "persona/caa"
CAA_SPLITS: Mapping[str, str] = {
    "generate": "generate_dataset.json",
    "test": "test_dataset_ab.json",
    "open_ended": "test_dataset_open_ended.json",
}


def _names(root: PathLike, rel: str, pattern: str) -> list[str]:
    folder = data_dir(root) / rel
    if not folder.is_dir():
        return []
    if pattern == "dir":
        return sorted(p.name for p in folder.iterdir() if p.is_dir())
    return sorted(p.stem for p in folder.glob(pattern))


def persona_traits(root: PathLike = None) -> list[str]:
    """Persona traits present below the data root."""
    return _names(root, PERSONA_DIR, "*.jsonl")


def ai_risk_names(root: PathLike = None) -> list[str]:
    """Advanced-AI-risk (human-written) A/B sets present below the data root."""
    return _names(root, AI_RISK_DIR, "*.jsonl")


def caa_behaviors(root: PathLike = None) -> list[str]:
    """CAA behaviours present below the data root."""
    return _names(root, CAA_DIR, "dir")


def _file(root: PathLike, rel: str) -> Path:
    p = data_dir(root) / rel
    if not p.is_file():
        raise DataNotFoundError(f"data file not found: {p}")
    return p


def _obj(raw: Any) -> Mapping[str, Any]:
    d = json.loads(raw) if isinstance(raw, str) else raw
    if not isinstance(d, Mapping):
        raise TypeError(f"expected an object, got {type(d).__name__}")
    return d


def _answers(d: Mapping[str, Any]) -> tuple[str, str]:
    m, n = d["answer_matching_behavior"], d["answer_not_matching_behavior"]
    # a few upstream files store a list with one answer
    if isinstance(m, list) and len(m) == 1:
        m = m[0]
    if isinstance(n, list) and len(n) == 1:
        n = n[0]
    m, n = as_str(m, "answer_matching_behavior"), as_str(n, "answer_not_matching_behavior")
    if not m.strip() or not n.strip() or m.strip() == n.strip():
        raise ValueError(f"answers must be two different non-empty strings, got {m!r} / {n!r}")
    return m, n


def load_persona(trait: str, split: str = "test", root: PathLike = None) -> list[PersonaStatement]:
    """Anthropic persona statements of one trait (1000 per trait; single split ``test``)."""
    if split != "test":
        raise ValueError(f"persona sets have one split, 'test'; got '{split}'")
    path = _file(root, f"{PERSONA_DIR}/{trait}.jsonl")

    def parse(line: str) -> PersonaStatement:
        d = _obj(line)
        m, n = _answers(d)
        conf = d.get("label_confidence")
        return PersonaStatement(trait, as_str(d["question"], "question"), as_str(d.get("statement", ""), "statement"),
                                m, n, None if conf is None else float(conf))

    return parse_rows(path, read_jsonl_rows(path), parse)


def _ab_parser(behavior: str) -> Any:
    def parse(raw: Any) -> ABItem:
        d = _obj(raw)
        m, n = _answers(d)
        return ABItem(behavior, as_str(d["question"], "question"), m, n)
    return parse


def load_ai_risk(name: str, split: str = "test", root: PathLike = None) -> list[ABItem]:
    """Anthropic advanced-AI-risk human-written A/B items of one set (single split ``test``)."""
    if split != "test":
        raise ValueError(f"advanced-AI-risk sets have one split, 'test'; got '{split}'")
    path = _file(root, f"{AI_RISK_DIR}/{name}.jsonl")
    return parse_rows(path, read_jsonl_rows(path), _ab_parser(name))


def load_caa(behavior: str, split: str = "test", root: PathLike = None) -> list[ABItem] | list[OpenEndedItem]:
    """CAA items: ``generate`` / ``test`` (A/B, :class:`ABItem`) or ``open_ended`` (:class:`OpenEndedItem`)."""
    if split not in CAA_SPLITS:
        raise ValueError(f"CAA sets have splits {', '.join(CAA_SPLITS)}; got '{split}'")
    path = _file(root, f"{CAA_DIR}/{behavior}/{CAA_SPLITS[split]}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MalformedDataError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(data, list):
        raise MalformedDataError(f"{path}: expected a JSON list, got {type(data).__name__}")
    if split == "open_ended":
        return parse_rows(path, enumerate(data), lambda d: OpenEndedItem(behavior, as_str(_obj(d)["question"], "question")))
    return parse_rows(path, enumerate(data), _ab_parser(behavior))
