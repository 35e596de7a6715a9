"""FASB (flexible activation steering with backtracking) as a harness method.

The fit is ITI's, through :class:`~steerlab.methods.iti.ITI` with the same options (probes trained on
the training items and ranked on the validation items, the reference sigma on TruthfulQA), the top ``k``
heads kept; what the evaluators get is a :class:`~steerlab.interventions.fasb.FASBSteering` as
``FittedMethod.adaptive``: multiple-choice answers are scored FASB's way (one unsteered pass, re-scored
with the shift from ``pos - s`` where the probe fires, scanning from ``steer_from``), generation runs
FASB's monitor (:mod:`steerlab.interventions.fasb`). Only ``k``, ``direction`` and the probe options
need a new fit; ``fitted(fit)`` applies the others to an existing one (``inference_options``).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Sequence

from ..interventions.fasb import FASBConfig, FASBFit
from ..models import LoadedModel
from .base import FittedMethod, config_to_dict
from .iti import ITI, ITIMethodConfig

__all__ = ["FASBMethodConfig", "FASB"]


@dataclass(frozen=True)
class FASBMethodConfig(FASBConfig):
    """FASB's options (:class:`~steerlab.interventions.fasb.FASBConfig`: the reference script's values are the
    defaults, ITI's fit options included) plus the harness's ``steer_from`` (where the MC scan starts: ITI's
    reference position), ``sigma`` and ``probe_split`` (:class:`~steerlab.methods.iti.ITIMethodConfig`)."""

    steer_from: str = "second_answer"
    sigma: str = "reference"
    probe_split: str = "given"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.chat:
            raise ValueError("chat is not an option of the harness method fasb: the evaluators format the prompts")
        self.iti_method_config()  # validates steer_from, sigma, probe_split

    def fasb_config(self) -> FASBConfig:
        return FASBConfig(**{f.name: getattr(self, f.name) for f in fields(FASBConfig)})

    def iti_method_config(self) -> ITIMethodConfig:
        return ITIMethodConfig(k=self.k, alpha=1.0, direction=self.direction, val_fraction=self.val_fraction,
                               seed=self.seed, c=self.c, batch_size=self.batch_size, steer_from=self.steer_from,
                               sigma=self.sigma, probe_split=self.probe_split, ties=self.ties)


class FASB:
    """``fasb``: ITI's probes and heads, steering only where the probes flag the text, with backtracking."""

    name = "fasb"
    needs_fit = True
    #: options applied at inference: a search fits once per value of the other options
    inference_options = ("k", "alpha", "threshold", "s", "semantics", "adaptive", "backtrack", "detect",
                         "max_backtracks", "monitor_after", "reestimate", "steer_from")

    def __init__(self, config: FASBMethodConfig | None = None) -> None:
        self.config = config or FASBMethodConfig()

    def config_dict(self) -> dict[str, Any]:
        return config_to_dict(self.config)

    def fit_model(self, lm: LoadedModel, train_items: Sequence[Any], val_items: Sequence[Any]) -> FASBFit:
        iti = ITI(self.config.iti_method_config()).fit_model(lm, train_items, val_items)
        return FASBFit(iti, self.config.fasb_config())

    def fitted(self, fit: FASBFit, lm: LoadedModel | None = None) -> FittedMethod:
        """What the evaluators take from a fit, with this method's inference options (and ``k``: the top ``k``
        of the fit's ranking)."""
        cfg = self.config.fasb_config()
        if fit.config.k != cfg.k:
            fit = fit.with_k(cfg.k)
        steering = FASBFit(fit.iti, cfg).steering(lm)
        info = {"steered": True, "k": cfg.k, "alpha": cfg.alpha, "threshold": cfg.threshold, "s": cfg.s,
                "semantics": cfg.semantics, "heads": [list(map(int, h)) for h in fit.heads]}
        return FittedMethod(steer_from=self.config.steer_from, info=info, adaptive=steering)  # type: ignore[arg-type]

    def fit(self, lm: LoadedModel, train_items: Sequence[Any], val_items: Sequence[Any]) -> FittedMethod:
        return self.fitted(self.fit_model(lm, train_items, val_items), lm)
