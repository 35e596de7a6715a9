"""Progress at a useful grain: per generated token, per embedding batch (across chunks), on stderr only;
transformers' own loading bars only when asked."""

from __future__ import annotations

from pathlib import Path

import numpy as np

import steerlab as sl
from steerlab.embed import Encoder
from steerlab.embed.io import embed_file
from steerlab.progress import ProgressBar
from steerlab.testing import tiny_model


def test_bar_counts_and_renders_on_stderr(capsys) -> None:
    with ProgressBar(5, True, "work", "items", initial=2) as bar:
        bar.advance(3)
    out, err = capsys.readouterr()
    assert out == "" and "work" in err and "5/5" in err and bar.completed == 5
    with ProgressBar(4, False, "quiet") as bar:
        bar.advance(4)
    assert capsys.readouterr() == ("", "") and bar.completed == 4


def test_generate_advances_per_token(tiny) -> None:
    bar = ProgressBar(0, False)
    out = sl.generate(tiny, ["hello", "a longer prompt"], max_new_tokens=7, progress=bar)
    steps = max(len(t) for t in out.tokens)
    assert bar.total == 7 and bar.completed == steps
    again = sl.generate(tiny, ["hello", "a longer prompt"], max_new_tokens=7)
    assert again.tokens == out.tokens  # the bar changes nothing


def test_embed_bar_moves_per_batch_across_chunks(tmp_path: Path, monkeypatch) -> None:
    steps: list[int] = []
    advance = ProgressBar.advance

    def record(self: ProgressBar, n: int = 1) -> None:
        steps.append(n)
        advance(self, n)

    monkeypatch.setattr(ProgressBar, "advance", record)
    src = tmp_path / "s.txt"
    src.write_text("".join(f"sentence number {i}\n" for i in range(20)))
    enc = Encoder(tiny_model("llama"), batch_size=8)
    out = embed_file(enc, src, tmp_path / "e.npy", batch_size=8, chunk_size=12, progress=False)
    # chunk 1 (12 sentences) in batches of 8 + 4, chunk 2 (8 sentences) in one batch: never one step per chunk
    assert steps == [8, 4, 8] and np.load(out).shape == (20, enc.get_sentence_embedding_dimension())


def test_transformers_loading_bar_only_when_asked(tmp_path: Path, capfd) -> None:
    lm = tiny_model("llama")
    lm.model.save_pretrained(tmp_path / "m")
    lm.tokenizer.save_pretrained(tmp_path / "m")
    capfd.readouterr()
    sl.load_model(tmp_path / "m")
    quiet = capfd.readouterr()
    assert "Loading weights" not in quiet.err + quiet.out
    sl.load_model(tmp_path / "m", progress=True)
    loud = capfd.readouterr()
    assert "Loading weights" in loud.err
    sl.load_model(tmp_path / "m")  # the setting does not stick
    assert "Loading weights" not in capfd.readouterr().err
