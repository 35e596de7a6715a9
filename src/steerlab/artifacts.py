"""Vector artifacts: validation against a target model (save/load/export build on this)."""

from __future__ import annotations

import torch

from .models import LoadedModel
from .sites import SiteKind, site_width
from .vectors import SteeringVector

__all__ = ["VectorError", "check_vector"]


class VectorError(ValueError):
    """A steering vector does not fit the target model or holds bad values."""


def check_vector(vec: SteeringVector, lm: LoadedModel) -> None:
    """Refuse a vector made for another model, of the wrong width, at a missing layer, or non-finite."""
    a = lm.adapter
    m = vec.meta
    if m.architecture and m.architecture != a.family:
        raise VectorError(f"vector was made for a {m.architecture} model ('{m.model_name}'), not {a.family} ('{lm.name}')")
    if m.hidden_size and m.hidden_size != a.hidden_size:
        raise VectorError(f"vector hidden size {m.hidden_size} does not match the model's {a.hidden_size}")
    if m.model_name and m.model_name != lm.name and m.n_layers and m.n_layers != a.n_layers:
        raise VectorError(f"vector was made for '{m.model_name}' ({m.n_layers} layers), not '{lm.name}' ({a.n_layers} layers)")
    for site in vec.sites:
        if not 0 <= site.layer < a.n_layers:
            raise VectorError(f"vector has a {site.kind.value} site at layer {site.layer}; the model has layers 0..{a.n_layers - 1}")
        width = site_width(a, site.kind)
        v = vec.vectors[site.key]
        if v.shape[0] != width:
            raise VectorError(f"vector at {site.key} has width {v.shape[0]}; the model's {site.kind.value} width is {width}")
        if not bool(torch.isfinite(v).all()):
            raise VectorError(f"vector at {site.key} contains NaN or infinite values")
        if site.kind is SiteKind.HEADS and site.heads and max(site.heads) >= a.n_heads:
            raise VectorError(f"vector at {site.key} names head {max(site.heads)}; the model has {a.n_heads} heads")
