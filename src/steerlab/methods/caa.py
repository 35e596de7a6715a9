"""CAA (Contrastive Activation Addition, Rimsky et al. 2024) as a harness method.

The vector is the mean difference of the residual stream at one layer between desired and
undesired answers, read at the answer's last token (for A/B answers ``(A)`` / ``(B)``: at the letter, as CAA's
``generate_vectors.py`` reads it) (:func:`steerlab.fit.fit_vector`,
``method="mean_diff"``, ``positions="last"``). Contrast pairs come from the training items
(:func:`steerlab.methods.pairs.contrast_pairs`): for TruthfulQA, (question, true answer) vs
(question, false answer) in the evaluator's own prompt. At evaluation it is added, times
``multiplier``, to the last prompt token and every answer token (``steer_from="last_prompt"``:
"every position after the prompt"); :meth:`FittedMethod.generate_steer` gives the same for
generation (``where="generated"``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from ..checks import check_strength
from ..interventions.add import check_steer_from
from ..models import LoadedModel
from .base import FittedMethod, config_to_dict
from .pairs import contrast_pairs, labelled_questions, letter_pairs

__all__ = ["CAAConfig", "CAA"]


@dataclass(frozen=True)
class CAAConfig:
    """``layer`` (``None``: the middle layer, ``n_layers // 2``; negative counts from the end),
    ``multiplier``, ``steer_from`` (``"last_prompt"`` or ``"answer"``), ``max_pairs`` (first N
    pairs; ``None``: all), capture ``batch_size``."""

    layer: int | None = None
    multiplier: float = 1.0
    steer_from: str = "last_prompt"
    max_pairs: int | None = None
    batch_size: int = 8

    def __post_init__(self) -> None:
        if self.layer is not None and (isinstance(self.layer, bool) or not isinstance(self.layer, int)):
            raise ValueError(f"layer must be an integer or None, got {self.layer!r}")
        check_strength(self.multiplier, "multiplier")
        check_steer_from(self.steer_from)
        if self.max_pairs is not None and self.max_pairs < 1:
            raise ValueError(f"max_pairs must be >= 1, got {self.max_pairs}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")


class CAA:
    """``caa``: residual-stream mean difference at one layer, added with a multiplier."""

    name = "caa"
    needs_fit = True
    #: the option that only scales the fitted steer: a search fits once per other option
    strength_option = "multiplier"

    def __init__(self, config: CAAConfig | None = None) -> None:
        self.config = config or CAAConfig()

    def config_dict(self) -> dict[str, Any]:
        return config_to_dict(self.config)

    def validate(self, lm: LoadedModel) -> None:
        """Check the options against ``lm`` (the layer exists) before any work is done."""
        self.layer(lm)

    def layer(self, lm: LoadedModel) -> int:
        n = lm.adapter.n_layers
        layer = n // 2 if self.config.layer is None else self.config.layer
        return lm.adapter.check_layer(layer + n if layer < 0 else layer)

    def fit(self, lm: LoadedModel, train_items: Sequence[Any], val_items: Sequence[Any]) -> FittedMethod:
        from ..fit import fit_vector

        cfg = self.config
        # A/B answers "(A)" / "(B)" are read at the letter, as CAA does (letter_pairs)
        pairs = letter_pairs(contrast_pairs(labelled_questions(lm, train_items)))
        if cfg.max_pairs is not None:
            pairs = pairs[: cfg.max_pairs]
        layer = self.layer(lm)
        # pairs that share a prompt (TruthfulQA's few-shot primer) read their activations through the
        # shared-prefix KV-cache path: the same vector, several times faster
        share = all(p.prompt is not None for p in pairs)
        vec = fit_vector(lm, pairs, layer, method="mean_diff", site_kind="residual", positions="last",
                         batch_size=cfg.batch_size, share_prefix=share)
        info = {"steered": True, "layer": layer, "n_pairs": len(pairs), "multiplier": cfg.multiplier,
                "norm": round(float(next(iter(vec.norms().values()))), 6)}
        return FittedMethod(steer=vec, strength=float(cfg.multiplier), steer_from=cfg.steer_from,  # type: ignore[arg-type]
                            info=info)
