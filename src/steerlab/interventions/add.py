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
from ..sites import Site, site_width
from ..vectors import SteeringVector

__all__ = ["Steer", "Where", "SteerFrom", "AddIntervention", "AddState", "row_ranges"]

Where = Union[str, int]
#: where steering starts when a (context, answer) pair is scored: from the last context token (whose output
#: predicts the first answer token), from the first answer token, or from the second answer token (ITI's
#: ``start_edit_location = len(prompt) + 4`` with a 3-token "\nA:": its reference MC scoring steers from there)
SteerFrom = Literal["last_prompt", "answer", "second_answer"]
#: each ``SteerFrom`` and its start relative to the context length
STEER_FROM: tuple[tuple[str, int], ...] = (("last_prompt", -1), ("answer", 0), ("second_answer", 1))
_BIG = 1 << 40


def check_steer_from(value: object) -> str:
    """``value`` when it is a :data:`SteerFrom`; a ValueError listing them otherwise."""
    names = [name for name, _ in STEER_FROM]
    if value not in names:
        raise ValueError(f"steer_from must be one of {', '.join(repr(n) for n in names)}, got {value!r}")
    return str(value)


def steer_starts(steer_from: str, context_lens: torch.Tensor) -> list[int]:
    """Per row, the token position steering starts from when scoring answers after ``context_lens`` tokens."""
    offset = dict(STEER_FROM)[check_steer_from(steer_from)]
    return (context_lens + offset).clamp(min=0).tolist()


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


@dataclass
class AddState:
    """The per-call state of one :meth:`AddIntervention.install`: windows and deltas of this batch.

    It lives outside the intervention (which ``install`` never changes), so one fitted
    intervention can serve concurrent calls. :meth:`set_row` changes one row's steering for the
    rest of the call (used by :func:`steerlab.generate` for a monitor's ``SetSteer``); it needs an
    install with ``per_row=True``.
    """

    start: torch.Tensor  # (batch,) first steered position per row
    end: torch.Tensor  # (batch,) end of the window (exclusive); == start: not steered
    deltas: dict[str, torch.Tensor]  # site key -> (rows, 1, width), rows = batch or 1 (shared)
    all_from: int | None  # host-side: every row is steered from this position on (None: unknown)
    per_row: bool = False

    def mask(self, state: StepState) -> torch.Tensor | None:
        """(batch, seq, 1) mask for this step, or None when every position is steered (with
        ``state.last_only``, positions before each row's last one are never steered)."""
        key = ("add", id(self))
        if key in state.scratch:
            return state.scratch[key]
        pos = state.positions
        if state.last_only:  # only each row's last position, if its window covers it
            if pos is None:
                raise RuntimeError("last_only steering needs the step's token positions")
            m = (pos >= self.start[:, None]) & (pos < self.end[:, None])
            m[:, :-1] = False
            mask = m[..., None]
        elif pos is None or (self.all_from is not None and state.min_position is not None
                             and state.min_position >= self.all_from):
            mask = None
        else:
            m = (pos >= self.start[:, None]) & (pos < self.end[:, None])
            mask = None if bool(m.all()) else m[..., None]
        state.scratch[key] = mask
        return mask

    def set_row(self, row: int, steer: Steer | None, start: int) -> None:
        """Steer ``row`` with ``steer`` (its vector times its strength; ``where`` is not used) from
        position ``start`` on, or not at all when ``steer`` is None. Every site of the vector must have
        been hooked at install (``extra_sites``)."""
        if not self.per_row:
            raise RuntimeError("this steering state was installed without per_row=True: rows cannot be changed")
        if steer is not None:
            missing = [k for k in steer.vector.vectors if k not in self.deltas]
            if missing:
                raise ValueError(f"cannot steer site(s) {', '.join(missing)} from here on: they were not hooked "
                                 f"at the start (list them in the monitor's steer_sites)")
        for key, delta in self.deltas.items():
            v = None if steer is None else steer.vector.vectors.get(key)
            if v is None:
                delta[row].zero_()
            else:
                if v.shape[-1] != delta.shape[-1]:
                    raise ValueError(f"the vector at {key} has width {v.shape[-1]}; the site has {delta.shape[-1]}")
                delta[row, 0] = (v.to(device=delta.device, dtype=torch.float32) * float(steer.strength)).to(delta.dtype)
        self.start[row] = int(start)
        self.end[row] = _BIG if steer is not None else int(start)
        self.all_from = None


class AddIntervention:
    """Add per-row vectors at their sites inside per-row position windows.

    ``install`` keeps everything it computes for the batch in the :class:`AddState` it returns:
    the intervention itself is never changed, so one object can serve concurrent calls.
    """

    def __init__(self, steers: Sequence[Steer | None]) -> None:
        if not steers:
            raise ValueError("no steering given")
        self.steers = list(steers)

    def install(self, hooks: HookManager, prompt_lens: torch.Tensor, *, per_row: bool = False,
                extra_sites: Sequence[Site] = ()) -> AddState:
        """Register the edit functions on ``hooks`` for a batch with these prompt lengths.

        ``per_row``: one delta row per batch row (never shared), so that :meth:`AddState.set_row`
        can change a row later; ``extra_sites`` are hooked too (zero delta until a row is set)."""
        steers = self.steers
        b = len(steers)
        if prompt_lens.shape[0] != b:
            raise ValueError(f"{b} steering entries for a batch of {prompt_lens.shape[0]} prompts")
        device = hooks.model.device if hasattr(hooks.model, "device") else prompt_lens.device
        dtype = next(hooks.model.parameters()).dtype
        start, end = row_ranges([s.where if s else "all" for s in steers], prompt_lens)
        start, end = start.to(device), end.to(device)
        shared = not per_row and all(s is steers[0] for s in steers)
        keys: dict[str, Site] = {}
        for s in steers:
            if s is not None:
                for site in s.vector.sites:
                    keys.setdefault(site.key, site)
        widths: dict[str, int] = {}
        for site in extra_sites:
            if site.key not in keys:
                keys[site.key] = site
                widths[site.key] = site_width(hooks.adapter, site.kind)
        deltas: dict[str, torch.Tensor] = {}
        for key, site in keys.items():
            rows = steers[:1] if shared else steers
            width = widths.get(key) or next(s.vector.vectors[key].shape[0] for s in steers
                                            if s is not None and key in s.vector.vectors)
            delta = torch.zeros(len(rows), width, dtype=torch.float32, device=device)
            for i, s in enumerate(rows):
                if s is not None and key in s.vector.vectors:
                    delta[i] = s.vector.vectors[key].to(device=device, dtype=torch.float32) * float(s.strength)
            deltas[key] = delta.to(dtype)[:, None, :]  # (rows, 1, width)
        # a row with no steering is masked out by an empty window
        none_rows = torch.tensor([s is None for s in steers], device=device)
        end = torch.where(none_rows, start, end)
        # host-side: from which position on every row is steered (None: never all rows), so that a
        # step whose positions are all known to be >= it needs no mask and no device sync
        starts, ends = start.tolist(), end.tolist()
        all_from = max(starts) if not per_row and all(s is not None for s in steers) and min(ends) >= _BIG else None
        state = AddState(start, end, deltas, all_from, per_row)
        for key, site in keys.items():
            hooks.add(site, _site_edit(state, deltas[key]))
        return state


def _site_edit(add: AddState, delta: torch.Tensor) -> Callable[[torch.Tensor, Site, StepState], torch.Tensor]:
    """The edit function of one site, with its state, delta and mask key bound once."""
    key = ("add", id(add))

    def edit(x: torch.Tensor, site: Site, state: StepState) -> torch.Tensor:
        scratch = state.scratch
        mask = scratch[key] if key in scratch else add.mask(state)
        d = delta if delta.dtype == x.dtype else delta.to(x.dtype)
        return x + d if mask is None else x + d * mask.to(x.dtype)

    return edit
