"""Bounded load test of `steerlab serve` on 127.0.0.1 (issue #14 §3).

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/serve_load.py            # ~6 minutes on 2 cores

Starts `steerlab serve` on the embedded model (float32, 2 threads) as a subprocess, with the artifacts of
benchmarks/playground_screenshot.py (the demo's joyful vector, a TruthfulQA FASB fit). Requests come from a
fixed pool of 16: 8 steered with the joyful vector (strengths -3..4, positions all / generated), 4 unsteered,
4 FASB; 32 new tokens each, greedy. Every answer is checked against the same request run alone through the
library (`generate` / `fasb_generate`): a mismatch counts as "wrong".

1. Mixed load at 1, 4 and 16 concurrent clients: each level sends a fixed number of requests (8, 16, 32), each
   client one at a time, and stops by itself (at most 300 s per level): throughput, p50 / p95 latency, errors
   (non-200 or lost), wrong answers.
2. The batching target: 8 clients each sending one of the 8 vector-steered requests at once, against one
   batch-8 `generate` call of the same 8 requests (per-row vectors) in this process: total new tokens per
   second of each (median of 3 repeats).

Writes docs/bench/serve_load.json and the "Serving under load" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))

import steerlab as sl  # noqa: E402
from embed_throughput import replace_section  # noqa: E402
from playground_screenshot import build  # noqa: E402
from serve_support import free_port  # noqa: E402
from steerlab.backtrack import fasb_generate  # noqa: E402
from steerlab.interventions.add import Steer  # noqa: E402
from steerlab.interventions.fasb import load_fasb  # noqa: E402

QUESTIONS = ["What happens if you crack your knuckles a lot?", "Where did fortune cookies originate?",
             "Why do veins appear blue?", "What is the spiciest part of a chili pepper?"]
CHATS = ["Tell me about your weekend.", "Describe the weather today.", "How was the movie?",
         "What do you think of Mondays?", "Write a sentence about the sea.", "How do you feel about rain?",
         "Describe your morning.", "What is your favourite food?"]
TOKENS = 32


def pool() -> list[dict[str, Any]]:
    """The 16 request bodies: 8 vector-steered, 4 unsteered, 4 FASB."""
    out = []
    for i, prompt in enumerate(CHATS):
        out.append({"kind": "vector", "messages": [{"role": "user", "content": prompt}],
                    "steering": {"artifact": "joyful", "strength": [-3, -1.5, 1, 2, 3, 4, 2.5, -2][i],
                                 "positions": ["all", "generated"][i % 2]}})
    for prompt in CHATS[:4]:
        out.append({"kind": "none", "messages": [{"role": "user", "content": prompt}]})
    for q in QUESTIONS:
        out.append({"kind": "fasb", "messages": [{"role": "user", "content": q}],
                    "steering": {"artifact": "fasb_truthfulqa"}})
    return out


def reference(lm: sl.LoadedModel, art: Path, req: dict[str, Any]) -> list[int]:
    prompt = req["messages"][0]["content"]
    if req["kind"] == "fasb":
        fit = load_fasb(art / "fasb_truthfulqa.safetensors", lm)
        return fasb_generate(lm, prompt, fit, max_new_tokens=TOKENS, chat=True).tokens[0]
    steer = None
    if req["kind"] == "vector":
        s = req["steering"]
        steer = Steer(sl.load_vector(art / "joyful.safetensors"), s["strength"], s["positions"])
    return sl.generate(lm, prompt, steer=steer, max_new_tokens=TOKENS, chat=True).tokens[0]


def post(port: int, req: dict[str, Any]) -> tuple[int, dict[str, Any], float]:
    body = {"messages": req["messages"], "max_tokens": TOKENS, "temperature": 0}
    if "steering" in req:
        body["steering"] = req["steering"]
    r = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", data=json.dumps(body).encode(),
                               headers={"Content-Type": "application/json"}, method="POST")
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(r, timeout=300) as res:
            return res.status, json.loads(res.read()), time.perf_counter() - t0
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}"), time.perf_counter() - t0
    except OSError as e:
        return 0, {"error": str(e)}, time.perf_counter() - t0


def level(port: int, reqs: list[dict[str, Any]], refs: list[list[int]], clients: int, n: int,
          limit_s: float = 300.0) -> dict[str, Any]:
    order = [i % len(reqs) for i in range(n)]
    lock = threading.Lock()
    results: list[tuple[int, int, int, float]] = []  # (request index, status, new tokens, latency)
    wrong: list[int] = []
    end = time.monotonic() + limit_s
    it = iter(order)

    def client() -> None:
        while time.monotonic() < end:
            with lock:
                i = next(it, None)
            if i is None:
                return
            status, body, dt = post(port, reqs[i])
            toks = body.get("steerlab", {}).get("tokens") if status == 200 else None
            with lock:
                results.append((i, status, len(toks or []), dt))
                if status == 200 and toks != refs[i]:
                    wrong.append(i)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as ex:
        for f in [ex.submit(client) for _ in range(clients)]:
            f.result()
    wall = time.perf_counter() - t0
    lat = sorted(r[3] for r in results)
    ok = [r for r in results if r[1] == 200]
    return {"clients": clients, "requests": n, "done": len(results), "ok": len(ok),
            "errors": sum(1 for r in results if r[1] != 200), "lost": n - len(results), "wrong": len(wrong),
            "tokens": sum(r[2] for r in ok), "wall_s": wall, "tok_per_s": sum(r[2] for r in ok) / wall,
            "p50_s": statistics.median(lat) if lat else None,
            "p95_s": lat[min(len(lat) - 1, int(round(0.95 * (len(lat) - 1))))] if lat else None}


def batching_target(port: int, lm: sl.LoadedModel, art: Path, reqs: list[dict[str, Any]],
                    repeats: int = 3) -> dict[str, Any]:
    vec_reqs = [r for r in reqs if r["kind"] == "vector"]
    server, direct = [], []
    vec = sl.load_vector(art / "joyful.safetensors")
    prompts = [r["messages"][0]["content"] for r in vec_reqs]
    steers = [Steer(vec, r["steering"]["strength"], r["steering"]["positions"]) for r in vec_reqs]
    for _ in range(repeats):
        t0 = time.perf_counter()
        with ThreadPoolExecutor(len(vec_reqs)) as ex:
            outs = list(ex.map(lambda r: post(port, r), vec_reqs))
        wall = time.perf_counter() - t0
        server.append(sum(len(b.get("steerlab", {}).get("tokens", [])) for _, b, _ in outs) / wall)
        t0 = time.perf_counter()
        out = sl.generate(lm, prompts, steer=steers, max_new_tokens=TOKENS, chat=True)
        wall = time.perf_counter() - t0
        direct.append(sum(len(t) for t in out.tokens) / wall)
    s, d = statistics.median(server), statistics.median(direct)
    return {"server_tok_per_s": s, "generate_batch8_tok_per_s": d, "ratio": s / d, "server_runs": server,
            "generate_runs": direct}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--levels", default="1:8,4:16,16:32", help="clients:requests pairs")
    args = ap.parse_args()
    torch.set_num_threads(2)
    lm = sl.load_model("embedded", dtype="float32")
    art = ROOT / "out/playground"
    build(lm, art)
    reqs = pool()
    print("solo references...", flush=True)
    refs = [reference(lm, art, r) for r in reqs]
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "2", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-c", "from steerlab.cli import main; main()", "serve", "--dtype",
                             "float32", "--artifacts", str(art), "--port", str(port), "--max-batch", "16"],
                            env=env, stderr=subprocess.PIPE, text=True)
    try:
        end = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > end:
                    raise SystemExit(f"server did not start: {proc.stderr.read() if proc.stderr else ''}")
                time.sleep(0.3)
        rows = []
        for spec in args.levels.split(","):
            clients, n = (int(x) for x in spec.split(":"))
            row = level(port, reqs, refs, clients, n)
            rows.append(row)
            print(json.dumps(row), flush=True)
        target = batching_target(port, lm, art, reqs)
        print(json.dumps(target), flush=True)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as res:
            health = json.loads(res.read())
    finally:
        proc.terminate()
        proc.wait(timeout=120)
    result = {"levels": rows, "target": target, "server_stats": health["stats"], "tokens": TOKENS,
              "dtype": "float32", "threads": 2, "command": "OMP_NUM_THREADS=2 .venv/bin/python benchmarks/serve_load.py"}
    out = ROOT / "docs/bench/serve_load.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    lines = ["Command: `OMP_NUM_THREADS=2 .venv/bin/python benchmarks/serve_load.py` (embedded SmolLM2-135M, "
             f"float32, 2 threads, {TOKENS} new tokens per request, greedy; server and load generator on one "
             "2-core machine, 127.0.0.1). Mix per level: 8 of every 16 requests steered with the joyful vector "
             "(distinct strengths / positions), 4 unsteered, 4 FASB; the 1-client level sends the pool's first 8 (vector-steered only), the 4- and 16-client levels the whole pool once and twice. \"wrong\": the answer differs from the same "
             "request run alone through the library.", "",
             "| clients | requests | ok | errors | lost | wrong | new tokens/s | p50 latency (s) | p95 latency (s) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['clients']} | {r['requests']} | {r['ok']} | {r['errors']} | {r['lost']} | {r['wrong']} | "
                     f"{r['tok_per_s']:.1f} | {r['p50_s']:.2f} | {r['p95_s']:.2f} |")
    t = target
    lines += ["", f"Batching target (8 concurrent clients, the 8 vector-steered requests, median of 3): the server "
                  f"makes **{t['server_tok_per_s']:.1f}** new tokens/s, one batch-8 `generate` call of the same "
                  f"requests **{t['generate_batch8_tok_per_s']:.1f}**: ratio **{t['ratio']:.2f}** (target >= 0.8).",
              "", "FASB requests run one at a time on the server's worker thread (beside the continuous batch), so "
                  "at 16 clients their latency sets the p95; the vector-steered and unsteered requests share "
                  "decode steps."]
    replace_section(ROOT / "docs/benchmarks.md", "## Serving under load", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
