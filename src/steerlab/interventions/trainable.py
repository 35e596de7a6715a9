"""Trainable interventions: an ``nn.Module`` whose parameters are learned through the frozen model.

:class:`TrainableAdd` holds one ``nn.Parameter`` vector per site and adds it (``x + v``, no detach) at its
sites inside a token-position window, like :class:`~steerlab.interventions.add.AddIntervention`. Because
the edit is an ordinary differentiable op, a forward pass with gradients
(:func:`steerlab.runtime.token_logprobs` with ``grad=True``) gives the parameters gradients while the
model's own weights stay frozen; :func:`steerlab.train.fit_intervention` runs that loop.

A trained module converts to a :class:`~steerlab.vectors.SteeringVector` (:meth:`TrainableAdd.to_vector`)
for :func:`steerlab.generate`, and to an artifact (:meth:`TrainableAdd.to_artifact`, kind
``"trainable_add"``) for :func:`steerlab.artifacts.save_intervention`.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from ..artifacts import InterventionArtifact, ModelIdentity, TensorSpec, VectorError, check_intervention
from ..hooks import HookManager, StepState
from ..models import LoadedModel
from ..sites import Site, site_width
from ..vectors import SteeringVector, VectorMeta, library_version
from .add import Where, row_ranges

__all__ = ["TrainableAdd", "KIND"]

#: the artifact kind of a :class:`TrainableAdd`
KIND = "trainable_add"


class TrainableAdd(nn.Module):
    """Learnable vectors added at ``sites`` (``x + v`` on the positions ``where`` selects, every row).

    ``init`` gives starting values per site key (default zeros); parameters are ``dtype`` (float32) and
    cast to the activation's dtype in the edit. ``where`` is as for :class:`~steerlab.interventions.add.Steer`
    (``"all"``, ``"prompt"``, ``"generated"`` or a start position); when scoring a (context,
    continuation) pair the prompt length is the context length, so ``"generated"`` covers the last
    context token and the continuation.
    """

    def __init__(self, lm: LoadedModel, sites: Sequence[Site | str], where: Where = "all",
                 init: Mapping[str, torch.Tensor] | None = None, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        if not sites:
            raise ValueError("a trainable intervention needs at least one site")
        a = lm.adapter
        parsed = [s if isinstance(s, Site) else Site.parse(s) for s in sites]
        self.sites: list[Site] = [s.normalized(a) for s in parsed]
        keys = [s.key for s in self.sites]
        if len(set(keys)) != len(keys):
            raise ValueError(f"a site is given twice: {', '.join(keys)}")
        self.where: Where = where
        row_ranges([where], torch.zeros(1, dtype=torch.long))  # refuse a bad `where` now
        self.identity = ModelIdentity.of(lm)
        init = dict(init or {})
        unknown = sorted(set(init) - set(keys))
        if unknown:
            raise ValueError(f"init names site {unknown[0]}, which is not one of {', '.join(keys)}")
        self.vectors = nn.ParameterList()
        for site in self.sites:
            width = site_width(a, site.kind)
            start = init.get(site.key)
            if start is None:
                value = torch.zeros(width, dtype=dtype)
            else:
                value = start.detach().to("cpu", dtype).clone()
                if tuple(value.shape) != (width,):
                    raise ValueError(
                        f"init at {site.key} has shape {tuple(value.shape)}; the site is {width} wide")
            self.vectors.append(nn.Parameter(value))
        self.to(lm.device)

    @classmethod
    def from_vector(cls, lm: LoadedModel, vec: SteeringVector, where: Where = "all") -> "TrainableAdd":
        """Start from a fitted vector (e.g. CAA), trainable from there."""
        return cls(lm, [Site.parse(k) for k in vec.vectors], where, init=vec.vectors)

    def vector(self, key: str) -> nn.Parameter:
        """The parameter at site ``key`` (``"residual.3"``)."""
        for site, p in zip(self.sites, self.vectors):
            if site.key == key:
                return p
        raise KeyError(f"no trainable vector at {key}")

    # --- the intervention protocol -----------------------------------------------------------

    def install(self, hooks: HookManager, prompt_lens: torch.Tensor) -> None:
        """Register one differentiable edit per site for a batch with these prompt lengths."""
        start, end = row_ranges([self.where] * int(prompt_lens.shape[0]), prompt_lens)
        device = self.vectors[0].device
        start, end = start.to(device), end.to(device)
        for site, p in zip(self.sites, self.vectors):
            hooks.add(site, self._edit(p, start, end))

    @staticmethod
    def _edit(p: nn.Parameter, start: torch.Tensor, end: torch.Tensor
              ) -> Callable[[torch.Tensor, Site, StepState], torch.Tensor]:
        def edit(x: torch.Tensor, site: Site, state: StepState) -> torch.Tensor:
            v = p.to(x.dtype)
            pos = state.positions
            if pos is None:
                return x + v
            mask = (pos >= start[:, None]) & (pos < end[:, None])
            return x + v * mask[..., None].to(x.dtype)

        return edit

    def hooks(self, lm: LoadedModel, prompt_lens: torch.Tensor) -> HookManager:
        """A fresh :class:`HookManager` on ``lm`` with this intervention installed."""
        hm = HookManager(lm.model, lm.adapter)
        self.install(hm, prompt_lens)
        return hm

    # --- conversions -------------------------------------------------------------------------------

    def _values(self) -> dict[str, torch.Tensor]:
        """Detached float32 CPU copies of the vectors, by site key."""
        return {s.key: p.detach().to("cpu", torch.float32).clone() for s, p in zip(self.sites, self.vectors)}

    def to_vector(self, method: str = KIND, extra: Mapping[str, Any] | None = None) -> SteeringVector:
        """The current values as a :class:`SteeringVector` (detached copies, float32 on the CPU; ``where`` is
        recorded in ``meta.extra``: pass it to :func:`steerlab.generate` to steer the positions it was
        trained on)."""
        m = self.identity
        vectors = self._values()
        meta = VectorMeta(model_name=m.name, architecture=m.architecture, hidden_size=m.hidden_size,
                          n_layers=m.n_layers, heads_width=m.heads_width, method=method,
                          library_version=library_version(), extra={"where": self.where, **dict(extra or {})})
        return SteeringVector(vectors, meta)

    def to_artifact(self, params: Mapping[str, Any] | None = None, data: Mapping[str, Any] | None = None,
                    extra: Mapping[str, Any] | None = None, method: str = KIND) -> InterventionArtifact:
        """The module as a ``"trainable_add"`` artifact: one tensor per site (named by the site key),
        ``where`` and the training ``params`` / ``data`` / ``extra`` (e.g. the loss curve) in the metadata."""
        tensors = self._values()
        specs = {s.key: TensorSpec("vector", site=s.key) for s in self.sites}
        return InterventionArtifact(KIND, tensors, specs, self.identity, method, positions="",
                                    params={"where": self.where, **dict(params or {})}, data=dict(data or {}),
                                    extra=dict(extra or {}))

    @classmethod
    def from_artifact(cls, art: InterventionArtifact, lm: LoadedModel) -> "TrainableAdd":
        """Rebuild a module from its artifact (checked against ``lm``)."""
        if art.kind != KIND:
            raise VectorError(f"a {art.what} is not a {KIND} artifact")
        check_intervention(art, lm)
        vectors = {spec.site: art.tensors[name] for name, spec in art.specs.items()
                   if spec.role == "vector" and spec.site is not None}
        return cls(lm, list(vectors), art.params.get("where", "all"), init=vectors)

    def extra_repr(self) -> str:
        return f"sites=[{', '.join(s.key for s in self.sites)}], where={self.where!r}"
