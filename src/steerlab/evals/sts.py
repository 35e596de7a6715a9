"""STS evaluation (SentEval protocol): Spearman x100 between cosine similarity and gold score.

Works with any object that has ``encode(sentences, batch_size=..., show_progress_bar=...,
convert_to_numpy=True) -> (n, dim)`` (a steerlab :class:`~steerlab.embed.Encoder`, a
sentence-transformers model, ...). Every distinct sentence of the requested tasks is encoded
once. STS12-16 use the pooled "all" setting (one Spearman over all pairs of all subsets of a
year); STS-B and SICK-R use their test split unless told otherwise. The average is taken over
the tasks evaluated (the 7 of :data:`~steerlab.data.sts.STS_TASKS` by default).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from ..data.sts import STS_TASKS, STSPair, load_sts, sts_task_names

__all__ = ["STSResult", "load_tasks", "unique_sentences", "spearman_x100", "score_tasks", "evaluate_sts",
           "parse_task"]

TASK_SHORT = {"STSBenchmark": "STS-B", "SICKRelatedness": "SICK-R"}


@dataclass
class STSResult:
    """Spearman x100 per task (keys like ``STS12`` or ``STSBenchmark:dev``) and pair counts."""

    scores: dict[str, float]
    n_pairs: dict[str, int] = field(default_factory=dict)

    @property
    def average(self) -> float:
        return float(np.mean(list(self.scores.values()))) if self.scores else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {"scores": dict(self.scores), "average": self.average, "n_pairs": dict(self.n_pairs)}

    def markdown(self) -> str:
        """A two-line markdown table: one column per task and the average."""
        names = [TASK_SHORT.get(k.split(":")[0], k.split(":")[0]) + (f" ({k.split(':')[1]})" if ":" in k else "")
                 for k in self.scores]
        head = "| " + " | ".join(names + ["Avg."]) + " |"
        sep = "|" + "---|" * (len(names) + 1)
        row = "| " + " | ".join(f"{v:.2f}" for v in [*self.scores.values(), self.average]) + " |"
        return "\n".join([head, sep, row])


def parse_task(spec: str) -> tuple[str, str]:
    """``"STSBenchmark"`` -> ``("STSBenchmark", "test")``; ``"stsb:dev"`` -> ``("STSBenchmark", "dev")``."""
    name, _, split = spec.partition(":")
    return sts_task_names(name), (split.strip() or "test")


def _key(task: str, split: str) -> str:
    return task if split == "test" else f"{task}:{split}"


def load_tasks(tasks: Sequence[str] | None = None, root: str | os.PathLike[str] | None = None,
               limit: int | None = None) -> dict[str, list[STSPair]]:
    """``{key: pairs}`` for task specs (``name`` or ``name:split``); ``limit`` keeps the first pairs."""
    out: dict[str, list[STSPair]] = {}
    for spec in (tasks or STS_TASKS):
        task, split = parse_task(spec)
        pairs = load_sts(task, split, root)
        out[_key(task, split)] = pairs[:limit] if limit else pairs
    return out


def unique_sentences(tasks: Mapping[str, Sequence[STSPair]]) -> list[str]:
    """Every distinct sentence of the tasks, in first-seen order."""
    return list(dict.fromkeys(s for pairs in tasks.values() for p in pairs for s in (p.s1, p.s2)))


def spearman_x100(a: np.ndarray, b: np.ndarray, gold: Sequence[float]) -> float:
    """Spearman x100 between row-wise cosine similarity of ``a`` and ``b`` and ``gold``."""
    from scipy.stats import spearmanr

    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    na = np.linalg.norm(a, axis=1)
    nb = np.linalg.norm(b, axis=1)
    cos = (a * b).sum(1) / np.maximum(na * nb, 1e-300)
    return float(spearmanr(cos, np.asarray(gold, dtype=np.float64)).statistic * 100.0)


def score_tasks(tasks: Mapping[str, Sequence[STSPair]], embeddings: Mapping[str, np.ndarray]) -> STSResult:
    """Score every task from precomputed ``{sentence: vector}`` embeddings."""
    scores, counts = {}, {}
    for key, pairs in tasks.items():
        a = np.stack([embeddings[p.s1] for p in pairs])
        b = np.stack([embeddings[p.s2] for p in pairs])
        scores[key] = spearman_x100(a, b, [p.score for p in pairs])
        counts[key] = len(pairs)
    return STSResult(scores, counts)


def evaluate_sts(
    model: Any,
    tasks: Sequence[str] | None = None,
    root: str | os.PathLike[str] | None = None,
    batch_size: int = 32,
    show_progress_bar: bool = False,
    limit: int | None = None,
    **encode_kwargs: Any,
) -> STSResult:
    """Spearman x100 of ``model`` on STS tasks (default: the 7 SentEval STS tasks, test splits)."""
    if not hasattr(model, "encode"):
        raise ValueError(f"model must have an encode() method, got {type(model).__name__}")
    data = load_tasks(tasks, root, limit)
    sents = unique_sentences(data)
    emb = model.encode(sents, batch_size=batch_size, show_progress_bar=show_progress_bar,
                       convert_to_numpy=True, **encode_kwargs)
    emb = np.asarray(emb)
    if emb.shape[0] != len(sents):
        raise ValueError(f"encode() returned {emb.shape[0]} rows for {len(sents)} sentences")
    return score_tasks(data, dict(zip(sents, emb)))
