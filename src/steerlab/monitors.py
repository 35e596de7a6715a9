"""Monitors: watch activations while :func:`steerlab.generate` decodes, and act on single rows.

A monitor lists the :class:`~steerlab.sites.Site` objects it reads (``sites``). After every decode
step :func:`~steerlab.generate.generate` calls ``monitor.step(reading)`` with a
:class:`StepReading`: per row, the token just chosen and the activations at those sites for the
position just processed (read by read-only hooks inside the same forward pass, after any steering
edit at that site: what the model actually used). The monitor answers one entry per row: ``None``
or :class:`Continue` (go on), :class:`Rewind` ``(k)`` (drop the row's last ``k`` generated tokens and
continue from there), :class:`SetSteer` (steer the row with another vector / strength, or not at
all, from its next position on), :class:`Stop` (end the row, keeping its tokens), or a sequence of
these, applied in order (e.g. ``(Rewind(3), SetSteer(v, 4.0))``: go back 3 tokens and steer from
there).

Rows act independently: the batch keeps decoding in lockstep, and a rewound row's dropped
positions are masked out of attention, so its next tokens are exactly those of a fresh run from
the kept text (position ids count kept tokens only; the prompt is never recomputed). A row that
had ended (EOS, a stop string, ``max_new_tokens``, :class:`Stop`) and is rewound continues.

Example (rewind a row by 2 tokens, once, when a probe fires, and steer it from there)::

    class BackOff:
        sites = [Site.residual(12)]

        def __init__(self, probe: torch.Tensor, vec: SteeringVector) -> None:
            self.probe, self.vec, self.fired = probe, vec, set()

        def step(self, reading: StepReading) -> list[RowAnswer]:
            score = reading["residual.12"] @ self.probe             # (batch,)
            out: list[RowAnswer] = []
            for r in range(reading.batch_size):
                if reading.active[r] and r not in self.fired and reading.lengths[r] >= 2 and score[r] > 3:
                    self.fired.add(r)
                    out.append((Rewind(2), SetSteer(self.vec, 4.0)))
                else:
                    out.append(None)
            return out

    generate(lm, prompts, monitors=[BackOff(probe, vec)])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence, Union, runtime_checkable

import torch

from .checks import check_strength
from .interventions.add import Steer
from .sites import Site
from .vectors import SteeringVector

__all__ = ["Monitor", "StepReading", "Action", "RowAnswer", "Continue", "Rewind", "SetSteer", "Stop"]


@dataclass(frozen=True)
class Continue:
    """Go on as before."""


@dataclass(frozen=True)
class Rewind:
    """Drop the row's last ``k`` generated tokens (``1 <= k <=`` its generated length) and continue."""

    k: int

    def __post_init__(self) -> None:
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise ValueError(f"Rewind(k) needs an integer k >= 1, got {self.k!r}")


@dataclass(frozen=True)
class SetSteer:
    """Steer the row from its next position on with ``steer`` (a vector or a :class:`Steer`, whose
    ``where`` is not used), at ``strength`` (default: the Steer's own, or 1.0); ``None`` turns the
    row's steering off. Positions already processed keep what they had. The vector's sites must
    be hooked from the start: steered by the call, or listed in the monitor's ``steer_sites``."""

    steer: SteeringVector | Steer | None
    strength: float | None = None

    def __post_init__(self) -> None:
        if self.steer is not None and not isinstance(self.steer, (SteeringVector, Steer)):
            raise TypeError(f"SetSteer needs a SteeringVector, a Steer or None, not {type(self.steer).__name__}")
        if self.strength is not None:
            object.__setattr__(self, "strength", check_strength(self.strength))

    def resolved(self) -> Steer | None:
        """The :class:`Steer` this action puts on the row (None: no steering)."""
        if self.steer is None:
            return None
        if isinstance(self.steer, Steer):
            return Steer(self.steer.vector, self.steer.strength if self.strength is None else self.strength)
        return Steer(self.steer, 1.0 if self.strength is None else self.strength)


@dataclass(frozen=True)
class Stop:
    """End the row now, keeping what it generated (finish reason ``"stopped"``)."""


Action = Union[Continue, Rewind, SetSteer, Stop]
#: what a monitor answers for one row: nothing, one action, or several applied in order
RowAnswer = Union[None, Action, Sequence[Action]]


@dataclass(frozen=True)
class StepReading:
    """What a monitor sees after one decode step (``step`` 0 is the prompt pass).

    ``tokens[r]``: the token row ``r`` chose at this step (None for a row that had already ended).
    ``active[r]``: whether row ``r`` was decoding at this step (its token and activations are real).
    ``acts[site.key]``: ``(batch, width)`` float32 activations at the position each row just processed
    (the last prompt token at step 0, then the token chosen at the step before), on the model's device.
    ``lengths[r]``: how many tokens row ``r`` has generated, the one chosen at this step included.
    ``finished[r]``: whether row ``r`` has ended (EOS, stop string, length, Stop) after this step.
    """

    step: int
    tokens: list[int | None]
    active: list[bool]
    acts: dict[str, torch.Tensor]
    lengths: list[int]
    finished: list[bool]

    @property
    def batch_size(self) -> int:
        return len(self.tokens)

    def __getitem__(self, site: Site | str) -> torch.Tensor:
        return self.acts[site.key if isinstance(site, Site) else site]


@runtime_checkable
class Monitor(Protocol):
    """Reads ``sites`` every decode step and answers per row (see the module doc).

    A monitor may also have ``steer_sites``: sites a :class:`SetSteer` may steer that the call does
    not steer from the start (hooks are installed once per call).
    """

    sites: Sequence[Site]

    def step(self, reading: StepReading) -> Sequence[RowAnswer]: ...
