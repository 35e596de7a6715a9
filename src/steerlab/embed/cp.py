"""Contrastive Prompting (CP, arXiv 2505.12831) as a pair of edit functions.

Layers here are 0-based decoder-layer indices (``Site("heads", l)``: the input of layer ``l``'s
attention output projection, i.e. the concatenated head outputs).

* Auxiliary pass: the auxiliary prompt runs through layers ``0 .. l`` only. A pre-hook on
  layer ``l``'s ``o_proj`` records the last token's value ``B`` and raises
  :class:`~steerlab.hooks.StopForward`, so layers ``l+1 ..`` never run (``l + 1`` decoder-layer
  calls, the last one stopping inside its attention block).
* Main pass: the same pre-hook position replaces the last token's value ``A``:
  ``ns`` (scaled):  ``A <- alpha * (A - B)``;
  ``nr`` (norm):    ``A <- (A - B) * ||A|| / ||A - B||``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..checks import check_strength
from ..hooks import HookManager, StepState, StopForward
from ..sites import Site, SiteKind

__all__ = ["CPConfig", "CP_VARIANTS", "cp_default_layer", "cp_default_alpha", "contrast", "record_aux", "apply_cp"]

CP_VARIANTS = ("ns", "nr")

# paper defaults for Llama-2-7B (32 layers), 1-based layer and alpha, per main prompt
_PAPER_LAYER_1B = {"prompteol": 5, "pretcot": 7, "ke": 7, "metaeol": 5, "custom": 5}
_PAPER_ALPHA = {"prompteol": 2.0, "pretcot": 3.0, "ke": 3.0, "metaeol": 2.0, "custom": 2.0}
_PAPER_DEPTH = 32


@dataclass(frozen=True)
class CPConfig:
    """Contrastive Prompting settings.

    ``layer``: 0-based intervention layer (``None``: the paper's default scaled to depth).
    ``alpha``: CP-NS scale (``None``: the paper's default for the prompt; unused by ``nr``).
    ``aux_prompt``: the auxiliary template (``None``: the paper's "irrelevant information" prompt).
    """

    variant: str = "ns"
    layer: int | None = None
    alpha: float | None = None
    aux_prompt: str | None = None

    def __post_init__(self) -> None:
        v = str(self.variant).lower().replace("cp-", "").replace("cp_", "")
        if v not in CP_VARIANTS:
            raise ValueError(f"unknown CP variant '{self.variant}': use 'ns' (scaled) or 'nr' (norm)")
        object.__setattr__(self, "variant", v)
        if self.alpha is not None and not isinstance(self.alpha, (int, float)):
            raise ValueError(f"CP alpha must be a number, got {self.alpha!r}")
        if self.alpha is not None:
            check_strength(self.alpha, "CP alpha")

    @classmethod
    def coerce(cls, cp: Any) -> "CPConfig | None":
        """``None``/``False`` -> off; ``True`` -> CP-NS defaults; ``"ns"``/``"nr"``; a dict; a CPConfig."""
        if cp is None or cp is False:
            return None
        if cp is True:
            return cls()
        if isinstance(cp, cls):
            return cp
        if isinstance(cp, str):
            return cls(variant=cp)
        if isinstance(cp, dict):
            return cls(**cp)
        raise ValueError(f"cp must be None, True, 'ns', 'nr', a dict or a CPConfig; got {cp!r}")


def cp_default_layer(prompt_name: str, n_layers: int) -> int:
    """The paper's intervention layer for ``prompt_name`` scaled to ``n_layers`` (0-based)."""
    one_based = _PAPER_LAYER_1B.get(prompt_name, 5)
    return min(max(round(one_based / _PAPER_DEPTH * n_layers), 1), n_layers) - 1


def cp_default_alpha(prompt_name: str) -> float:
    return _PAPER_ALPHA.get(prompt_name, 2.0)


def contrast(a: torch.Tensor, b: torch.Tensor, variant: str, alpha: float = 1.0) -> torch.Tensor:
    """The CP replacement of ``a`` given the auxiliary value ``b`` (rows are independent)."""
    d = a - b
    if variant == "ns":
        return alpha * d
    if variant == "nr":
        an = a.float().norm(dim=-1, keepdim=True)
        dn = d.float().norm(dim=-1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)
        return (d.float() * (an / dn)).to(a.dtype)
    raise ValueError(f"unknown CP variant '{variant}'")


def record_aux(hooks: HookManager, layer: int, out: dict[str, torch.Tensor]) -> None:
    """Register the auxiliary-pass hook: store the last token's ``o_proj`` input, then stop."""

    def fn(x: torch.Tensor, site: Site, state: StepState) -> None:
        out["b"] = x[:, -1, :].detach().clone()
        raise StopForward

    hooks.add(Site(SiteKind.HEADS, layer), fn)


def apply_cp(hooks: HookManager, layer: int, b: torch.Tensor, variant: str, alpha: float) -> None:
    """Register the main-pass edit: replace the last token's ``o_proj`` input by the contrast."""

    def fn(x: torch.Tensor, site: Site, state: StepState) -> torch.Tensor:
        if x.shape[0] != b.shape[0]:
            raise RuntimeError(f"CP: main batch has {x.shape[0]} rows but the auxiliary pass gave {b.shape[0]}")
        y = x.clone()
        y[:, -1, :] = contrast(x[:, -1, :], b.to(x.dtype), variant, alpha)
        return y

    hooks.add(Site(SiteKind.HEADS, layer), fn)
