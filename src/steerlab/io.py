"""Reading user files: contrastive pairs (JSONL / CSV) and prompt lists, with line-precise errors (the
UTF-8 / JSON-lines readers underneath live in :mod:`steerlab.files`, shared with the data loaders)."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any, Iterator

from .files import InputError, atomic_write_text, read_jsonl, read_text, text_lines
from .fit import ContrastPair

__all__ = ["InputError", "read_pairs", "read_prompts", "read_text", "text_lines", "atomic_write_text"]


def _existing(path: str | os.PathLike[str]) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise InputError(f"file not found: {p}")
    if not p.is_file():
        raise InputError(f"not a file: {p}")
    return p


def _records(p: Path) -> Iterator[tuple[int, Any]]:
    suffix = p.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        yield from read_jsonl(p)
    elif suffix == ".json":
        try:
            data = json.loads(read_text(p))
        except json.JSONDecodeError as e:
            raise InputError(f"{p}: not valid JSON ({e.msg} at line {e.lineno})") from None
        if not isinstance(data, list):
            raise InputError(f"{p}: expected a JSON list of objects")
        yield from enumerate(data, 1)
    elif suffix in (".csv", ".tsv"):
        reader = csv.DictReader(text_lines(p, csv_mode=True), delimiter="\t" if suffix == ".tsv" else ",")
        for n, row in enumerate(reader, 2):
            yield n, row
    else:
        raise InputError(f"{p}: unsupported file type '{suffix}' (use .jsonl, .json, .csv or .tsv)")


def read_pairs(path: str | os.PathLike[str]) -> list[ContrastPair]:
    """Contrastive pairs from JSONL/JSON/CSV with fields ``positive``, ``negative`` and optional ``prompt``."""
    p = _existing(path)
    pairs: list[ContrastPair] = []
    for n, rec in _records(p):
        if not isinstance(rec, dict):
            raise InputError(f"{p}:{n}: expected an object with 'positive' and 'negative'")
        pos, neg, prompt = rec.get("positive"), rec.get("negative"), rec.get("prompt")
        missing = [k for k, v in (("positive", pos), ("negative", neg)) if not isinstance(v, str) or not v.strip()]
        if missing:
            raise InputError(f"{p}:{n}: missing or empty field(s): {', '.join(missing)}")
        if prompt is not None and not isinstance(prompt, str):
            raise InputError(f"{p}:{n}: 'prompt' must be a string")
        pairs.append(ContrastPair(pos, neg, prompt or None))
    if not pairs:
        raise InputError(f"{p}: no pairs found (empty dataset)")
    return pairs


def read_prompts(path: str | os.PathLike[str]) -> list[str]:
    """Prompts from a text file (one per line), or JSONL/JSON/CSV with a ``prompt`` field."""
    p = _existing(path)
    prompts: list[str] = []
    if p.suffix.lower() in (".txt", ""):
        prompts = [line for line in read_text(p).splitlines() if line.strip()]
    else:
        for n, rec in _records(p):
            text = rec.get("prompt") if isinstance(rec, dict) else rec if isinstance(rec, str) else None
            if not isinstance(text, str) or not text.strip():
                raise InputError(f"{p}:{n}: missing or empty 'prompt'")
            prompts.append(text)
    if not prompts:
        raise InputError(f"{p}: no prompts found (empty file)")
    return prompts


