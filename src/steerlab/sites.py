"""Sites: named places in a model where activations are read or edited.

A :class:`Site` is ``(kind, layer[, heads])``:

* ``residual``  - the residual stream after the decoder block (the block's output);
* ``heads``     - the input of the attention output projection (``o_proj``), i.e. the
  concatenated per-head outputs, ``n_heads * head_dim`` wide; ``heads`` optionally restricts
  which heads an edit touches;
* ``attn_out``  - the attention block's output (after ``o_proj``, before the residual add);
* ``mlp_out``   - the MLP's output (before the residual add);
* ``block_in``  - the residual stream entering the decoder block (its input: ``residual.{layer-1}`` for
  ``layer >= 1``, the token embeddings for ``layer = 0``). Token Prepending edits it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import torch
from torch import nn

from .arch import ArchAdapter

__all__ = ["SiteKind", "Site", "site_module", "site_width", "as_heads"]


class SiteKind(str, Enum):
    RESIDUAL = "residual"
    HEADS = "heads"
    ATTN_OUT = "attn_out"
    MLP_OUT = "mlp_out"
    BLOCK_IN = "block_in"

    @classmethod
    def _missing_(cls, value: object) -> "SiteKind":
        """``SiteKind("bogus")`` -> a ValueError that lists the kinds."""
        raise ValueError(f"unknown site kind {value!r}: use one of {', '.join(k.value for k in cls)}")


@dataclass(frozen=True, order=True)
class Site:
    kind: SiteKind
    layer: int
    heads: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", SiteKind(self.kind))
        if self.heads is not None:
            object.__setattr__(self, "heads", tuple(sorted(int(h) for h in self.heads)))
            if self.kind is not SiteKind.HEADS:
                raise ValueError("only 'heads' sites take a head list")

    @property
    def key(self) -> str:
        """Stable string key, e.g. ``residual.12`` or ``heads.3`` (head subsets live in metadata)."""
        return f"{self.kind.value}.{self.layer}"

    @classmethod
    def parse(cls, text: str) -> "Site":
        """Parse ``kind.layer`` (``residual.12``, ``heads.3``)."""
        try:
            kind, layer = text.rsplit(".", 1)
            return cls(SiteKind(kind), int(layer))
        except (ValueError, KeyError):
            kinds = ", ".join(k.value for k in SiteKind)
            raise ValueError(f"bad site '{text}': expected KIND.LAYER with KIND one of {kinds}") from None

    @classmethod
    def residual(cls, layer: int) -> "Site":
        return cls(SiteKind.RESIDUAL, layer)

    def normalized(self, adapter: ArchAdapter) -> "Site":
        """Same site with a negative layer resolved and heads checked against the model."""
        layer = adapter.check_layer(self.layer)
        if self.heads is not None:
            bad = [h for h in self.heads if not 0 <= h < adapter.n_heads]
            if bad:
                raise ValueError(f"head(s) {bad} out of range: layer has heads 0..{adapter.n_heads - 1}")
        return Site(self.kind, layer, self.heads)


def site_width(adapter: ArchAdapter, kind: SiteKind | str) -> int:
    """Feature width of a site kind (``hidden_size``, or ``n_heads*head_dim`` for heads)."""
    return adapter.heads_width if SiteKind(kind) is SiteKind.HEADS else adapter.hidden_size


def site_module(adapter: ArchAdapter, model: nn.Module, site: Site) -> tuple[nn.Module, bool]:
    """The module to hook for ``site`` and whether it is a *pre*-hook (reads the module input)."""
    kind = SiteKind(site.kind)
    if kind is SiteKind.RESIDUAL:
        return adapter.layer(model, site.layer), False
    if kind is SiteKind.HEADS:
        return adapter.o_proj(model, site.layer), True
    if kind is SiteKind.ATTN_OUT:
        return adapter.attn(model, site.layer), False
    if kind is SiteKind.BLOCK_IN:
        return adapter.layer(model, site.layer), True
    return adapter.mlp(model, site.layer), False


def as_heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """View a ``(..., n_heads*head_dim)`` tensor as ``(..., n_heads, head_dim)`` (no copy)."""
    return x.view(*x.shape[:-1], n_heads, x.shape[-1] // n_heads)
