"""Vector artifacts: validation, save/load (safetensors + JSON sidecar), GGUF control-vector export.

File format (``save_vector``):

* ``<name>.safetensors`` - one 1-D tensor per site, named by site key (``residual.12``); the
  header's ``__metadata__`` holds ``"steerlab"`` (the :class:`~steerlab.vectors.VectorMeta`
  JSON) and ``"format"`` (``steerlab.vector/1``). No pickle anywhere.
* ``<name>.json`` - a human-readable sidecar (metadata, per-site shape, dtype and norm). It is
  informational: :func:`load_vector` reads only the safetensors file.

Both files are written atomically: to a temporary file in the same directory, flushed and
fsynced, then moved into place with ``os.replace``. A crash leaves either the old file or the
new one, never a half-written one.

GGUF export (:func:`export_gguf`) follows llama.cpp's control-vector loader
(``common_control_vector_load_one`` / ``llama_adapter_cvec``) and repeng's ``export_gguf``:
architecture ``controlvector``, ``controlvector.model_hint`` (the model family, as repeng
writes ``model.config.model_type``), ``controlvector.layer_count`` (number of direction
tensors, as repeng), and one F32 tensor ``direction.N`` per layer. llama.cpp adds
``direction.N`` to the output of decoder block ``N`` (0-based; its ``l_out``), which is exactly
steerlab's ``residual.N`` (= HF ``hidden_states[N + 1]``), so the layer number is written
unchanged. llama.cpp rejects ``direction.0`` (it never steers block 0's output), so a vector
with a ``residual.0`` site cannot be exported.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

import torch

from .checks import check_output_path
from .files import atomic_write, atomic_write_bytes
from .models import LoadedModel
from .sites import Site, SiteKind, site_width
from .vectors import SteeringVector, VectorMeta

__all__ = [
    "VectorError",
    "FORMAT",
    "check_vector",
    "check_vector_output",
    "validate_vector",
    "save_vector",
    "load_vector",
    "export_gguf",
    "sidecar_path",
]

FORMAT = "steerlab.vector/1"
_META_KEY = "steerlab"


class VectorError(ValueError):
    """A steering vector does not fit the target model, holds bad values, or its file is bad."""


# ---------------------------------------------------------------------------------------------
# validation


def _check_values(vec: SteeringVector) -> None:
    for key, v in vec.vectors.items():
        if not bool(torch.isfinite(v).all()):
            bad = int((~torch.isfinite(v)).sum())
            raise VectorError(
                f"vector at {key} contains NaN or infinite values ({bad} of {v.numel()} entries)"
            )


def validate_vector(vec: SteeringVector) -> None:
    """Check a vector against its own metadata: finite values, widths and layers as described."""
    m = vec.meta
    for site in vec.sites:
        v = vec.vectors[site.key]
        if site.layer < 0 or (m.n_layers and site.layer >= m.n_layers):
            top = f"0..{m.n_layers - 1}" if m.n_layers else "0 or more"
            raise VectorError(f"vector has a site at layer {site.layer}; its model has layers {top}")
        width = m.heads_width if site.kind is SiteKind.HEADS else m.hidden_size
        if width and v.shape[0] != width:
            what = "heads width" if site.kind is SiteKind.HEADS else "hidden size"
            raise VectorError(
                f"vector at {site.key} has width {v.shape[0]} but its metadata says {what} {width}"
            )
    _check_values(vec)


def check_vector(vec: SteeringVector, lm: LoadedModel) -> None:
    """Refuse a vector made for another model, of the wrong width, at a missing layer, or non-finite.

    Another model: a different architecture, hidden size or heads width, or a different model
    name together with a different layer count. (Same family and shapes but another name is
    accepted: vectors transfer between fine-tunes of one base.)
    """
    a = lm.adapter
    m = vec.meta
    if m.architecture and m.architecture != a.family:
        raise VectorError(
            f"vector was made for another model: a {m.architecture} model ('{m.model_name}'), "
            f"not this {a.family} model ('{lm.name}')"
        )
    if m.hidden_size and m.hidden_size != a.hidden_size:
        raise VectorError(
            f"vector was made for another model ('{m.model_name}'): its hidden size {m.hidden_size} "
            f"does not match the model's {a.hidden_size} ('{lm.name}')"
        )
    if m.heads_width and m.heads_width != a.heads_width:
        raise VectorError(f"vector heads width {m.heads_width} does not match the model's {a.heads_width}")
    if m.model_name and m.model_name != lm.name and m.n_layers and m.n_layers != a.n_layers:
        raise VectorError(
            f"vector was made for another model: '{m.model_name}' ({m.n_layers} layers), "
            f"not '{lm.name}' ({a.n_layers} layers)"
        )
    for site in vec.sites:
        if not 0 <= site.layer < a.n_layers:
            raise VectorError(
                f"vector has a {site.kind.value} site at layer {site.layer}; "
                f"the model has layers 0..{a.n_layers - 1}"
            )
        width = site_width(a, site.kind)
        v = vec.vectors[site.key]
        if v.shape[0] != width:
            raise VectorError(
                f"vector at {site.key} has width {v.shape[0]}; the model's {site.kind.value} width is {width}"
            )
        if site.kind is SiteKind.HEADS and site.heads and max(site.heads) >= a.n_heads:
            raise VectorError(
                f"vector at {site.key} names head {max(site.heads)}; the model has {a.n_heads} heads"
            )
    _check_values(vec)




# ---------------------------------------------------------------------------------------------
# save / load


def sidecar_path(path: str | os.PathLike[str]) -> Path:
    """The JSON sidecar of a vector file: ``<stem>.json`` next to it."""
    return Path(path).with_suffix(".json")


def _vector_path(path: str | os.PathLike[str]) -> Path:
    p = Path(path).expanduser()
    if p.suffix == "":
        return p.with_suffix(".safetensors")
    if p.suffix != ".safetensors":
        raise ValueError(f"vector files end in .safetensors, got '{p.name}'")
    return p


def check_vector_output(path: str | os.PathLike[str]) -> Path:
    """The ``.safetensors`` path :func:`save_vector` writes for ``path``, refused when its folder is not
    writable (call it before fitting, so a bad ``--out`` fails before the work)."""
    return check_output_path(_vector_path(path))


def _sidecar(vec: SteeringVector) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "meta": vec.meta.to_json(),
        "sites": {
            k: {
                "shape": list(v.shape),
                "dtype": str(v.dtype).replace("torch.", ""),
                "norm": float(v.float().norm()),
            }
            for k, v in vec.vectors.items()
        },
    }


def save_vector(vec: SteeringVector, path: str | os.PathLike[str]) -> Path:
    """Save ``vec`` as ``path`` (``.safetensors``, added when missing) plus a ``<stem>.json`` sidecar.

    Refuses NaN/inf values. Both files are replaced atomically. Returns the safetensors path.
    """
    from safetensors.torch import save as st_save

    if not isinstance(vec, SteeringVector):
        raise TypeError(f"save_vector takes a SteeringVector, got {type(vec).__name__}")
    target = check_vector_output(path)
    _check_values(vec)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in vec.vectors.items()}
    meta = {_META_KEY: json.dumps(vec.meta.to_json(), sort_keys=True), "format": FORMAT}
    data = st_save(tensors, metadata=meta)
    atomic_write_bytes(target, data)
    text = json.dumps(_sidecar(vec), indent=2, sort_keys=True) + "\n"
    atomic_write_bytes(sidecar_path(target), text.encode("utf-8"))
    return target


def _read_header(path: Path) -> tuple[dict[str, str], list[str]]:
    """Metadata and tensor names of a safetensors file; VectorError when it is not one."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {}), list(f.keys())
    except Exception as e:  # safetensors raises its own error types for malformed headers
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise VectorError(f"'{path}' is not a valid safetensors file ({first})") from None


def load_vector(path: str | os.PathLike[str], lm: LoadedModel | None = None) -> SteeringVector:
    """Read a vector saved by :func:`save_vector`; with ``lm``, also check it fits that model."""
    from safetensors.torch import load_file

    p = Path(path).expanduser()
    if p.suffix == "" and not p.exists():
        p = p.with_suffix(".safetensors")
    if not p.is_file():
        raise VectorError(f"vector file not found: {p}")
    header, names = _read_header(p)
    raw = header.get(_META_KEY)
    if raw is None:
        raise VectorError(
            f"'{p}' has no steerlab metadata (no '{_META_KEY}' key in its safetensors header); "
            "was it written by steerlab.save_vector?"
        )
    try:
        meta = VectorMeta.from_json(json.loads(raw))
    except (ValueError, TypeError) as e:
        raise VectorError(f"'{p}' has malformed steerlab metadata: {e}") from None
    if not names:
        raise VectorError(f"'{p}' holds no vectors")
    for name in names:
        try:
            Site.parse(name)
        except ValueError as e:
            raise VectorError(f"'{p}' holds a tensor '{name}' that is not a site key: {e}") from None
    try:
        tensors = load_file(str(p))
        vec = SteeringVector(dict(tensors), meta)
    except VectorError:
        raise
    except Exception as e:
        raise VectorError(f"'{p}' could not be read as a steering vector: {e}") from None
    validate_vector(vec)
    if lm is not None:
        check_vector(vec, lm)
    return vec


# ---------------------------------------------------------------------------------------------
# GGUF


def export_gguf(vec: SteeringVector, path: str | os.PathLike[str], model_hint: str | None = None) -> Path:
    """Write the residual-stream part of ``vec`` as a llama.cpp GGUF control vector.

    ``residual.N`` becomes ``direction.N`` (F32). Every site must be a residual site at layer
    ``N >= 1`` (llama.cpp cannot steer block 0's output). ``model_hint`` defaults to the
    vector's architecture. The file is written atomically.
    """
    import gguf
    import numpy as np

    target = check_output_path(path)
    bad = [s.key for s in vec.sites if s.kind is not SiteKind.RESIDUAL]
    if bad:
        raise VectorError(
            "GGUF control vectors hold residual-stream directions only; "
            f"this vector also has {', '.join(bad)}"
        )
    if any(s.layer == 0 for s in vec.sites):
        raise VectorError(
            "llama.cpp control vectors cannot steer layer 0 (it rejects 'direction.0'); drop residual.0 first"
        )
    _check_values(vec)
    hint = model_hint or vec.meta.architecture or vec.meta.model_name
    if not hint:
        raise VectorError("no model hint: the vector's metadata names no architecture; pass model_hint=")
    directions = {s.layer: vec.vectors[s.key].detach().to("cpu", torch.float32).numpy() for s in vec.sites}

    def write(tmp: Path) -> None:
        writer = gguf.GGUFWriter(str(tmp), "controlvector")
        writer.add_string("controlvector.model_hint", hint)
        writer.add_uint32("controlvector.layer_count", len(directions))
        for layer in sorted(directions):
            writer.add_tensor(f"direction.{layer}", np.ascontiguousarray(directions[layer], dtype=np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()

    atomic_write(target, write)
    return target
