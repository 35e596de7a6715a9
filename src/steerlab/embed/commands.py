"""Bodies of the ``steerlab eval sts`` and ``steerlab embed FILE`` commands.

Plain functions, so the CLI stays thin: they validate their input (raising ``ValueError`` or
``FileNotFoundError`` with a one-line message), build an :class:`~steerlab.embed.Encoder` and
return results; printing is left to the caller.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

from ..checks import check_output_path
from ..files import atomic_write_text
from .encoder import Encoder

__all__ = ["build_encoder", "eval_sts_command", "embed_command"]


def _split_list(value: str | Sequence[str] | None) -> list[str] | None:
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else list(value)
    items = [x.strip() for x in items if x.strip()]
    return items or None


def _layer(value: Any) -> Any:
    if value is None or not isinstance(value, str):
        return value
    v = value.strip()
    try:
        return float(v) if "." in v else int(v)
    except ValueError:
        return v  # "last", "penultimate" or an error from the encoder


def build_encoder(
    model: Any = "embedded",
    prompt: str = "prompteol",
    layer: Any = None,
    cp: str | None = None,
    cp_layer: int | None = None,
    alpha: float | None = None,
    tp: bool = False,
    tp_start: int = 1,
    tp_exit: int | None = None,
    dtype: str | None = None,
    device: str | None = None,
    batch_size: int = 32,
    preprocess: bool = True,
) -> Encoder:
    """An :class:`Encoder` from command-line style options.

    ``cp``: ``None``/``"none"``, ``"ns"`` or ``"nr"``; ``cp_layer`` is 0-based; ``tp`` turns Token
    Prepending on with layers ``[tp_start, tp_exit)``.
    """
    from ..models import LoadedModel, load_model

    cp_cfg = None
    if cp is not None and str(cp).lower() not in ("", "none", "off", "false"):
        variant = str(cp).lower()
        if variant not in ("ns", "nr"):
            raise ValueError(f"--cp must be ns, nr or none, got '{cp}'")
        cp_cfg = {"variant": variant, "layer": cp_layer, "alpha": alpha}
    elif cp_layer is not None or alpha is not None:
        raise ValueError("--cp-layer/--alpha need --cp ns or --cp nr")
    tp_cfg = {"start": tp_start, "exit": tp_exit} if tp else None
    if not tp and tp_exit is not None:
        raise ValueError("--tp-exit needs --tp")
    if batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {batch_size}")
    lm = model if isinstance(model, LoadedModel) else load_model(model, dtype=dtype, device=device)
    return Encoder(lm, prompt=prompt, layer=_layer(layer), cp=cp_cfg, tp=tp_cfg, batch_size=batch_size,
                   preprocess=preprocess)


def eval_sts_command(
    model: Any = "embedded",
    *,
    tasks: str | Sequence[str] | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    limit: int | None = None,
    output: str | os.PathLike[str] | None = None,
    progress: bool = True,
    batch_size: int = 32,
    **encoder_options: Any,
) -> dict[str, Any]:
    """``steerlab eval sts``: Spearman x100 per task and the average; optionally saved as JSON.

    ``tasks``: comma-separated names, ``name:split`` for another split (``stsb:dev``); default
    the 7 SentEval STS tasks (STS12-16 pooled "all", STS-B test, SICK-R test).
    Returns ``{"encoder": settings, "scores": {...}, "average": float, "n_pairs": {...},
    "markdown": table}``; with ``output``, also writes it there as JSON (missing folders created).
    ``encoder_options``: the keywords of :func:`build_encoder` (``prompt``, ``layer``, ``cp``,
    ``cp_layer``, ``alpha``, ``tp``, ``tp_start``, ``tp_exit``, ``dtype``, ``device``, ``preprocess``).
    """
    from ..data import data_dir as resolve_data_dir
    from ..evals.sts import evaluate_sts, load_tasks

    if limit is not None and limit < 1:
        raise ValueError(f"--limit must be >= 1, got {limit}")
    root = resolve_data_dir(data_dir)
    task_list = _split_list(tasks)
    load_tasks(task_list, root, 1)  # validate names, splits and files before loading the model
    if output is not None:
        check_output_path(output)  # a missing folder is created when the results are written
    enc = build_encoder(model, batch_size=batch_size, **encoder_options)
    res = evaluate_sts(enc, task_list, root, batch_size=batch_size, show_progress_bar=progress, limit=limit)
    out = {"encoder": enc.describe(), **res.to_dict(), "markdown": res.markdown()}
    if output is not None:
        atomic_write_text(output, json.dumps(out, indent=1, default=str))
    return out


def embed_command(
    file: str | os.PathLike[str],
    output: str | os.PathLike[str] | None = None,
    model: Any = "embedded",
    *,
    fmt: str | None = None,
    text_field: str = "text",
    batch_size: int = 32,
    chunk_size: int = 1024,
    resume: bool = True,
    progress: bool = True,
    encode_chunks: Any = None,
    **encoder_options: Any,
) -> Path:
    """``steerlab embed FILE``: embed every sentence of FILE (``.txt`` one per line, ``.jsonl``
    with a ``text`` field, ``.tsv``/``.csv`` with a ``text`` column) into ``.npy`` or parquet.

    Resumable: an interrupted run continues from the last finished chunk. Returns the output path.
    ``encoder_options``: the keywords of :func:`build_encoder`. ``encode_chunks`` computes the chunks in
    other processes (:meth:`steerlab.distributed.RayCluster.embed_chunks`, built from the same options).
    """
    from .io import _output_format, _pyarrow, embed_file, read_sentences

    src = Path(file)
    if not src.is_file():
        raise FileNotFoundError(f"input file not found: {src}")
    out = Path(output) if output is not None else src.with_suffix(".npy")
    if out.resolve() == src.resolve():
        raise ValueError(f"output {out} would overwrite the input file")
    if _output_format(out, fmt) == "parquet":
        _pyarrow()
    if not out.parent.is_dir():
        raise FileNotFoundError(f"output folder does not exist: {out.parent}")
    check_output_path(out)
    if not read_sentences(src, text_field):
        raise ValueError(f"{src}: no sentences found")
    if chunk_size < 1:
        raise ValueError(f"--chunk-size must be >= 1, got {chunk_size}")
    enc = build_encoder(model, batch_size=batch_size, **encoder_options)
    return embed_file(enc, src, out, fmt=fmt, text_field=text_field, batch_size=batch_size,
                      chunk_size=chunk_size, progress=progress, resume=resume, encode_chunks=encode_chunks)
