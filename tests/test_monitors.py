"""Monitors in ``generate``: per-row rewind / re-steer / stop, checked token for token against fresh runs."""

from __future__ import annotations

import importlib
import threading
from dataclasses import dataclass, field
from typing import Any, Sequence

import pytest
import torch

import steerlab as sl
from steerlab.capture import capture
from steerlab.generate import eos_ids
from steerlab.hooks import HookManager
from steerlab.interventions.add import AddIntervention, Steer
from steerlab.monitors import Continue, Monitor, Rewind, RowAnswer, SetSteer, StepReading, Stop
from steerlab.sites import Site
from steerlab.testing import tiny_model

FAMILIES = ["llama", "qwen2", "gpt2"]
PROMPTS = ["abc", "hello world, again", "x", "The quick brown fox"]  # different lengths: left padding
N = 12  # new tokens


def _tiny(family: str) -> sl.LoadedModel:
    """A tiny model whose greedy output is varied (default init repeats one token), float32."""
    lm = tiny_model(family)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in lm.model.named_parameters():
            if p.ndim == 2:
                p.normal_(0, 0.3, generator=g)
            elif name.endswith("bias"):
                p.normal_(0, 0.1, generator=g)
    return lm


@pytest.fixture(scope="module", params=FAMILIES + ["embedded"])
def lm(request) -> sl.LoadedModel:
    return request.getfixturevalue("embedded") if request.param == "embedded" else _tiny(request.param)


def _layer(lm: sl.LoadedModel) -> int:
    return lm.adapter.n_layers // 2


def _vec(lm: sl.LoadedModel, seed: int = 0, scale: float = 40.0) -> sl.SteeringVector:
    a = lm.adapter
    v = torch.randn(a.hidden_size, generator=torch.Generator().manual_seed(seed))
    meta = sl.VectorMeta(model_name=lm.name, architecture=a.family, hidden_size=a.hidden_size, n_layers=a.n_layers)
    return sl.SteeringVector({f"residual.{_layer(lm)}": v * scale / v.norm()}, meta)


def _prompt_ids(lm: sl.LoadedModel, prompt: str) -> list[int]:
    return lm.encode([prompt])["input_ids"][0].tolist()


@dataclass
class Segment:
    """Steer with ``vector * strength`` at positions ``[start, end)`` (the reference's own edit)."""

    vector: sl.SteeringVector
    strength: float
    start: int
    end: int = 1 << 40


@torch.no_grad()
def fresh(lm: sl.LoadedModel, ids: Sequence[int], n: int, segments: Sequence[Segment] = ()) -> list[int]:
    """Greedy reference: one row, no padding, no KV cache, a full forward per token, steering by a hook
    written here (not steerlab's). Stops after EOS (not included) or ``n`` tokens."""
    eos = set(eos_ids(lm))
    hooks = HookManager(lm.model, lm.adapter)
    for seg in segments:
        for key, v in seg.vector.vectors.items():
            def edit(x, site, state, v=v, seg=seg):
                pos = torch.arange(x.shape[1])
                m = ((pos >= seg.start) & (pos < seg.end)).to(x.dtype)[None, :, None]
                return x + m * (v * seg.strength).to(x.dtype)
            hooks.add(Site.parse(key), edit)
    seq, out = list(ids), []
    with hooks:
        for _ in range(n):
            t = int(lm.model(input_ids=torch.tensor([seq])).logits[0, -1].argmax())
            if t in eos:
                break
            out.append(t)
            seq.append(t)
    return out


@dataclass
class Script:
    """A monitor that answers ``plan[(step, row)]`` and records every reading."""

    plan: dict[tuple[int, int], RowAnswer]
    sites: Sequence[Site] = ()
    steer_sites: Sequence[Site] = ()
    readings: list[StepReading] = field(default_factory=list)

    def step(self, reading: StepReading) -> list[RowAnswer]:
        self.readings.append(reading)
        return [self.plan.get((reading.step, r)) for r in range(reading.batch_size)]


def test_script_is_a_monitor() -> None:
    assert isinstance(Script({}), Monitor)


def test_noop_monitor_gives_identical_tokens(lm) -> None:
    v = _vec(lm)
    for kw in ({}, {"steer": [v, None, v, None], "where": "generated"}):
        plain = sl.generate(lm, PROMPTS, max_new_tokens=N, **kw)
        watched = sl.generate(lm, PROMPTS, max_new_tokens=N, monitors=[Script({}, [Site.residual(1)])], **kw)
        assert watched.tokens == plain.tokens
        assert watched.finish_reasons == plain.finish_reasons


def test_rewind_rows_independently_equals_fresh_run(lm) -> None:
    """Rows rewound at different steps (row 2 by everything it had) continue exactly as a fresh run from
    their kept tokens; a rewind with a new steering continues as a fresh run steered from that position;
    untouched rows equal a plain run."""
    v = _vec(lm, seed=3)
    plain = sl.generate(lm, PROMPTS, max_new_tokens=N)
    assert all(len(t) == N for t in plain.tokens[1:3])
    plan: dict[tuple[int, int], RowAnswer] = {(5, 1): Rewind(3), (0, 2): Rewind(1), (3, 2): Rewind(2),
                                              (7, 3): (Rewind(4), SetSteer(v, 1.0))}
    site = [Site.residual(_layer(lm))]
    out = sl.generate(lm, PROMPTS, max_new_tokens=N, monitors=[Script(plan, steer_sites=site)])
    assert out.tokens[0] == plain.tokens[0]
    # row 1: 6 tokens at step 5, 3 kept; a fresh run from prompt + those 3
    kept = plain.tokens[1][:3]
    assert out.tokens[1] == kept + fresh(lm, _prompt_ids(lm, PROMPTS[1]) + kept, N - 3)
    assert out.tokens[1] == plain.tokens[1]  # greedy: the same continuation again
    assert out.tokens[2] == plain.tokens[2] == fresh(lm, _prompt_ids(lm, PROMPTS[2]), N)
    # row 3: 8 tokens at step 7, 4 kept, steered from the last kept token on
    ids3 = _prompt_ids(lm, PROMPTS[3])
    kept = plain.tokens[3][:4]
    cont = fresh(lm, ids3 + kept, N - 4, [Segment(v, 1.0, len(ids3) + 3)])
    assert out.tokens[3] == kept + cont
    assert out.tokens[3] != plain.tokens[3]  # the new steering acts
    # the readings: lengths per row as the plan implies
    mon = Script({})
    sl.generate(lm, PROMPTS, max_new_tokens=N, monitors=[Script(plan, steer_sites=site), mon])
    # (a reading is taken before that step's actions)
    assert [r.lengths[1] for r in mon.readings[:8]] == [1, 2, 3, 4, 5, 6, 4, 5]
    assert [r.lengths[2] for r in mon.readings[:5]] == [1, 1, 2, 3, 2]


def test_rewind_with_cache_equals_without(lm) -> None:
    v = _vec(lm, seed=5)
    plan = {(4, 0): (Rewind(2), SetSteer(v)), (6, 3): Rewind(5), (2, 1): Stop()}
    kw = dict(max_new_tokens=8, steer=[None, v, None, v], where="generated")
    cached = sl.generate(lm, PROMPTS, monitors=[Script(plan)], **kw)
    full = sl.generate(lm, PROMPTS, monitors=[Script(plan)], use_cache=False, **kw)
    assert cached.tokens == full.tokens and cached.finish_reasons == full.finish_reasons


def test_rewound_row_that_hit_eos_continues() -> None:
    lm = _tiny("llama")
    plain = sl.generate(lm, PROMPTS, max_new_tokens=N)
    stop_tok = plain.tokens[0][3]  # make row 0 end at its 4th token
    lm.model.generation_config.eos_token_id = [lm.tokenizer.eos_token_id, stop_tok]
    ended = sl.generate(lm, PROMPTS, max_new_tokens=N)
    first = plain.tokens[0].index(stop_tok)
    assert ended.tokens[0] == plain.tokens[0][:first] and ended.finish_reasons[0] == "eos"
    v = _vec(lm, seed=11)
    # at step 7 row 0 has ended (EOS at step `first`): drop EOS and one more token, steer from there
    mon = Script({(7, 0): (Rewind(2), SetSteer(v, 1.0))}, steer_sites=[Site.residual(_layer(lm))])
    out = sl.generate(lm, PROMPTS, max_new_tokens=N, monitors=[mon])
    assert mon.readings[7].finished[0] and not mon.readings[7].active[0] and mon.readings[7].tokens[0] is None
    ids0 = _prompt_ids(lm, PROMPTS[0])
    kept = plain.tokens[0][:first + 1 - 2]
    cont = fresh(lm, ids0 + kept, N - len(kept), [Segment(v, 1.0, len(ids0) + len(kept) - 1)])
    assert out.tokens[0] == kept + cont
    assert len(out.tokens[0]) > first  # it went on past where it had ended
    assert out.tokens[1:] == ended.tokens[1:]


def test_set_steer_from_a_step_equals_window_from_there(lm) -> None:
    v = _vec(lm, seed=7)
    plain = sl.generate(lm, PROMPTS, max_new_tokens=N)
    # row 1 steered on at step 4 (5 tokens then), row 2 steered from the start and switched off at step 3
    mon = Script({(4, 1): SetSteer(Steer(v, 0.5, "prompt"), strength=1.0), (3, 2): SetSteer(None)})
    out = sl.generate(lm, PROMPTS, max_new_tokens=N, steer=[None, None, v, None], where="all", monitors=[mon])
    ids1, ids2 = _prompt_ids(lm, PROMPTS[1]), _prompt_ids(lm, PROMPTS[2])
    start1 = len(ids1) + 4
    assert out.tokens[1] == sl.generate(lm, PROMPTS[1], steer=v, where=start1, max_new_tokens=N).tokens[0]
    assert out.tokens[1] == plain.tokens[1][:5] + fresh(lm, ids1 + plain.tokens[1][:5], N - 5, [Segment(v, 1.0, start1)])
    steered2 = sl.generate(lm, PROMPTS[2], steer=v, max_new_tokens=4).tokens[0]
    assert out.tokens[2][:4] == steered2
    assert out.tokens[2] == steered2 + fresh(lm, ids2 + steered2, N - 4, [Segment(v, 1.0, 0, len(ids2) + 3)])
    assert out.tokens[0] == plain.tokens[0] and out.tokens[3] == plain.tokens[3]


def test_stop_ends_a_row(lm) -> None:
    plain = sl.generate(lm, PROMPTS, max_new_tokens=N)
    out = sl.generate(lm, PROMPTS, max_new_tokens=N, monitors=[Script({(3, 1): Stop(), (2, 3): Continue()})])
    assert out.tokens[1] == plain.tokens[1][:4] and out.finish_reasons[1] == "stopped"
    assert [out.tokens[i] for i in (0, 2, 3)] == [plain.tokens[i] for i in (0, 2, 3)]
    assert [out.finish_reasons[i] for i in (0, 2, 3)] == [plain.finish_reasons[i] for i in (0, 2, 3)]


def test_readings_equal_capture(lm) -> None:
    layer = _layer(lm)
    sites = [Site.residual(layer), Site("heads", layer), Site("mlp_out", 1)]
    mon = Script({(2, 1): Rewind(2)}, sites)
    out = sl.generate(lm, PROMPTS, max_new_tokens=6, monitors=[mon])
    a = lm.adapter
    widths = {"residual": a.hidden_size, "heads": a.heads_width, "mlp_out": a.hidden_size}
    first = mon.readings[0]
    assert first.step == 0 and first.lengths == [1, 1, 1, 1] and first.active == [True] * 4
    for s in sites:
        assert first[s].shape == (4, widths[s.kind.value]) and first[s].dtype == torch.float32
    # step 0 reads the last prompt token: what capture records there
    cap = capture(lm, PROMPTS, sites, positions="last")
    for s in sites:
        torch.testing.assert_close(first[s].cpu(), cap.acts[s.key], atol=1e-4, rtol=1e-4)
    # later steps read the token fed at that step: compare with one unpadded full pass over the row's tokens
    plain = sl.generate(lm, PROMPTS, max_new_tokens=6)
    for step in (1, 3, 4):
        reading = mon.readings[step]
        for r in range(4):
            gen = plain.tokens[r]  # greedy: the rewound row 1 regenerates the same tokens
            n_in = step - 2 if r == 1 and step >= 3 else step  # generated tokens in the input (row 1 lost 2)
            ids = _prompt_ids(lm, PROMPTS[r]) + gen[:n_in]
            assert reading.tokens[r] == gen[n_in]
            got: dict[str, torch.Tensor] = {}

            def read(x, site, state):
                got[site.key] = x[0, -1].float()

            with torch.no_grad(), HookManager(lm.model, lm.adapter).add_many((s, read) for s in sites):
                lm.model(input_ids=torch.tensor([ids]))
            for s in sites:
                torch.testing.assert_close(reading[s][r].cpu(), got[s.key], atol=1e-4, rtol=1e-4)


def test_max_steps_and_bad_answers(tiny) -> None:
    class Always:
        sites = [Site.residual(0)]

        def step(self, reading: StepReading) -> list[RowAnswer]:
            return [Rewind(1) if reading.lengths[0] >= 2 and r == 0 else None for r in range(reading.batch_size)]

    out = sl.generate(tiny, ["abc", "de"], max_new_tokens=4, monitors=[Always()], max_steps=9)
    assert out.finish_reasons[0] == "max_steps" and len(out.tokens[0]) == 1
    with pytest.raises(ValueError, match=r"Rewind\(5\) for row 1: it has generated only 3 token\(s\)"):
        sl.generate(tiny, ["abc", "de"], max_new_tokens=6, monitors=[Script({(2, 1): Rewind(5)})])
    with pytest.raises(ValueError, match=r"Rewind\(k\) needs an integer k >= 1, got 0"):
        Rewind(0)
    with pytest.raises(ValueError, match="answered 1 entries for a batch of 2 rows"):
        sl.generate(tiny, ["abc", "de"], max_new_tokens=2, monitors=[_Short()])
    with pytest.raises(ValueError, match="SetSteer needs steering hooks"):
        sl.generate(tiny, ["abc", "de"], max_new_tokens=3, monitors=[Script({(1, 0): SetSteer(_vec(tiny))})])
    other = sl.SteeringVector({"residual.1": torch.ones(64)}, _vec(tiny).meta)
    with pytest.raises(ValueError, match=r"cannot steer site\(s\) residual.1 from here on"):
        sl.generate(tiny, ["abc", "de"], max_new_tokens=3, steer=_vec(tiny) * 0.0,
                    monitors=[Script({(1, 0): SetSteer(other)})])
    with pytest.raises(TypeError, match="unknown monitor action|a monitor answered"):
        sl.generate(tiny, ["abc", "de"], max_new_tokens=3, monitors=[Script({(1, 0): "rewind"})])  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="needs a 'sites' list and a step"):
        sl.generate(tiny, "abc", max_new_tokens=2, monitors=[object()])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="max_steps only applies with monitors"):
        sl.generate(tiny, "abc", max_new_tokens=2, max_steps=3)


class _Short:
    sites = [Site.residual(0)]

    def step(self, reading: StepReading) -> list[RowAnswer]:
        return [None]


def test_steer_sites_let_set_steer_start_without_steering(tiny) -> None:
    v = _vec(tiny, seed=2)
    mon = Script({(2, 0): SetSteer(v, 1.0)}, steer_sites=[Site.residual(_layer(tiny))])
    out = sl.generate(tiny, ["abc", "de"], max_new_tokens=6, monitors=[mon])
    ref = sl.generate(tiny, ["abc", "de"], steer=[Steer(v, 1.0, len(_prompt_ids(tiny, "abc")) + 2), None],
                      max_new_tokens=6)
    assert out.tokens == ref.tokens


def _snapshot(obj: Any) -> dict[str, Any]:
    return {k: [id(x) for x in v] if isinstance(v, list) else id(v) for k, v in vars(obj).items()}


def test_install_leaves_the_intervention_unchanged_and_threads_share_it() -> None:
    lm = _tiny("llama")
    v = _vec(lm, seed=4)
    iv = AddIntervention([Steer(v, 1.0, "generated")] * 2)
    before = _snapshot(iv)
    iv.install(HookManager(lm.model, lm.adapter), torch.tensor([3, 7]))
    assert _snapshot(iv) == before and set(vars(iv)) == {"steers"}
    batches = [["abc", "hello world, again"], ["The quick brown fox", "x"], ["abcdefgh", "yz"]]
    sequential = [sl.generate(lm, p, max_new_tokens=8, interventions=[iv]).tokens for p in batches]
    assert sequential[0] != sl.generate(lm, batches[0], max_new_tokens=8).tokens
    results: dict[int, list[list[int]]] = {}
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for _ in range(3):
                results[i] = sl.generate(lm, batches[i], max_new_tokens=8, interventions=[iv]).tokens
                assert results[i] == sequential[i]
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(batches))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert [results[i] for i in range(len(batches))] == sequential


def test_ctrl_c_with_a_monitor_keeps_the_kept_tokens(tiny, monkeypatch) -> None:
    gen_module = importlib.import_module("steerlab.generate")  # the module (steerlab.generate is the function)
    full = sl.generate(tiny, ["abc", "hello"], max_new_tokens=8)
    calls = {"n": 0}
    original = gen_module.select_next

    def select(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(gen_module, "select_next", select)
    with pytest.raises(gen_module.GenerationInterrupted) as info:
        sl.generate(tiny, ["abc", "hello"], max_new_tokens=8, monitors=[Script({(1, 0): Rewind(1)})])
    part = info.value.output
    assert part.tokens == [full.tokens[0][:2], full.tokens[1][:3]]  # row 0: 2 tokens, 1 dropped, 1 again
    assert part.finish_reasons == ["interrupted", "interrupted"]


@torch.no_grad()
def fresh_last(lm: sl.LoadedModel, ids: Sequence[int], n: int, v: sl.SteeringVector, strength: float,
               start: int) -> list[int]:
    """Greedy reference of ``kv_cache="unsteered"``: one row, no KV cache, the whole sequence recomputed at
    every step and only its *last* position steered (when it is ``>= start``), by a hook written here."""
    eos = set(eos_ids(lm))
    hooks = HookManager(lm.model, lm.adapter)
    for key, vec in v.vectors.items():
        def edit(x, site, state, vec=vec):
            if x.shape[1] - 1 < start:
                return None
            y = x.clone()
            y[:, -1] += (vec * strength).to(x.dtype)
            return y
        hooks.add(Site.parse(key), edit)
    seq, out = list(ids), []
    with hooks:
        for _ in range(n):
            t = int(lm.model(input_ids=torch.tensor([seq])).logits[0, -1].argmax())
            if t in eos:
                break
            out.append(t)
            seq.append(t)
    return out


def test_unsteered_cache_equals_a_last_position_recompute_loop(lm) -> None:
    v = _vec(lm, seed=3)
    out = sl.generate(lm, PROMPTS, steer=v, where="generated", max_new_tokens=N, kv_cache="unsteered")
    cached = sl.generate(lm, PROMPTS, steer=v, where="generated", max_new_tokens=N)
    for r, p in enumerate(PROMPTS):
        ids = _prompt_ids(lm, p)
        assert out.tokens[r] == fresh_last(lm, ids, N, v, 1.0, len(ids) - 1), r
    # the two semantics are different computations: the steered cache changes what later tokens attend to
    assert out.tokens != cached.tokens
    # without the cache the loop recomputes everything and edits the last position: the same tokens
    nocache = sl.generate(lm, PROMPTS, steer=v, where="generated", max_new_tokens=N, kv_cache="unsteered",
                          use_cache=False)
    assert nocache.tokens == out.tokens


def test_unsteered_cache_with_set_steer_and_rewind(lm) -> None:
    v = _vec(lm, seed=5)
    plain = sl.generate(lm, PROMPTS, max_new_tokens=N)
    # row 1: steered on after 4 tokens; row 2: back 2 tokens after 6 and steered from there; rows 0, 3 plain
    mon = Script({(3, 1): SetSteer(v, 1.0), (5, 2): (Rewind(2), SetSteer(v, 0.5))}, steer_sites=v.sites)
    out = sl.generate(lm, PROMPTS, max_new_tokens=N, monitors=[mon], kv_cache="unsteered")
    ids1, ids2 = _prompt_ids(lm, PROMPTS[1]), _prompt_ids(lm, PROMPTS[2])
    kept1, kept2 = plain.tokens[1][:4], plain.tokens[2][:4]
    assert out.tokens[1] == kept1 + fresh_last(lm, ids1 + kept1, N - 4, v, 1.0, len(ids1) + 3)
    assert out.tokens[2] == kept2 + fresh_last(lm, ids2 + kept2, N - 4, v, 0.5, len(ids2) + 3)
    assert out.tokens[0] == plain.tokens[0] and out.tokens[3] == plain.tokens[3]


def test_bad_kv_cache(tiny) -> None:
    with pytest.raises(ValueError, match="kv_cache must be one of 'steered', 'unsteered', got 'none'"):
        sl.generate(tiny, "abc", max_new_tokens=2, kv_cache="none")
