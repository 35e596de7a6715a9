"""Choosing hyper-parameters on validation data: one selection rule and grids that grow past their edges.

A :class:`Rule` names the metric to maximise (ties broken by ``tiebreak``) and, for generation,
a coherence floor: a configuration is eligible only when its ``coherence`` metric is at least the
unsteered model's minus ``margin`` (issue #11: True*Info with coherence >= unsteered - margin).
:func:`search` evaluates every point of a grid, and while the best point sits on an edge of an
axis that can be extended (a :data:`Step` gives the next value past the edge), adds that value
and evaluates the new points: so no chosen value sits at an edge of what was tried, unless the
axis cannot go further (a bound) or ``max_rounds`` is reached; :class:`Choice` records which.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

__all__ = ["Rule", "Candidate", "Choice", "Step", "grid", "choose", "extend", "search", "doubling", "stepping",
           "config_key"]

Metrics = Mapping[str, Any]
#: ``step(value, side)`` -> the next value past an edge (``side`` +1: above the largest, -1: below the
#: smallest), or None when the axis cannot go further that way
Step = Callable[[Any, int], Any]


@dataclass(frozen=True)
class Rule:
    """Maximise ``metric`` (then ``tiebreak``, in order) over the eligible configurations.

    With ``coherence`` set, a configuration is eligible when ``metrics[coherence] >=
    reference[coherence] - margin`` (``reference``: the unsteered model's metrics on the same items).
    """

    metric: str
    tiebreak: tuple[str, ...] = ()
    coherence: str | None = None
    margin: float = 0.0

    def __post_init__(self) -> None:
        if not self.metric:
            raise ValueError("the selection rule needs a metric")
        if not math.isfinite(self.margin) or self.margin < 0:
            raise ValueError(f"margin must be a finite number >= 0, got {self.margin!r}")

    def describe(self) -> str:
        text = f"max {self.metric}" + (f" (ties: {', '.join(self.tiebreak)})" if self.tiebreak else "")
        if self.coherence:
            text += f" with {self.coherence} >= unsteered - {self.margin:g}"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "tiebreak": list(self.tiebreak), "coherence": self.coherence,
                "margin": self.margin, "text": self.describe()}


@dataclass(frozen=True)
class Candidate:
    """One evaluated configuration and its validation metrics."""

    config: dict[str, Any]
    metrics: dict[str, Any]


@dataclass
class Choice:
    """The chosen configuration, every candidate, and why."""

    config: dict[str, Any]
    metrics: dict[str, Any]
    rule: Rule
    candidates: list[Candidate] = field(default_factory=list)
    eligible: list[bool] = field(default_factory=list)
    reference: dict[str, Any] | None = None
    #: no candidate met the coherence floor: the most coherent one was taken
    fallback: bool = False
    #: axes whose chosen value is still at an edge of what was tried (a bound, or rounds ran out)
    at_edge: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"chosen": self.config, "metrics": self.metrics, "rule": self.rule.to_dict(),
                "reference": self.reference, "fallback": self.fallback, "at_edge": self.at_edge,
                "candidates": [{"config": c.config, "metrics": c.metrics, "eligible": e}
                               for c, e in zip(self.candidates, self.eligible)]}


def config_key(config: Mapping[str, Any]) -> str:
    """A canonical text for a configuration (for caches and file names)."""
    return json.dumps(dict(config), sort_keys=True, separators=(",", ":"), default=str)


def grid(axes: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every combination of the axes' values (the first axis varies slowest)."""
    names = list(axes)
    for n in names:
        if not list(axes[n]):
            raise ValueError(f"grid axis '{n}' has no values")
    return [dict(zip(names, combo)) for combo in itertools.product(*(list(axes[n]) for n in names))]


def _num(x: Any) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return -math.inf
    return v if math.isfinite(v) else -math.inf


def choose(candidates: Sequence[Candidate], rule: Rule, reference: Metrics | None = None) -> Choice:
    """The best candidate under ``rule`` (first wins a full tie); see :class:`Rule`."""
    if not candidates:
        raise ValueError("no candidates to choose from")
    if rule.coherence is not None:
        if reference is None or rule.coherence not in reference:
            raise ValueError(f"the rule needs the unsteered reference's '{rule.coherence}'")
        floor = _num(reference[rule.coherence]) - rule.margin
        eligible = [_num(c.metrics.get(rule.coherence)) >= floor for c in candidates]
    else:
        eligible = [True] * len(candidates)
    pool = [i for i, e in enumerate(eligible) if e]
    fallback = not pool
    if fallback:  # nothing is coherent enough: the most coherent candidate
        best = max(range(len(candidates)), key=lambda i: (_num(candidates[i].metrics.get(rule.coherence or "")), -i))
    else:
        best = max(pool, key=lambda i: (*(_num(candidates[i].metrics.get(m)) for m in (rule.metric, *rule.tiebreak)),
                                        -i))
    c = candidates[best]
    return Choice(dict(c.config), dict(c.metrics), rule, list(candidates), eligible,
                  None if reference is None else dict(reference), fallback)


def extend(axes: Mapping[str, Sequence[Any]], best: Mapping[str, Any],
           steps: Mapping[str, Step]) -> tuple[dict[str, list[Any]], list[str]]:
    """The axes with a value added past each edge the best configuration sits on (when its step allows),
    and the axes whose best value stays at an edge (no step, or the step says stop)."""
    out = {n: list(v) for n, v in axes.items()}
    stuck = []
    for name, values in axes.items():
        vals = list(values)
        if len(vals) < 1 or name not in best:
            continue
        order = sorted(vals)
        side = 1 if best[name] == order[-1] else (-1 if best[name] == order[0] else 0)
        if side == 0 or len(set(vals)) == 1 and name not in steps:
            continue
        step = steps.get(name)
        nxt = None if step is None else step(best[name], side)
        if nxt is None or nxt in vals:
            stuck.append(name)
            continue
        out[name] = sorted([*vals, nxt])
    return out, stuck


def search(axes: Mapping[str, Sequence[Any]], evaluate: Callable[[dict[str, Any]], Metrics], rule: Rule,
           reference: Metrics | None = None, steps: Mapping[str, Step] | None = None,
           max_rounds: int = 3) -> Choice:
    """Evaluate the grid, then grow it past the chosen edges (at most ``max_rounds`` times); the choice.

    ``evaluate(config)`` returns the validation metrics of one configuration; it is called once per
    configuration (callers cache across runs, e.g. one file per configuration).
    """
    steps = dict(steps or {})
    cur = {n: list(v) for n, v in axes.items()}
    seen: dict[str, Candidate] = {}
    choice: Choice | None = None
    for round_ in range(max_rounds + 1):
        for cfg in grid(cur):
            key = config_key(cfg)
            if key not in seen:
                seen[key] = Candidate(dict(cfg), dict(evaluate(dict(cfg))))
        choice = choose(list(seen.values()), rule, reference)
        grown, stuck = extend(cur, choice.config, steps)
        if grown == cur or round_ == max_rounds:
            choice.at_edge = stuck if grown == cur else sorted(n for n in cur if grown[n] != cur[n]) + stuck
            break
        cur = grown
    assert choice is not None
    return choice


def doubling(lo: float | None = None, hi: float | None = None, integer: bool = False) -> Step:
    """Double past the top edge, halve past the bottom one, within ``[lo, hi]``."""

    def step(value: Any, side: int) -> Any:
        nxt = value * 2 if side > 0 else value / 2
        if integer:
            nxt = int(round(nxt))
            if nxt == value:
                return None
        if (lo is not None and nxt < lo) or (hi is not None and nxt > hi):
            return None
        return nxt

    return step


def stepping(delta: int, lo: int, hi: int) -> Step:
    """Integer steps of ``delta`` past an edge, within ``[lo, hi]`` (e.g. layers)."""

    def step(value: Any, side: int) -> Any:
        nxt = int(value) + side * delta
        return nxt if lo <= nxt <= hi else None

    return step
