"""Semantic textual similarity (STS) data in the SentEval layout, as typed records.

Files live below ``<data root>/sts/`` (see :func:`steerlab.data.data_dir`):

* ``STS1{2..6}-en-test/STS.input.<subset>.txt`` (``s1<TAB>s2``) with ``STS.gs.<subset>.txt``
  (one gold score per line; empty lines are unscored pairs and are dropped, as SentEval does);
* ``STSBenchmark/sts-{train,dev,test}.csv`` (tab separated: genre, file, year, id, score, s1, s2);
* ``SICK/SICK_{train,trial,test_annotated}.txt`` (header; pair_ID, A, B, relatedness, entailment).

Sentences are whitespace-normalised (``" ".join(s.split())``), which is what SentEval's
tokenise-then-join does; nothing else is changed (no added periods, no sorting by score).
STS12-16 have one split (``test``); :func:`load_sts` pools all subsets of a year (the "all"
setting) and :func:`load_sts_subsets` keeps them apart.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

from . import DataNotFoundError, data_dir

__all__ = [
    "STSPair",
    "STS_TASKS",
    "STS_YEARS",
    "STS_SPLITS",
    "load_sts",
    "load_sts_subsets",
    "load_stsb",
    "load_sick",
    "sts_task_names",
]

PathLike = str | os.PathLike[str] | None


@dataclass(frozen=True)
class STSPair:
    """Two sentences and their gold similarity score (0-5 for STS, 1-5 for SICK)."""

    s1: str
    s2: str
    score: float


#: the seven STS tasks of the SentEval protocol, in the papers' order
STS_TASKS: tuple[str, ...] = ("STS12", "STS13", "STS14", "STS15", "STS16", "STSBenchmark", "SICKRelatedness")
STS_YEARS: tuple[str, ...] = ("STS12", "STS13", "STS14", "STS15", "STS16")
#: splits each task has
STS_SPLITS: Mapping[str, tuple[str, ...]] = {
    **{y: ("test",) for y in STS_YEARS},
    "STSBenchmark": ("train", "dev", "test"),
    "SICKRelatedness": ("train", "trial", "test"),
}
_ALIASES = {"stsb": "STSBenchmark", "sts-b": "STSBenchmark", "stsbenchmark": "STSBenchmark",
            "sick": "SICKRelatedness", "sick-r": "SICKRelatedness", "sickr": "SICKRelatedness",
            "sickrelatedness": "SICKRelatedness", **{y.lower(): y for y in STS_YEARS}}


def sts_task_names(name: str) -> str:
    """Canonical task name for ``name`` (case-insensitive; ``stsb``, ``sick-r`` accepted)."""
    canon = _ALIASES.get(name.strip().lower())
    if canon is None:
        raise ValueError(f"unknown STS task '{name}': choose from {', '.join(STS_TASKS)} (or stsb, sick)")
    return canon


def _norm(s: str) -> str:
    return " ".join(s.split())


def _sts_root(root: PathLike) -> Path:
    p = data_dir(root) / "sts"
    if not p.is_dir():
        raise DataNotFoundError(f"STS data not found: {p} is missing (data root {p.parent})")
    return p


def _read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise DataNotFoundError(f"STS data file not found: {path}")
    with open(path, encoding="utf-8") as f:
        return f.read().splitlines()


def load_sts_subsets(year: str, root: PathLike = None) -> dict[str, list[STSPair]]:
    """The scored pairs of each subset of one STS year (``STS12`` ... ``STS16``), by subset name."""
    year = sts_task_names(year)
    if year not in STS_YEARS:
        raise ValueError(f"{year} is not one of {', '.join(STS_YEARS)}")
    folder = _sts_root(root) / f"{year}-en-test"
    inputs = sorted(folder.glob("STS.input.*.txt")) if folder.is_dir() else []
    if not inputs:
        raise DataNotFoundError(f"no STS.input.*.txt files in {folder}")
    out: dict[str, list[STSPair]] = {}
    for inp in inputs:
        subset = inp.name[len("STS.input."):-len(".txt")]
        gold = inp.with_name(f"STS.gs.{subset}.txt")
        sents, scores = _read_lines(inp), _read_lines(gold)
        if len(sents) != len(scores):
            raise ValueError(f"{inp.name} has {len(sents)} lines but {gold.name} has {len(scores)}")
        pairs = []
        for i, (line, sc) in enumerate(zip(sents, scores)):
            if not sc.strip():
                continue
            parts = line.split("\t")
            if len(parts) != 2:
                raise ValueError(f"{inp}:{i + 1}: expected 2 tab-separated sentences, got {len(parts)} fields")
            pairs.append(STSPair(_norm(parts[0]), _norm(parts[1]), float(sc)))
        out[subset] = pairs
    return out


def load_stsb(split: str = "test", root: PathLike = None) -> list[STSPair]:
    """STS Benchmark ``train`` / ``dev`` / ``test`` pairs."""
    if split not in STS_SPLITS["STSBenchmark"]:
        raise ValueError(f"STSBenchmark has splits train, dev, test; got '{split}'")
    path = _sts_root(root) / "STSBenchmark" / f"sts-{split}.csv"
    pairs = []
    for i, line in enumerate(_read_lines(path)):
        parts = line.split("\t")
        if len(parts) < 7:
            raise ValueError(f"{path}:{i + 1}: expected 7 tab-separated fields, got {len(parts)}")
        pairs.append(STSPair(_norm(parts[5]), _norm(parts[6]), float(parts[4])))
    return pairs


def load_sick(split: str = "test", root: PathLike = None) -> list[STSPair]:
    """SICK relatedness ``train`` / ``trial`` / ``test`` pairs (score 1-5)."""
    files = {"train": "SICK_train.txt", "trial": "SICK_trial.txt", "test": "SICK_test_annotated.txt"}
    if split not in files:
        raise ValueError(f"SICKRelatedness has splits train, trial, test; got '{split}'")
    path = _sts_root(root) / "SICK" / files[split]
    lines = _read_lines(path)
    if not lines or not lines[0].startswith("pair_ID"):
        raise ValueError(f"{path}: missing the pair_ID header")
    pairs = []
    for i, line in enumerate(lines[1:], start=2):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) < 4:
            raise ValueError(f"{path}:{i}: expected at least 4 tab-separated fields, got {len(parts)}")
        pairs.append(STSPair(_norm(parts[1]), _norm(parts[2]), float(parts[3])))
    return pairs


def load_sts(task: str, split: str = "test", root: PathLike = None) -> list[STSPair]:
    """Pairs of one STS task and split; STS12-16 pool all their subsets ("all" setting)."""
    task = sts_task_names(task)
    if split not in STS_SPLITS[task]:
        raise ValueError(f"{task} has split(s) {', '.join(STS_SPLITS[task])}; got '{split}'")
    if task in STS_YEARS:
        return [p for pairs in load_sts_subsets(task, root).values() for p in pairs]
    loader: Callable[[str, PathLike], list[STSPair]] = load_stsb if task == "STSBenchmark" else load_sick
    return loader(split, root)
