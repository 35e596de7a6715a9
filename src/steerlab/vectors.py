"""Steering vectors: one tensor per site plus metadata, with ``+``, ``-`` and scalar ``*``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Mapping

import torch

from .sites import Site, SiteKind

__all__ = ["VectorMeta", "SteeringVector", "library_version"]


def library_version() -> str:
    from . import __version__

    return __version__


@dataclass(frozen=True)
class VectorMeta:
    """Where a vector comes from and where it applies.

    ``heads`` maps a ``heads.L`` site key to the heads the vector touches (others are zero).
    """

    model_name: str = ""
    architecture: str = ""
    hidden_size: int = 0
    n_layers: int = 0
    heads_width: int = 0
    method: str = ""
    positions: str = ""
    library_version: str = field(default_factory=library_version)
    heads: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["heads"] = {k: list(v) for k, v in self.heads.items()}
        d["extra"] = dict(self.extra)
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "VectorMeta":
        known = {f for f in cls.__dataclass_fields__}
        kw = {k: v for k, v in d.items() if k in known}
        kw["heads"] = {k: tuple(int(h) for h in v) for k, v in dict(d.get("heads", {})).items()}
        kw["extra"] = dict(d.get("extra", {}))
        return cls(**kw)

    def compatible(self, other: "VectorMeta") -> str | None:
        """None when both describe the same model, else a reason (fields unset on either side are not
        compared; two models of one shape but different names are different models)."""
        for name in ("model_name", "architecture", "hidden_size", "n_layers"):
            a, b = getattr(self, name), getattr(other, name)
            if a and b and a != b:
                return f"{name} differs ({a} vs {b})"
        return None


@dataclass
class SteeringVector:
    """Per-site tensors (``{"residual.12": tensor(hidden)}``) and their :class:`VectorMeta`."""

    vectors: dict[str, torch.Tensor]
    meta: VectorMeta = field(default_factory=VectorMeta)

    def __post_init__(self) -> None:
        if not self.vectors:
            raise ValueError("a steering vector needs at least one site")
        for key, v in self.vectors.items():
            Site.parse(key)
            if v.ndim != 1:
                raise ValueError(f"vector at {key} must be 1-D, got shape {tuple(v.shape)}")

    @property
    def sites(self) -> list[Site]:
        out = []
        for key in self.vectors:
            s = Site.parse(key)
            heads = self.meta.heads.get(key)
            out.append(Site(s.kind, s.layer, tuple(heads)) if heads and s.kind is SiteKind.HEADS else s)
        return sorted(out)

    @property
    def layers(self) -> list[int]:
        return sorted({s.layer for s in self.sites})

    @property
    def site_kinds(self) -> list[str]:
        return sorted({s.kind.value for s in self.sites})

    def norms(self) -> dict[str, float]:
        return {k: float(v.float().norm()) for k, v in self.vectors.items()}

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "SteeringVector":
        return SteeringVector({k: v.to(device=device, dtype=dtype) for k, v in self.vectors.items()}, self.meta)

    def _combine(self, other: "SteeringVector", sign: float) -> "SteeringVector":
        if not isinstance(other, SteeringVector):
            return NotImplemented  # type: ignore[return-value]
        why = self.meta.compatible(other.meta)
        if why:
            raise ValueError(f"cannot combine vectors of different models: {why}")
        out = {k: v.clone() for k, v in self.vectors.items()}
        for k, v in other.vectors.items():
            if k in out:
                if out[k].shape != v.shape:
                    raise ValueError(f"shape mismatch at {k}: {tuple(out[k].shape)} vs {tuple(v.shape)}")
                out[k] = out[k] + sign * v.to(out[k].dtype)
            else:
                out[k] = sign * v.clone()
        heads = {**other.meta.heads}
        for k, hs in self.meta.heads.items():
            heads[k] = tuple(sorted(set(hs) | set(heads.get(k, ()))))
        method = self.meta.method if self.meta.method == other.meta.method else "combined"
        return SteeringVector(out, replace(self.meta, heads=heads, method=method))

    def __add__(self, other: "SteeringVector") -> "SteeringVector":
        return self._combine(other, 1.0)

    def __sub__(self, other: "SteeringVector") -> "SteeringVector":
        return self._combine(other, -1.0)

    def __mul__(self, scalar: float) -> "SteeringVector":
        if isinstance(scalar, bool) or not isinstance(scalar, (int, float)):
            return NotImplemented  # type: ignore[return-value]
        return SteeringVector({k: v * float(scalar) for k, v in self.vectors.items()}, self.meta)

    __rmul__ = __mul__

    def __neg__(self) -> "SteeringVector":
        return self * -1.0

    def __truediv__(self, scalar: float) -> "SteeringVector":
        return self * (1.0 / float(scalar))

    def __repr__(self) -> str:
        sites = ", ".join(self.vectors)
        return f"SteeringVector(method={self.meta.method!r}, model={self.meta.model_name!r}, sites=[{sites}])"
