"""Resumable embedding files and the `steerlab embed` / `steerlab eval sts` command bodies."""

from __future__ import annotations

import json

import numpy as np
import pytest

from steerlab.embed import Encoder
from steerlab.embed.commands import build_encoder, embed_command, eval_sts_command
from steerlab.embed.io import ChunkStore, embed_file, read_sentences


class CountingEncoder:
    """Fake encoder: vector = [len(s), i-th call]; counts sentences encoded; can fail on demand."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.seen = 0
        self.fail_after = fail_after

    def get_sentence_embedding_dimension(self) -> int:
        return 2

    def describe(self):
        return {"fake": 1}

    def encode(self, sentences, batch_size=32, convert_to_numpy=True, **kw):
        if self.fail_after is not None and self.seen >= self.fail_after:
            raise KeyboardInterrupt
        self.seen += len(sentences)
        return np.array([[len(s), 1.0] for s in sentences], dtype=np.float32)


def test_chunk_store_resume(tmp_path):
    texts = [f"s{i}" * (i % 3 + 1) for i in range(10)]
    store = ChunkStore(tmp_path / "st", texts, 2, {"k": 1}, chunk_size=4)
    assert store.n_chunks == 3 and store.missing() == [0, 1, 2]
    store.write(1, np.zeros((4, 2)))
    assert store.missing() == [0, 2]
    with pytest.raises(ValueError, match="shape"):
        store.write(2, np.zeros((4, 2)))
    again = ChunkStore(tmp_path / "st", texts, 2, {"k": 1}, chunk_size=4)
    assert again.missing() == [0, 2]
    with pytest.raises(ValueError, match="other settings"):
        ChunkStore(tmp_path / "st", texts, 2, {"k": 2}, chunk_size=4)
    with pytest.raises(ValueError, match="other settings"):
        ChunkStore(tmp_path / "st", texts[:-1], 2, {"k": 1}, chunk_size=4)
    (tmp_path / "st" / "chunk_000000.npy").write_bytes(b"garbage")  # a torn write is redone
    assert again.missing() == [0, 2]


def test_embed_file_resumes_after_interruption(tmp_path):
    inp = tmp_path / "in.txt"
    lines = [f"sentence number {i}" for i in range(25)] + ["", "last"]
    inp.write_text("\n".join(lines) + "\n")
    assert read_sentences(inp) == lines  # blank lines kept: row i is line i
    out = tmp_path / "out.npy"
    enc = CountingEncoder(fail_after=10)
    with pytest.raises(KeyboardInterrupt):
        embed_file(enc, inp, out, chunk_size=5, progress=False)
    assert not out.exists() and (tmp_path / "out.npy.parts").is_dir()
    enc2 = CountingEncoder()
    embed_file(enc2, inp, out, chunk_size=5, progress=False)
    assert enc2.seen == len(lines) - 10  # only the missing chunks were computed
    arr = np.load(out)
    np.testing.assert_array_equal(arr[:, 0], [len(s) for s in lines])
    assert not (tmp_path / "out.npy.parts").exists()


def test_read_formats(tmp_path):
    j = tmp_path / "a.jsonl"
    j.write_text('{"text": "one"}\n\n{"text": "two", "id": 3}\n')
    assert read_sentences(j) == ["one", "two"]
    j.write_text('{"body": "x"}\n')
    with pytest.raises(ValueError, match="field 'text'"):
        read_sentences(j)
    c = tmp_path / "a.tsv"
    c.write_text("id\ttext\n1\thello\n2\tworld\n")
    assert read_sentences(c) == ["hello", "world"]
    with pytest.raises(FileNotFoundError):
        read_sentences(tmp_path / "missing.txt")


def test_parquet_needs_pyarrow_or_writes(tmp_path):
    inp = tmp_path / "in.txt"
    inp.write_text("a\nbb\n")
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        with pytest.raises(ValueError, match="pyarrow"):
            embed_file(CountingEncoder(), inp, tmp_path / "o.parquet", progress=False)
        return
    import pyarrow.parquet as pq

    embed_file(CountingEncoder(), inp, tmp_path / "o.parquet", progress=False)
    t = pq.read_table(tmp_path / "o.parquet")
    assert t.column("text").to_pylist() == ["a", "bb"]


def test_embed_command_real_encoder(tmp_path, tiny):
    inp = tmp_path / "s.txt"
    inp.write_text("a man plays guitar .\nhello\n")
    out = embed_command(inp, tmp_path / "e.npy", model=tiny, tp=True, cp="nr", chunk_size=1, progress=False)
    arr = np.load(out)
    ref = Encoder(tiny, tp=True, cp="nr").encode(["a man plays guitar .", "hello"])
    np.testing.assert_allclose(arr, ref, atol=1e-5)


def test_command_errors(tmp_path, tiny):
    with pytest.raises(FileNotFoundError, match="input file not found"):
        embed_command(tmp_path / "nope.txt", model=tiny)
    inp = tmp_path / "s.txt"
    inp.write_text("x\n")
    with pytest.raises(FileNotFoundError, match="output folder"):
        embed_command(inp, tmp_path / "no" / "e.npy", model=tiny)
    with pytest.raises(ValueError, match="format"):
        embed_command(inp, tmp_path / "e.npy", model=tiny, fmt="csv")
    with pytest.raises(ValueError, match="overwrite"):
        embed_command(inp, inp, model=tiny)
    with pytest.raises(ValueError, match="--cp"):
        build_encoder(tiny, cp="xx")
    with pytest.raises(ValueError, match="need --cp"):
        build_encoder(tiny, alpha=2.0)
    with pytest.raises(ValueError, match="--tp-exit needs"):
        build_encoder(tiny, tp_exit=3)
    with pytest.raises(ValueError, match="unknown STS task"):
        eval_sts_command(tiny, tasks="sts99")


def test_eval_sts_command(tmp_path, tiny, data_dir):
    out = tmp_path / "r.json"
    res = eval_sts_command(tiny, tasks="stsb:dev,sick", data_dir=data_dir, limit=20, output=out, progress=False,
                           cp="ns", cp_layer=1, alpha=1.0, tp=True, tp_exit=3, layer="last")
    assert set(res["scores"]) == {"STSBenchmark:dev", "SICKRelatedness"}
    assert res["encoder"]["cp"]["layer"] == 1 and res["encoder"]["tp"]["exit"] == 3 and res["encoder"]["layer"] == 4
    assert "Avg." in res["markdown"]
    assert json.loads(out.read_text())["average"] == pytest.approx(res["average"])
