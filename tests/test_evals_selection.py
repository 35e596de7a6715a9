"""Validation selection: the rule (metric, ties, coherence floor) and grids that grow past their edges."""

from __future__ import annotations

import pytest

from steerlab.evals.selection import Candidate, Rule, choose, doubling, extend, grid, search, stepping


def _c(cfg, **m):
    return Candidate(cfg, m)


def test_rule_picks_the_best_eligible_with_ties() -> None:
    cands = [_c({"a": 1}, mc2=0.5, mc1=0.2), _c({"a": 2}, mc2=0.6, mc1=0.1), _c({"a": 3}, mc2=0.6, mc1=0.3)]
    ch = choose(cands, Rule("mc2", ("mc1",)))
    assert ch.config == {"a": 3} and ch.eligible == [True] * 3 and not ch.fallback
    assert choose(cands[:2], Rule("mc2")).config == {"a": 2}
    # NaN or missing metrics never win
    assert choose([_c({"a": 1}, mc2=float("nan")), _c({"a": 2}, mc2=0.1)], Rule("mc2")).config == {"a": 2}


def test_coherence_floor() -> None:
    """True*Info is maximised over configurations whose coherence is at least the unsteered one minus the margin."""
    ref = {"coherence": -1.0, "true_info": 0.3}
    cands = [_c({"m": 1}, true_info=0.35, coherence=-1.2), _c({"m": 4}, true_info=0.6, coherence=-1.6),
             _c({"m": 2}, true_info=0.4, coherence=-1.5)]
    rule = Rule("true_info", coherence="coherence", margin=0.5)
    ch = choose(cands, rule, ref)
    assert ch.config == {"m": 2} and ch.eligible == [True, False, True]
    assert rule.describe() == "max true_info with coherence >= unsteered - 0.5"
    # nothing coherent enough: the most coherent, flagged
    fb = choose(cands, Rule("true_info", coherence="coherence", margin=0.1), ref)
    assert fb.fallback and fb.config == {"m": 1}
    with pytest.raises(ValueError, match="^the rule needs the unsteered reference's 'coherence'$"):
        choose(cands, rule, None)
    with pytest.raises(ValueError, match="^margin must be a finite number >= 0, got -1$"):
        Rule("x", margin=-1)


def test_grid_and_extend() -> None:
    assert grid({"a": [1, 2], "b": ["x", "y"]}) == [{"a": 1, "b": "x"}, {"a": 1, "b": "y"}, {"a": 2, "b": "x"},
                                                   {"a": 2, "b": "y"}]
    steps = {"layer": stepping(3, 0, 29), "mult": doubling(0.25, 100.0)}
    grown, stuck = extend({"layer": [9, 12], "mult": [2.0, 5.0]}, {"layer": 12, "mult": 2.0}, steps)
    assert grown == {"layer": [9, 12, 15], "mult": [1.0, 2.0, 5.0]} and stuck == []
    grown, stuck = extend({"layer": [24, 27], "mult": [2.0, 5.0]}, {"layer": 27, "mult": 5.0}, steps)
    assert grown == {"layer": [24, 27], "mult": [2.0, 5.0, 10.0]} and stuck == ["layer"]  # 30 > 29
    assert doubling(1, 270, integer=True)(48, 1) == 96 and doubling(1, 270, integer=True)(1, -1) is None


def test_search_grows_until_the_best_is_inside() -> None:
    """A concave score peaking at mult 16: the grid [2, 4] grows to 32 and stops with 16 inside."""
    calls = []

    def evaluate(cfg):
        calls.append(cfg["mult"])
        return {"score": -abs(cfg["mult"] - 16)}

    ch = search({"mult": [2.0, 4.0]}, evaluate, Rule("score"), steps={"mult": doubling(0.5, 1000)}, max_rounds=5)
    assert ch.config == {"mult": 16.0} and ch.at_edge == []
    assert calls == [2.0, 4.0, 8.0, 16.0, 32.0]  # each point once
    capped = search({"mult": [2.0, 4.0]}, lambda c: {"score": c["mult"]}, Rule("score"),
                    steps={"mult": doubling(0.5, 1000)}, max_rounds=1)
    assert capped.config == {"mult": 8.0} and capped.at_edge == ["mult"]  # rounds ran out at the edge
    d = capped.to_dict()
    assert d["chosen"] == {"mult": 8.0} and [c["config"]["mult"] for c in d["candidates"]] == [2.0, 4.0, 8.0]
