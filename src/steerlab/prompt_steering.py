"""Prompt steering seen as activation steering: what a steering prompt changes in the activations.

Given a prompt pair ``(x, x')`` (``x'`` = ``x`` plus an instruction that elicits a trait, e.g. a system prompt)
and a response ``y'`` sampled under ``x'``, teacher-force the same ``y'`` under both prompts. Per layer and per
response token, ``Delta = h(x' y') - h(x y')`` is the intervention the prompt makes (the residual stream after
each block):

* **accumulated** Delta: against the fully unsteered run on ``x y'`` (single-layer PSR's target);
* **local** Delta: against a run on ``x y'`` whose earlier layers already carry the prompt's effect: the input
  of block ``l`` at the response tokens is replaced by the prompted run's ``h_{l-1}`` (one pass patches every
  block's input), so Delta at ``l`` is what block ``l`` alone fails to add (all-layer PSR's target).

Prompts ``x`` and ``x'`` have different lengths, so positions are aligned from the end: both sequences end with
the same response tokens (and, with a chat template, the same assistant header).

:func:`concentration` measures how unevenly Delta is spread over tokens (the paper's finding: over orders of
magnitude, so a constant coefficient ``h + alpha * z`` is unfaithful): the share of the total norm carried by
the top 10 % of tokens, the coefficient of variation of the per-token norms, and how much of Delta a constant
coefficient on the mean direction explains against a per-token coefficient on the same direction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from .hooks import HookManager, StepState, positions_from_mask
from .models import LoadedModel
from .runtime import Batch, EncodedPair, collate, forward
from .sites import Site, SiteKind

__all__ = ["PromptPair", "EncodedTriplet", "encode_triplet", "triplet_batches", "span_residuals",
           "prompt_deltas", "Concentration", "concentration", "DELTA_MODES"]

#: what Delta is measured against (see the module doc)
DELTA_MODES: tuple[str, ...] = ("accumulated", "local")


@dataclass(frozen=True)
class PromptPair:
    """A training / analysis example: the plain context ``x``, the steering context ``x'`` (both as the exact
    text the model reads, e.g. with the chat template applied), the response ``y'`` sampled under ``x'``,
    and ``score`` (the judge's trait score in [0, 1]; PSR's strength for this example while training)."""

    context: str
    steered_context: str
    response: str
    score: float = 1.0


@dataclass(frozen=True)
class EncodedTriplet:
    """Token ids of ``x``, ``x'`` and ``y'`` (the response is tokenized on its own, once, for both)."""

    context: tuple[int, ...]
    steered: tuple[int, ...]
    response: tuple[int, ...]
    score: float = 1.0


def encode_triplet(lm: LoadedModel, pair: PromptPair, max_response_tokens: int | None = None,
                   add_special_tokens: bool = False) -> EncodedTriplet:
    """Tokenize one :class:`PromptPair` (contexts with ``add_special_tokens``: False for chat-rendered text,
    which carries its own special tokens). The response is cut to ``max_response_tokens``."""
    tok = lm.tokenizer
    x = list(tok(pair.context, add_special_tokens=add_special_tokens)["input_ids"])
    xp = list(tok(pair.steered_context, add_special_tokens=add_special_tokens)["input_ids"])
    y = list(tok(pair.response, add_special_tokens=False)["input_ids"])
    if max_response_tokens is not None:
        y = y[:max_response_tokens]
    if not x or not xp:
        raise ValueError("a prompt pair has an empty context")
    if not y:
        raise ValueError(f"a prompt pair has an empty response (context {pair.context[-40:]!r})")
    score = float(pair.score)
    if not math.isfinite(score):
        raise ValueError(f"a prompt pair has score {pair.score!r}; it must be a finite number")
    return EncodedTriplet(tuple(x), tuple(xp), tuple(y), score)


def _pad_id(lm: LoadedModel) -> int:
    tok = lm.tokenizer
    if tok.pad_token_id is not None:
        return int(tok.pad_token_id)
    return int(tok.eos_token_id or 0)


def triplet_batches(lm: LoadedModel, triplets: Sequence[EncodedTriplet]) -> tuple[Batch, Batch]:
    """Left-padded batches of ``x y'`` and ``x' y'`` (``context_lens`` = the contexts' lengths): the response
    tokens sit at the same (last) positions of both."""
    if not triplets:
        raise ValueError("no prompt pairs given")
    pad = _pad_id(lm)
    plain = [EncodedPair(t.context + t.response, len(t.context), 0) for t in triplets]
    steered = [EncodedPair(t.steered + t.response, len(t.steered), 0) for t in triplets]
    return collate(plain, pad, lm.device), collate(steered, pad, lm.device)


def span_residuals(lm: LoadedModel, batch: Batch, layers: Sequence[int], span: int,
                   hooks: HookManager | None = None, grad: bool = False,
                   patch: dict[int, torch.Tensor] | None = None) -> dict[int, torch.Tensor]:
    """The residual stream after each block in ``layers`` on the last ``span`` positions of every row:
    ``{layer: (batch, span, hidden)}`` float32 (on the model's device, differentiable when ``grad``).
    ``hooks`` (e.g. an intervention's edits) act first; the reads see their edits. ``patch[l]`` (``(batch,
    span, hidden)``) replaces the input of block ``l`` on those positions (the local-Delta run)."""
    hm = hooks if hooks is not None else HookManager(lm.model, lm.adapter)
    out: dict[int, torch.Tensor] = {}

    def read(x: torch.Tensor, site: Site, state: StepState) -> None:
        out[site.layer] = x[:, -span:].float()
        return None

    def replace(x: torch.Tensor, site: Site, state: StepState) -> torch.Tensor:
        new = x.clone()
        new[:, -span:] = patch[site.layer].to(x.dtype)  # type: ignore[index]
        return new

    for layer in sorted(set(patch or {})):
        hm.add(Site(SiteKind.BLOCK_IN, layer), replace)
    for layer in sorted(set(layers)):
        hm.add(Site(SiteKind.RESIDUAL, layer), read)
    hm.set_state(positions=positions_from_mask(batch.attention_mask), prompt_lens=batch.context_lens)
    forward(lm, hm, grad=grad, input_ids=batch.input_ids, attention_mask=batch.attention_mask,
            position_ids=batch.position_ids, use_cache=False)
    return out


@torch.no_grad()
def prompt_deltas(lm: LoadedModel, triplets: Sequence[EncodedTriplet], layers: Sequence[int] | None = None,
                  mode: str = "accumulated") -> list[torch.Tensor]:
    """Per triplet, ``Delta`` on its response tokens: ``(n_layers, n_response, hidden)`` float32 on the CPU
    (``layers``: default every layer, in order). ``mode``: ``"accumulated"`` or ``"local"`` (module doc)."""
    if mode not in DELTA_MODES:
        raise ValueError(f"mode must be one of {', '.join(repr(m) for m in DELTA_MODES)}, got {mode!r}")
    n = lm.adapter.n_layers
    want = list(range(n)) if layers is None else sorted({int(x) % n for x in layers})
    out: list[torch.Tensor] = []
    for t in triplets:  # one pair at a time: response lengths differ, and the CPU gains nothing from padding
        plain, steered = triplet_batches(lm, [t])
        span = len(t.response)
        deep = max(want)
        target = span_residuals(lm, steered, range(deep + 1) if mode == "local" else want, span)
        if mode == "accumulated":
            base = span_residuals(lm, plain, want, span)
        else:
            patch = {layer: target[layer - 1] for layer in range(1, deep + 1)}
            base = span_residuals(lm, plain, want, span, patch=patch)
        out.append(torch.stack([(target[layer] - base[layer])[0] for layer in want]).cpu())
    return out


@dataclass(frozen=True)
class Concentration:
    """How Delta spreads over the response tokens, per layer (lists indexed like ``layers``).

    ``top10_share``: share of the summed per-token norms carried by the top 10 % of tokens (a constant
    coefficient gives 0.10); ``cv``: coefficient of variation of the per-token norms (constant: 0);
    ``ratio_p90_p10``: 90th / 10th percentile of the norms; ``constant_r2``: share of Delta's squared norm a
    constant coefficient on the mean direction explains; ``per_token_r2``: the same with one coefficient per
    token on that direction (the best a scalar gate on a fixed direction can do)."""

    layers: tuple[int, ...]
    n_tokens: int
    top10_share: tuple[float, ...]
    cv: tuple[float, ...]
    ratio_p90_p10: tuple[float, ...]
    constant_r2: tuple[float, ...]
    per_token_r2: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"layers": list(self.layers), "n_tokens": self.n_tokens, "top10_share": list(self.top10_share),
                "cv": list(self.cv), "ratio_p90_p10": list(self.ratio_p90_p10),
                "constant_r2": list(self.constant_r2), "per_token_r2": list(self.per_token_r2)}


def concentration(deltas: Sequence[torch.Tensor], layers: Sequence[int]) -> Concentration:
    """:class:`Concentration` of Delta over every response token of every pair (``deltas`` as returned by
    :func:`prompt_deltas`, ``(n_layers, n_tokens, hidden)`` each, pooled over pairs per layer)."""
    if not deltas:
        raise ValueError("no deltas given")
    d = torch.cat([x.float() for x in deltas], dim=1)  # (L, T, H)
    if d.shape[0] != len(layers):
        raise ValueError(f"{d.shape[0]} layers of deltas for {len(layers)} layer names")
    top10, cv, ratio, c_r2, t_r2 = [], [], [], [], []
    for delta in d:
        norms = delta.norm(dim=-1)
        total = float(norms.sum())
        k = max(1, math.ceil(0.1 * norms.numel()))
        top10.append(float(norms.topk(k).values.sum()) / total if total > 0 else math.nan)
        mean = float(norms.mean())
        cv.append(float(norms.std(unbiased=False)) / mean if mean > 0 else math.nan)
        q = torch.quantile(norms.double(), torch.tensor([0.1, 0.9], dtype=torch.float64))
        ratio.append(float(q[1] / q[0]) if float(q[0]) > 0 else math.inf)
        energy = float((delta ** 2).sum())
        mu = delta.mean(0)
        u = mu / mu.norm() if float(mu.norm()) > 0 else mu
        coef = delta @ u  # per-token coefficient on the mean direction (least squares)
        const = float(coef.mean())
        err_const = float(((delta - const * u) ** 2).sum())
        err_tok = float(((delta - coef[:, None] * u) ** 2).sum())
        c_r2.append(1 - err_const / energy if energy > 0 else math.nan)
        t_r2.append(1 - err_tok / energy if energy > 0 else math.nan)
    return Concentration(tuple(int(x) for x in layers), int(d.shape[1]), tuple(top10), tuple(cv), tuple(ratio),
                         tuple(c_r2), tuple(t_r2))
