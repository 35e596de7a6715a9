"""Additive steering (CAA, ITI-style head shifts): ``x += strength * v`` at chosen positions.

Where a vector applies is given per row as a token-position window ``[start, end)`` over the
row's real tokens (left padding excluded):

* ``"all"``        - every token;
* ``"prompt"``     - the prompt tokens only;
* ``"generated"``  - the last prompt token and every generated token. The last prompt token is
  included because its activations produce the first generated token: without it, the first
  generated token would not be steered;
* an ``int`` k     - every token from position k on.

Masks are computed once per forward step and shared by all layers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, Sequence, Union

import torch

from ..checks import check_strength
from ..hooks import HookManager, StepState
from ..sites import Site
from ..vectors import SteeringVector

__all__ = ["Steer", "Where", "SteerFrom", "AddIntervention", "row_ranges"]

Where = Union[str, int]
#: where steering starts when a (context, answer) pair is scored: from the last context token (whose output
#: predicts the first answer token) or from the first answer token
SteerFrom = Literal["last_prompt", "answer"]
_BIG = 1 << 40


@dataclass(frozen=True)
class Steer:
    """A vector, a strength and where to apply it."""

    vector: SteeringVector
    strength: float = 1.0
    where: Where = "all"

    def __post_init__(self) -> None:
        object.__setattr__(self, "strength", check_strength(self.strength))


def _window(where: Where, prompt_len: int) -> tuple[int, int]:
    if isinstance(where, bool):
        raise ValueError(f"bad steering position {where!r}")
    if isinstance(where, int):
        if where < 0:
            raise ValueError(f"steering start position must be >= 0, got {where}")
        return where, _BIG
    if where == "all":
        return 0, _BIG
    if where == "prompt":
        return 0, prompt_len
    if where == "generated":
        return max(prompt_len - 1, 0), _BIG
    raise ValueError(f"bad steering position {where!r}: use 'all', 'prompt', 'generated' or an integer start")


def row_ranges(wheres: Sequence[Where], prompt_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row ``[start, end)`` token windows for the given position rules."""
    pl = prompt_lens.tolist()
    pairs = [_window(w, int(n)) for w, n in zip(wheres, pl)]
    start = torch.tensor([p[0] for p in pairs], dtype=torch.long, device=prompt_lens.device)
    end = torch.tensor([p[1] for p in pairs], dtype=torch.long, device=prompt_lens.device)
    return start, end


class AddIntervention:
    """Add per-row vectors at their sites inside per-row position windows."""

    def __init__(self, steers: Sequence[Steer | None]) -> None:
        if not steers:
            raise ValueError("no steering given")
        self.steers = list(steers)

    def install(self, hooks: HookManager, prompt_lens: torch.Tensor) -> None:
        b = len(self.steers)
        if prompt_lens.shape[0] != b:
            raise ValueError(f"{b} steering entries for a batch of {prompt_lens.shape[0]} prompts")
        device = hooks.model.device if hasattr(hooks.model, "device") else prompt_lens.device
        dtype = next(hooks.model.parameters()).dtype
        self.start, self.end = row_ranges([s.where if s else "all" for s in self.steers], prompt_lens)
        self.start, self.end = self.start.to(device), self.end.to(device)
        shared = all(s is self.steers[0] for s in self.steers)
        keys: dict[str, Site] = {}
        for s in self.steers:
            if s is not None:
                for site in s.vector.sites:
                    keys.setdefault(site.key, site)
        self.deltas: dict[str, torch.Tensor] = {}
        for key, site in keys.items():
            rows = self.steers[:1] if shared else self.steers
            width = next(s.vector.vectors[key].shape[0] for s in self.steers if s is not None and key in s.vector.vectors)
            delta = torch.zeros(len(rows), width, dtype=torch.float32, device=device)
            for i, s in enumerate(rows):
                if s is not None and key in s.vector.vectors:
                    delta[i] = s.vector.vectors[key].to(device=device, dtype=torch.float32) * float(s.strength)
            self.deltas[key] = delta.to(dtype)[:, None, :]  # (rows, 1, width)
            hooks.add(site, self._site_edit(self.deltas[key]))
        # a row with no steering is masked out by an empty window
        none_rows = torch.tensor([s is None for s in self.steers], device=device)
        self.end = torch.where(none_rows, self.start, self.end)
        # host-side: from which position on every row is steered (None: never all rows), so that a
        # step whose positions are all known to be >= it needs no mask and no device sync
        starts, ends = self.start.tolist(), self.end.tolist()
        self._all_from = max(starts) if all(s is not None for s in self.steers) and min(ends) >= _BIG else None

    def _mask(self, state: StepState) -> torch.Tensor | None:
        """(batch, seq, 1) mask for this step, or None when every position is steered."""
        key = ("add", id(self))
        if key in state.scratch:
            return state.scratch[key]
        pos = state.positions
        if pos is None or (self._all_from is not None and state.min_position is not None
                           and state.min_position >= self._all_from):
            mask = None
        else:
            m = (pos >= self.start[:, None]) & (pos < self.end[:, None])
            mask = None if bool(m.all()) else m[..., None]
        state.scratch[key] = mask
        return mask

    def _site_edit(self, delta: torch.Tensor) -> Callable[[torch.Tensor, Site, StepState], torch.Tensor]:
        """The edit function of one site, with its delta and the mask key bound once."""
        key = ("add", id(self))

        def edit(x: torch.Tensor, site: Site, state: StepState) -> torch.Tensor:
            scratch = state.scratch
            mask = scratch[key] if key in scratch else self._mask(state)
            d = delta if delta.dtype == x.dtype else delta.to(x.dtype)
            return x + d if mask is None else x + d * mask.to(x.dtype)

        return edit
