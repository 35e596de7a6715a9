"""FASB's generation: the monitor that decides per row when to back up and how strongly to steer, on
:func:`steerlab.generate` (monitors, per-row ``Rewind`` / ``SetSteer``, ``kv_cache="unsteered"`` for the
reference's semantics). The method's fit, signals, config and multiple-choice rule are in
:mod:`steerlab.interventions.fasb`; ``docs/fasb.md`` describes the algorithm as the reference code runs it.

Per row, after every new token once at least ``s`` tokens exist (always at EOS or the last allowed step),
``p_true`` is read at the position just processed; if ``p_true < threshold`` the row drops its last ``s``
tokens (all of them if it has no more) and goes on steered with ``alpha * (1 - p_true)`` times the shift, for
the rest of the answer: one backtrack, no monitoring after it (options: several, re-estimating), the budget
counting kept + regenerated tokens. Rows of a batch decide and back up independently.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

from .generate import GenerationOutput, generate
from .interventions.fasb import FASBFit, FASBSteering
from .models import LoadedModel
from .monitors import Rewind, RowAnswer, SetSteer, StepReading, Stop

__all__ = ["FASBEvent", "FASBMonitor", "FASBOutput", "fasb_generate", "generate_kwargs", "max_steps"]


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

    def __init__(self, steering: FASBSteering, batch_size: int, stop: Sequence[str] = (),
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


def max_steps(steering: FASBSteering, max_new_tokens: int) -> int:
    """Decode steps a call may need: the budget plus what each backtrack can drop, and one step more."""
    return max_new_tokens + steering.config.max_backtracks * (steering.config.s + 1) + 2


def generate_kwargs(steering: FASBSteering, batch_size: int, max_new_tokens: int, stop: Sequence[str] = (),
                    tokenizer: Any = None) -> dict[str, Any]:
    """Keyword arguments for :func:`steerlab.generate`: a fresh :class:`FASBMonitor`, the cache semantics, the
    step cap. ``stop`` strings go to the monitor, not to ``generate``: the reference generates to EOS or the
    budget and checks there, then cuts the text; the monitor ends a row only once its text up to the stop
    string is final."""
    return {"monitors": [FASBMonitor(steering, batch_size, stop, tokenizer)], "kv_cache": steering.config.kv_cache,
            "max_steps": max_steps(steering, max_new_tokens), "stop": None}


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


def fasb_generate(lm: LoadedModel, prompts: str | Sequence[str], steering: FASBSteering | FASBFit, *,
                  max_new_tokens: int = 50, stop: str | Sequence[str] | None = None, chat: bool = False,
                  system: str | None = None, progress: bool = False,
                  on_step: Callable[[list[list[int]]], None] | None = None) -> FASBOutput:
    """Greedy FASB generation (module doc) through :func:`steerlab.generate` with a :class:`FASBMonitor`.

    ``max_new_tokens`` is the budget of the final answer (kept + regenerated tokens; the reference: 50).
    ``stop`` strings: the text is cut at the first one, and a row ends once that text can no longer change
    (see :class:`FASBMonitor`): the same cut texts as a run to the full budget, faster. ``on_step``: see
    :func:`steerlab.generate` (each row's kept tokens after every step: a backtrack shortens them).
    """
    sv = steering.steering(lm) if isinstance(steering, FASBFit) else steering
    items = [prompts] if isinstance(prompts, str) else list(prompts)
    stops = () if stop is None else (stop,) if isinstance(stop, str) else tuple(stop)
    kw = generate_kwargs(sv, len(items), max_new_tokens, stops, lm.tokenizer)
    out = generate(lm, items, max_new_tokens=max_new_tokens, chat=chat, system=system, progress=progress,
                   on_step=on_step, **kw)
    mon: FASBMonitor = kw["monitors"][0]
    texts = [_cut_text(t, stops) for t in out.texts]
    reasons = ["stop" if t != raw else why for t, raw, why in zip(texts, out.texts, out.finish_reasons)]
    return FASBOutput(texts, out.tokens, out.prompts, reasons, mon.events, mon.p_trace)


def _cut_text(text: str, stops: Sequence[str]) -> str:
    cut = min((text.find(x) for x in stops if x in text), default=-1)
    return text if cut < 0 else text[:cut]
