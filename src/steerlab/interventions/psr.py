"""PSR (Prompt Steering Replacement): per-token gated steering that imitates what a steering prompt does.

Heyman & Vandeputte, "Steer Like the LLM: Activation Steering that Mimics Prompting" (the official code calls
it "Focused" steering). At each steered layer ``l`` and steered token:

    h' = h + alpha * lambda(h) * z_l,        lambda(h) = ReLU(w_l . h + b_l)

``z_l`` is a learned direction, ``(w_l, b_l)`` a linear probe whose ReLU switches steering off on many
tokens, ``alpha`` one global strength (during training: each example's judge score). S-PSR steers one layer,
A-PSR every layer at once (hooks chained in one forward pass: each layer's gate sees the activations the
earlier layers already changed). :class:`GatedSteering` is that module; with ``gate="constant"``
(``lambda = 1``) it is the constant-coefficient baselines of the paper (a trained constant vector, or CAA's
difference of means with ``z`` fixed), so every method runs through the same code.

Positions (``where``, as :class:`~steerlab.interventions.add.Steer`'s): ``"generated"`` = the paper's
"answer only" (the last prompt token and every response / generated token); an integer start = "question and
answer" (every token from the last system-prompt token on; :func:`system_prompt_end` finds it for a chat
model). Edits run in float32 and add ``alpha * lambda * z`` to the activation: a token whose gate is 0 keeps
its exact activation.

The module is an :class:`~steerlab.interventions.base.Intervention` (``install(hooks, prompt_lens)``): it
steers :func:`steerlab.generate` (``interventions=[psr]``), the log-likelihood evaluators
(``interventions=``) and training (:mod:`steerlab.psr_train`). :meth:`GatedSteering.traced` gives a per-call
:class:`GateTrace` of the gate values (training's regulariser, ``--show-gates``). Artifacts: kind ``"psr"``
(:func:`save_psr` / :func:`load_psr`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from ..artifacts import (
    InterventionArtifact,
    ModelIdentity,
    TensorSpec,
    VectorError,
    check_intervention,
    load_intervention,
    save_intervention,
)
from ..hooks import HookManager, StepState
from ..models import LoadedModel
from ..sites import Site, SiteKind
from .add import Where, row_ranges

__all__ = ["GATES", "PSR_KIND", "GateTrace", "GatedSteering", "system_prompt_end", "save_psr", "load_psr",
           "check_alpha"]

#: the artifact kind of a :class:`GatedSteering`
PSR_KIND = "psr"
#: ``"relu"``: PSR's gate ``ReLU(w . h + b)``; ``"constant"``: ``lambda = 1`` (constant-coefficient steering)
GATES: tuple[str, ...] = ("relu", "constant")


def check_alpha(alpha: Any) -> float:
    """``alpha`` as a finite float; a ValueError otherwise."""
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(float(alpha)):
        raise ValueError(f"alpha must be a finite number, got {alpha!r}")
    return float(alpha)


def _layers(lm: LoadedModel, layers: Sequence[int]) -> tuple[int, ...]:
    n = lm.adapter.n_layers
    out: list[int] = []
    for layer in layers:
        if isinstance(layer, bool) or not isinstance(layer, int):
            raise ValueError(f"layers must be integers, got {layer!r}")
        if not -n <= layer < n:
            raise ValueError(f"layer {layer} is out of range: the model has {n} layers (0-{n - 1})")
        out.append(layer % n)
    if not out:
        raise ValueError("PSR needs at least one layer")
    if len(set(out)) != len(out):
        raise ValueError(f"a layer is given twice: {', '.join(map(str, out))}")
    return tuple(sorted(out))


@dataclass
class GateTrace:
    """Gate values of one call, per layer: ``values[layer]`` is a list (one entry per forward pass) of
    ``(batch, seq)`` float32 tensors, 0 on unsteered positions (differentiable while training);
    ``positions`` the matching token positions (``None`` when the pass had none)."""

    values: dict[int, list[torch.Tensor]] = field(default_factory=dict)
    positions: list[torch.Tensor | None] = field(default_factory=list)

    def clear(self) -> None:
        self.values.clear()
        self.positions.clear()

    def last(self, layer: int) -> torch.Tensor:
        """The gate values of the latest pass at ``layer``."""
        return self.values[layer][-1]


class GatedSteering(nn.Module):
    """``h' = h + alpha * lambda(h) * z`` at the residual stream after each block in ``layers``.

    ``gate``: ``"relu"`` (PSR) or ``"constant"`` (``lambda = 1``). ``where``: the steered positions (see the
    module doc). ``alpha``: the global strength. Parameters start as a ``Linear(d, 1)`` does (uniform in
    ``+-1/sqrt(d)``, from ``seed``), or from ``init`` (``{"z": {layer: tensor}, "w": ..., "b": ...}``, e.g. a
    difference of means for ``z``). ``train_z`` / ``train_gate`` say which parameters learn.
    """

    def __init__(self, lm: LoadedModel, layers: Sequence[int], *, gate: str = "relu", where: Where = "generated",
                 alpha: float = 1.0, seed: int = 0,
                 init: Mapping[str, Mapping[int, torch.Tensor]] | None = None,
                 train_z: bool = True, train_gate: bool = True) -> None:
        super().__init__()
        if gate not in GATES:
            raise ValueError(f"gate must be one of {', '.join(repr(g) for g in GATES)}, got {gate!r}")
        self.layers: tuple[int, ...] = _layers(lm, layers)
        self.gate = gate
        row_ranges([where], torch.zeros(1, dtype=torch.long))  # refuse a bad `where` now
        self.where: Where = where
        self.alpha = check_alpha(alpha)
        self.identity = ModelIdentity.of(lm)
        d = lm.adapter.hidden_size
        init = {k: dict(v) for k, v in (init or {}).items()}
        unknown = sorted(set(init) - {"z", "w", "b"})
        if unknown:
            raise ValueError(f"init has unknown part {unknown[0]!r}: use 'z', 'w' and 'b'")
        gen = torch.Generator().manual_seed(int(seed))
        bound = 1.0 / math.sqrt(d)

        def start(part: str, layer: int, shape: tuple[int, ...], limit: float) -> torch.Tensor:
            given = init.get(part, {}).get(layer)
            if given is None:
                return (torch.rand(shape, generator=gen) * 2 - 1) * limit
            t = given.detach().to("cpu", torch.float32).reshape(-1).clone()
            if tuple(t.shape) != shape:
                raise ValueError(f"init {part} at layer {layer} has shape {tuple(t.shape)}; expected {shape}")
            return t

        self.z = nn.ParameterList()
        self.w = nn.ParameterList()
        self.b = nn.ParameterList()
        for layer in self.layers:
            self.z.append(nn.Parameter(start("z", layer, (d,), bound), requires_grad=train_z))
            if gate == "relu":
                self.w.append(nn.Parameter(start("w", layer, (d,), bound), requires_grad=train_gate))
                self.b.append(nn.Parameter(start("b", layer, (1,), bound), requires_grad=train_gate))
        for part, missing in (("w", gate != "relu"), ("b", gate != "relu")):
            if missing and init.get(part):
                raise ValueError(f"a constant gate has no {part}; drop it from init")
        self.to(lm.device)

    @property
    def sites(self) -> list[Site]:
        return [Site(SiteKind.RESIDUAL, layer) for layer in self.layers]

    def gates(self, h: torch.Tensor, i: int) -> torch.Tensor:
        """``lambda`` of activations ``h`` (``(..., d)``) at the ``i``-th steered layer (float32, ``(...)``)."""
        if self.gate == "constant":
            return torch.ones(h.shape[:-1], dtype=torch.float32, device=h.device)
        return torch.relu(h.float() @ self.w[i] + self.b[i])

    # --- the intervention protocol -----------------------------------------------------------

    def install(self, hooks: HookManager, prompt_lens: torch.Tensor, *, trace: GateTrace | None = None,
                alpha: torch.Tensor | float | None = None) -> None:
        """Register one gated edit per layer for a batch with these prompt lengths. ``alpha``: a per-row
        ``(batch,)`` tensor or a number instead of the module's own (training uses each example's score);
        ``trace`` records the gate values of every pass."""
        b = int(prompt_lens.shape[0])
        device = self.z[0].device
        start, end = row_ranges([self.where] * b, prompt_lens)
        start, end = start.to(device), end.to(device)
        a = self.alpha if alpha is None else alpha
        scale = (a.to(device, torch.float32).reshape(b, 1, 1) if isinstance(a, torch.Tensor)
                 else torch.full((1, 1, 1), check_alpha(a), device=device))
        for i, site in enumerate(self.sites):
            hooks.add(site, self._edit(i, start, end, scale, trace))

    def _edit(self, i: int, start: torch.Tensor, end: torch.Tensor, scale: torch.Tensor,
              trace: GateTrace | None) -> Callable[[torch.Tensor, Site, StepState], torch.Tensor]:
        layer = self.layers[i]

        def edit(x: torch.Tensor, site: Site, state: StepState) -> torch.Tensor:
            pos = state.positions
            g = self.gates(x, i)
            if pos is not None:
                m = (pos >= start[:, None]) & (pos < end[:, None])
                if state.last_only:
                    m[:, :-1] = False
                g = g * m.to(g.dtype)
            if trace is not None:
                trace.values.setdefault(layer, []).append(g)
                if i == 0:
                    trace.positions.append(pos)
            delta = (scale * g[..., None]) * self.z[i]
            return x + delta.to(x.dtype)

        return edit

    def hooks(self, lm: LoadedModel, prompt_lens: torch.Tensor, **kw: Any) -> HookManager:
        """A fresh :class:`HookManager` on ``lm`` with this intervention installed."""
        hm = HookManager(lm.model, lm.adapter)
        self.install(hm, prompt_lens, **kw)
        return hm

    def traced(self, trace: GateTrace | None = None, alpha: float | None = None) -> "TracedGates":
        """An intervention steering like this one (with ``alpha`` instead of the module's own, if given) and
        recording the gate values into ``trace`` (a new :class:`GateTrace` when None; read it from the returned
        object's ``trace``). The module itself is not changed, so one module can serve concurrent calls."""
        return TracedGates(self, trace if trace is not None else GateTrace(),
                           None if alpha is None else check_alpha(alpha))

    def at(self, alpha: float | None) -> "TracedGates":
        """An intervention steering like this one at ``alpha`` (the module's own when None), recording nothing;
        the module itself is not changed."""
        return TracedGates(self, None, None if alpha is None else check_alpha(alpha))

    # --- artifacts -----------------------------------------------------------------------------

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Detached float32 CPU copies of every parameter, named ``z/<layer>``, ``w/<layer>``, ``b/<layer>``."""
        out: dict[str, torch.Tensor] = {}
        for i, layer in enumerate(self.layers):
            out[f"z/{layer}"] = self.z[i].detach().to("cpu", torch.float32).clone()
            if self.gate == "relu":
                out[f"w/{layer}"] = self.w[i].detach().to("cpu", torch.float32).clone()
                out[f"b/{layer}"] = self.b[i].detach().to("cpu", torch.float32).clone()
        return out

    def load_tensors(self, tensors: Mapping[str, torch.Tensor]) -> None:
        """Copy values saved by :meth:`state_tensors` into the parameters (same layers and gate)."""
        with torch.no_grad():
            for name, t in self.state_tensors().items():
                if name not in tensors:
                    raise VectorError(f"the saved PSR state lacks tensor '{name}'")
                if tuple(tensors[name].shape) != tuple(t.shape):
                    raise VectorError(f"saved tensor '{name}' has shape {tuple(tensors[name].shape)}, "
                                      f"expected {tuple(t.shape)}")
            for i, layer in enumerate(self.layers):
                self.z[i].copy_(tensors[f"z/{layer}"])
                if self.gate == "relu":
                    self.w[i].copy_(tensors[f"w/{layer}"])
                    self.b[i].copy_(tensors[f"b/{layer}"])

    def to_artifact(self, method: str = "psr", params: Mapping[str, Any] | None = None,
                    data: Mapping[str, Any] | None = None, extra: Mapping[str, Any] | None = None
                    ) -> InterventionArtifact:
        """A ``"psr"`` artifact: the tensors of :meth:`state_tensors`, ``gate`` / ``where`` / ``alpha`` /
        ``layers`` in ``params`` (with the training ``params``), ``data`` and ``extra`` (e.g. loss curves)."""
        tensors = self.state_tensors()
        roles = {"z": "direction", "w": "gate_weights"}
        specs = {name: (TensorSpec(roles[name[0]], site=f"residual.{name.split('/')[1]}") if name[0] in roles
                        else TensorSpec("gate_bias", dims=("*",))) for name in tensors}
        own = {"gate": self.gate, "where": self.where, "alpha": self.alpha, "layers": list(self.layers)}
        return InterventionArtifact(PSR_KIND, tensors, specs, self.identity, method, positions=str(self.where),
                                    params={**own, **dict(params or {})}, data=dict(data or {}),
                                    extra=dict(extra or {}))

    @classmethod
    def from_artifact(cls, art: InterventionArtifact, lm: LoadedModel) -> "GatedSteering":
        """Rebuild a module from its artifact (checked against ``lm``)."""
        if art.kind != PSR_KIND:
            raise VectorError(f"a {art.what} is not a {PSR_KIND} artifact")
        check_intervention(art, lm)
        p = art.params
        try:
            module = cls(lm, [int(x) for x in p["layers"]], gate=str(p["gate"]), where=p["where"],
                         alpha=float(p["alpha"]))
        except (KeyError, TypeError, ValueError) as e:
            raise VectorError(f"the psr artifact has bad settings: {e}") from None
        module.load_tensors(art.tensors)
        return module

    def extra_repr(self) -> str:
        return f"layers={list(self.layers)}, gate={self.gate!r}, where={self.where!r}, alpha={self.alpha:g}"


class TracedGates:
    """:meth:`GatedSteering.traced` / :meth:`GatedSteering.at`: steers like ``module`` (at ``alpha``, if given)
    and records each pass's gates into ``trace`` (when given)."""

    def __init__(self, module: GatedSteering, trace: GateTrace | None, alpha: float | None = None) -> None:
        self.module = module
        self.trace = trace
        self.alpha = alpha

    def install(self, hooks: HookManager, prompt_lens: torch.Tensor) -> None:
        self.module.install(hooks, prompt_lens, trace=self.trace, alpha=self.alpha)


def _user_start(lm: LoadedModel, system: str | None) -> tuple[str, int]:
    """The chat rendering of a one-word user message and where that message starts in it."""
    a = lm.format_prompt("Q", chat=True, system=system)
    b = lm.format_prompt("Z", chat=True, system=system)
    n = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None)
    if n is None:
        raise ValueError("cannot locate the user message in the chat template")
    return a, n


def system_prompt_end(lm: LoadedModel, system: str | None = None) -> int:
    """The token position of the last token of the system prompt in ``lm``'s chat format (the paper's
    "question and answer" steering starts there); with ``system=None``, of the template's default system
    prompt. A ValueError when the model has no chat template or shows no such system prompt."""
    text, n = _user_start(lm, system)
    head = text[:n]
    if system:
        end = head.rfind(system)
        if end < 0:
            raise ValueError("the system prompt does not appear in the chat template's output")
        end += len(system)
    else:  # the default one sits where an explicit system prompt would: between the same prefix and suffix
        marker = "\u2063"
        marked, m = _user_start(lm, marker)
        at = marked.find(marker)
        if at < 0:
            raise ValueError(f"the chat template of model '{lm.name}' shows no system prompt")
        prefix, suffix = marked[:at], marked[at + len(marker):m]
        end = len(head) - len(suffix)
        if not (head.startswith(prefix) and head.endswith(suffix)) or end <= len(prefix):
            raise ValueError(f"model '{lm.name}' shows no default system prompt: pass the system prompt")
    ids = lm.tokenizer(head[:end], add_special_tokens=False)["input_ids"]
    return len(ids) - 1


def save_psr(module: GatedSteering, path: str | PathLike[str], params: Mapping[str, Any] | None = None,
             data: Mapping[str, Any] | None = None, extra: Mapping[str, Any] | None = None,
             method: str = "psr") -> Path:
    """Save ``module`` atomically as a ``"psr"`` artifact (safetensors + JSON metadata)."""
    return save_intervention(module.to_artifact(method, params, data, extra), path)


def load_psr(path: str | PathLike[str], lm: LoadedModel) -> GatedSteering:
    """Read a module saved by :func:`save_psr`, refused unless it fits ``lm``."""
    return GatedSteering.from_artifact(load_intervention(path, lm, kind=PSR_KIND), lm)
