"""Loaders for the six zero-shot multiple-choice tasks: COPA, StoryCloze, SNLI, MMLU, SST-2, WinoGrande.

Files below ``<data root>/mc/`` (formats as described in ``../shared/data/SOURCES.md``):

========== ======================================================= ===========================
task       files                                                   splits (default first)
========== ======================================================= ===========================
COPA       ``copa/val.jsonl``; ``copa/train.jsonl`` +              ``val`` (100), ``train`` (400)
           ``copa/unlabeled.jsonl`` (the SuperGLUE train split,
           cut at idx 368 by its source; both carry labels)
StoryCloze ``storycloze/spring2016_{test,val}.csv``,               ``test`` (1871), ``val`` (1871),
           ``storycloze/winter2018_val.csv``                       ``val2018`` (1571)
SNLI       ``nli/snli_senteval/{s1,s2,labels}.{test,dev}``         ``test`` (9824), ``dev`` (9842)
MMLU       ``mmlu/{test,dev}/<subject>_{test,dev}.csv``            ``test`` (14042), ``dev`` (285)
SST-2      ``sst2/{dev,train}.tsv``; ``sst2/senteval/sentiment-*`` ``dev`` (872), ``train``,
                                                                   ``senteval_dev``, ``senteval_test``
WinoGrande ``winogrande/dev_llmfoundry.jsonl``                     ``dev`` (1267)
========== ======================================================= ===========================

Text is returned as stored (whitespace at the ends stripped); prompt formatting lives in
:mod:`steerlab.evals.multiple_choice`. MMLU files may be in the reformatted layout of the
shared data (header ``question,choice0..3,answer`` with a 0-3 index) or in hendrycks' original
headerless layout (``question,A,B,C,D,letter``). WinoGrande rows may be llm-foundry partial
rows (``context_options``, ``continuation``, ``gold``) or original rows (``sentence``,
``option1``, ``option2``, ``answer``), which are converted to the same partial form.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from ..files import jsonl_lines
from . import DataNotFoundError, data_dir
from .records import (
    NLI_LABELS,
    COPAItem,
    MalformedDataError,
    MMLUItem,
    NLIItem,
    SST2Item,
    StoryClozeItem,
    WinograndeItem,
    as_str,
    parse_rows,
)

__all__ = [
    "MC_SPLITS",
    "load_copa",
    "load_storycloze",
    "load_snli",
    "load_mmlu",
    "mmlu_subjects",
    "load_sst2",
    "load_winogrande",
    "read_jsonl_rows",
]

PathLike = str | os.PathLike[str] | None

#: relative files (below the data root) of each task split
MC_SPLITS: Mapping[str, Mapping[str, tuple[str, ...]]] = {
    "copa": {"val": ("mc/copa/val.jsonl",), "train": ("mc/copa/train.jsonl", "mc/copa/unlabeled.jsonl")},
    "storycloze": {
        "test": ("mc/storycloze/spring2016_test.csv",),
        "val": ("mc/storycloze/spring2016_val.csv",),
        "val2018": ("mc/storycloze/winter2018_val.csv",),
    },
    "snli": {
        s: (f"mc/nli/snli_senteval/s1.{s}", f"mc/nli/snli_senteval/s2.{s}", f"mc/nli/snli_senteval/labels.{s}")
        for s in ("test", "dev")
    },
    "sst2": {
        "dev": ("mc/sst2/dev.tsv",),
        "train": ("mc/sst2/train.tsv",),
        "senteval_dev": ("mc/sst2/senteval/sentiment-dev",),
        "senteval_test": ("mc/sst2/senteval/sentiment-test",),
    },
    "winogrande": {"dev": ("mc/winogrande/dev_llmfoundry.jsonl",)},
}


def _split_files(task: str, split: str) -> tuple[str, ...]:
    splits = MC_SPLITS[task]
    if split not in splits:
        raise ValueError(f"{task} has splits {', '.join(splits)}; got '{split}'")
    return splits[split]


def _existing(root: PathLike, rel: str) -> Path:
    p = data_dir(root) / rel
    if not p.is_file():
        raise DataNotFoundError(f"data file not found: {p}")
    return p


#: ``(line_number, line)`` for the non-blank lines of a JSON-lines file (:func:`steerlab.files.jsonl_lines`)
read_jsonl_rows = jsonl_lines


def _json_obj(line: str) -> Mapping[str, Any]:
    d = json.loads(line)
    if not isinstance(d, Mapping):
        raise TypeError(f"expected a JSON object, got {type(d).__name__}")
    return d


def _int_label(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, str)):
        raise TypeError(f"label must be an integer, got {v!r}")
    return int(v)


# --------------------------------------------------------------------------- COPA


def _copa(line: str) -> COPAItem:
    d = _json_obj(line)
    return COPAItem(int(d["idx"]), as_str(d["premise"], "premise").strip(), as_str(d["choice1"], "choice1").strip(),
                    as_str(d["choice2"], "choice2").strip(), as_str(d["question"], "question"), _int_label(d["label"]))


def load_copa(split: str = "val", root: PathLike = None) -> list[COPAItem]:
    """COPA items; ``train`` joins ``train.jsonl`` and ``unlabeled.jsonl`` (SuperGLUE's 400 train items)."""
    out: list[COPAItem] = []
    for rel in _split_files("copa", split):
        path = _existing(root, rel)
        out.extend(parse_rows(path, read_jsonl_rows(path), _copa))
    return out


# --------------------------------------------------------------------------- StoryCloze


def load_storycloze(split: str = "test", root: PathLike = None) -> list[StoryClozeItem]:
    """Story Cloze 2016 (``test``, ``val``) or 2018 (``val2018``) stories with two endings."""
    (rel,) = _split_files("storycloze", split)
    path = _existing(root, rel)

    def parse(item: tuple[int, Mapping[str, str]]) -> StoryClozeItem:
        i, row = item
        sents = tuple(as_str(row[f"InputSentence{k}"], f"InputSentence{k}").strip() for k in range(1, 5))
        ends = (as_str(row["RandomFifthSentenceQuiz1"], "Quiz1").strip(),
                as_str(row["RandomFifthSentenceQuiz2"], "Quiz2").strip())
        label = int(row["AnswerRightEnding"]) - 1
        sid = (row.get("InputStoryid") or "").strip() or f"{split}-{i}"
        return StoryClozeItem(sid, sents, ends, label)  # type: ignore[arg-type]

    with open(path, encoding="utf-8-sig", newline="") as f:
        rows = list(enumerate(csv.DictReader(f)))
    return parse_rows(path, ((i + 2, (i, r)) for i, r in rows), parse)


# --------------------------------------------------------------------------- SNLI


def load_snli(split: str = "test", root: PathLike = None) -> list[NLIItem]:
    """SNLI 1.0 pairs with a gold label (SentEval files: premise, hypothesis, label name)."""
    rel1, rel2, rell = _split_files("snli", split)
    paths = [_existing(root, r) for r in (rel1, rel2, rell)]
    cols = [p.read_text(encoding="utf-8").splitlines() for p in paths]
    if not len(cols[0]) == len(cols[1]) == len(cols[2]):
        raise MalformedDataError(f"SNLI {split}: s1/s2/labels have {', '.join(str(len(c)) for c in cols)} lines")
    index = {name: i for i, name in enumerate(NLI_LABELS)}

    def parse(row: tuple[str, str, str]) -> NLIItem:
        s1, s2, lab = (" ".join(x.split()) for x in row)
        if not s1 or not s2:
            raise ValueError("empty sentence")
        return NLIItem(s1, s2, index[lab])

    return parse_rows(paths[2], ((i + 1, r) for i, r in enumerate(zip(*cols))), parse)


# --------------------------------------------------------------------------- MMLU


def _mmlu_dir(split: str, root: PathLike) -> Path:
    if split not in ("test", "dev", "val"):
        raise ValueError(f"MMLU has splits test, dev (and val if present); got '{split}'")
    p = data_dir(root) / "mc" / "mmlu" / split
    if not p.is_dir():
        raise DataNotFoundError(f"MMLU data not found: {p}")
    return p


def mmlu_subjects(split: str = "test", root: PathLike = None) -> list[str]:
    """The subjects present for ``split`` (from the ``<subject>_<split>.csv`` file names)."""
    return sorted(p.name[: -len(f"_{split}.csv")] for p in _mmlu_dir(split, root).glob(f"*_{split}.csv"))


def _mmlu_rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    with open(path, encoding="utf-8", newline="") as f:
        for i, row in enumerate(csv.reader(f), start=1):
            if i == 1 and [c.strip().lower() for c in row[:2]] == ["question", "choice0"]:
                continue  # the reformatted layout's header
            yield i, row


def _mmlu(subject: str) -> Any:
    def parse(row: list[str]) -> MMLUItem:
        if len(row) != 6:
            raise ValueError(f"expected 6 fields, got {len(row)}")
        ans = row[5].strip()
        label = "ABCD".index(ans) if ans in ("A", "B", "C", "D") else int(ans)
        return MMLUItem(subject, row[0].strip(), tuple(c.strip() for c in row[1:5]), label)  # type: ignore[arg-type]
    return parse


def load_mmlu(split: str = "test", root: PathLike = None, subjects: Sequence[str] | None = None) -> list[MMLUItem]:
    """MMLU questions of all (or the given) subjects, subjects in alphabetical order."""
    folder = _mmlu_dir(split, root)
    available = mmlu_subjects(split, root)
    if not available:
        raise DataNotFoundError(f"no *_{split}.csv files in {folder}")
    chosen = list(subjects) if subjects is not None else available
    unknown = [s for s in chosen if s not in available]
    if unknown:
        raise ValueError(f"unknown MMLU subject(s) {', '.join(unknown)}; available: {', '.join(available)}")
    out: list[MMLUItem] = []
    for subject in chosen:
        path = folder / f"{subject}_{split}.csv"
        out.extend(parse_rows(path, _mmlu_rows(path), _mmlu(subject)))
    return out


# --------------------------------------------------------------------------- SST-2


def _sst2_rows(path: Path) -> Iterator[tuple[int, str]]:
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, start=1):
            line = line.rstrip("\r\n")
            if i == 1 and line.split("\t")[-1].strip() == "label":
                continue  # header (GLUE: "sentence<TAB>label"; shared copy: "text<TAB>label")
            if line.strip():
                yield i, line


def _sst2(line: str) -> SST2Item:
    text, sep, label = line.rpartition("\t")
    if not sep:
        raise ValueError("no tab-separated label")
    text = " ".join(text.split())
    if not text:
        raise ValueError("empty sentence")
    return SST2Item(text, int(label))


def load_sst2(split: str = "dev", root: PathLike = None) -> list[SST2Item]:
    """SST-2 sentences: GLUE ``dev`` / ``train``, or SentEval ``senteval_dev`` / ``senteval_test``."""
    (rel,) = _split_files("sst2", split)
    path = _existing(root, rel)
    return parse_rows(path, _sst2_rows(path), _sst2)


# --------------------------------------------------------------------------- WinoGrande


def _winogrande(line: str) -> WinograndeItem:
    d = _json_obj(line)
    if "sentence" in d:  # original WinoGrande row
        sent = as_str(d["sentence"], "sentence")
        idx = sent.index("_")
        opts = (as_str(d["option1"], "option1"), as_str(d["option2"], "option2"))
        return WinograndeItem(tuple(sent[:idx] + o for o in opts), sent[idx + 1:].strip(),  # type: ignore[arg-type]
                              int(d["answer"]) - 1)
    ctx = d["context_options"]
    if not isinstance(ctx, list) or len(ctx) != 2:
        raise ValueError("context_options must be a list of 2 strings")
    return WinograndeItem((as_str(ctx[0], "context"), as_str(ctx[1], "context")),
                          as_str(d["continuation"], "continuation").strip(), _int_label(d["gold"]))


def load_winogrande(split: str = "dev", root: PathLike = None) -> list[WinograndeItem]:
    """WinoGrande 1.1 dev (XL) items in partial-scoring form."""
    (rel,) = _split_files("winogrande", split)
    path = _existing(root, rel)
    return parse_rows(path, read_jsonl_rows(path), _winogrande)
