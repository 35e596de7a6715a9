"""Continuous batching: each row's tokens equal a solo `generate` call, however rows join and leave."""

from __future__ import annotations

import time

import pytest
import torch

import steerlab as sl
from steerlab.batching import BatchEngine, RowEvent, RowRequest
from steerlab.interventions.add import Steer
from steerlab.generate import GenerationConfig
from steerlab.testing import tiny_model

from serve_support import vector

PROMPTS = ["the cat sat on", "hello world, this is a longer prompt than the others", "abc", "zz top",
           "one two three four", "q"]


@pytest.fixture(scope="module")
def lm():
    return tiny_model("llama", n_layers=4, hidden=64, seed=1)


class Collect:
    def __init__(self) -> None:
        self.tokens: list[int] = []
        self.finish: str | None = None
        self.error: str | None = None

    def __call__(self, ev: RowEvent) -> None:
        assert self.finish is None, "an event after the row ended"
        if ev.token is not None:
            self.tokens.append(ev.token)
        if ev.finish is not None:
            self.finish, self.error = ev.finish, ev.error


def _ids(lm, prompt: str) -> list[int]:
    return lm.encode([prompt])["input_ids"][0].tolist()


def _run(engine: BatchEngine, plan: list[tuple[int, RowRequest]], max_steps: int = 500) -> list[Collect]:
    """Submit each request at its step (rows join a running batch), step until everything ended."""
    sinks = [Collect() for _ in plan]
    for step in range(max_steps):
        for (at, req), sink in zip(plan, sinks):
            if at == step:
                engine.submit(req, sink)
        engine.step()
        if step >= max(at for at, _ in plan) and engine.idle:
            break
    assert all(s.finish is not None for s in sinks)
    return sinks


def _solo(lm, prompt: str, req: RowRequest) -> list[int]:
    kw = {}
    if req.steer is not None:
        kw = dict(steer=req.steer)
    c = req.config
    out = sl.generate(lm, prompt, max_new_tokens=c.max_new_tokens, do_sample=c.do_sample, temperature=c.temperature,
                      top_p=c.top_p, seed=c.seed, **kw)
    return out.tokens[0]


def test_rows_joining_and_leaving_get_their_solo_tokens(lm) -> None:
    vecs = [vector(lm, 1), vector(lm, 2, layers=(0, 3)), vector(lm, 3, kind="heads", layers=(2,)), None]
    wheres = ["all", "generated", "prompt", 3]
    plan = []
    for i, prompt in enumerate(PROMPTS * 2):
        v = vecs[i % len(vecs)]
        steer = None if v is None else Steer(v, strength=[1.0, -2.0, 0.5][i % 3], where=wheres[i % 4])
        sample = i % 5 == 4
        cfg = GenerationConfig(6 + (i * 3) % 11, sample, 0.8, seed=100 + i if sample else None)
        req = RowRequest(_ids(lm, prompt), cfg, steer)
        plan.append((i // 2 * 3, req))  # two rows join every third step
    engine = BatchEngine(lm, max_batch=5, max_join=2)
    got = _run(engine, plan)
    for (_, req), sink, prompt in zip(plan, got, PROMPTS * 2):
        assert sink.tokens == _solo(lm, prompt, req), prompt
        assert sink.finish in ("eos", "length")
    assert engine.stats.max_batch_seen == 5  # rows really ran together (and waited for room)
    assert engine.stats.rows_done == len(plan) and engine.idle
    # steering acts: a steered row differs from its unsteered run
    req = plan[0][1]
    assert got[0].tokens != _solo(lm, PROMPTS[0], RowRequest(req.prompt_ids, req.config))


def test_stop_string_and_budget(lm) -> None:
    plain = sl.generate(lm, PROMPTS[0], max_new_tokens=12)
    text = plain.texts[0]
    stop = text[3:5]
    engine = BatchEngine(lm)
    sink = _run(engine, [(0, RowRequest(_ids(lm, PROMPTS[0]), GenerationConfig(12, stop=(stop,))))])[0]
    ref = sl.generate(lm, PROMPTS[0], max_new_tokens=12, stop=stop)
    assert sink.finish == "stop" and ref.finish_reasons[0] == "stop"
    assert sink.tokens == ref.tokens[0]
    one = _run(BatchEngine(lm), [(0, RowRequest(_ids(lm, PROMPTS[0]), GenerationConfig(1)))])[0]
    assert one.finish == "length" and one.tokens == plain.tokens[0][:1]


def test_cancel_frees_the_row_and_others_are_unchanged(lm) -> None:
    engine = BatchEngine(lm)
    reqs = [RowRequest(_ids(lm, p), GenerationConfig(20), Steer(vector(lm, i + 5))) for i, p in enumerate(PROMPTS[:3])]
    sinks = [Collect() for _ in reqs]
    rids = [engine.submit(r, s) for r, s in zip(reqs, sinks)]
    for _ in range(3):
        engine.step()
    assert engine.running == 3
    engine.cancel(rids[1])
    engine.step()
    # a step is a prefill (first token) and a decode pass: 3 steps made 4 tokens; none comes after the cancel
    assert engine.running == 2 and sinks[1].finish == "cancelled" and len(sinks[1].tokens) == 4
    while not engine.idle:
        engine.step()
    for i in (0, 2):
        assert sinks[i].tokens == _solo(lm, PROMPTS[i], reqs[i])


def test_deadline_and_shutdown(lm) -> None:
    engine = BatchEngine(lm)
    late, running, queued = Collect(), Collect(), Collect()
    engine.submit(RowRequest(_ids(lm, "x"), GenerationConfig(50), deadline=time.monotonic() - 1), late)
    engine.submit(RowRequest(_ids(lm, "y"), GenerationConfig(50)), running)
    engine.step()
    assert late.finish == "timeout" and late.tokens == []
    engine.submit(RowRequest(_ids(lm, "z"), GenerationConfig(50)), queued)
    assert engine.fail_all("shutdown", "the server is shutting down") == 2
    assert running.finish == queued.finish == "shutdown"
    assert running.error == "the server is shutting down" and engine.idle


def test_bad_requests(lm) -> None:
    with pytest.raises(ValueError, match="the prompt has no tokens"):
        RowRequest([], GenerationConfig(4))
    with pytest.raises(ValueError, match="max_new_tokens must be >= 1, got 0"):
        RowRequest([1, 2], GenerationConfig(0))
    with pytest.raises(ValueError, match="max_batch and max_join must be >= 1"):
        BatchEngine(lm, max_batch=0)


@pytest.mark.slow
def test_embedded_model_rows_get_their_solo_tokens(embedded) -> None:
    """The real model: five chat prompts with distinct vectors and strengths (one unsteered), joining one
    after another; every row's greedy tokens equal a solo generate call."""
    prompts = ["What is the capital of France?", "Write a haiku about the sea.", "Hi", "Name three fruits.",
               "Why is the sky blue?"]
    vecs = [vector(embedded, 11, layers=(6, 12), scale=12.0), vector(embedded, 12, layers=(10,), scale=20.0),
            vector(embedded, 13, layers=(8,), kind="heads", scale=6.0), None, vector(embedded, 14, layers=(15,))]
    plan = []
    for i, (prompt, v) in enumerate(zip(prompts, vecs)):
        ids = embedded.encode([prompt], chat=True)["input_ids"][0].tolist()
        steer = None if v is None else Steer(v, [1.0, -1.5, 2.0, 1.0, 0.7][i], ["all", "generated", "all", "all", 4][i])
        plan.append((2 * i, RowRequest(ids, GenerationConfig(24), steer)))
    got = _run(BatchEngine(embedded, max_batch=4), plan)
    for (_, req), sink, prompt in zip(plan, got, prompts):
        kw = {} if req.steer is None else {"steer": req.steer}
        ref = sl.generate(embedded, prompt, chat=True, max_new_tokens=24, **kw)
        assert sink.tokens == ref.tokens[0], prompt
