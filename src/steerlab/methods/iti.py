"""ITI (Li et al. 2023) as a harness method, delegating to :mod:`steerlab.interventions.iti`.

Probe records come from the training *and* validation items together (each distinct
``(prompt, answer)`` once, grouped by question): :func:`~steerlab.interventions.iti.fit_iti`
makes its own train/validation split by question (``val_fraction``, ``seed``), ranks heads by
validation accuracy and keeps the top ``k``. TruthfulQA records use ITI's ``"Q: {question} A:"``
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
from ..interventions.iti import ITIConfig, fit_iti, reference_sigma_texts
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

    def __post_init__(self) -> None:
        check_steer_from(self.steer_from)
        if self.sigma not in ("reference", "records"):
            raise ValueError(f"sigma must be 'reference' or 'records', got {self.sigma!r}")


class ITI:
    """``iti``: per-head probes, top-``k`` heads, shift ``alpha * sigma * u`` on them."""

    name = "iti"
    needs_fit = True

    def __init__(self, config: ITIMethodConfig | None = None) -> None:
        self.config = config or ITIMethodConfig()
        self._iti_config()  # validate early

    def config_dict(self) -> dict[str, Any]:
        return config_to_dict(self.config)

    def _iti_config(self) -> ITIConfig:
        c = self.config
        return ITIConfig(k=c.k, alpha=c.alpha, direction=c.direction, val_fraction=c.val_fraction, seed=c.seed,
                         c=c.c, batch_size=c.batch_size)

    def fit(self, lm: LoadedModel, train_items: Sequence[Any], val_items: Sequence[Any]) -> FittedMethod:
        items = [*train_items, *val_items]
        questions = labelled_questions(lm, items, style="short")
        records = probe_records(questions)
        sigma_texts = None
        if self.config.sigma == "reference" and items and all(isinstance(it, _TQA) for it in items):
            qa = [(q.group, answer) for q in questions for _, answer in (*q.positive, *q.negative)]
            sigma_texts = reference_sigma_texts(qa, self.config.seed)
        fit = fit_iti(lm, records, self._iti_config(), sigma_texts=sigma_texts)
        info = {"steered": True, "k": self.config.k, "alpha": self.config.alpha, "n_records": len(records),
                "heads": [list(map(int, h)) for h in fit.heads],
                "sigma_from": "records" if sigma_texts is None else "reference"}
        return FittedMethod(steer=fit.vector, strength=1.0, steer_from=self.config.steer_from,  # type: ignore[arg-type]
                            info=info)
