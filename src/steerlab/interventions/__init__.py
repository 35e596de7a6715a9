"""Interventions: one module per method, all sharing :mod:`steerlab.hooks` and :mod:`steerlab.generate`."""

from .add import AddIntervention, Steer, Where, row_ranges
from .base import Intervention

__all__ = ["AddIntervention", "Intervention", "Steer", "Where", "row_ranges"]
