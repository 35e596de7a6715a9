"""FASB: Flexible Activation Steering with Backtracking (arXiv 2508.17621), on steerlab's runtime.

What the reference code (gjw185/FASB, ``FASB_utils.py::tqa_run_answers``) does, and what this module
does (``docs/fasb.md``):

* **Fit** (ITI's recipe, :func:`~steerlab.interventions.iti.fit_iti`): per-head probes on the ``o_proj``
  input at the last token of ``"Q: {question} A: {choice}"``, the top ``k`` heads by validation accuracy,
  a unit direction per head (mass-mean, the reference's setting, or the probe weights) and its scale
  ``sigma``. :class:`FASBFit` keeps all of it; :func:`save_fasb` writes one ``"fasb"`` artifact.
* **Generate** (:func:`fasb_generate`, a :class:`FASBMonitor` inside :func:`steerlab.generate`): decoding
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
from ..checks import check_strength
from ..generate import GenerationOutput, generate
from ..models import LoadedModel
from ..monitors import Rewind, RowAnswer, SetSteer, StepReading, Stop
from ..probes import DIRECTIONS, TIES, Head, shift_vector
from ..sites import Site, SiteKind
from ..vectors import SteeringVector
from .iti import ITIConfig, ITIFit, Record, fit_iti, iti_artifact, iti_from_artifact

__all__ = [
    "FASBConfig",
    "SEMANTICS",
    "DETECT",
    "Signal",
    "HeadSignal",
    "LinearSignal",
    "FASBEvent",
    "FASBMonitor",
    "FASBSteering",
    "MCTrigger",
    "FASBOutput",
    "FASBFit",
    "fit_fasb",
    "fasb_generate",
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
    """One logistic probe ``sigmoid(w . x + b)`` at one site (e.g. the residual stream of a layer)."""

    def __init__(self, site: Site, weight: torch.Tensor, bias: float = 0.0) -> None:
        if weight.ndim != 1:
            raise ValueError(f"a linear probe's weight must be a vector, got shape {tuple(weight.shape)}")
        self.site, self.weight, self.bias = site, weight.float(), float(bias)
        self.sites = [site]

    def p_true(self, acts: Mapping[str, torch.Tensor]) -> torch.Tensor:
        x = acts[self.site.key].float()
        return torch.sigmoid(x @ self.weight.to(x.device) + self.bias)


# ---------------------------------------------------------------------------------------------
# generation: the monitor


@dataclass(frozen=True)
class FASBEvent:
    """One decision that steered a row: at decode ``step``, with ``length`` tokens generated, ``p_true``
    was read; ``dropped`` token ids were removed (``kept`` tokens stayed) and steering went on at
    ``strength`` (``alpha * (1 - p_true)``, or ``alpha``). ``kind``: ``"backtrack"``, ``"steer"`` (no
    tokens dropped), ``"question"`` / ``"always"`` (decided on the prompt), ``"reestimate"``."""

    step: int
    length: int
    p_true: float
    strength: float
    kept: int
    dropped: tuple[int, ...]
    kind: str

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "dropped": list(self.dropped)}


@dataclass
class _Row:
    tokens: list[int] = field(default_factory=list)
    watching: bool = True
    base: int = 0  # kept length at the last backtrack: checks start s tokens after it
    cut: int | None = None  # tokens up to the end of the first stop string, once one appeared
    fired: int = 0
    checks: int = 0
    events: list[FASBEvent] = field(default_factory=list)


class FASBMonitor:
    """The per-call monitor of :func:`fasb_generate` (rows keep their own state: make one per call).

    It assumes it is the only monitor that rewinds rows (it keeps each row's tokens itself).

    ``stop`` strings (with the ``tokenizer``) end a row early *without changing its text up to the first stop
    string*: the row runs on until no later backtrack could reach that text (``s`` tokens past it, or at once
    when it is no longer monitored), so the cut text equals that of a run to the full budget, as the reference
    generates it (TruthfulQA answers are cut at the next "Q:"); rows that end this way are not checked there.
    """

    def __init__(self, steering: "FASBSteering", batch_size: int, stop: Sequence[str] = (),
                 tokenizer: Any = None) -> None:
        if stop and tokenizer is None:
            raise ValueError("stop strings need the tokenizer to find them")
        self.stop, self.tokenizer = tuple(stop), tokenizer
        self.steering = steering
        self.sites = list(steering.signal.sites)
        self.steer_sites = list(steering.shift.sites)
        self.rows = [_Row() for _ in range(batch_size)]
        self.p_trace: list[list[tuple[int, float]]] = [[] for _ in range(batch_size)]

    @property
    def events(self) -> list[list[FASBEvent]]:
        return [r.events for r in self.rows]

    def step(self, reading: StepReading) -> list[RowAnswer]:
        cfg, sv = self.steering.config, self.steering
        p_all = sv.signal.p_true(reading.acts).float().cpu().tolist()
        out: list[RowAnswer] = []
        for r, st in enumerate(self.rows):
            if not reading.active[r]:
                out.append(None)
                continue
            tok = reading.tokens[r]
            assert tok is not None
            st.tokens.append(int(tok))
            n = reading.lengths[r]
            if self.stop and st.cut is None:
                st.cut = self._cut(st.tokens)
            if not st.watching:
                out.append(Stop() if st.cut is not None else None)
                continue
            if cfg.detect != "answer":  # decided once, on the prompt's last token (the first reading)
                check = True
            else:
                check = n - st.base >= cfg.s or reading.finished[r]
            if check:
                p = float(p_all[r])
                self.p_trace[r].append((n, p))
                st.checks += 1
                answer = self._decide(reading.step, r, st, n, p)
                if answer is not None:
                    st.cut = self._cut(st.tokens) if self.stop else None
                    out.append(answer)
                    continue
            # the stop string's text is final once a backtrack can no longer reach it
            out.append(Stop() if st.cut is not None and (not st.watching or n + 1 - cfg.s >= st.cut) else None)
        return out

    def _cut(self, tokens: Sequence[int]) -> int | None:
        """How many of ``tokens`` it takes to complete the first stop string (None: none yet)."""
        if not self.stop or not tokens:
            return None
        tok = self.tokenizer
        if not any(x in tok.decode(tokens, skip_special_tokens=True) for x in self.stop):
            return None
        for c in range(1, len(tokens) + 1):
            if any(x in tok.decode(tokens[:c], skip_special_tokens=True) for x in self.stop):
                return c
        return None  # pragma: no cover - the full text contains it

    def _decide(self, step: int, r: int, st: _Row, n: int, p: float) -> RowAnswer:
        cfg, shift = self.steering.config, self.steering.shift
        if cfg.detect != "answer":
            st.watching = False
            if cfg.detect == "question" and not p < cfg.threshold:
                return None
            strength = cfg.alpha if cfg.detect == "always" or not cfg.adaptive else cfg.alpha * (1 - p)
            # the first token was chosen unsteered: drop it and choose it again from the steered prompt end
            dropped = tuple(st.tokens[-n:])
            del st.tokens[-n:]
            st.events.append(FASBEvent(step, n, p, strength, 0, dropped, cfg.detect))
            return (Rewind(n), SetSteer(shift, strength))
        if p < cfg.threshold and st.fired < cfg.max_backtracks:
            strength = cfg.alpha * (1 - p) if cfg.adaptive else cfg.alpha
            drop = min(cfg.s, n) if cfg.backtrack else 0
            dropped = tuple(st.tokens[n - drop:]) if drop else ()
            if drop:
                del st.tokens[n - drop:]
            st.fired += 1
            st.base = n - drop
            st.watching = cfg.monitor_after
            st.events.append(FASBEvent(step, n, p, strength, n - drop, dropped, "backtrack" if drop else "steer"))
            return (Rewind(drop), SetSteer(shift, strength)) if drop else SetSteer(shift, strength)
        if cfg.reestimate and st.fired:
            strength = cfg.alpha * (1 - p) if cfg.adaptive else cfg.alpha
            st.events.append(FASBEvent(step, n, p, strength, n, (), "reestimate"))
            return SetSteer(shift, strength)
        return None


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

    def monitor(self, batch_size: int, stop: Sequence[str] = (), tokenizer: Any = None) -> FASBMonitor:
        return FASBMonitor(self, batch_size, stop, tokenizer)

    def max_steps(self, max_new_tokens: int) -> int:
        """Decode steps a call may need: the budget plus what each backtrack can drop, and one step more."""
        return max_new_tokens + self.config.max_backtracks * (self.config.s + 1) + 2

    def generate_kwargs(self, batch_size: int, max_new_tokens: int, stop: Sequence[str] = (),
                        tokenizer: Any = None) -> dict[str, Any]:
        """Keyword arguments for :func:`steerlab.generate`: a fresh monitor, the cache semantics, the step cap.
        ``stop`` strings go to the monitor (:class:`FASBMonitor`), not to ``generate``: the reference generates
        to EOS or the budget and checks there, then cuts the text; the monitor ends a row only once its text up
        to the stop string is final."""
        return {"monitors": [self.monitor(batch_size, stop, tokenizer)], "kv_cache": self.config.kv_cache,
                "max_steps": self.max_steps(max_new_tokens), "stop": None}

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


@dataclass
class FASBOutput(GenerationOutput):
    """:class:`~steerlab.generate.GenerationOutput` plus, per row, FASB's decisions (``events``) and the
    ``(length, p_true)`` pairs it checked (``p_trace``)."""

    events: list[list[FASBEvent]] = field(default_factory=list)
    p_trace: list[list[tuple[int, float]]] = field(default_factory=list)

    @property
    def backtracked(self) -> list[bool]:
        return [any(e.kind == "backtrack" for e in ev) for ev in self.events]

    @property
    def steered(self) -> list[bool]:
        return [bool(ev) for ev in self.events]


def fasb_generate(lm: LoadedModel, prompts: str | Sequence[str], steering: "FASBSteering | FASBFit", *,
                  max_new_tokens: int = 50, stop: str | Sequence[str] | None = None, chat: bool = False,
                  system: str | None = None, progress: bool = False) -> FASBOutput:
    """Greedy FASB generation (module doc) through :func:`steerlab.generate` with a :class:`FASBMonitor`.

    ``max_new_tokens`` is the budget of the final answer (kept + regenerated tokens; the reference: 50).
    ``stop`` strings: the text is cut at the first one, and a row ends once that text can no longer change
    (see :class:`FASBMonitor`): the same cut texts as a run to the full budget, faster.
    """
    sv = steering.steering(lm) if isinstance(steering, FASBFit) else steering
    items = [prompts] if isinstance(prompts, str) else list(prompts)
    stops = () if stop is None else (stop,) if isinstance(stop, str) else tuple(stop)
    kw = sv.generate_kwargs(len(items), max_new_tokens, stops, lm.tokenizer)
    out = generate(lm, items, max_new_tokens=max_new_tokens, chat=chat, system=system, progress=progress, **kw)
    mon: FASBMonitor = kw["monitors"][0]
    texts = [_cut_text(t, stops) for t in out.texts]
    reasons = ["stop" if t != raw else why for t, raw, why in zip(texts, out.texts, out.finish_reasons)]
    return FASBOutput(texts, out.tokens, out.prompts, reasons, mon.events, mon.p_trace)


def _cut_text(text: str, stops: Sequence[str]) -> str:
    cut = min((text.find(x) for x in stops if x in text), default=-1)
    return text if cut < 0 else text[:cut]


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
