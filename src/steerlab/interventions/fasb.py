"""FASB: Flexible Activation Steering with Backtracking (arXiv 2508.17621), on steerlab's runtime.

What the reference code (gjw185/FASB, ``FASB_utils.py::tqa_run_answers``) does, and what this module
does (``docs/fasb.md``):

* **Fit** (ITI's recipe, :func:`~steerlab.interventions.iti.fit_iti`): per-head probes on the ``o_proj``
  input at the last token of ``"Q: {question} A: {choice}"``, the top ``k`` heads by validation accuracy,
  a unit direction per head (mass-mean, the reference's setting, or the probe weights) and its scale
  ``sigma``. :class:`FASBFit` keeps all of it; :func:`save_fasb` writes one ``"fasb"`` artifact.
* **Generate** (:func:`steerlab.backtrack.fasb_generate`, a monitor inside :func:`steerlab.generate`): decoding
  starts unsteered. After every new token, once at least ``s`` tokens exist (always at EOS or the last
  allowed step) ``p_true`` = the mean over the ``k`` heads of each probe's probability at the position just
  processed. If ``p_true < threshold`` the row drops its last ``s`` tokens (all of them if it has no more)
  and goes on with every selected head shifted by ``alpha * (1 - p_true) * sigma * u`` at the last
  position, for the rest of the answer: one backtrack, no monitoring after it, the budget counting kept +
  regenerated tokens. Rows of a batch detect and back up independently.
* **Steering semantics**: ``"reference"`` (the reference recomputes the whole sequence at every step and
  edits its last position, so earlier tokens' keys/values are unsteered: ``kv_cache="unsteered"``, a
  two-token step, no recompute) or ``"cached"`` (each token steered once and its steered keys/values kept,
  as ITI through ``model.generate``).
* **Multiple choice** (:meth:`FASBSteering.mc_trigger`, used by
  :func:`steerlab.evals.loglik.loglikelihood`'s ``adaptive=``): one unsteered pass per answer, the first
  answer position with ``p_true < threshold`` (the first ``s`` positions skipped unless last), then the
  answer re-scored with the shift on every position from ``pos - s`` on.

The mechanism is general: :class:`FASBSteering` takes any :class:`Signal` (per-head probes, or one linear
probe on any site: :class:`LinearSignal`) and any :class:`~steerlab.vectors.SteeringVector` as the shift
(an ITI head shift, a CAA residual vector).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from os import PathLike
from pathlib import Path
from typing import Any, Collection, Mapping, Protocol, Sequence, runtime_checkable

import torch

from ..artifacts import VectorError, load_intervention, save_intervention
from ..capture import capture
from ..checks import check_strength
from ..models import LoadedModel
from ..probes import DIRECTIONS, TIES, Head, fit_head_probes, shift_vector
from ..sites import Site, SiteKind
from ..vectors import SteeringVector
from .iti import ITIConfig, ITIFit, Record, _examples, fit_iti, iti_artifact, iti_from_artifact

__all__ = [
    "FASBConfig",
    "SEMANTICS",
    "DETECT",
    "Signal",
    "HeadSignal",
    "LinearSignal",
    "fit_linear_signal",
    "FASBSteering",
    "MCTrigger",
    "FASBFit",
    "fit_fasb",
    "FASB_KIND",
    "save_fasb",
    "load_fasb",
]

#: the artifact kind of a whole :class:`FASBFit`
FASB_KIND = "fasb"
#: steering semantics: "reference" (unsteered keys/values of earlier tokens) or "cached" (steered ones kept)
SEMANTICS: tuple[str, ...] = ("reference", "cached")
#: when the probe decides: along the answer (FASB), once on the question (ablation), or never: always steer
#: with the fixed strength alpha (the "all fixed" ablation, = ITI)
DETECT: tuple[str, ...] = ("answer", "question", "always")


def _positive_int(value: Any, name: str, what: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}{what} must be an integer >= 1, got {value!r}")
    return value


@dataclass(frozen=True)
class FASBConfig:
    """FASB's hyper-parameters (reference script: ``k=24, alpha=60, threshold=0.6, s=10``, mass-mean).

    ``k`` heads, shift ``alpha`` (in units of each head's ``sigma``), ``threshold`` on ``p_true`` (a row
    backtracks when ``p_true < threshold``), ``s`` tokens dropped on a backtrack (and the first ``s`` tokens
    are not checked), ``direction`` ``"mass_mean"`` | ``"probe"``, ``semantics`` (see the module doc).

    Options beyond the reference, off by default: ``max_backtracks`` > 1 with ``monitor_after`` (keep
    checking after a backtrack, ``s`` tokens after it at the earliest), ``reestimate`` (with
    ``monitor_after``: every later check sets the strength to ``alpha * (1 - p_true)`` anew). Ablations:
    ``adaptive=False`` (strength ``alpha``), ``backtrack=False`` (steer from the next token on, nothing
    dropped), ``detect="question"`` (decide once, on the prompt's last token) or ``"always"`` (no detection:
    steer every token with ``alpha``, = ITI). The rest are ITI's fit options (:class:`ITIConfig`).
    """

    k: int = 24
    alpha: float = 60.0
    threshold: float = 0.6
    s: int = 10
    direction: str = "mass_mean"
    semantics: str = "reference"
    adaptive: bool = True
    backtrack: bool = True
    detect: str = "answer"
    max_backtracks: int = 1
    monitor_after: bool = False
    reestimate: bool = False
    val_fraction: float = 0.2
    seed: int = 42
    c: float = 1.0
    batch_size: int = 16
    chat: bool = False
    ties: str = "other"

    def __post_init__(self) -> None:
        _positive_int(self.k, "k")
        check_strength(self.alpha, "alpha")
        t = self.threshold
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 < float(t) < 1:
            raise ValueError(f"threshold must be in (0, 1), got {t!r}")
        _positive_int(self.s, "s", " (tokens to back up)")
        _positive_int(self.max_backtracks, "max_backtracks")
        if self.direction not in DIRECTIONS:
            raise ValueError(f"unknown direction {self.direction!r}: use one of {', '.join(DIRECTIONS)}")
        if self.semantics not in SEMANTICS:
            raise ValueError(f"semantics must be one of {', '.join(SEMANTICS)}, got {self.semantics!r}")
        if self.detect not in DETECT:
            raise ValueError(f"detect must be one of {', '.join(DETECT)}, got {self.detect!r}")
        if self.max_backtracks > 1 and not self.monitor_after:
            raise ValueError("max_backtracks > 1 needs monitor_after=True (checks after the first backtrack)")
        if self.reestimate and not self.monitor_after:
            raise ValueError("reestimate=True needs monitor_after=True (p is re-read at the checks after a backtrack)")
        if self.ties not in TIES:
            raise ValueError(f"unknown ties {self.ties!r}: use one of {', '.join(TIES)}")

    def iti_config(self) -> ITIConfig:
        """The ITI fit options of this config (probes, ranking, directions, sigma)."""
        return ITIConfig(k=self.k, alpha=self.alpha, direction=self.direction, where="generated",
                         val_fraction=self.val_fraction, seed=self.seed, c=self.c, batch_size=self.batch_size,
                         chat=self.chat, ties=self.ties)

    @property
    def kv_cache(self) -> str:
        return "unsteered" if self.semantics == "reference" else "steered"


# ---------------------------------------------------------------------------------------------
# signals: p_true from activations


@runtime_checkable
class Signal(Protocol):
    """What FASB monitors: ``sites`` read, and ``p_true(acts)`` -> the probability that the text is on
    track, from ``acts[site.key]`` of shape ``(..., width)`` (returns shape ``(...)``)."""

    sites: Sequence[Site]

    def p_true(self, acts: Mapping[str, torch.Tensor]) -> torch.Tensor: ...


class HeadSignal:
    """The mean over ``heads`` of each head's logistic probe probability (FASB's ``get_question_proba``:
    probabilities averaged, not logits). ``weights`` ``(k, head_dim)`` and ``biases`` ``(k,)`` in the
    order of ``heads``; read at the ``heads.L`` sites (the ``o_proj`` input)."""

    def __init__(self, heads: Sequence[Head], weights: torch.Tensor, biases: torch.Tensor, n_heads: int) -> None:
        heads = [(int(l), int(h)) for l, h in heads]
        if not heads:
            raise ValueError("a head signal needs at least one head")
        if weights.ndim != 2 or weights.shape[0] != len(heads) or tuple(biases.shape) != (len(heads),):
            raise ValueError(f"weights must be (k, head_dim) and biases (k,) for k={len(heads)} heads, got "
                             f"{tuple(weights.shape)} and {tuple(biases.shape)}")
        self.heads, self.n_heads, self.head_dim = heads, int(n_heads), int(weights.shape[1])
        self.weights, self.biases = weights.float(), biases.float()
        self._by_layer: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for layer in sorted({l for l, _ in heads}):
            idx = [i for i, (l, _) in enumerate(heads) if l == layer]
            self._by_layer[f"heads.{layer}"] = (torch.tensor([heads[i][1] for i in idx]), torch.tensor(idx))
        self.sites = [Site(SiteKind.HEADS, int(key.split(".")[1])) for key in self._by_layer]

    def p_true(self, acts: Mapping[str, torch.Tensor]) -> torch.Tensor:
        total: torch.Tensor | None = None
        for key, (hidx, widx) in self._by_layer.items():
            x = acts[key].float()
            x = x.view(*x.shape[:-1], self.n_heads, self.head_dim)[..., hidx.to(x.device), :]  # (..., n, D)
            w, b = self.weights[widx].to(x.device), self.biases[widx].to(x.device)
            p = torch.sigmoid((x * w).sum(-1) + b).sum(-1)
            total = p if total is None else total + p
        assert total is not None
        return total / len(self.heads)


class LinearSignal:
    """One logistic probe ``sigmoid(w . x + b)`` at one site (e.g. the residual stream of a layer);
    :func:`fit_linear_signal` fits one from labelled records."""

    def __init__(self, site: Site, weight: torch.Tensor, bias: float = 0.0) -> None:
        if weight.ndim != 1:
            raise ValueError(f"a linear probe's weight must be a vector, got shape {tuple(weight.shape)}")
        self.site, self.weight, self.bias = site, weight.float(), float(bias)
        self.sites = [site]

    def p_true(self, acts: Mapping[str, torch.Tensor]) -> torch.Tensor:
        x = acts[self.site.key].float()
        return torch.sigmoid(x @ self.weight.to(x.device) + self.bias)


def fit_linear_signal(lm: LoadedModel, records: Sequence[Record], site: Site | str, *, c: float = 1.0,
                      batch_size: int = 16, chat: bool = False, progress: bool = False) -> LinearSignal:
    """A logistic probe (label 1 = on track) on ``site`` at the last token of ``prompt + answer``: the same
    batched solver as ITI's head probes (scikit-learn's ``LogisticRegression(C=c)`` objective), one "head" of the
    site's full width. For FASB with a residual-stream probe instead of ITI's heads."""
    st = Site.parse(site) if isinstance(site, str) else site
    ex = _examples(records)
    cap = capture(lm, [(r.prompt, r.answer) for r in ex], [st], positions="last", batch_size=batch_size, chat=chat,
                  progress=progress)
    x = cap.acts[st.key].float()
    y = torch.tensor([r.label for r in ex], dtype=torch.long)
    probes = fit_head_probes(x[:, None, None, :], y, c=c)
    return LinearSignal(st, probes.weights[0, 0].float(), float(probes.biases[0, 0]))


# ---------------------------------------------------------------------------------------------
# the steering object: signal + shift + config


@dataclass(frozen=True)
class MCTrigger:
    """A multiple-choice answer's decision: probed at token ``position`` (``p_true``); the shift at
    ``strength`` is added on every position from ``edit_start`` on."""

    position: int
    p_true: float
    edit_start: int
    strength: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class FASBSteering:
    """Everything FASB needs at inference: the ``signal`` it reads, the unit ``shift`` it adds (times the
    strength; for ITI heads ``sigma * u`` per selected head) and the ``config`` (threshold, s, alpha, ...)."""

    signal: Signal
    shift: SteeringVector
    config: FASBConfig = field(default_factory=FASBConfig)

    def __post_init__(self) -> None:
        if not isinstance(self.signal, Signal):
            raise TypeError(f"signal must have 'sites' and p_true(acts), not {type(self.signal).__name__}")
        if not isinstance(self.shift, SteeringVector):
            raise TypeError(f"shift must be a SteeringVector, not {type(self.shift).__name__}")

    @property
    def sites(self) -> list[Site]:
        return list(self.signal.sites)

    def replace(self, **changes: Any) -> "FASBSteering":
        """The same signal and shift with config fields changed (e.g. ``threshold=0.5``)."""
        return FASBSteering(self.signal, self.shift, replace(self.config, **changes))

    def mc_trigger(self, p_question: float, p_answer: Sequence[float], scan_start: int) -> MCTrigger | None:
        """FASB's multiple-choice decision for one answer (the reference's ``tqa_run_probs`` scan).

        ``p_answer[j]`` is ``p_true`` at token position ``scan_start + j`` (the last entry is the sequence's
        last token) from an unsteered pass; ``p_question`` at the context's last token. The first ``s``
        positions are skipped unless last; at the first position ``pos`` with ``p_true < threshold`` the
        shift is added from ``max(scan_start, pos - s)`` on (``pos + 1`` without backtracking).
        ``detect="question"`` decides on ``p_question`` and ``"always"`` always steers, from ``scan_start``."""
        cfg = self.config
        if cfg.detect == "always":
            return MCTrigger(scan_start, float("nan"), scan_start, cfg.alpha)
        if cfg.detect == "question":
            if p_question < cfg.threshold:
                strength = cfg.alpha * (1 - p_question) if cfg.adaptive else cfg.alpha
                return MCTrigger(scan_start - 1, float(p_question), scan_start, strength)
            return None
        skipped = 0
        last = len(p_answer) - 1
        for j, p in enumerate(p_answer):
            if j != last and skipped < cfg.s:
                skipped += 1
                continue
            if p < cfg.threshold:
                pos = scan_start + j
                start = max(scan_start, pos - cfg.s) if cfg.backtrack else pos + 1
                return MCTrigger(pos, float(p), start, cfg.alpha * (1 - p) if cfg.adaptive else cfg.alpha)
        return None


# ---------------------------------------------------------------------------------------------
# fit and artifact


@dataclass
class FASBFit:
    """A fitted FASB: ITI's fit (probes of every head, ranking, directions, sigma) and the FASB config."""

    iti: ITIFit
    config: FASBConfig = field(default_factory=FASBConfig)

    @property
    def heads(self) -> list[Head]:
        return self.iti.heads

    def signal(self) -> HeadSignal:
        pr = self.iti.probes
        idx_l = torch.tensor([l for l, _ in self.heads])
        idx_h = torch.tensor([h for _, h in self.heads])
        return HeadSignal(self.heads, pr.weights[idx_l, idx_h], pr.biases[idx_l, idx_h], pr.n_heads)

    def shift(self, lm: LoadedModel | None = None) -> SteeringVector:
        """``sigma * u`` on each selected head (alpha 1: the strength multiplies it)."""
        return shift_vector(self.iti.directions, self.iti.sigma, self.heads, 1.0, lm=lm,
                            extra={"method": "fasb", "direction": self.config.direction})

    def steering(self, lm: LoadedModel | None = None, **changes: Any) -> FASBSteering:
        """The inference object; ``changes`` override config fields (threshold, alpha, s, semantics, ...).
        A different ``k`` takes the top ``k`` of the same ranking."""
        fit = self.with_k(int(changes["k"])) if "k" in changes and changes["k"] != self.config.k else self
        cfg = replace(fit.config, **changes)
        return FASBSteering(fit.signal(), fit.shift(lm), cfg)

    def with_k(self, k: int) -> "FASBFit":
        """The same fit with the top ``k`` heads of the same ranking."""
        _positive_int(k, "k")
        return FASBFit(self.iti.with_k(k, self.config.alpha), replace(self.config, k=k))


def fit_fasb(lm: LoadedModel, records: Sequence[Record], config: FASBConfig | None = None, *,
             activations: torch.Tensor | None = None, progress: bool = False,
             sigma_texts: Sequence[str] | None = None, val_groups: Collection[str] | None = None) -> FASBFit:
    """Fit FASB from labelled ``(prompt, answer, label[, group])`` records: ITI's probes, top ``k`` heads,
    directions and sigma (:func:`~steerlab.interventions.iti.fit_iti`, same arguments)."""
    cfg = config or FASBConfig()
    fit = fit_iti(lm, records, cfg.iti_config(), activations=activations, progress=progress,
                  sigma_texts=sigma_texts, val_groups=val_groups)
    return FASBFit(fit, cfg)


def save_fasb(fit: FASBFit, path: str | PathLike[str], data: Mapping[str, Any] | None = None) -> Path:
    """Save a whole fit atomically as one ``"fasb"`` artifact: ITI's tensors (probes, directions, sigma,
    heads, split; see :func:`~steerlab.interventions.iti.iti_artifact`) and FASB's config in ``params``."""
    art = iti_artifact(fit.iti, data)
    art = replace(art, kind=FASB_KIND, method="fasb", params={**art.params, "fasb": asdict(fit.config)})
    return save_intervention(art, path)


def load_fasb(path: str | PathLike[str], lm: LoadedModel | None = None) -> FASBFit:
    """Read a fit saved by :func:`save_fasb`; with ``lm``, refused unless it fits that model."""
    art = load_intervention(path, lm, kind=FASB_KIND)
    params = dict(art.params)
    raw = params.pop("fasb", None)
    if not isinstance(raw, dict):
        raise VectorError("the fasb artifact lacks its FASB settings (params.fasb)")
    known = {f.name for f in fields(FASBConfig)}
    try:
        config = FASBConfig(**{k: v for k, v in raw.items() if k in known})
    except (TypeError, ValueError) as e:
        raise VectorError(f"the fasb artifact has bad hyper-parameters: {e}") from None
    iti = iti_from_artifact(replace(art, kind="iti", params=params))
    return FASBFit(iti, config)
