"""Training a PSR module (:class:`~steerlab.interventions.psr.GatedSteering`) through the frozen model.

Objectives (alternatives, as in the paper and its official code):

* ``"mse"`` (prompt steering imitation, the official code's "psi"): the model runs on ``x y'`` with the module
  installed and on ``x' y'`` without it (no gradients: the target); the squared error between the two residual
  streams over the steered span (the last prompt token and the response for ``where="generated"``; everything
  from the start position on for an integer ``where``, aligned from the end), per token averaged over the
  hidden size, averaged over the span's tokens and the batch, summed over the layers from the first steered
  one to the last (single-layer PSR: the intervention layer and every later layer; all-layer PSR: every layer).
  With ``normalize`` the term is divided by its value on the dev set **before** training (fixed once).
* ``"ll"``: the mean over response tokens of ``-log p(y' | x)`` under the steered model.

Regulariser ``reg_weight * max(0, 1 - sum_tokens lambda)`` per layer (mean over the batch, summed over layers;
ReLU gates only) keeps the gates from all dying. During training ``alpha`` is each example's score (the
judge's trait score). AdamW (lr 1e-3, weight decay 1e-6), linear decay to 0 without warm-up, shuffle seed 123,
15 epochs (MSE) or 7 (LL) by default; batch size 1 is the official setting (larger batches are padded).

Deterministic for a seed. ``checkpoint=`` saves the module, the optimizer state and the position in the data
(one safetensors file with JSON metadata, written atomically every ``checkpoint_every`` steps and at the end);
a killed run started again with the same arguments continues from there with the same result.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any, Sequence

import torch
from safetensors import safe_open
from safetensors.torch import save as st_save

from .files import atomic_write_bytes
from .hooks import HookManager
from .interventions.add import row_ranges
from .interventions.psr import GatedSteering, GateTrace
from .models import LoadedModel
from .progress import ProgressBar, progress_for
from .prompt_steering import EncodedTriplet, span_residuals, triplet_batches
from .runtime import Batch, token_logprobs
from .train import frozen

__all__ = ["OBJECTIVES", "PSRTrainConfig", "PSRTrainResult", "psr_loss", "dev_loss", "train_psr",
           "CHECKPOINT_FORMAT"]

#: the training objectives
OBJECTIVES: tuple[str, ...] = ("mse", "ll")
#: the format tag of a training checkpoint
CHECKPOINT_FORMAT = "steerlab.psr-checkpoint/1"
_DEFAULT_EPOCHS = {"mse": 15, "ll": 7}


@dataclass(frozen=True)
class PSRTrainConfig:
    """PSR's training settings (defaults: the official code's; ``epochs`` None = 15 for MSE, 7 for LL)."""

    objective: str = "mse"
    epochs: int | None = None
    lr: float = 1e-3
    weight_decay: float = 1e-6
    batch_size: int = 1
    seed: int = 123
    reg_weight: float = 0.1
    normalize: bool = True
    checkpoint_every: int = 50

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {', '.join(repr(o) for o in OBJECTIVES)}, "
                             f"got {self.objective!r}")
        for name in ("batch_size", "checkpoint_every") + (("epochs",) if self.epochs is not None else ()):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        for name in ("lr", "weight_decay", "reg_weight"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")

    @property
    def n_epochs(self) -> int:
        return self.epochs if self.epochs is not None else _DEFAULT_EPOCHS[self.objective]


@dataclass
class PSRTrainResult:
    """``losses``: the training loss of every step; ``epoch_losses``: their mean per epoch; ``dev_losses``: the
    dev loss before training and after every epoch (normalised like the training loss); ``mse_scale``: the
    MSE normaliser (1 when not normalised or for LL); ``seconds``: wall time of this call's training."""

    losses: list[float] = field(default_factory=list)
    epoch_losses: list[float] = field(default_factory=list)
    dev_losses: list[float] = field(default_factory=list)
    mse_scale: float = 1.0
    seconds: float = 0.0
    steps: int = 0
    resumed_at: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _mse_layers(lm: LoadedModel, module: GatedSteering) -> list[int]:
    return list(range(min(module.layers), lm.adapter.n_layers))


def _spans(module: GatedSteering, plain: Batch) -> torch.Tensor:
    """Per row, how many of its last positions are steered (the span the MSE compares)."""
    start, _ = row_ranges([module.where] * int(plain.context_lens.shape[0]), plain.context_lens.cpu())
    total = (plain.context_lens + plain.cont_lens).cpu()
    return (total - start).clamp(min=1)


def psr_loss(lm: LoadedModel, module: GatedSteering, triplets: Sequence[EncodedTriplet], objective: str,
             mse_scale: float = 1.0, reg_weight: float = 0.0) -> tuple[torch.Tensor, dict[str, float]]:
    """The differentiable loss of one batch (the objective, divided by ``mse_scale`` for MSE, plus the gate
    regulariser) and its parts as floats (``objective``, ``reg``)."""
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {', '.join(repr(o) for o in OBJECTIVES)}, got {objective!r}")
    plain, steered = triplet_batches(lm, triplets)
    alpha = torch.tensor([t.score for t in triplets], dtype=torch.float32)
    trace = GateTrace()
    hooks = HookManager(lm.model, lm.adapter)
    module.install(hooks, plain.context_lens, trace=trace, alpha=alpha)
    if objective == "mse":
        spans = _spans(module, plain)
        width = int(spans.max())
        layers = _mse_layers(lm, module)
        with torch.no_grad():
            target = span_residuals(lm, steered, layers, width)
        pred = span_residuals(lm, plain, layers, width, hooks=hooks, grad=True)
        dev = pred[layers[0]].device
        cols = torch.arange(width, device=dev)
        mask = (cols[None, :] >= (width - spans.to(dev))[:, None]).float()  # (batch, width)
        n_tok = mask.sum(-1)
        total = pred[layers[0]].new_zeros(())
        for layer in layers:
            err = ((pred[layer] - target[layer].to(dev)) ** 2).mean(-1)  # (batch, width)
            total = total + ((err * mask).sum(-1) / n_tok).mean()
        main = total / mse_scale
    else:
        rows, _ = token_logprobs(lm, plain, hooks, grad=True)
        main = -torch.stack([r.mean() for r in rows]).mean()
    reg = main.new_zeros(())
    if reg_weight > 0 and module.gate == "relu":
        for layer in module.layers:
            g = trace.values[layer][-1]  # (batch, seq), 0 off the steered span
            reg = reg + torch.relu(1 - g.sum(-1)).mean()
        reg = reg_weight * reg
    return main + reg, {"objective": float(main.detach()), "reg": float(reg.detach())}


def dev_loss(lm: LoadedModel, module: GatedSteering, dev: Sequence[EncodedTriplet], objective: str,
             mse_scale: float = 1.0, batch_size: int = 1) -> float:
    """The objective (without the regulariser) averaged over ``dev``, no gradients."""
    if not dev:
        return math.nan
    vals = []
    with torch.no_grad():
        for i in range(0, len(dev), batch_size):
            chunk = dev[i:i + batch_size]
            _, parts = psr_loss(lm, module, chunk, objective, mse_scale)
            vals.append(parts["objective"] * len(chunk))
    return sum(vals) / len(dev)


def _order(n: int, seed: int, epoch: int) -> list[int]:
    order = list(range(n))
    random.Random(f"{seed}:{epoch}").shuffle(order)
    return order


def _save_checkpoint(path: Path, module: GatedSteering, opt: torch.optim.Optimizer, meta: dict[str, Any]) -> None:
    tensors = {f"module/{k}": v for k, v in module.state_tensors().items()}
    params = [p for group in opt.param_groups for p in group["params"]]
    steps = []
    for i, p in enumerate(params):
        st = opt.state.get(p, {})
        if st:
            tensors[f"opt/{i}/exp_avg"] = st["exp_avg"].detach().cpu().contiguous()
            tensors[f"opt/{i}/exp_avg_sq"] = st["exp_avg_sq"].detach().cpu().contiguous()
            steps.append(float(st["step"]))
        else:
            steps.append(-1.0)
    meta = {**meta, "opt_steps": steps}
    atomic_write_bytes(path, st_save(tensors, metadata={"format": CHECKPOINT_FORMAT, "meta": json.dumps(meta)}))


def _load_checkpoint(path: Path, module: GatedSteering, opt: torch.optim.Optimizer) -> dict[str, Any]:
    with safe_open(str(path), framework="pt") as f:
        header = f.metadata() or {}
        if header.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"'{path}' is not a PSR training checkpoint")
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    meta = json.loads(header["meta"])
    module.load_tensors({k[len("module/"):]: v for k, v in tensors.items() if k.startswith("module/")})
    params = [p for group in opt.param_groups for p in group["params"]]
    for i, (p, step) in enumerate(zip(params, meta["opt_steps"])):
        if step >= 0:
            opt.state[p] = {"step": torch.tensor(step), "exp_avg": tensors[f"opt/{i}/exp_avg"].to(p.device),
                            "exp_avg_sq": tensors[f"opt/{i}/exp_avg_sq"].to(p.device)}
    return meta


def _fingerprint(module: GatedSteering, config: PSRTrainConfig, n_train: int, n_dev: int) -> dict[str, Any]:
    return {"config": asdict(config), "layers": list(module.layers), "gate": module.gate,
            "where": module.where, "n_train": n_train, "n_dev": n_dev}


def train_psr(lm: LoadedModel, module: GatedSteering, train: Sequence[EncodedTriplet],
              dev: Sequence[EncodedTriplet] = (), config: PSRTrainConfig = PSRTrainConfig(), *,
              checkpoint: str | PathLike[str] | None = None,
              progress: bool | ProgressBar = False) -> PSRTrainResult:
    """Train ``module``'s parameters on ``train`` (see the module doc); the model stays frozen and unchanged.
    ``dev`` gives the MSE normaliser and the dev loss per epoch. Returns the loss curves."""
    if not train:
        raise ValueError("no training examples: every prompt pair was filtered out")
    params = [p for p in module.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the PSR module has no trainable parameters")
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    bs = config.batch_size
    per_epoch = math.ceil(len(train) / bs)
    total = per_epoch * config.n_epochs
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: max(0.0, 1 - step / total))
    result = PSRTrainResult()
    ckpt = Path(checkpoint) if checkpoint is not None else None
    fp = _fingerprint(module, config, len(train), len(dev))
    start_step = 0
    if ckpt is not None and ckpt.is_file():
        meta = _load_checkpoint(ckpt, module, opt)
        if meta.get("fingerprint") != json.loads(json.dumps(fp)):
            raise ValueError(f"checkpoint '{ckpt}' belongs to another training run (other settings or data); "
                             "delete it or pass another path")
        start_step = int(meta["step"])
        result = PSRTrainResult(**{k: v for k, v in meta["result"].items() if k in PSRTrainResult.__dataclass_fields__})
        sched.last_epoch = start_step  # continue the linear decay where it stopped
        for group in opt.param_groups:
            group["lr"] = config.lr * max(0.0, 1 - start_step / total)
        result.resumed_at = start_step
    began = time.time()
    spent = result.seconds
    with frozen(lm.model):
        if start_step == 0:
            scale = 1.0
            if config.objective == "mse" and config.normalize and dev:
                scale = dev_loss(lm, module, dev, "mse", 1.0, bs)
                if not scale > 0:
                    raise ValueError(f"the dev MSE before training is {scale}: nothing to imitate")
            result.mse_scale = scale
            result.dev_losses.append(dev_loss(lm, module, dev, config.objective, scale, bs))
        with progress_for(progress, total, f"psr {config.objective}", "steps") as bar:
            if start_step:
                bar.advance(start_step)
            step = start_step
            while step < total:
                epoch, pos = divmod(step, per_epoch)
                order = _order(len(train), config.seed, epoch)
                chunk = [train[i] for i in order[pos * bs:(pos + 1) * bs]]
                opt.zero_grad(set_to_none=True)
                loss, _ = psr_loss(lm, module, chunk, config.objective, result.mse_scale, config.reg_weight)
                if not bool(torch.isfinite(loss)):
                    raise ValueError(f"the loss became {float(loss)} at step {step}; lower lr")
                loss.backward()
                opt.step()
                sched.step()
                result.losses.append(float(loss.detach()))
                step += 1
                bar.advance()
                if step % per_epoch == 0:
                    result.epoch_losses.append(sum(result.losses[-per_epoch:]) / per_epoch)
                    result.dev_losses.append(dev_loss(lm, module, dev, config.objective, result.mse_scale, bs))
                result.steps = step
                if ckpt is not None and (step % config.checkpoint_every == 0 or step == total):
                    result.seconds = spent + time.time() - began
                    _save_checkpoint(ckpt, module, opt, {"step": step, "fingerprint": fp,
                                                          "result": result.to_dict()})
    result.seconds = spent + time.time() - began
    return result
