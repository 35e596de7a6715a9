"""Interventions: one module per method, all sharing :mod:`steerlab.hooks` and :mod:`steerlab.generate`."""

from .add import AddIntervention, Steer, Where, row_ranges
from .base import Intervention
from .iti import ITIConfig, ITIExample, ITIFit, fit_iti, fold_into_bias

__all__ = [
    "AddIntervention", "ITIConfig", "ITIExample", "ITIFit", "Intervention", "Steer", "Where",
    "fit_iti", "fold_into_bias", "row_ranges",
]
