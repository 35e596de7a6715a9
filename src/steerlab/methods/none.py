"""The baseline: no steering."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from ..models import LoadedModel
from .base import FittedMethod

__all__ = ["NoneConfig", "NoSteering"]


@dataclass(frozen=True)
class NoneConfig:
    """The baseline has no options."""


class NoSteering:
    """``none``: evaluates the unsteered model (nothing is fitted)."""

    name = "none"
    needs_fit = False

    def __init__(self, config: NoneConfig | None = None) -> None:
        self.config = config or NoneConfig()

    def config_dict(self) -> dict[str, Any]:
        return {}

    def fit(self, lm: LoadedModel, train_items: Sequence[Any], val_items: Sequence[Any]) -> FittedMethod:
        return FittedMethod(info={"steered": False})
