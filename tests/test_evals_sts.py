"""STS scoring on any object with encode(): Spearman x100, dedupe, pooled tasks, average."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from steerlab.data.sts import STSPair
from steerlab.evals.sts import (
    STSResult,
    evaluate_sts,
    load_tasks,
    parse_task,
    score_tasks,
    spearman_x100,
    unique_sentences,
)


class HashEncoder:
    """Deterministic bag-of-words vectors; records what it was asked to encode."""

    def __init__(self, dim: int = 64) -> None:
        self.dim = dim
        self.calls: list[list[str]] = []

    def encode(self, sentences, batch_size=32, show_progress_bar=False, convert_to_numpy=True, **kw):
        self.calls.append(list(sentences))
        out = np.zeros((len(sentences), self.dim), dtype=np.float32)
        for i, s in enumerate(sentences):
            for w in s.lower().split():
                out[i, zlib.crc32(w.encode()) % self.dim] += 1.0
        return out + 1e-3


def test_spearman_perfect_and_inverse():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(20, 8))
    b = rng.normal(size=(20, 8))
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert spearman_x100(a, b, cos) == pytest.approx(100.0)
    assert spearman_x100(a, b, -cos) == pytest.approx(-100.0)


def test_score_tasks_and_result():
    pairs = {"T": [STSPair("a", "a", 5.0), STSPair("a", "b", 0.0), STSPair("a", "c", 2.0)]}
    emb = {"a": np.array([1.0, 0.0]), "b": np.array([0.0, 1.0]), "c": np.array([1.0, 1.0])}
    res = score_tasks(pairs, emb)
    assert res.scores["T"] == pytest.approx(100.0)
    assert res.n_pairs == {"T": 3}
    r = STSResult({"STS12": 50.0, "STSBenchmark": 70.0})
    assert r.average == 60.0
    md = r.markdown()
    assert "STS-B" in md and "60.00" in md
    assert r.to_dict()["average"] == 60.0


def test_parse_task():
    assert parse_task("stsb:dev") == ("STSBenchmark", "dev")
    assert parse_task("STS12") == ("STS12", "test")


def test_dedupe_across_tasks(data_dir):
    tasks = load_tasks(["STSBenchmark", "STSBenchmark:dev"], data_dir, limit=30)
    uniq = unique_sentences(tasks)
    assert len(uniq) == len(set(uniq))
    enc = HashEncoder()
    res = evaluate_sts(enc, ["STSBenchmark", "STSBenchmark:dev"], data_dir, limit=30)
    assert len(enc.calls) == 1 and enc.calls[0] == uniq  # every sentence encoded once, in one call
    assert set(res.scores) == {"STSBenchmark", "STSBenchmark:dev"}
    assert res.n_pairs == {"STSBenchmark": 30, "STSBenchmark:dev": 30}


def test_seven_tasks_bag_of_words(data_dir):
    """A lexical-overlap baseline gives sensible positive correlations on all 7 tasks."""
    res = evaluate_sts(HashEncoder(256), root=data_dir, limit=200)
    assert list(res.scores) == ["STS12", "STS13", "STS14", "STS15", "STS16", "STSBenchmark", "SICKRelatedness"]
    assert all(5 < v < 100 for v in res.scores.values())
    assert res.average == pytest.approx(np.mean(list(res.scores.values())))


def test_bad_model_and_rows(data_dir):
    with pytest.raises(ValueError, match="encode"):
        evaluate_sts(object(), ["stsb"], data_dir)

    class Short(HashEncoder):
        def encode(self, sentences, **kw):
            return super().encode(sentences)[:-1]

    with pytest.raises(ValueError, match="rows"):
        evaluate_sts(Short(), ["stsb"], data_dir, limit=5)
