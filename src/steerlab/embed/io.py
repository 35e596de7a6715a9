"""Resumable embedding files.

:class:`ChunkStore` keeps the embeddings of a fixed list of sentences as numbered chunk files
(``chunk_000000.npy`` ...) in a folder with a ``manifest.json`` that records what they are
(the encoder's settings and a hash of the inputs). Work that was interrupted continues with
the chunks that are missing; a folder made with different settings is refused, never mixed.
:func:`embed_file` builds on it to embed a text file into ``.npy`` or parquet.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from ..checks import check_output_path
from ..files import atomic_write, atomic_write_text, read_jsonl, read_text, text_lines
from ..progress import ProgressBar
from .encoder import Encoder

__all__ = ["ChunkStore", "read_sentences", "embed_file", "fingerprint", "OUTPUT_FORMATS", "EncodeChunks"]

OUTPUT_FORMATS = ("npy", "parquet")
#: ``encode_chunks([(chunk index, its sentences), ...])`` -> ``(chunk index, (m, dim) array)`` as each is done
EncodeChunks = Callable[[list[tuple[int, list[str]]]], Iterable[tuple[int, np.ndarray]]]
_MANIFEST = "manifest.json"


def fingerprint(obj: Any) -> str:
    """A short stable hash of a JSON-serialisable object."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _texts_hash(texts: Sequence[str]) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8", "surrogatepass"))
        h.update(b"\x00")
    return h.hexdigest()[:16]


def _atomic_save(path: Path, arr: np.ndarray) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.save(f, arr)

    atomic_write(path, write)


class ChunkStore:
    """Embeddings of ``n`` sentences stored as chunks of ``chunk_size`` rows.

    ``meta`` (e.g. ``encoder.describe()``) and the sentences' hash identify the store; opening
    an existing folder with other settings raises ``ValueError`` naming the folder.
    """

    def __init__(self, folder: str | os.PathLike[str], texts: Sequence[str], dim: int,
                 meta: dict[str, Any], chunk_size: int = 512) -> None:
        if chunk_size < 1:
            raise ValueError("chunk_size must be >= 1")
        self.folder = Path(folder)
        self.n = len(texts)
        self.dim = int(dim)
        self.chunk_size = int(chunk_size)
        self.manifest = {"format": 1, "n": self.n, "dim": self.dim, "chunk_size": self.chunk_size,
                         "texts_sha": _texts_hash(texts), "meta": meta}
        self.folder.mkdir(parents=True, exist_ok=True)
        mpath = self.folder / _MANIFEST
        if mpath.is_file():
            try:
                old = json.loads(mpath.read_text())
            except ValueError:
                old = None
            if old != json.loads(json.dumps(self.manifest, default=str)):
                raise ValueError(
                    f"{self.folder} holds embeddings made with other settings or inputs; "
                    "delete it or choose another output path"
                )
        else:
            atomic_write_text(mpath, json.dumps(self.manifest, indent=1, default=str))

    @property
    def n_chunks(self) -> int:
        return (self.n + self.chunk_size - 1) // self.chunk_size

    def bounds(self, i: int) -> tuple[int, int]:
        return i * self.chunk_size, min((i + 1) * self.chunk_size, self.n)

    def path(self, i: int) -> Path:
        return self.folder / f"chunk_{i:06d}.npy"

    def done(self, i: int) -> bool:
        p = self.path(i)
        if not p.is_file():
            return False
        try:
            arr = np.load(p, mmap_mode="r")
        except (ValueError, OSError):
            return False
        lo, hi = self.bounds(i)
        return arr.shape == (hi - lo, self.dim)

    def missing(self) -> list[int]:
        return [i for i in range(self.n_chunks) if not self.done(i)]

    @property
    def complete(self) -> bool:
        return not self.missing()

    def write(self, i: int, arr: np.ndarray) -> None:
        lo, hi = self.bounds(i)
        arr = np.asarray(arr, dtype=np.float32)
        if arr.shape != (hi - lo, self.dim):
            raise ValueError(f"chunk {i} must have shape {(hi - lo, self.dim)}, got {arr.shape}")
        _atomic_save(self.path(i), arr)

    def fill(self, texts: Sequence[str], encode: Callable[[list[str], ProgressBar], np.ndarray],
             progress: bool = False, desc: str = "embed") -> None:
        """Compute the missing chunks with ``encode(list_of_texts, bar) -> (m, dim)``, which advances ``bar``
        (one bar over every sentence, the finished chunks of an earlier run counted as done) as it goes:
        the bar moves per batch, not per chunk."""
        todo = self.missing()
        done_rows = self.n - sum(self.bounds(i)[1] - self.bounds(i)[0] for i in todo)
        with ProgressBar(self.n, progress, desc, "sent", initial=done_rows) as bar:
            for i in todo:
                lo, hi = self.bounds(i)
                self.write(i, encode(list(texts[lo:hi]), bar))

    def fill_from(self, texts: Sequence[str], encode_chunks: EncodeChunks, progress: bool = False,
                  desc: str = "embed") -> None:
        """Compute the missing chunks elsewhere: ``encode_chunks([(i, texts of chunk i), ...])`` yields
        ``(i, (m, dim) array)`` as each chunk is done, in any order (e.g. from Ray workers,
        :mod:`steerlab.distributed`); each is written at once, so an interrupted run resumes as with :meth:`fill`."""
        todo = self.missing()
        done_rows = self.n - sum(self.bounds(i)[1] - self.bounds(i)[0] for i in todo)
        work = [(i, list(texts[self.bounds(i)[0]:self.bounds(i)[1]])) for i in todo]
        asked = set(todo)
        with ProgressBar(self.n, progress, desc, "sent", initial=done_rows) as bar:
            for i, arr in encode_chunks(work):
                if i not in asked:
                    raise RuntimeError(f"chunk {i} came back but was not asked for")
                self.write(i, arr)
                bar.advance(self.bounds(i)[1] - self.bounds(i)[0])
        missing = self.missing()
        if missing:
            raise RuntimeError(f"{len(missing)} chunk(s) did not come back (first: {missing[0]})")

    def iter_chunks(self) -> Iterator[np.ndarray]:
        for i in range(self.n_chunks):
            yield np.load(self.path(i))

    def load(self) -> np.ndarray:
        """All rows as one ``(n, dim)`` array (requires a complete store)."""
        missing = self.missing()
        if missing:
            raise RuntimeError(f"{self.folder}: {len(missing)} of {self.n_chunks} chunks are missing")
        if self.n == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.concatenate(list(self.iter_chunks()), axis=0)

    def write_npy(self, path: str | os.PathLike[str]) -> Path:
        """Assemble into one ``.npy`` file (streamed through a memory map; atomic rename)."""
        def write(tmp: Path) -> None:
            mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(self.n, self.dim))
            for i, arr in enumerate(self.iter_chunks()):
                lo, hi = self.bounds(i)
                mm[lo:hi] = arr
            mm.flush()
            del mm

        return atomic_write(path, write)

    def write_parquet(self, path: str | os.PathLike[str], texts: Sequence[str]) -> Path:
        """Assemble into parquet with columns ``text`` and ``embedding`` (list of float32)."""
        pa, pq = _pyarrow()
        schema = pa.schema([("text", pa.string()), ("embedding", pa.list_(pa.float32(), self.dim))])

        def write(tmp: Path) -> None:
            with pq.ParquetWriter(tmp, schema) as w:
                for i, arr in enumerate(self.iter_chunks()):
                    lo, hi = self.bounds(i)
                    emb = pa.FixedSizeListArray.from_arrays(pa.array(arr.reshape(-1), pa.float32()), self.dim)
                    w.write_table(pa.table({"text": pa.array(list(texts[lo:hi]), pa.string()), "embedding": emb},
                                           schema=schema))

        return atomic_write(path, write)

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _pyarrow() -> tuple[Any, Any]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ValueError("parquet output needs pyarrow: pip install pyarrow (or write .npy)") from None
    return pa, pq


def read_sentences(path: str | os.PathLike[str], text_field: str = "text") -> list[str]:
    """Sentences from a ``.txt`` file (one per line; every line is a row, blank ones included, so
    row ``i`` of the output is line ``i``), ``.jsonl`` (field ``text_field``; blank lines skipped)
    or ``.tsv``/``.csv`` with a header naming ``text_field``."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"input file not found: {p}")
    suffix = p.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        out = []
        for i, rec in read_jsonl(p):
            if not isinstance(rec, dict) or not isinstance(rec.get(text_field), str):
                raise ValueError(f"{p}:{i}: no string field '{text_field}'")
            out.append(rec[text_field])
        return out
    if suffix in (".tsv", ".csv"):
        reader = csv.DictReader(text_lines(p, csv_mode=True), delimiter="\t" if suffix == ".tsv" else ",")
        if reader.fieldnames is None or text_field not in reader.fieldnames:
            raise ValueError(f"{p}: no column '{text_field}' in the header {reader.fieldnames}")
        return [row[text_field] for row in reader]
    return read_text(p).splitlines()


#: output file extension -> format
_EXTENSIONS = {".npy": "npy", ".parquet": "parquet", ".pq": "parquet"}


def _output_format(output: Path, fmt: str | None) -> str:
    """The format of ``output``: from ``fmt`` when given, else its extension (.npy, .parquet, .pq).

    An extension that is not one of those (``e.csv``) or that contradicts ``fmt`` is an error, so
    no file ever holds another format than its name says."""
    if fmt is not None:
        fmt = fmt.lower()
        if fmt not in OUTPUT_FORMATS:
            raise ValueError(f"unknown output format '{fmt}': use npy or parquet")
    by_ext = _EXTENSIONS.get(output.suffix.lower())
    if by_ext is None:
        raise ValueError(f"unsupported output file type '{output.suffix or '(none)'}' ({output.name}): "
                         "name the output .npy or .parquet")
    if fmt is not None and fmt != by_ext:
        raise ValueError(f"output {output.name} is named like {by_ext} but the format asked is {fmt}: name it .{fmt}")
    return by_ext


def embed_file(
    encoder: Any,
    input_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str] | None = None,
    *,
    fmt: str | None = None,
    text_field: str = "text",
    batch_size: int = 32,
    chunk_size: int = 1024,
    progress: bool = True,
    resume: bool = True,
    encode_chunks: EncodeChunks | None = None,
) -> Path:
    """Embed every sentence of ``input_path`` into ``output_path`` (``.npy`` or parquet).

    Work is saved chunk by chunk in ``<output>.parts/``; running the same command again after
    an interruption continues where it stopped (``resume=False`` starts over). The parts folder
    is removed once the output file is written. ``encode_chunks`` computes the chunks elsewhere
    (:meth:`ChunkStore.fill_from`; it must encode each chunk as ``encoder`` would, with ``batch_size``).
    """
    inp = Path(input_path)
    texts = read_sentences(inp, text_field=text_field)
    if not texts:
        raise ValueError(f"{inp}: no sentences found")
    out = Path(output_path) if output_path is not None else inp.with_suffix(".npy")
    fmt = _output_format(out, fmt)
    if fmt == "parquet":
        _pyarrow()  # fail before computing anything
    if not out.parent.is_dir():
        raise FileNotFoundError(f"output folder does not exist: {out.parent}")
    check_output_path(out)
    parts = out.with_name(out.name + ".parts")
    if not resume and parts.exists():
        shutil.rmtree(parts)
    describe = encoder.describe() if hasattr(encoder, "describe") else {"encoder": repr(encoder)}
    store = ChunkStore(parts, texts, encoder.get_sentence_embedding_dimension(), describe, chunk_size)

    def encode(chunk: list[str], bar: ProgressBar) -> np.ndarray:
        if isinstance(encoder, Encoder):
            return encoder.encode(chunk, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=bar)
        arr = encoder.encode(chunk, batch_size=batch_size, convert_to_numpy=True)  # any sentence-transformers model
        bar.advance(len(chunk))
        return arr

    if encode_chunks is None:
        store.fill(texts, encode, progress=progress, desc=f"embed {inp.name}")
    else:
        store.fill_from(texts, encode_chunks, progress=progress, desc=f"embed {inp.name}")
    result = store.write_parquet(out, texts) if fmt == "parquet" else store.write_npy(out)
    store.remove()
    return result
