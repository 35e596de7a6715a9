"""Learning an intervention's parameters by gradient descent through the frozen model.

:func:`fit_intervention` is the whole loop: teacher-forced log-probabilities of each example's
continuation (:func:`steerlab.runtime.token_logprobs` with ``grad=True``, the one forward engine) with
the intervention installed, a loss (default: mean negative log-likelihood per continuation token,
averaged over examples), backward, an optimizer step. Only the intervention's parameters learn: every
model parameter has ``requires_grad=False`` while the loop runs (:func:`frozen`), its previous flags
are restored afterwards, and no ``.grad`` is left on the model, so the model is exactly what it was.

>>> module = TrainableAdd(lm, ["residual.12"], where="generated")
>>> result = fit_intervention(lm, module, [("I feel", " wonderful today")], steps=20, lr=0.05)
>>> sl.generate(lm, ["I feel"], steer=module.to_vector(), where="generated")
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator, Protocol, Sequence

import torch
from torch import nn

from .hooks import HookManager
from .models import LoadedModel
from .runtime import Batch, collate, encode_pair, token_logprobs

__all__ = ["TrainableIntervention", "LossFn", "TrainResult", "frozen", "nll_loss", "example_batch",
           "intervention_loss", "fit_intervention"]


class TrainableIntervention(Protocol):
    """An ``nn.Module`` that is also an intervention (``install(hooks, prompt_lens)``)."""

    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]: ...

    def install(self, hooks: HookManager, prompt_lens: torch.Tensor) -> None: ...


#: per-row continuation log-probs (each 1-D, differentiable) -> a scalar loss
LossFn = Callable[[list[torch.Tensor]], torch.Tensor]


@dataclass
class TrainResult:
    """``losses[i]``: the loss before step ``i`` (``final_loss``: after the last step, without a step)."""

    losses: list[float] = field(default_factory=list)
    final_loss: float = float("nan")

    @property
    def steps(self) -> int:
        return len(self.losses)


def nll_loss(logprobs: list[torch.Tensor]) -> torch.Tensor:
    """Mean negative log-likelihood per continuation token, averaged over rows."""
    return -torch.stack([lp.mean() for lp in logprobs]).mean()


@contextmanager
def frozen(model: nn.Module) -> Iterator[nn.Module]:
    """Inside the block every parameter of ``model`` has ``requires_grad=False``; on exit the previous
    flags are restored. Raises when a parameter that had no ``.grad`` holds one on exit (nothing may
    train the model)."""
    params = list(model.parameters())
    saved = [p.requires_grad for p in params]
    had_grad = [p.grad is not None for p in params]
    try:
        for p in params:
            p.requires_grad_(False)
        yield model
    finally:
        for p, flag in zip(params, saved):
            p.requires_grad_(flag)
    touched = sum(1 for p, had in zip(params, had_grad) if p.grad is not None and not had)
    if touched:
        raise RuntimeError(f"{touched} model parameter(s) received gradients while frozen")


def example_batch(lm: LoadedModel, examples: Sequence[tuple[str, str]]) -> Batch:
    """``(context, continuation)`` pairs as one left-padded batch on the model's device."""
    if not examples:
        raise ValueError("no training examples given")
    tok = lm.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    return collate([encode_pair(tok, c, t) for c, t in examples], pad, lm.device)


def intervention_loss(lm: LoadedModel, module: TrainableIntervention, batch: Batch,
                      loss_fn: LossFn = nll_loss) -> torch.Tensor:
    """The differentiable loss of ``batch`` with ``module`` installed (one forward pass, gradients on)."""
    rows, _ = token_logprobs(lm, batch, _installed(lm, module, batch), grad=True)
    return loss_fn(rows)


def fit_intervention(lm: LoadedModel, module: TrainableIntervention,
                     examples: Sequence[tuple[str, str]] | Batch, *, steps: int = 20, lr: float = 1e-2,
                     optimizer: str = "adam", weight_decay: float = 0.0,
                     loss_fn: LossFn = nll_loss) -> TrainResult:
    """Train ``module``'s parameters for ``steps`` full-batch steps on ``(context, continuation)`` examples
    (or a prepared :class:`~steerlab.runtime.Batch`) to lower ``loss_fn`` (default: raise the
    continuations' log-likelihood). The model stays frozen and unchanged (see the module doc).
    ``optimizer`` is ``"adam"`` or ``"sgd"``."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr!r}")
    params = [p for p in module.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the intervention has no trainable parameters")
    model_params = {id(p) for p in lm.model.parameters()}
    if any(id(p) in model_params for p in params):
        raise ValueError("the intervention's parameters include the model's own weights; "
                         "they must stay frozen")
    if optimizer == "adam":
        opt: torch.optim.Optimizer = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    elif optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=lr, weight_decay=weight_decay)
    else:
        raise ValueError(f"unknown optimizer {optimizer!r}: use 'adam' or 'sgd'")
    batch = examples if isinstance(examples, Batch) else example_batch(lm, examples)
    result = TrainResult()
    with frozen(lm.model):
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            loss = intervention_loss(lm, module, batch, loss_fn)
            if not bool(torch.isfinite(loss)):
                raise ValueError(f"the loss became {float(loss)} after {result.steps} step(s); lower lr")
            loss.backward()
            opt.step()
            result.losses.append(float(loss.detach()))
        with torch.no_grad():
            rows, _ = token_logprobs(lm, batch, _installed(lm, module, batch), grad=False)
            result.final_loss = float(loss_fn([r.to(torch.float32) for r in rows]))
    return result


def _installed(lm: LoadedModel, module: TrainableIntervention, batch: Batch) -> HookManager:
    hooks = HookManager(lm.model, lm.adapter)
    module.install(hooks, batch.context_lens)
    return hooks
