"""TruthfulQA loaders: the question CSV and the multiple-choice JSON.

Files below the data root (see :func:`steerlab.data.data_dir`):

* ``truthfulqa/TruthfulQA.csv`` - v1 CSV (817 rows, UTF-8 BOM); answers inside a cell are
  separated by ``;``. Rows keep the file's order.
* ``truthfulqa/mc_task.json`` - v1 MC file (split ``v1``); ``truthfulqa/v0/mc_task.json`` - the
  original MC file (split ``v0``, the order of the Hugging Face ``truthful_qa`` listing).

The MC file's question order differs from the CSV's; join on ``question.strip()``
(:func:`join_on_question`).
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence, TypeVar

from . import DataNotFoundError, data_dir
from .records import MalformedDataError, TruthfulQAItem, TruthfulQAMCItem, as_str, parse_rows

__all__ = [
    "CSV_PATH",
    "MC_PATHS",
    "load_truthfulqa",
    "load_truthfulqa_mc",
    "split_answers",
    "join_on_question",
]

PathLike = str | os.PathLike[str] | None
CSV_PATH = "truthfulqa/TruthfulQA.csv"
MC_PATHS: Mapping[str, str] = {"v1": "truthfulqa/mc_task.json", "v0": "truthfulqa/v0/mc_task.json"}
_CSV_COLUMNS = ("Type", "Category", "Question", "Best Answer", "Correct Answers", "Incorrect Answers", "Source")

T = TypeVar("T")


def _file(root: PathLike, rel: str) -> Path:
    p = data_dir(root) / rel
    if not p.is_file():
        raise DataNotFoundError(f"TruthfulQA file not found: {p}")
    return p


def split_answers(cell: str) -> tuple[str, ...]:
    """Answers of one CSV cell: split on ``;``, stripped, empty parts dropped (no period added)."""
    return tuple(a.strip() for a in cell.split(";") if a.strip())


def _csv_row(row: Mapping[str, Any]) -> TruthfulQAItem:
    q = as_str(row["Question"], "Question").strip()
    best = as_str(row["Best Answer"], "Best Answer").strip()
    correct = split_answers(as_str(row["Correct Answers"], "Correct Answers"))
    incorrect = split_answers(as_str(row["Incorrect Answers"], "Incorrect Answers"))
    if not q or not best or not correct or not incorrect:
        raise ValueError("empty question, best answer or answer list")
    return TruthfulQAItem(q, best, correct, incorrect, (row.get("Type") or "").strip(),
                          (row.get("Category") or "").strip(), (row.get("Source") or "").strip())


def load_truthfulqa(split: str = "validation", root: PathLike = None) -> list[TruthfulQAItem]:
    """The 817 TruthfulQA questions of the CSV (single split ``validation``), in file order."""
    if split not in ("validation", "test"):
        raise ValueError(f"TruthfulQA has one split, 'validation'; got '{split}'")
    path = _file(root, CSV_PATH)
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in _CSV_COLUMNS[2:6] if c not in (reader.fieldnames or [])]
        if missing:
            raise MalformedDataError(f"{path}: missing column(s) {', '.join(missing)}; header {reader.fieldnames}")
        return parse_rows(path, ((i + 2, r) for i, r in enumerate(reader)), _csv_row)


def _targets(d: Any, name: str) -> tuple[tuple[str, ...], tuple[int, ...]]:
    if not isinstance(d, Mapping) or not d:
        raise TypeError(f"'{name}' must be a non-empty object")
    labels = []
    for k, v in d.items():
        if v not in (0, 1):
            raise ValueError(f"'{name}' label for {k!r} is {v!r}, not 0/1")
        labels.append(int(v))
    return tuple(str(k) for k in d), tuple(labels)


def _mc_item(d: Any) -> TruthfulQAMCItem:
    if not isinstance(d, Mapping):
        raise TypeError(f"item must be an object, got {type(d).__name__}")
    q = as_str(d["question"], "question").strip()
    c1, l1 = _targets(d["mc1_targets"], "mc1_targets")
    c2, l2 = _targets(d["mc2_targets"], "mc2_targets")
    return TruthfulQAMCItem(q, c1, l1, c2, l2)


def load_truthfulqa_mc(split: str = "v1", root: PathLike = None) -> list[TruthfulQAMCItem]:
    """TruthfulQA MC items (``v1``: ``mc_task.json``; ``v0``: the original file), in file order."""
    if split not in MC_PATHS:
        raise ValueError(f"TruthfulQA MC has splits {', '.join(MC_PATHS)}; got '{split}'")
    path = _file(root, MC_PATHS[split])
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MalformedDataError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(data, list):
        raise MalformedDataError(f"{path}: expected a JSON list of items, got {type(data).__name__}")
    return parse_rows(path, enumerate(data), _mc_item)


def join_on_question(a: Sequence[T], b: Sequence[Any], key_a: str = "question",
                     key_b: str = "question") -> Iterator[tuple[T, Any]]:
    """Pairs ``(x, y)`` of items of ``a`` and ``b`` whose questions agree after ``strip()``, in ``a``'s order."""
    index = {getattr(y, key_b).strip(): y for y in b}
    for x in a:
        y = index.get(getattr(x, key_a).strip())
        if y is not None:
            yield x, y
