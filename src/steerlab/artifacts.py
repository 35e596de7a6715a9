"""Artifacts: one file format for every fitted intervention, validation against a model, GGUF export.

File format (``steerlab.intervention/1``, written by :func:`save_intervention`; :func:`save_vector`
writes a steering vector as the simplest kind, ``"vector"``):

* ``<name>.safetensors`` - the tensors. A steering vector's part at a site is named by the site key
  (``residual.12``, ``heads.3``: as in every vector file ever written); the other tensors by their
  part, ``<group>/<name>`` or ``<name>``: ``probes/weights``, ``directions``, ``gate/residual.3`` ... The
  header's ``__metadata__`` holds ``"format"`` (``steerlab.intervention/1``) and ``"steerlab"``: a
  JSON object with ``kind`` (``"vector"``, ``"iti"``, ``"trainable_add"``, ``"gate"``, ...),
  ``method``, ``positions``, ``model`` (name, architecture, hidden_size, n_layers, n_heads,
  head_dim, heads_width: :class:`ModelIdentity`), ``params`` (hyper-parameters), ``data`` (what it was
  fitted on), ``extra``, ``library_version`` and ``tensors``: per tensor a :class:`TensorSpec`
  (``role``; ``site`` for a 1-D tensor applied at a site, with ``heads`` for a head subset; else
  ``dims``, one model dimension name per axis: ``layers``, ``heads``, ``head_dim``, ``hidden``,
  ``heads_width`` or ``*``; ``finite``). No pickle anywhere.
* ``<name>.json`` - a human-readable sidecar (the same metadata; shape, dtype and norm per tensor under
  ``tensors`` and, for the steering vector, per site under ``sites``).
  It is informational: loading reads only the safetensors file.

Every kind is validated by the same code (:func:`check_intervention`): against its own metadata on
load, and against a model when one is given (another model, wrong width, a layer or head the
model lacks, a dimension that does not match, NaN/inf). Vector files written before this format
(``steerlab.vector/1``: bare site keys as tensor names, :class:`~steerlab.vectors.VectorMeta` JSON
under ``"steerlab"``) still load, with :func:`load_vector` and :func:`load_intervention` alike.

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
from dataclasses import dataclass, field, fields, replace
from struct import error as struct_error
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from .checks import check_output_path
from .files import atomic_write, atomic_write_bytes
from .models import LoadedModel
from .sites import Site, SiteKind
from .vectors import SteeringVector, VectorMeta, library_version

__all__ = [
    "VectorError",
    "FORMAT",
    "VECTOR_FORMAT",
    "DIMS",
    "ModelIdentity",
    "TensorSpec",
    "InterventionArtifact",
    "vector_artifact",
    "artifact_vector",
    "check_intervention",
    "validate_intervention",
    "save_intervention",
    "load_intervention",
    "check_vector",
    "check_vector_output",
    "validate_vector",
    "save_vector",
    "load_vector",
    "export_gguf",
    "import_gguf",
    "sidecar_path",
]

#: the format every artifact is written in
FORMAT = "steerlab.intervention/1"
#: the vector-only format written before it (still read)
VECTOR_FORMAT = "steerlab.vector/1"
_META_KEY = "steerlab"
#: model dimensions a tensor axis may be named after (``*``: any length)
DIMS = ("layers", "heads", "head_dim", "hidden", "heads_width")
#: the role of a 1-D tensor added at its site; these tensors form the artifact's steering vector
VECTOR_ROLE = "vector"


class VectorError(ValueError):
    """A steering vector or another intervention does not fit the target model, holds bad values, or its
    file is bad."""


# ---------------------------------------------------------------------------------------------
# the artifact


@dataclass(frozen=True)
class ModelIdentity:
    """The model an artifact was fitted on (0 / "" = unknown: not compared)."""

    name: str = ""
    architecture: str = ""
    hidden_size: int = 0
    n_layers: int = 0
    n_heads: int = 0
    head_dim: int = 0
    heads_width: int = 0

    @classmethod
    def of(cls, lm: LoadedModel) -> "ModelIdentity":
        a = lm.adapter
        return cls(lm.name, a.family, a.hidden_size, a.n_layers, a.n_heads, a.head_dim, a.heads_width)

    def dim(self, name: str) -> int:
        """The size of model dimension ``name`` (one of :data:`DIMS`; 0 when unknown)."""
        table = {"layers": self.n_layers, "heads": self.n_heads, "head_dim": self.head_dim,
                 "hidden": self.hidden_size, "heads_width": self.heads_width}
        return int(table[name])

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "ModelIdentity":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass(frozen=True)
class TensorSpec:
    """What one tensor of an artifact is, so that it can be checked against a model.

    ``role`` names its part (``"vector"``: added at ``site``; ``"probe_weights"``, ``"sigma"`` ...).
    With ``site`` (``"residual.3"``) the tensor is 1-D and as wide as that site (``heads`` restricts a
    ``heads`` site to some heads); otherwise ``dims`` names each axis after a model dimension
    (:data:`DIMS`) or ``"*"`` (any length). ``finite=False`` allows NaN/inf (e.g. an accuracy that was
    never measured).
    """

    role: str
    site: str | None = None
    dims: tuple[str, ...] = ()
    heads: tuple[int, ...] | None = None
    finite: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "dims", tuple(self.dims))
        if self.heads is not None:
            object.__setattr__(self, "heads", tuple(sorted(int(h) for h in self.heads)))
        if not self.role:
            raise ValueError("a tensor spec needs a role")
        if self.site is not None:
            site = Site.parse(self.site)
            if self.dims:
                raise ValueError(f"a site tensor ({self.site}) takes no dims: its width is the site's")
            if self.heads is not None and site.kind is not SiteKind.HEADS:
                raise ValueError(f"only heads sites take a head list, not {self.site}")
        bad = [d for d in self.dims if d != "*" and d not in DIMS]
        if bad:
            raise ValueError(f"unknown dimension {bad[0]!r}: use one of {', '.join(DIMS)} or '*'")

    @property
    def parsed_site(self) -> Site | None:
        if self.site is None:
            return None
        s = Site.parse(self.site)
        return Site(s.kind, s.layer, self.heads) if self.heads and s.kind is SiteKind.HEADS else s

    def axis_names(self) -> tuple[str, ...]:
        """The model dimension of each axis (a site tensor: its site's width)."""
        s = self.parsed_site
        if s is None:
            return self.dims
        return ("heads_width",) if s.kind is SiteKind.HEADS else ("hidden",)

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"role": self.role}
        if self.site is not None:
            d["site"] = self.site
        if self.dims:
            d["dims"] = list(self.dims)
        if self.heads is not None:
            d["heads"] = list(self.heads)
        if not self.finite:
            d["finite"] = False
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "TensorSpec":
        heads = d.get("heads")
        return cls(role=str(d["role"]), site=d.get("site"), dims=tuple(str(x) for x in d.get("dims", ())),
                   heads=None if heads is None else tuple(int(h) for h in heads),
                   finite=bool(d.get("finite", True)))


@dataclass
class InterventionArtifact:
    """Any fitted intervention as named tensors plus metadata (the unit :func:`save_intervention` writes).

    ``kind`` says how to rebuild it (``"vector"``, ``"iti"``, ``"trainable_add"``, ``"gate"`` ...);
    ``specs[name]`` describes ``tensors[name]`` (every tensor has one). ``params`` are the
    hyper-parameters, ``data`` a description of what it was fitted on (JSON values).
    """

    kind: str
    tensors: dict[str, torch.Tensor]
    specs: dict[str, TensorSpec]
    model: ModelIdentity = field(default_factory=ModelIdentity)
    method: str = ""
    positions: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    library_version: str = field(default_factory=library_version)

    def __post_init__(self) -> None:
        if not self.kind or not isinstance(self.kind, str):
            raise ValueError("an artifact needs a kind (e.g. 'vector', 'iti')")
        if not self.tensors:
            raise ValueError(f"a {self.kind} artifact needs at least one tensor")
        missing = sorted(set(self.tensors) - set(self.specs))
        if missing:
            raise ValueError(f"tensor '{missing[0]}' has no spec")
        unused = sorted(set(self.specs) - set(self.tensors))
        if unused:
            raise ValueError(f"spec '{unused[0]}' names no tensor")
        for name, t in self.tensors.items():
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"tensor '{name}' is a {type(t).__name__}, not a torch.Tensor")

    @property
    def what(self) -> str:
        """How errors name this artifact: ``vector`` or ``<kind> artifact``."""
        return "vector" if self.kind == "vector" else f"{self.kind} artifact"

    def group(self, prefix: str) -> dict[str, torch.Tensor]:
        """The tensors named ``<prefix>/<rest>``, keyed by ``rest``."""
        p = prefix + "/"
        return {k[len(p):]: v for k, v in self.tensors.items() if k.startswith(p)}

    def meta_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "method": self.method, "positions": self.positions,
                "model": self.model.to_json(), "params": self.params, "data": self.data, "extra": self.extra,
                "library_version": self.library_version,
                "tensors": {k: self.specs[k].to_json() for k in sorted(self.specs)}}


def vector_artifact(vec: SteeringVector, kind: str = "vector") -> InterventionArtifact:
    """A steering vector as an artifact: one tensor per site, named by the site key (role ``"vector"``)."""
    m = vec.meta
    tensors = dict(vec.vectors)
    specs = {k: TensorSpec(VECTOR_ROLE, site=k, heads=m.heads.get(k)) for k in vec.vectors}
    ident = ModelIdentity(m.model_name, m.architecture, m.hidden_size, m.n_layers, heads_width=m.heads_width)
    return InterventionArtifact(kind, tensors, specs, ident, m.method, m.positions, extra=dict(m.extra),
                                library_version=m.library_version)


def artifact_vector(art: InterventionArtifact) -> SteeringVector:
    """The steering vector an artifact holds (its ``vector``-role site tensors), with its metadata."""
    vectors: dict[str, torch.Tensor] = {}
    heads: dict[str, tuple[int, ...]] = {}
    for name, spec in art.specs.items():
        if spec.role == VECTOR_ROLE and spec.site is not None:
            vectors[spec.site] = art.tensors[name]
            if spec.heads is not None:
                heads[spec.site] = spec.heads
    if not vectors:
        raise VectorError(f"this {art.what} holds no steering vector (no 'vector' site tensors)")
    m = art.model
    meta = VectorMeta(model_name=m.name, architecture=m.architecture, hidden_size=m.hidden_size,
                      n_layers=m.n_layers, heads_width=m.heads_width, method=art.method,
                      positions=art.positions, library_version=art.library_version, heads=heads, extra=dict(art.extra))
    return SteeringVector(vectors, meta)


# ---------------------------------------------------------------------------------------------
# validation (shared by every kind)


def _label(name: str, spec: TensorSpec) -> str:
    return f"at {spec.site}" if spec.role == VECTOR_ROLE and spec.site is not None else f"tensor '{name}'"


def _order(name: str, spec: TensorSpec) -> tuple[int, str, int, str]:
    """Site tensors first, by kind and layer, then the others by name."""
    site = spec.parsed_site
    return (0, site.kind.value, site.layer, name) if site is not None else (1, "", 0, name)


def _check_identity(what: str, m: ModelIdentity, lm: LoadedModel) -> None:
    """Refuse an artifact made for another model: another architecture, hidden size, heads layout, or
    another name together with another depth (same family and shapes but another name is accepted:
    interventions transfer between fine-tunes of one base)."""
    a = lm.adapter
    if m.architecture and m.architecture != a.family:
        raise VectorError(
            f"{what} was made for another model: a {m.architecture} model ('{m.name}'), "
            f"not this {a.family} model ('{lm.name}')"
        )
    if m.hidden_size and m.hidden_size != a.hidden_size:
        raise VectorError(
            f"{what} was made for another model ('{m.name}'): its hidden size {m.hidden_size} "
            f"does not match the model's {a.hidden_size} ('{lm.name}')"
        )
    if m.heads_width and m.heads_width != a.heads_width:
        raise VectorError(f"{what} heads width {m.heads_width} does not match the model's {a.heads_width}")
    if (m.n_heads and m.n_heads != a.n_heads) or (m.head_dim and m.head_dim != a.head_dim):
        raise VectorError(
            f"{what} was made for another model ('{m.name}'): {m.n_heads} heads of {m.head_dim}, "
            f"not the model's {a.n_heads} heads of {a.head_dim} ('{lm.name}')"
        )
    if m.name and m.name != lm.name and m.n_layers and m.n_layers != a.n_layers:
        raise VectorError(
            f"{what} was made for another model: '{m.name}' ({m.n_layers} layers), "
            f"not '{lm.name}' ({a.n_layers} layers)"
        )


def _check_tensors(art: InterventionArtifact, dims: ModelIdentity, against_model: bool) -> None:
    """Sites (layer, width, heads), dimensions, then values, against ``dims`` (the model's, or the
    artifact's own metadata when ``against_model`` is false; unknown sizes are not compared)."""
    what = art.what
    n_layers, n_heads = dims.n_layers, dims.n_heads
    names = sorted(art.tensors, key=lambda k: _order(k, art.specs[k]))
    for name in names:
        spec, t = art.specs[name], art.tensors[name]
        site = spec.parsed_site
        if site is not None:
            if site.layer < 0 or (n_layers and site.layer >= n_layers):
                top = f"0..{n_layers - 1}" if n_layers else "0 or more"
                if against_model:
                    raise VectorError(f"{what} has a {site.kind.value} site at layer {site.layer}; "
                                      f"the model has layers {top}")
                raise VectorError(f"{what} has a site at layer {site.layer}; its model has layers {top}")
            if t.ndim != 1:
                raise VectorError(f"{what} {_label(name, spec)} must be 1-D, got shape {tuple(t.shape)}")
            width = dims.dim(spec.axis_names()[0])
            if width and t.shape[0] != width:
                if against_model:
                    raise VectorError(f"{what} {_label(name, spec)} has width {t.shape[0]}; "
                                      f"the model's {site.kind.value} width is {width}")
                kind = "heads width" if site.kind is SiteKind.HEADS else "hidden size"
                raise VectorError(f"{what} {_label(name, spec)} has width {t.shape[0]} "
                                  f"but its metadata says {kind} {width}")
            if site.heads and n_heads and max(site.heads) >= n_heads:
                raise VectorError(f"{what} {_label(name, spec)} names head {max(site.heads)}; "
                                  f"the model has {n_heads} heads")
            continue
        if spec.dims and t.ndim != len(spec.dims):
            raise VectorError(f"{what} tensor '{name}' has {t.ndim} dimension(s), its metadata says "
                              f"{len(spec.dims)} ({' x '.join(spec.dims)})")
        want = [dims.dim(d) if d != "*" else 0 for d in spec.dims]
        if any(w and w != n for w, n in zip(want, t.shape)):
            shown = tuple(w if w else n for w, n in zip(want, t.shape))
            whose = "the model's" if against_model else "its metadata's"
            raise VectorError(f"{what} tensor '{name}' has shape {tuple(t.shape)}; {whose} "
                              f"{' x '.join(spec.dims)} is {shown}")
    for name in names:
        spec, t = art.specs[name], art.tensors[name]
        if spec.finite and (t.is_floating_point() or t.is_complex()) and not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            raise VectorError(
                f"{what} {_label(name, spec)} contains NaN or infinite values ({bad} of {t.numel()} entries)"
            )


def validate_intervention(art: InterventionArtifact) -> None:
    """Check an artifact against its own metadata: sites, widths and dimensions as described, finite
    values."""
    _check_tensors(art, art.model, against_model=False)


def check_intervention(art: InterventionArtifact, lm: LoadedModel) -> None:
    """Refuse an artifact made for another model, with a tensor of the wrong width or shape, at a layer or
    head the model lacks, or with NaN/inf values. The same checks for every kind."""
    _check_identity(art.what, art.model, lm)
    _check_tensors(art, ModelIdentity.of(lm), against_model=True)


def validate_vector(vec: SteeringVector) -> None:
    """Check a vector against its own metadata: finite values, widths and layers as described."""
    validate_intervention(vector_artifact(vec))


def check_vector(vec: SteeringVector, lm: LoadedModel) -> None:
    """Refuse a vector made for another model, of the wrong width, at a missing layer, or non-finite.

    Another model: a different architecture, hidden size or heads width, or a different model
    name together with a different layer count. (Same family and shapes but another name is
    accepted: vectors transfer between fine-tunes of one base.)
    """
    check_intervention(vector_artifact(vec), lm)


def _check_values(vec: SteeringVector) -> None:
    art = vector_artifact(vec)
    _check_tensors(art, ModelIdentity(), against_model=False)


# ---------------------------------------------------------------------------------------------
# save / load


def sidecar_path(path: str | os.PathLike[str]) -> Path:
    """The JSON sidecar of an artifact file: ``<stem>.json`` next to it."""
    return Path(path).with_suffix(".json")


def _vector_path(path: str | os.PathLike[str]) -> Path:
    p = Path(path).expanduser()
    if p.suffix == "":
        return p.with_suffix(".safetensors")
    if p.suffix != ".safetensors":
        raise ValueError(f"vector files end in .safetensors, got '{p.name}'")
    return p


def check_vector_output(path: str | os.PathLike[str]) -> Path:
    """The ``.safetensors`` path :func:`save_vector` / :func:`save_intervention` write for ``path``, refused
    when its folder is not writable (call it before fitting, so a bad ``--out`` fails before the work)."""
    return check_output_path(_vector_path(path))


def _dtype_name(t: torch.Tensor) -> str:
    return str(t.dtype).replace("torch.", "")


def _sidecar(art: InterventionArtifact) -> dict[str, Any]:
    def info(t: torch.Tensor) -> dict[str, Any]:
        d: dict[str, Any] = {"shape": list(t.shape), "dtype": _dtype_name(t)}
        if t.is_floating_point() and t.numel():
            d["norm"] = float(t.float().norm())
        return d

    sites = {spec.site: info(art.tensors[k]) for k, spec in sorted(art.specs.items())
             if spec.role == VECTOR_ROLE and spec.site is not None}
    return {"format": FORMAT, "meta": art.meta_json(), "sites": sites,
            "tensors": {k: info(v) for k, v in sorted(art.tensors.items())}}


def save_intervention(art: InterventionArtifact, path: str | os.PathLike[str]) -> Path:
    """Save ``art`` as ``path`` (``.safetensors``, added when missing) plus a ``<stem>.json`` sidecar.

    Refuses NaN/inf values (where the spec asks for finite ones) and tensors that disagree with the
    artifact's own metadata. Both files are replaced atomically. Returns the safetensors path.
    """
    from safetensors.torch import save as st_save

    if not isinstance(art, InterventionArtifact):
        raise TypeError(f"save_intervention takes an InterventionArtifact, got {type(art).__name__}")
    target = check_vector_output(path)
    validate_intervention(art)
    try:
        meta_text = json.dumps(art.meta_json(), sort_keys=True)  # NaN allowed, as save_vector always wrote it
    except (TypeError, ValueError) as e:
        raise VectorError(f"{art.what} metadata is not plain JSON: {e}") from None
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in art.tensors.items()}
    data = st_save(tensors, metadata={_META_KEY: meta_text, "format": FORMAT})
    atomic_write_bytes(target, data)
    text = json.dumps(_sidecar(art), indent=2, sort_keys=True) + "\n"
    atomic_write_bytes(sidecar_path(target), text.encode("utf-8"))
    return target


def save_vector(vec: SteeringVector, path: str | os.PathLike[str]) -> Path:
    """Save ``vec`` as ``path`` (``.safetensors``, added when missing) plus a ``<stem>.json`` sidecar: an
    artifact of kind ``"vector"`` (see the module doc). Refuses NaN/inf values. Both files are replaced
    atomically. Returns the safetensors path."""
    if not isinstance(vec, SteeringVector):
        raise TypeError(f"save_vector takes a SteeringVector, got {type(vec).__name__}")
    return save_intervention(vector_artifact(vec), path)


def _read_header(path: Path) -> tuple[dict[str, str], list[str]]:
    """Metadata and tensor names of a safetensors file; VectorError when it is not one."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {}), list(f.keys())
    except Exception as e:  # safetensors raises its own error types for malformed headers
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise VectorError(f"'{path}' is not a valid safetensors file ({first})") from None


def _load_tensors(p: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return dict(load_file(str(p)))
    except Exception as e:  # noqa: BLE001 - any read failure is a bad file
        raise VectorError(f"'{p}' could not be read: {e}") from None


def _legacy_artifact(p: Path, meta_obj: Any, names: list[str]) -> InterventionArtifact:
    """A ``steerlab.vector/1`` file (bare site keys, VectorMeta JSON) as a ``"vector"`` artifact."""
    try:
        meta = VectorMeta.from_json(meta_obj)
    except (ValueError, TypeError, AttributeError) as e:
        raise VectorError(f"'{p}' has malformed steerlab metadata: {e}") from None
    for name in names:
        try:
            Site.parse(name)
        except ValueError as e:
            raise VectorError(f"'{p}' holds a tensor '{name}' that is not a site key: {e}") from None
    tensors = _load_tensors(p)
    for key, v in tensors.items():
        if v.ndim != 1:
            raise VectorError(f"'{p}' could not be read as a steering vector: vector at {key} must be 1-D, "
                              f"got shape {tuple(v.shape)}")
    return vector_artifact(SteeringVector(tensors, meta))


def _new_artifact(p: Path, meta_obj: Any, names: list[str]) -> InterventionArtifact:
    try:
        specs = {str(k): TensorSpec.from_json(v) for k, v in dict(meta_obj["tensors"]).items()}
        kind = str(meta_obj["kind"])
        model = ModelIdentity.from_json(dict(meta_obj.get("model", {})))
        fields_ = dict(method=str(meta_obj.get("method", "")), positions=str(meta_obj.get("positions", "")),
                       params=dict(meta_obj.get("params", {})), data=dict(meta_obj.get("data", {})),
                       extra=dict(meta_obj.get("extra", {})),
                       library_version=str(meta_obj.get("library_version", "")))
    except (KeyError, ValueError, TypeError, AttributeError) as e:
        raise VectorError(f"'{p}' has malformed steerlab metadata: {type(e).__name__}: {e}") from None
    unlisted = sorted(set(names) - set(specs))
    if unlisted:
        raise VectorError(f"'{p}' holds a tensor '{unlisted[0]}' that its metadata does not describe")
    absent = sorted(set(specs) - set(names))
    if absent:
        raise VectorError(f"'{p}' metadata lists a tensor '{absent[0]}' that the file does not hold")
    tensors = _load_tensors(p)
    return InterventionArtifact(kind, tensors, specs, model, **fields_)


def _read_artifact(path: str | os.PathLike[str], what: str) -> InterventionArtifact:
    p = Path(path).expanduser()
    if p.suffix == "" and not p.exists():
        p = p.with_suffix(".safetensors")
    if not p.is_file():
        raise VectorError(f"{what} file not found: {p}")
    header, names = _read_header(p)
    raw = header.get(_META_KEY)
    if raw is None:
        raise VectorError(
            f"'{p}' has no steerlab metadata (no '{_META_KEY}' key in its safetensors header); "
            "was it written by steerlab.save_vector or save_intervention?"
        )
    try:
        meta_obj = json.loads(raw)
    except ValueError as e:
        raise VectorError(f"'{p}' has malformed steerlab metadata: {e}") from None
    if not isinstance(meta_obj, dict):
        raise VectorError(f"'{p}' has malformed steerlab metadata: not a JSON object")
    if not names:
        raise VectorError(f"'{p}' holds no tensors")
    fmt = header.get("format", VECTOR_FORMAT)
    if fmt == VECTOR_FORMAT:
        art = _legacy_artifact(p, meta_obj, names)
    elif fmt == FORMAT:
        art = _new_artifact(p, meta_obj, names)
    else:
        raise VectorError(f"'{p}' has format '{fmt}'; this steerlab reads {FORMAT} and {VECTOR_FORMAT}")
    validate_intervention(art)
    return art


def load_intervention(path: str | os.PathLike[str], lm: LoadedModel | None = None,
                      kind: str | None = None) -> InterventionArtifact:
    """Read an artifact saved by :func:`save_intervention` or :func:`save_vector` (also a
    ``steerlab.vector/1`` file: kind ``"vector"``), checked against its own metadata; with ``lm``, also
    checked against that model; with ``kind``, refused when it is another kind."""
    art = _read_artifact(path, "intervention")
    if kind is not None and art.kind != kind:
        raise VectorError(f"'{path}' holds a {art.kind} artifact, not a {kind} artifact")
    if lm is not None:
        check_intervention(art, lm)
    return art


def load_vector(path: str | os.PathLike[str], lm: LoadedModel | None = None) -> SteeringVector:
    """Read the steering vector of a file saved by :func:`save_vector` (or of any artifact that holds one,
    e.g. an ITI fit); with ``lm``, also check it fits that model."""
    art = _read_artifact(path, "vector")
    if lm is not None:
        check_intervention(art, lm)
    try:
        return artifact_vector(art)
    except VectorError as e:
        raise VectorError(f"'{path}': {e}") from None


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


def import_gguf(path: str | os.PathLike[str], lm: LoadedModel | None = None) -> SteeringVector:
    """Read a llama.cpp / repeng GGUF control vector: ``direction.N`` becomes ``residual.N`` (float32, values
    unchanged; the inverse of :func:`export_gguf`), ``controlvector.model_hint`` the architecture. With ``lm``,
    the hidden size and layers are checked against it and its name and shape are recorded."""
    import gguf

    p = Path(path)
    if not p.is_file():
        raise VectorError(f"GGUF file not found: {p}")
    try:
        reader = gguf.GGUFReader(str(p))
    except (ValueError, OSError, struct_error) as e:
        raise VectorError(f"'{p}' is not a readable GGUF file ({e})") from None
    arch = reader.get_field("general.architecture")
    if arch is None or arch.contents() != "controlvector":
        found = "none" if arch is None else repr(arch.contents())
        raise VectorError(f"'{p}' is not a control vector (general.architecture is {found}, not 'controlvector')")
    vectors: dict[str, torch.Tensor] = {}
    for t in reader.tensors:
        if not t.name.startswith("direction.") or not t.name.split(".", 1)[1].isdigit():
            raise VectorError(f"'{p}': unexpected tensor '{t.name}' (a control vector holds direction.N only)")
        if t.tensor_type != gguf.GGMLQuantizationType.F32:
            raise VectorError(f"'{p}': tensor '{t.name}' is {t.tensor_type.name}, not F32")
        vectors[f"residual.{int(t.name.split('.', 1)[1])}"] = torch.from_numpy(np.array(t.data, dtype=np.float32))
    if not vectors:
        raise VectorError(f"'{p}' holds no direction tensors")
    hint = reader.get_field("controlvector.model_hint")
    meta = VectorMeta(architecture=str(hint.contents()) if hint is not None else "",
                      hidden_size=int(next(iter(vectors.values())).numel()), method="gguf",
                      extra={"source": str(p)})
    vec = SteeringVector(vectors, meta)
    if lm is not None:
        check_vector(vec, lm)
        vec = SteeringVector(vectors, replace(meta, model_name=lm.name, n_layers=lm.adapter.n_layers))
    return vec
