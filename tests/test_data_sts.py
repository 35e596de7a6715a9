"""Data-directory resolution and the STS loaders (SentEval layout)."""

from __future__ import annotations

from pathlib import Path

import pytest

from steerlab.data import DataNotFoundError, data_dir, data_path
from steerlab.data.sts import (
    STS_SPLITS,
    STS_TASKS,
    STSPair,
    load_sick,
    load_sts,
    load_sts_subsets,
    load_stsb,
    sts_task_names,
)


def test_data_dir_explicit_then_env(tmp_path, monkeypatch):
    monkeypatch.setenv("STEERLAB_DATA", str(tmp_path))
    assert data_dir() == tmp_path
    other = tmp_path / "other"
    other.mkdir()
    assert data_dir(other) == other  # explicit wins over the environment


def test_data_dir_errors_say_where_they_looked(tmp_path, monkeypatch):
    monkeypatch.delenv("STEERLAB_DATA", raising=False)
    with pytest.raises(DataNotFoundError, match=r"STEERLAB_DATA \(not set\)"):
        data_dir()
    monkeypatch.setenv("STEERLAB_DATA", str(tmp_path / "nope"))
    with pytest.raises(DataNotFoundError, match="nope"):
        data_dir()
    with pytest.raises(DataNotFoundError, match="given explicitly"):
        data_dir(tmp_path / "missing")
    with pytest.raises(DataNotFoundError, match="data file not found"):
        data_path("sts", root=tmp_path)
    assert isinstance(DataNotFoundError("x"), FileNotFoundError)


def test_task_names():
    assert sts_task_names("stsb") == "STSBenchmark"
    assert sts_task_names("SICK-R") == "SICKRelatedness"
    assert sts_task_names("sts12") == "STS12"
    with pytest.raises(ValueError, match="unknown STS task"):
        sts_task_names("sts11")


# counts documented in SOURCES.md (standard SentEval counts)
EXPECTED = {"STS12": 3108, "STS13": 1500, "STS14": 3750, "STS15": 3000, "STS16": 1186,
            "STSBenchmark": 1379, "SICKRelatedness": 4927}


@pytest.mark.parametrize("task", STS_TASKS)
def test_real_test_sets(task, data_dir):
    pairs = load_sts(task, "test", root=data_dir)
    assert len(pairs) == EXPECTED[task]
    assert all(isinstance(p, STSPair) for p in pairs)
    p = pairs[0]
    assert p.s1 and p.s2 and p.s1 == " ".join(p.s1.split())
    lo, hi = (1.0, 5.0) if task == "SICKRelatedness" else (0.0, 5.0)
    assert all(lo <= q.score <= hi for q in pairs)


def test_real_other_splits(data_dir):
    assert len(load_stsb("train", data_dir)) == 5749
    assert len(load_stsb("dev", data_dir)) == 1500
    assert len(load_sick("train", data_dir)) == 4500
    assert len(load_sick("trial", data_dir)) == 500
    subsets = load_sts_subsets("STS16", data_dir)
    assert sorted(subsets) == ["answer-answer", "headlines", "plagiarism", "postediting", "question-question"]
    assert sum(map(len, subsets.values())) == 1186
    assert STS_SPLITS["STSBenchmark"] == ("train", "dev", "test")


def test_bad_split(data_dir):
    with pytest.raises(ValueError, match="split"):
        load_sts("STS12", "dev", data_dir)
    with pytest.raises(ValueError, match="train, dev, test"):
        load_stsb("validation", data_dir)


def _write(p: Path, text: str) -> None:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text, encoding="utf-8")


def test_synthetic_layout(tmp_path):
    root = tmp_path
    d = root / "sts" / "STS15-en-test"
    _write(d / "STS.input.a.txt", "x  y\tz\nno\tscore\nq\tr\n")
    _write(d / "STS.gs.a.txt", "1.5\n\n4\n")
    pairs = load_sts("sts15", root=root)
    assert pairs == [STSPair("x y", "z", 1.5), STSPair("q", "r", 4.0)]  # unscored pair dropped
    _write(root / "sts" / "SICK" / "SICK_test_annotated.txt",
           "pair_ID\tsentence_A\tsentence_B\trelatedness_score\tentailment_judgment\r\n1\tA b\tC\t3.2\tNEUTRAL\r\n")
    assert load_sick("test", root) == [STSPair("A b", "C", 3.2)]
    _write(root / "sts" / "STSBenchmark" / "sts-dev.csv", "g\tf\t2012\t0001\t2.5\ta .\tb .\n")
    assert load_stsb("dev", root) == [STSPair("a .", "b .", 2.5)]


def test_synthetic_errors(tmp_path):
    with pytest.raises(DataNotFoundError, match="STS data not found"):
        load_sts("STS12", root=tmp_path)
    d = tmp_path / "sts" / "STS12-en-test"
    _write(d / "STS.input.a.txt", "one\ttwo\n")
    _write(d / "STS.gs.a.txt", "1\n2\n")
    with pytest.raises(ValueError, match="lines"):
        load_sts("STS12", root=tmp_path)
    _write(d / "STS.gs.a.txt", "1\n")
    _write(d / "STS.input.a.txt", "one\ttwo\tthree\n")
    with pytest.raises(ValueError, match="2 tab-separated"):
        load_sts("STS12", root=tmp_path)
