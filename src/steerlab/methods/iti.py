"""ITI (Li et al. 2023) as a harness method, delegating to :mod:`steerlab.interventions.iti`.

Probe records come from the training *and* validation items together (each distinct
``(prompt, answer)`` once, grouped by question). With ``probe_split="given"`` (default, ITI's
recipe) the probes are trained on the training items' records and ranked by accuracy on the
validation items' (the runner's 80/20 split of the training fold, ITI's ``train_val_split``);
``"nested"`` (steerlab before issue #11) lets :func:`~steerlab.interventions.iti.fit_iti` draw its
own ``val_fraction`` split of all of them, so with the runner's split the probes saw 80 % of the
training fold's questions, ranked on a different 20 %. The top ``k`` heads are kept (ties: ``ties``). TruthfulQA records use ITI's ``"Q: {question} A:"``
prompt. For multiple-choice scoring the ``heads`` vector (``alpha * sigma * u`` per selected
head) is added from the second answer token on (``steer_from="second_answer"``, where ITI's reference
``start_edit_location = len(prompt) + 4`` lands with a 3-token "\nA:"; ``"answer"`` starts one token earlier);
:meth:`FittedMethod.generate_steer` steers every generated token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from ..data.records import TruthfulQAItem, TruthfulQAMCItem
from ..interventions.add import check_steer_from
from ..interventions.iti import ITIConfig, ITIFit, fit_iti, reference_sigma_texts
from ..models import LoadedModel
from .base import FittedMethod, config_to_dict
from .pairs import labelled_questions, probe_records

_TQA = (TruthfulQAMCItem, TruthfulQAItem)

__all__ = ["ITIMethodConfig", "ITI"]


@dataclass(frozen=True)
class ITIMethodConfig:
    """ITI options (see :class:`steerlab.interventions.iti.ITIConfig`) plus ``steer_from``."""

    k: int = 48
    alpha: float = 15.0
    direction: str = "mass_mean"
    val_fraction: float = 0.2
    seed: int = 42
    c: float = 1.0
    batch_size: int = 16
    steer_from: str = "second_answer"
    #: "reference": the std over ITI's "Q: q A: a Q: q'" prompts built from the fit questions (TruthfulQA items;
    #: other items fall back to "records"); "records": over the probe records
    sigma: str = "reference"
    #: "given": probes trained on the training items, ranked on the validation items (ITI); "nested": an own
    #: ``val_fraction`` split of both
    probe_split: str = "given"
    #: heads of equal accuracy: "other" (the other accuracy, then index; reproducible) or "numpy" (ITI's
    #: ``np.argsort(acc)[::-1]``, whose tie order depends on numpy and the CPU)
    ties: str = "other"

    def __post_init__(self) -> None:
        check_steer_from(self.steer_from)
        if self.sigma not in ("reference", "records"):
            raise ValueError(f"sigma must be 'reference' or 'records', got {self.sigma!r}")
        if self.probe_split not in ("given", "nested"):
            raise ValueError(f"probe_split must be 'given' or 'nested', got {self.probe_split!r}")


class ITI:
    """``iti``: per-head probes, top-``k`` heads, shift ``alpha * sigma * u`` on them."""

    name = "iti"
    needs_fit = True
    #: the option that only scales the fitted steer: a search fits once per other option
    strength_option = "alpha"

    def __init__(self, config: ITIMethodConfig | None = None) -> None:
        self.config = config or ITIMethodConfig()
        self._iti_config()  # validate early

    def config_dict(self) -> dict[str, Any]:
        return config_to_dict(self.config)

    def _iti_config(self) -> ITIConfig:
        c = self.config
        return ITIConfig(k=c.k, alpha=c.alpha, direction=c.direction, val_fraction=c.val_fraction, seed=c.seed,
                         c=c.c, batch_size=c.batch_size, ties=c.ties)

    def fit_model(self, lm: LoadedModel, train_items: Sequence[Any], val_items: Sequence[Any]) -> ITIFit:
        """The whole :class:`~steerlab.interventions.iti.ITIFit` (probes, ranking, directions, sigma): a
        sweep over ``k`` / ``alpha`` reuses it through :meth:`ITIFit.with_k`."""
        items = [*train_items, *val_items]
        questions = labelled_questions(lm, items, style="short")
        records = probe_records(questions)
        sigma_texts = None
        if self.config.sigma == "reference" and items and all(isinstance(it, _TQA) for it in items):
            qa = [(q.group, answer) for q in questions for _, answer in (*q.positive, *q.negative)]
            sigma_texts = reference_sigma_texts(qa, self.config.seed)
        val_groups = None
        if self.config.probe_split == "given" and val_items:
            val_groups = {q.group for q in labelled_questions(lm, val_items, style="short")}
        return fit_iti(lm, records, self._iti_config(), sigma_texts=sigma_texts, val_groups=val_groups)

    def fitted(self, fit: ITIFit) -> FittedMethod:
        """What the evaluators take from a fit (``steer_from`` from this method's config)."""
        extra = fit.vector.meta.extra or {}
        info = {"steered": True, "k": fit.config.k, "alpha": fit.config.alpha, "n_records": int(fit.train_idx.numel() + fit.val_idx.numel()),
                "heads": [list(map(int, h)) for h in fit.heads],
                "sigma_from": "records" if extra.get("sigma_from", "records") == "records" else "reference",
                "probe_split": "nested" if extra.get("val_fraction") != "given" else "given",
                "n_probe_train": int(fit.train_idx.numel()), "n_probe_val": int(fit.val_idx.numel())}
        return FittedMethod(steer=fit.vector, strength=1.0, steer_from=self.config.steer_from,  # type: ignore[arg-type]
                            info=info)

    def fit(self, lm: LoadedModel, train_items: Sequence[Any], val_items: Sequence[Any]) -> FittedMethod:
        return self.fitted(self.fit_model(lm, train_items, val_items))
