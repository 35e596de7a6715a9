"""Evaluations that score models or encoders on benchmark data."""

from .sts import STSResult, evaluate_sts

__all__ = ["STSResult", "evaluate_sts"]
