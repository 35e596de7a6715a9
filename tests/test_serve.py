"""`steerlab serve` through the official openai client on 127.0.0.1: per-request steering equals solo
`generate`, concurrent requests batched, streaming, FASB rewinds, PSR gates, embeddings, limits and 4xx errors."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import openai
import pytest

import steerlab as sl
from steerlab.backtrack import fasb_generate
from steerlab.batching import RowRequest
from steerlab.embed.commands import build_encoder
from steerlab.generate import GenerationConfig
from steerlab.interventions.add import Steer
from steerlab.interventions.psr import GateTrace
from steerlab.serve.app import create_app
from steerlab.serve.registry import load_registry
from steerlab.serve.scheduler import Limits, Scheduler, ShuttingDown, Update
from steerlab.testing import tiny_model

from serve_support import running, write_artifacts

PROMPTS = ["the cat sat on", "hello world, this is a longer prompt", "abc", "zz top", "one two three", "q"]


@pytest.fixture(scope="module")
def lm():
    return tiny_model("llama", seed=3)


@pytest.fixture(scope="module")
def served(lm, tmp_path_factory):
    root = tmp_path_factory.mktemp("artifacts")
    objs = write_artifacts(lm, root)
    registry = load_registry(root, lm)
    with running(create_app(lm, registry, Limits(max_batch=8))) as srv:
        srv.objs = objs
        srv.client = openai.OpenAI(base_url=srv.base + "/v1", api_key="unused", max_retries=0, timeout=120)
        yield srv


def _solo(lm, prompt, vec=None, strength=1.0, where="all", n=12, chat=False):
    steer = None if vec is None else Steer(vec, strength, where)
    return sl.generate(lm, prompt, steer=steer, max_new_tokens=n, chat=chat)


def test_models_and_steering_list(served) -> None:
    assert [m.id for m in served.client.models.list().data] == ["tiny-llama"]
    status, body = served.request("GET", "/v1/steering")
    assert status == 200
    kinds = {a["name"]: a["kind"] for a in body["data"]}
    assert kinds == {"up": "vector", "heads": "vector", "down": "vector", "fasb1": "fasb", "psr1": "psr"}
    assert list(body["skipped"]) == ["junk.safetensors"]


def test_concurrent_steered_requests_get_their_solo_tokens(served, lm) -> None:
    """Twelve requests at once, with distinct vectors / strengths / positions (and some unsteered): each gets
    exactly the tokens of a solo generate call, while the engine decoded them in shared batches."""
    plans = []
    for i in range(12):
        name = [None, "up", "heads", "down"][i % 4]
        plans.append((PROMPTS[i % len(PROMPTS)], name, [1.0, -2.5, 0.5][i % 3], ["all", "generated", 2][i % 3],
                      6 + i % 5))
    before = served.request("GET", "/health")[1]["stats"]

    def call(plan):
        prompt, name, strength, where, n = plan
        extra = {} if name is None else {"steering": {"artifact": name, "strength": strength, "positions": where}}
        return served.client.completions.create(model="tiny-llama", prompt=prompt, max_tokens=n, temperature=0,
                                                extra_body=extra)

    with ThreadPoolExecutor(12) as pool:
        results = list(pool.map(call, plans))
    after = served.request("GET", "/health")[1]["stats"]
    for (prompt, name, strength, where, n), res in zip(plans, results):
        ref = _solo(lm, prompt, None if name is None else served.objs[name], strength, where, n)
        assert res.model_extra["steerlab"]["tokens"] == ref.tokens[0], (prompt, name)
        assert res.choices[0].text == ref.texts[0]
        assert res.usage.completion_tokens == len(ref.tokens[0])
    steps = after["steps"] - before["steps"]
    rows = sum(len(r.model_extra["steerlab"]["tokens"]) for r in results)
    assert steps < rows  # rows shared decode steps: continuous batching, not one request after another


def test_steering_changes_the_output(served, lm) -> None:
    plain = served.client.completions.create(model="tiny-llama", prompt=PROMPTS[1], max_tokens=8)
    steered = served.client.completions.create(model="tiny-llama", prompt=PROMPTS[1], max_tokens=8,
                                               extra_body={"steering": {"artifact": "down", "strength": 4}})
    assert plain.model_extra["steerlab"]["tokens"] == _solo(lm, PROMPTS[1], n=8).tokens[0]
    assert steered.model_extra["steerlab"]["tokens"] != plain.model_extra["steerlab"]["tokens"]


def test_streaming_equals_the_whole_answer(served, lm) -> None:
    body = dict(model="tiny-llama", prompt=PROMPTS[0], max_tokens=10, extra_body={"steering": {"artifact": "up"}})
    whole = served.client.completions.create(**body)
    chunks = list(served.client.completions.create(stream=True, **body))
    assert "".join(c.choices[0].text for c in chunks) == whole.choices[0].text
    assert chunks[-1].choices[0].finish_reason == whole.choices[0].finish_reason == "length"
    assert len(chunks) > 2
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi there"}]
    ref = sl.generate(lm, "hi there", system="be brief", chat=True, max_new_tokens=9)
    chat = served.client.chat.completions.create(model="tiny-llama", messages=msgs, max_tokens=9)
    assert chat.choices[0].message.content == ref.texts[0]
    parts = list(served.client.chat.completions.create(model="tiny-llama", messages=msgs, max_tokens=9, stream=True))
    assert parts[0].choices[0].delta.role == "assistant"
    assert "".join(p.choices[0].delta.content or "" for p in parts) == ref.texts[0]


def test_fasb_request_streams_its_backtrack(served, lm) -> None:
    ref = fasb_generate(lm, PROMPTS[2], served.objs["fasb1"], max_new_tokens=8)
    assert ref.backtracked[0]
    res = served.client.completions.create(model="tiny-llama", prompt=PROMPTS[2], max_tokens=8,
                                           extra_body={"steering": {"artifact": "fasb1"}})
    ext = res.model_extra["steerlab"]
    assert ext["tokens"] == ref.tokens[0] and res.choices[0].text == ref.texts[0]
    assert ext["fasb"]["backtracked"] and ext["fasb"]["events"] == [e.to_dict() for e in ref.events[0]]
    chunks = list(served.client.completions.create(model="tiny-llama", prompt=PROMPTS[2], max_tokens=8, stream=True,
                                                   extra_body={"steering": {"artifact": "fasb1"}}))
    rewinds = [c.model_extra["steerlab"] for c in chunks if "rewind" in (c.model_extra.get("steerlab") or {})]
    dropped = ref.events[0][0].dropped
    sent = lm.tokenizer.decode(list(dropped), skip_special_tokens=True).rstrip("\ufffd")  # half characters wait
    assert len(rewinds) == 1 and rewinds[0]["dropped"] == sent
    # the streamed text, applying the rewind, is the final answer
    text = ""
    for c in chunks:
        ext = c.model_extra.get("steerlab") or {}
        if ext.get("rewind"):
            text = text[: len(text) - ext["rewind"]]
        text += c.choices[0].text
    assert text == ref.texts[0]
    # FASB's generation options come from steering.params; strength is its alpha
    res2 = served.client.completions.create(model="tiny-llama", prompt=PROMPTS[2], max_tokens=8, extra_body={
        "steering": {"artifact": "fasb1", "strength": 2.0, "params": {"threshold": 0.01}}})
    assert res2.model_extra["steerlab"]["fasb"]["threshold"] == 0.01
    assert not res2.model_extra["steerlab"]["fasb"]["backtracked"]


def test_psr_request_reports_each_tokens_gate(served, lm) -> None:
    module = served.objs["psr1"]
    traced = module.traced(GateTrace(), 2.0)
    ref = sl.generate(lm, PROMPTS[0], max_new_tokens=6, interventions=[traced])
    gates = [float(sum(traced.trace.values[layer][i][0, -1] for layer in module.layers) / len(module.layers))
             for i in range(6)]
    res = served.client.completions.create(model="tiny-llama", prompt=PROMPTS[0], max_tokens=6,
                                           extra_body={"steering": {"artifact": "psr1", "strength": 2.0}})
    ext = res.model_extra["steerlab"]
    assert ext["tokens"] == ref.tokens[0]
    assert ext["psr"]["gates"] == pytest.approx(gates, abs=1e-6) and ext["psr"]["alpha"] == 2.0
    chunks = list(served.client.completions.create(model="tiny-llama", prompt=PROMPTS[0], max_tokens=6, stream=True,
                                                   extra_body={"steering": {"artifact": "psr1", "strength": 2.0}}))
    streamed = [c.model_extra["steerlab"]["gate"] for c in chunks if "gate" in (c.model_extra.get("steerlab") or {})]
    # a piece carries the gate of its last token (a token that ends in half a character waits for the next)
    assert len(streamed) >= 3 and all(min(abs(g - x) for x in gates) < 1e-6 for g in streamed)
    assert chunks[-1].model_extra["steerlab"]["psr"]["gates"] == pytest.approx(gates, abs=1e-6)


def test_embeddings_with_cp_and_tp(served, lm) -> None:
    texts = ["A man plays a guitar.", "A woman reads a book."]
    res = served.client.embeddings.create(model="tiny-llama", input=texts)  # the client asks for base64
    ref = build_encoder(lm).encode(texts)
    assert np.array_equal(np.array([d.embedding for d in res.data], dtype=np.float32), ref)
    res = served.client.embeddings.create(model="tiny-llama", input=texts, encoding_format="float",
                                          extra_body={"cp": "ns", "tp": True})
    ref = build_encoder(lm, cp="ns", tp=True).encode(texts)
    assert np.array_equal(np.array([d.embedding for d in res.data], dtype=np.float32), ref)
    assert res.model_extra["steerlab"]["cp"] is not None


@pytest.mark.parametrize("raw, status, message", [
    (b'{"prompt": "x", ', 400, "malformed JSON body: Expecting property name enclosed in double quotes"),
    (b'[1, 2]', 400, "the JSON body must be an object"),
    (b'{"max_tokens": 3}', 400, "prompt: field required"),
    (b'{"prompt": "x", "max_tokens": -3}', 400, "max_tokens must be >= 1, got -3"),
    (b'{"prompt": "x", "max_tokens": 100000}', 400, "max_tokens is 100000; this server allows at most 512"),
    (b'{"prompt": "x", "steering": {"artifact": "up", "strength": NaN}}', 400,
     "steering.strength: Input should be a finite number"),
    (b'{"prompt": "x", "steering": {"artifact": "../up"}}', 400,
     "steering.artifact must be an artifact name from GET /v1/steering, not a path: '../up'"),
    (b'{"prompt": "x", "steering": {"artifact": "/etc/passwd"}}', 400, "not a path: '/etc/passwd'"),
    (b'{"prompt": "x", "steering": {"artifact": "nope"}}', 404,
     "unknown artifact 'nope': served are down, fasb1, heads, psr1, up"),
    (b'{"prompt": "x", "steering": {"artifact": "up", "positions": -1}}', 400,
     "a steering start position must be >= 0, got -1"),
    (b'{"prompt": "x", "steering": {"artifact": "up", "path": "/tmp/v"}}', 400, "steering.path: Extra inputs"),
    (b'{"prompt": "x", "steering": {"artifact": "fasb1"}, "temperature": 0.7}', 400,
     "fasb decodes greedily, as the reference: use temperature 0"),
    (b'{"prompt": "x", "steering": {"artifact": "fasb1", "params": {"threshold": 2}}}', 400,
     "fasb: threshold must be in (0, 1), got 2"),
    (b'{"prompt": "x", "model": "gpt-4"}', 404, "model 'gpt-4' is not served here: this server serves 'tiny-llama'"),
    (b'{"prompt": "x", "n": 2}', 400, "n must be 1 (one choice per request), got 2"),
    (b'{"prompt": "", "max_tokens": 3}', 400, "prompt is empty"),
])
def test_bad_requests_get_a_4xx_with_a_clear_message(served, raw, status, message) -> None:
    got, body = served.request("POST", "/v1/completions", raw=raw)
    assert got == status
    assert message in body["error"]["message"]
    assert "\n" not in body["error"]["message"]


def test_other_bad_inputs(served) -> None:
    status, body = served.request("POST", "/v1/completions", {"prompt": "word " * 3000, "max_tokens": 2})
    assert status == 400 and "this server takes at most 2048" in body["error"]["message"]
    status, body = served.request("POST", "/v1/embeddings", {"input": ["ok", " "]})
    assert status == 400 and body["error"]["message"] == "input: input 1 is an empty string"
    status, body = served.request("POST", "/v1/embeddings", {"input": "x", "cp": "zz"})
    assert status == 400 and body["error"]["message"].startswith("cp: Input should be")
    with pytest.raises(openai.NotFoundError, match="unknown artifact 'nope'"):
        served.client.completions.create(model="tiny-llama", prompt="x", extra_body={"steering": {"artifact": "nope"}})


def test_queue_full_429_timeout_504_and_disconnect(lm) -> None:
    app = create_app(lm, limits=Limits(max_batch=1, max_queue=0, timeout_s=60))
    with running(app) as srv:
        client = openai.OpenAI(base_url=srv.base + "/v1", api_key="x", max_retries=0, timeout=120)
        stream = client.completions.create(model="tiny-llama", prompt="long", max_tokens=400, stream=True)
        first = next(iter(stream))
        assert first.choices[0].text is not None
        with pytest.raises(openai.RateLimitError, match="server busy: 1 requests in flight"):
            client.completions.create(model="tiny-llama", prompt="x", max_tokens=2)
        stream.close()  # the client goes away: its row is freed
        end = time.monotonic() + 20
        while srv.request("GET", "/health")[1]["in_flight"] and time.monotonic() < end:
            time.sleep(0.05)
        health = srv.request("GET", "/health")[1]
        assert health["in_flight"] == 0 and health["running"] == 0
        ok = client.completions.create(model="tiny-llama", prompt="x", max_tokens=2)
        assert ok.usage.completion_tokens == 2
    app = create_app(lm, limits=Limits(timeout_s=0.3))
    with running(app) as srv:
        status, body = srv.request("POST", "/v1/completions", {"prompt": "x", "max_tokens": 512})
        assert status == 504 and body["error"]["message"] == "the request took longer than the server's limit of 0.3 s"


def test_graceful_shutdown_finishes_accepted_requests(lm) -> None:
    """Requests in flight when the server is told to stop all finish with their full answers."""
    app = create_app(lm, limits=Limits(max_batch=4))
    results: list = []
    with running(app) as srv:
        def call(i):
            return srv.request("POST", "/v1/completions", {"prompt": PROMPTS[i], "max_tokens": 40})

        pool = ThreadPoolExecutor(6)
        futures = [pool.submit(call, i) for i in range(6)]
        end = time.monotonic() + 20
        while srv.request("GET", "/health")[1]["in_flight"] < 6 and time.monotonic() < end:
            time.sleep(0.01)
        srv.server.should_exit = True  # what SIGTERM / Ctrl-C does
        results = [f.result(timeout=120) for f in futures]
    for i, (status, body) in enumerate(results):
        assert status == 200
        assert body["steerlab"]["tokens"] == sl.generate(lm, PROMPTS[i], max_new_tokens=40).tokens[0]


def test_shutdown_past_its_grace_fails_every_request_cleanly(lm) -> None:
    sched = Scheduler(lm, Limits(max_batch=2, max_queue=10)).start()
    got: dict[int, list[Update]] = {i: [] for i in range(5)}
    ids = lm.encode(["hello"])["input_ids"][0].tolist()
    for i in range(4):
        sched.submit_row(RowRequest(ids, GenerationConfig(500)), got[i].append)
    started = threading.Event()

    def slow_job(ticket):
        started.set()
        while True:
            ticket.check()
            time.sleep(0.01)

    sched.submit_job(slow_job, got[4].append)
    started.wait(10)
    assert sched.shutdown(grace_s=0.2) == 5
    for i in range(5):
        finals = [u for u in got[i] if u.finish is not None]
        assert len(finals) == 1 and finals[0].finish == "shutdown", i
    assert sched.in_flight == 0
    with pytest.raises(ShuttingDown, match="the server is shutting down: no new requests"):
        sched.submit_row(RowRequest(ids, GenerationConfig(5)), lambda u: None)


def test_playground_page_is_served(served) -> None:
    with urllib.request.urlopen(served.base + "/", timeout=30) as res:
        page = res.read().decode()
    assert "<title>steerlab playground</title>" in page and "tiny-llama" in page


def test_health_reports_counters(served) -> None:
    status, body = served.request("GET", "/health")
    assert status == 200 and body["status"] == "ok" and body["stats"]["tokens"] >= 0
    assert json.dumps(body)
