"""Token Prepending (TP, arXiv 2412.11556) without touching the user's model.

A placeholder token (``<PST>``) is placed just before the quoted sentence. Before each decoder
layer ``i`` with ``start <= i < exit`` (0-based) runs, the placeholder position's hidden state is
overwritten with the previous layer's last-token hidden state (the input of layer ``i`` at the
last position), so the sentence tokens that follow can attend to the embedding decoded so far.
Causal mask and position ids are unchanged.

The model is never modified: the placeholder is added to a *copy* of the tokenizer (as a
special token that absorbs the space before it, so it costs exactly one token), and the
model is fed ``inputs_embeds`` made from its own embedding module, with the placeholder rows
set to one extra vector (drawn once, seeded, with the per-dimension mean and spread of the
embedding outputs; the TP paper finds the initialisation barely matters, and from layer
``start`` on the value is overwritten anyway). The placeholder's position is found per row
from the input ids (no hard-coded token ids). Layer-input edits are `block_in` edits on the hook
manager (scoped, always removed, thread-aware).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Iterable

import torch
from torch import nn

from ..hooks import HookManager, StepState
from ..sites import Site, SiteKind
from .prompts import PST

__all__ = ["TPConfig", "TP_INITS", "Placeholder", "tp_default_exit", "add_tp_hooks", "placeholder_positions"]

_PAPER_EXIT = 7  # Llama-2-7B + PromptEOL: TP on layers 1..7 (exit 7) of 32
_PAPER_DEPTH = 32


#: how the placeholder's input vector is drawn (see :class:`TPConfig`)
TP_INITS = ("embedding_stats", "randn")


@dataclass(frozen=True)
class TPConfig:
    """Token Prepending settings: overwrite before layers ``start <= i < exit`` (0-based).

    ``exit=None``: the paper's Llama-2-7B setting (exit 7 of 32) scaled to the model's depth.
    ``init``: the placeholder's input vector before layer ``start`` overwrites it: ``"embedding_stats"``
    (the embedding outputs' per-dimension mean + std * seeded noise; steerlab's default) or ``"randn"``
    (a seeded standard normal vector, as the TP reference code's ``randn``).
    """

    start: int = 1
    exit: int | None = None
    placeholder: str = PST
    seed: int = 0
    init: str = "embedding_stats"

    def __post_init__(self) -> None:
        if not isinstance(self.start, int) or self.start < 1:
            raise ValueError(f"TP start must be an integer >= 1 (layer 0 has no previous layer), got {self.start!r}")
        if self.exit is not None and (not isinstance(self.exit, int) or self.exit <= self.start):
            raise ValueError(f"TP exit must be an integer > start ({self.start}), got {self.exit!r}")
        if not self.placeholder or "{s}" in self.placeholder:
            raise ValueError(f"bad TP placeholder {self.placeholder!r}")
        if self.init not in TP_INITS:
            raise ValueError(f"TP init must be one of {', '.join(TP_INITS)}, got {self.init!r}")

    @classmethod
    def coerce(cls, tp: Any) -> "TPConfig | None":
        """``None``/``False`` -> off; ``True`` -> defaults; an int -> exit; a dict; a TPConfig."""
        if tp is None or tp is False:
            return None
        if tp is True:
            return cls()
        if isinstance(tp, cls):
            return tp
        if isinstance(tp, int):
            return cls(exit=tp)
        if isinstance(tp, dict):
            return cls(**tp)
        raise ValueError(f"tp must be None, True, an exit layer, a dict or a TPConfig; got {tp!r}")


def tp_default_exit(n_layers: int, start: int = 1) -> int:
    """The paper's exit layer (7 of 32) scaled to ``n_layers``, at least ``start + 1``."""
    return min(max(round(_PAPER_EXIT / _PAPER_DEPTH * n_layers), start + 1), n_layers)


class Placeholder:
    """A tokenizer copy that knows the placeholder, and the placeholder's input vector."""

    def __init__(self, tokenizer: Any, embed: nn.Module, placeholder: str = PST, seed: int = 0,
                 init: str = "embedding_stats") -> None:
        from tokenizers import AddedToken

        self.text = placeholder
        self.tokenizer = copy.deepcopy(tokenizer)
        self.tokenizer.add_tokens([AddedToken(placeholder, special=True, normalized=False, lstrip=True)])
        self.token_id = int(self.tokenizer.convert_tokens_to_ids(placeholder))
        ids = self.tokenizer(placeholder, add_special_tokens=False)["input_ids"]
        if ids != [self.token_id]:
            raise RuntimeError(f"the tokenizer does not keep {placeholder!r} as one token (got {ids})")
        self.embed = embed
        self.vector = self._init_vector(embed, seed, init)
        # any id the embedding can look up; its rows are replaced by ``vector``
        pad = self.tokenizer.pad_token_id
        self.safe_id = int(pad) if pad is not None and 0 <= pad < self._vocab(embed) else 0

    @staticmethod
    def _vocab(embed: nn.Module) -> int:
        w = getattr(embed, "weight", None)
        return int(w.shape[0]) if w is not None else int(getattr(embed, "num_embeddings"))

    @classmethod
    @torch.no_grad()
    def _init_vector(cls, embed: nn.Module, seed: int, init: str = "embedding_stats") -> torch.Tensor:
        w = getattr(embed, "weight", None)
        device = w.device if w is not None else torch.device("cpu")
        n = min(cls._vocab(embed), 8192)
        sample = embed(torch.arange(n, device=device)).float()  # embedding outputs (scaled embeddings included)
        gen = torch.Generator(device="cpu").manual_seed(seed)
        noise = torch.randn(sample.shape[-1], generator=gen).to(device)
        dtype = w.dtype if w is not None else sample.dtype
        if init == "randn":
            return noise.to(dtype)
        return (sample.mean(0) + sample.std(0) * noise).to(dtype)

    def inputs_embeds(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``inputs_embeds`` for ``input_ids`` and the first placeholder position of each row."""
        is_pst = input_ids == self.token_id
        missing = (~is_pst.any(-1)).nonzero().flatten().tolist()
        if missing:
            raise RuntimeError(f"TP: no {self.text} token in batch row(s) {missing}; the template must contain it")
        emb = self.embed(input_ids.masked_fill(is_pst, self.safe_id))
        emb = emb.clone()
        emb[is_pst] = self.vector.to(device=emb.device, dtype=emb.dtype)
        return emb, placeholder_positions(is_pst)


def placeholder_positions(is_pst: torch.Tensor) -> torch.Tensor:
    """Column of the first True per row of a boolean ``(batch, seq)`` tensor."""
    return is_pst.int().argmax(dim=-1)


def add_tp_hooks(hooks: HookManager, layers: Iterable[int], pst_pos: torch.Tensor) -> HookManager:
    """Register TP's edit on ``hooks``: the input of each layer in ``layers`` (site ``block_in``) gets, at row
    ``b``'s position ``pst_pos[b]``, that input's last position (= the previous layer's last-token output)."""
    rows = torch.arange(pst_pos.shape[0], device=pst_pos.device)

    def edit(x: torch.Tensor, site: Site, state: StepState) -> torch.Tensor:
        y = x.clone()
        y[rows, pst_pos] = x[:, -1, :]
        return y

    return hooks.add_many((Site(SiteKind.BLOCK_IN, i), edit) for i in layers)
