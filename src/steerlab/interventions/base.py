"""The small interface every intervention implements."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from ..hooks import HookManager

__all__ = ["Intervention"]


@runtime_checkable
class Intervention(Protocol):
    """Something that registers edit functions for one batch.

    ``install`` is called once per batch with the prompt lengths (real tokens per row) before
    the first forward pass; the edit functions it registers read token positions from the
    manager's per-step :class:`~steerlab.hooks.StepState`.
    """

    def install(self, hooks: HookManager, prompt_lens: torch.Tensor) -> None: ...
