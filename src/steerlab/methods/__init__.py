"""Steering methods for the evaluation harness: a registry ``name -> factory``.

``make_method("caa", layer=3, multiplier=2.0)`` builds a method from keyword options (strings
from the command line are converted to the config field's type). New methods register with
:func:`register_method` and plug into every evaluator through :class:`Method.fit`.
"""

from __future__ import annotations

from typing import Any, Callable

from .base import FittedMethod, Method, config_from_kwargs, config_to_dict
from .caa import CAA, CAAConfig
from .fasb import FASB, FASBMethodConfig
from .iti import ITI, ITIMethodConfig
from .none import NoneConfig, NoSteering

__all__ = ["FittedMethod", "Method", "METHODS", "register_method", "method_names", "make_method",
           "CAA", "CAAConfig", "FASB", "FASBMethodConfig", "ITI", "ITIMethodConfig", "NoSteering", "NoneConfig", "config_to_dict"]

#: name -> (method class, config dataclass)
METHODS: dict[str, tuple[Callable[[Any], Method], type]] = {
    "none": (NoSteering, NoneConfig),
    "caa": (CAA, CAAConfig),
    "iti": (ITI, ITIMethodConfig),
    "fasb": (FASB, FASBMethodConfig),
}


def register_method(name: str, factory: Callable[[Any], Method], config_cls: type) -> None:
    """Register ``factory(config) -> Method`` under ``name`` (e.g. FASB, PSR)."""
    METHODS[name] = (factory, config_cls)


def method_names() -> list[str]:
    return sorted(METHODS)


def make_method(name: str, **kwargs: Any) -> Method:
    """The method ``name`` configured from ``kwargs``; ``ValueError`` for unknown names or options."""
    if name not in METHODS:
        raise ValueError(f"unknown method '{name}': choose from {', '.join(method_names())}")
    factory, cfg_cls = METHODS[name]
    try:
        return factory(config_from_kwargs(cfg_cls, name, kwargs))
    except TypeError as e:
        raise ValueError(f"bad options for method '{name}': {e}") from None
