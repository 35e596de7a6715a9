#!/usr/bin/env python
"""Steering overhead: decode throughput with and without steering, steerlab against its peers.

Measures generated tokens per second (greedy, a fixed number of new tokens, EOS ignored so that
every setting generates the same number of tokens) on the embedded SmolLM2-135M-Instruct, with
the same prompts and the same vector values everywhere, at each batch size, for:

  hf_plain        plain ``model.generate`` in steerlab's venv, no hooks (the baseline)
  steerlab_none   ``steerlab.generate(steer=None)``: our decode loop without steering
  steerlab_one    ``steerlab.generate`` steering the output of one decoder layer (``--layer``)
  steerlab_all    ``steerlab.generate`` steering the outputs of all 30 decoder layers
  sv_*            PyPI ``steering-vectors``: ``SteeringVector.apply(model)`` around ``model.generate``
  repeng_*        PyPI ``repeng``: ``ControlModel`` wrapping, ``set_control``, ``generate``

The peers run in their own virtualenvs (see ``benchmarks/peers/setup_venvs.sh``) through
``benchmarks/peers/peer_runner.py``; each also measures ``model.generate`` without steering in its
own venv (``*_plain``), since a peer may pin another transformers version. A peer that is missing
or fails is recorded with the reason instead of ending the run.

Timing: one call = one full generation (prompt pass + ``--tokens`` decode steps) of the whole
batch; tokens/s = batch * tokens / seconds. Settings are interleaved round-robin (the order
rotates every round) so that load from other processes hits all settings alike; the first
``--warmup`` rounds are discarded; the table gives the median over ``--repeats`` rounds and the
median of per-round ratios to ``hf_plain`` (paired, so slow drifts in machine load cancel).

The script also cross-checks correctness: greedy tokens of steerlab and of each peer for the same
steering (all three add the vector to the output of ``model.model.layers[i]`` at every token).

Writes ``docs/bench/steer_overhead.json`` and the "## Steering overhead" section of
``docs/benchmarks.md`` (other sections of that file are left as they are).

``--monitor`` measures something else, quickly (about 2 minutes): what a monitor costs
(``generate(monitors=[...])`` with a monitor that reads one site and never acts) and that
``generate`` without one costs what it did before monitors existed (``--before REF``: the
``generate`` of that git commit, run in this process against the same model). Peers are not run.
Writes ``docs/bench/monitor_overhead.json`` and the "## Generate with a monitor" section.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import platform
import select
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
RUNNER = ROOT / "benchmarks" / "peers" / "peer_runner.py"
SECTION = "## Steering overhead"
MONITOR_SECTION = "## Generate with a monitor"

PROMPTS = [
    "The capital of France is",
    "Here is a short recipe for pancakes:",
    "Write a haiku about the sea.",
    "Explain in simple words why the sky is blue, as if to a child who keeps asking why.",
    "Once upon a time, in a small village at the edge of a forest,",
    "List three uses of a paperclip:",
    "The best way to learn a new programming language is",
    "Q: What is 12 times 7?\nA:",
]

PEERS = {  # name -> (setting prefix, default venv python, pip setup)
    "steering-vectors": ("sv", ".venv-sv/bin/python", "bash benchmarks/peers/setup_venvs.sh steering-vectors"),
    "repeng": ("repeng", ".venv-repeng/bin/python", "bash benchmarks/peers/setup_venvs.sh repeng"),
}

LABELS = {
    "hf_plain": "(a) HF `model.generate`, no hooks",
    "steerlab_none": "(b) steerlab `generate`, steer=None",
    "steerlab_one": "(c) steerlab, 1 layer",
    "steerlab_all": "(d) steerlab, all layers",
    "sv_plain": "steering-vectors venv: plain `generate`",
    "sv_one": "(e) steering-vectors, 1 layer",
    "sv_all": "(e) steering-vectors, all layers",
    "repeng_plain": "repeng venv: plain `generate`",
    "repeng_one": "(f) repeng, 1 layer",
    "repeng_all": "(f) repeng, all layers",
}

MONITOR_LABELS = {
    "hf_plain": "(a) HF `model.generate`, no hooks",
    "steerlab_before": "(b0) steerlab `generate` before monitors (`--before`)",
    "steerlab_none": "(b) steerlab `generate`, no monitor",
    "steerlab_noop": "(g) steerlab `generate`, a no-op monitor reading one site",
}


# --------------------------------------------------------------------------------------------
# command line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description="Decode throughput of plain generate vs steerlab (unsteered / 1 layer / all layers) "
        "vs the peers steering-vectors and repeng, on the embedded model.",
    )
    ap.add_argument("--batch-sizes", default="1,8", help="comma-separated batch sizes [1,8]")
    ap.add_argument("--tokens", type=int, default=None, help="new tokens per generation, EOS ignored [64; 4 with --quick]")
    ap.add_argument("--repeats", type=int, default=None, help="timed rounds, median reported [5; 1 with --quick]")
    ap.add_argument("--warmup", type=int, default=None, help="untimed rounds before the timed ones [1]")
    ap.add_argument("--layer", type=int, default=15, help="decoder layer for the one-layer settings [15]")
    ap.add_argument("--norm", type=float, default=8.0,
                    help="L2 norm of each layer's random vector; residual norms here are ~50-650 [8]")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random directions [0]")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads in every process; 1 keeps timings stable on a shared machine [1]")
    ap.add_argument("--peers", default="steering-vectors,repeng",
                    help="comma-separated peers to run, or 'none' [steering-vectors,repeng]")
    ap.add_argument("--sv-python", default=None, help="python of the steering-vectors venv [.venv-sv/bin/python]")
    ap.add_argument("--repeng-python", default=None, help="python of the repeng venv [.venv-repeng/bin/python]")
    ap.add_argument("--peer-timeout", type=float, default=1800.0, help="seconds to wait for one peer reply [1800]")
    ap.add_argument("--json", default=None, help="JSON output [docs/bench/steer_overhead.json; none with --quick]")
    ap.add_argument("--markdown", default=None, help="markdown file whose section is replaced [docs/benchmarks.md; none with --quick]")
    ap.add_argument("--no-write", action="store_true", help="print the table only, write no file")
    ap.add_argument("--render", metavar="JSON", default=None,
                    help="measure nothing: recompute the summary of a saved JSON report, rewrite it and the markdown section")
    ap.add_argument("--monitor", action="store_true",
                    help="measure the monitor overhead instead (no peers; 16 tokens unless given; writes "
                    "docs/bench/monitor_overhead.json and its docs/benchmarks.md section)")
    ap.add_argument("--before", metavar="REF", default=None,
                    help="with --monitor: also time the generate of this git commit (e.g. the one before monitors)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 4 tokens, 1 warm-up and 1 timed round (unless given); "
                    "writes nothing unless --json/--markdown are given")
    args = ap.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    quick = {"tokens": 4, "repeats": 1, "warmup": 1}
    full = {"tokens": 16 if args.monitor else 64, "repeats": 5, "warmup": 1}
    for k, v in (quick if args.quick else full).items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.before and not args.monitor:
        ap.error("--before only applies with --monitor")
    if not args.quick and not args.no_write:
        name = "monitor_overhead.json" if args.monitor else "steer_overhead.json"
        args.json = args.json or str(ROOT / "docs" / "bench" / name)
        args.markdown = args.markdown or str(ROOT / "docs" / "benchmarks.md")
    if args.render:
        args.json = None  # the report is read, not measured: its targets are recomputed and it is rewritten
    if args.no_write:
        args.json = args.markdown = None
    args.batch_sizes = [int(b) for b in str(args.batch_sizes).split(",") if b.strip()]
    if not args.batch_sizes or min(args.batch_sizes) < 1:
        ap.error("--batch-sizes needs positive integers")
    if args.tokens < 1 or args.repeats < 1 or args.warmup < 0 or args.threads < 1:
        ap.error("--tokens, --repeats and --threads must be >= 1, --warmup >= 0")
    args.peers = [] if args.peers.strip().lower() in ("", "none") else [p.strip() for p in args.peers.split(",")]
    for p in args.peers:
        if p not in PEERS:
            ap.error(f"unknown peer {p!r}: choose from {', '.join(PEERS)}")
    return args


# --------------------------------------------------------------------------------------------
# steerlab side (this process)


class _NoEosTokenizer:
    """Tokenizer view without an EOS id, so ``steerlab.generate`` never stops early."""

    eos_token_id = None

    def __init__(self, tok: Any) -> None:
        self._tok = tok

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._tok(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tok, name)


class Local:
    """hf_plain and steerlab_* settings, run in this process."""

    def __init__(self, args: argparse.Namespace) -> None:
        import torch

        import steerlab

        self.torch, self.steerlab = torch, steerlab
        lm = steerlab.load_model("embedded")
        lm.model.generation_config.eos_token_id = None  # HF generate: no EOS stop
        lm.model.generation_config.pad_token_id = lm.tokenizer.pad_token_id
        self.lm = dataclasses.replace(lm, tokenizer=_NoEosTokenizer(lm.tokenizer))  # steerlab: no EOS stop
        self.n_layers = lm.adapter.n_layers
        self.hidden = lm.adapter.hidden_size
        g = torch.Generator().manual_seed(args.seed)
        self.vectors: dict[int, Any] = {}
        for layer in range(self.n_layers):
            v = torch.randn(self.hidden, generator=g)
            self.vectors[layer] = v / v.norm() * args.norm
        meta = steerlab.VectorMeta(architecture=lm.adapter.family,
                                   hidden_size=self.hidden, model_name=lm.name, n_layers=self.n_layers)
        self.steer = {
            "one": steerlab.SteeringVector({f"residual.{args.layer}": self.vectors[args.layer]}, meta),
            "all": steerlab.SteeringVector({f"residual.{i}": v for i, v in self.vectors.items()}, meta),
        }
        self.monitor_layer = args.layer
        self.before = load_generate_at(args.before) if getattr(args, "before", None) else None
        self.prompts = {b: [PROMPTS[i % len(PROMPTS)] for i in range(b)] for b in args.batch_sizes}
        self.enc = {b: self.lm.encode(p) for b, p in self.prompts.items()}

    def run(self, setting: str, batch: int, tokens: int) -> tuple[float, float, list[list[int]]]:
        torch, steerlab = self.torch, self.steerlab
        if setting == "hf_plain":
            enc = self.enc[batch]
            with torch.no_grad():
                t0, c0 = time.perf_counter(), time.process_time()
                out = self.lm.model.generate(**enc, max_new_tokens=tokens, do_sample=False)
                dt, dc = time.perf_counter() - t0, time.process_time() - c0
            return dt, dc, out[:, enc["input_ids"].shape[1]:].tolist()
        if setting in ("steerlab_before", "steerlab_noop"):
            gen = self.before if setting == "steerlab_before" else steerlab.generate
            kw = {"monitors": [NoopMonitor(self.monitor_layer)]} if setting == "steerlab_noop" else {}
            t0, c0 = time.perf_counter(), time.process_time()
            out = gen(self.lm, self.prompts[batch], max_new_tokens=tokens, do_sample=False, **kw)
            dt, dc = time.perf_counter() - t0, time.process_time() - c0
            return dt, dc, [list(t) for t in out.tokens]
        steer = None if setting == "steerlab_none" else self.steer[setting.split("_")[1]]
        t0, c0 = time.perf_counter(), time.process_time()
        out = steerlab.generate(self.lm, self.prompts[batch], steer=steer, strength=1.0, where="all",
                                max_new_tokens=tokens, do_sample=False)
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
        return dt, dc, [list(t) for t in out.tokens]


class NoopMonitor:
    """A monitor that reads ``residual.<layer>`` every step and never acts (the cost of the monitor path)."""

    def __init__(self, layer: int) -> None:
        from steerlab.sites import Site

        self.sites = [Site.residual(layer)]

    def step(self, reading: Any) -> list[None]:
        return [None] * reading.batch_size


def load_generate_at(ref: str) -> Callable[..., Any]:
    """``steerlab.generate`` as it was at git commit ``ref`` (its module loaded under another name, so it
    runs against today's other modules)."""
    try:
        src = subprocess.run(["git", "show", f"{ref}:src/steerlab/generate.py"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        raise SystemExit(f"--before {ref}: cannot read src/steerlab/generate.py at that commit: {e}") from None
    tmp = tempfile.NamedTemporaryFile("w", prefix="generate_before_", suffix=".py", delete=False)
    with tmp:
        tmp.write(src)
    spec = importlib.util.spec_from_file_location("steerlab._generate_before", tmp.name)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    os.unlink(tmp.name)
    return mod.generate


# --------------------------------------------------------------------------------------------
# peers (their own venvs, through benchmarks/peers/peer_runner.py)


class PeerError(RuntimeError):
    pass


class Peer:
    def __init__(self, name: str, python: str, timeout: float) -> None:
        self.name, self.python, self.timeout = name, python, timeout
        self.log = tempfile.NamedTemporaryFile("w+", prefix=f"steer_overhead-{name}-", suffix=".log", delete=False)
        self.proc: subprocess.Popen[str] | None = None
        self.info: dict[str, Any] = {}

    def start(self, init: dict[str, Any]) -> dict[str, Any]:
        if not Path(self.python).is_file():
            raise PeerError(f"no virtualenv python at {self.python} (create it with `{PEERS[self.name][2]}`)")
        env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS=str(init["threads"]),
                   MKL_NUM_THREADS=str(init["threads"]), TOKENIZERS_PARALLELISM="false")
        self.proc = subprocess.Popen([self.python, str(RUNNER), "--lib", self.name], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.log, text=True, env=env, cwd=str(ROOT))
        self.info = self.request(init)
        return self.info

    def _tail(self, n: int = 6) -> str:
        try:
            self.log.flush()
            lines = Path(self.log.name).read_text(errors="replace").strip().splitlines()
            return " | ".join(lines[-n:])
        except OSError:
            return ""

    def request(self, req: dict[str, Any]) -> dict[str, Any]:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            raise PeerError(f"runner not running (exit {None if proc is None else proc.returncode}): {self._tail()}")
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(json.dumps(req) + "\n")
            proc.stdin.flush()
        except (BrokenPipeError, OSError) as e:
            raise PeerError(f"runner died: {e}: {self._tail()}") from e
        ready, _, _ = select.select([proc.stdout], [], [], self.timeout)
        if not ready:
            self.close()
            raise PeerError(f"no reply within {self.timeout:.0f} s")
        line = proc.stdout.readline()
        if not line:
            raise PeerError(f"runner exited (code {proc.wait()}): {self._tail()}")
        reply = json.loads(line)
        if not reply.get("ok"):
            raise PeerError(reply.get("error", "unknown error"))
        return reply

    def run(self, setting: str, batch: int, tokens: int) -> tuple[float, float, list[list[int]]]:
        r = self.request({"op": "run", "setting": setting, "batch": batch, "tokens": tokens})
        return float(r["seconds"]), float(r["cpu_seconds"]), r["tokens"]

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write('{"op": "quit"}\n')
                self.proc.stdin.flush()
                self.proc.wait(timeout=30)
            except Exception:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


# --------------------------------------------------------------------------------------------
# measurement


def machine_info(threads: int) -> dict[str, Any]:
    import torch
    import transformers

    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu or platform.processor(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "torch_threads": torch.get_num_threads(),
        "threads_requested": threads,
    }


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        la = os.getloadavg()
        return f"load average: {la[0]:.2f}, {la[1]:.2f}, {la[2]:.2f}"


def compare(a: list[list[int]] | None, b: list[list[int]] | None) -> dict[str, Any] | None:
    """Row-wise token comparison: identical rows and the first differing position per row."""
    if a is None or b is None:
        return None
    first = []
    for ra, rb in zip(a, b):
        d = next((i for i, (x, y) in enumerate(zip(ra, rb)) if x != y), None)
        if d is None and len(ra) != len(rb):
            d = min(len(ra), len(rb))
        first.append(d)
    same = sum(d is None for d in first)
    return {"rows": len(a), "identical_rows": same, "identical": same == len(a), "first_diff": first}


def compute_targets(results: dict[str, dict[str, Any]], batch_sizes: list[int]) -> list[dict[str, Any]]:
    """steerlab steered vs plain (>= 0.95?) and vs each peer doing the same steering.

    The peer comparison is paired like the ratios to plain: the median over rounds of
    peer seconds / steerlab seconds in the same round (> 1: steerlab is faster).
    """
    targets = []
    for b in batch_sizes:
        for which in ("one", "all"):
            s = f"steerlab_{which}"
            t: dict[str, Any] = {"batch": b, "setting": s}
            for kind in ("", "cpu_"):
                clock = kind.rstrip("_") or "wall"
                mine = results[s][str(b)]
                r = mine.get(f"{kind}ratio_to_hf_plain")
                c: dict[str, Any] = {"ratio_to_hf_plain": r, "meets_0.95": None if r is None else r >= 0.95}
                for prefix, _, _ in PEERS.values():
                    theirs = results.get(f"{prefix}_{which}", {}).get(str(b))
                    if not theirs:
                        continue
                    pairs = [tp / tm for tm, tp in zip(mine[f"{kind}seconds"], theirs[f"{kind}seconds"]) if tm and tp]
                    if pairs:
                        c[f"vs_{prefix}_speed"] = statistics.median(pairs)
                        c[f"{prefix}_ratio_to_own_plain"] = theirs.get(f"{kind}ratio_to_{prefix}_plain")
                t[clock] = c
            targets.append(t)
    return targets


def _setup(args: argparse.Namespace) -> tuple["Local", str]:
    """Threads, the local model and its checks; the uptime line printed when loading started."""
    import torch

    torch.set_num_threads(args.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    load_start = uptime()
    print(f"[steer_overhead] {load_start}", flush=True)
    local = Local(args)
    if not 0 <= args.layer < local.n_layers:
        raise SystemExit(f"--layer must be in 0..{local.n_layers - 1}")
    return local, load_start


def _header(name: str, args: argparse.Namespace, local: "Local", load_start: str, load_end: str) -> dict[str, Any]:
    """The fields every result JSON of this script starts with: what ran, the command, when, where, on what."""
    cmd = "python benchmarks/steer_overhead.py" + ("" if not args.argv else " " + " ".join(shlex.quote(a) for a in args.argv))
    return {
        "benchmark": name,
        "command": cmd,
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine_info(args.threads),
        "load": {"start": load_start, "end": load_end},
        "model": {"name": local.lm.name, "n_layers": local.n_layers, "hidden_size": local.hidden,
                  "dtype": str(local.lm.dtype).replace("torch.", "")},
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    local, load_start = _setup(args)
    runners: dict[str, Callable[[int, int], tuple[float, float, list[list[int]]]]] = {
        s: (lambda b, n, s=s: local.run(s, b, n)) for s in ("hf_plain", "steerlab_none", "steerlab_one", "steerlab_all")
    }

    import steerlab.models as sm

    model_dir = str(sm.gguf_cache_entry(sm.embedded_gguf_path()))
    peers_info: dict[str, Any] = {}
    peers: list[Peer] = []
    init = {
        "op": "init", "model_dir": model_dir, "threads": args.threads, "layer": args.layer,
        "vectors": {str(i): v.tolist() for i, v in local.vectors.items()},
        "inputs": {str(b): {k: v.tolist() for k, v in e.items()} for b, e in local.enc.items()},
    }
    for name in args.peers:
        prefix, default_py, setup = PEERS[name]
        py = getattr(args, f"{prefix}_python") or str(ROOT / default_py)
        peer = Peer(name, py, args.peer_timeout)
        entry: dict[str, Any] = {"python": py, "setup": setup, "settings": [f"{prefix}_{s}" for s in ("plain", "one", "all")]}
        try:
            info = peer.start(init)
            entry.update(available=True, versions=info.get("versions"), notes=info.get("notes", []),
                         threads=info.get("threads"))
            peers.append(peer)
            for s in ("plain", "one", "all"):
                runners[f"{prefix}_{s}"] = (lambda b, n, p=peer, s=s: p.run(s, b, n))
            print(f"[steer_overhead] {name}: {info.get('versions')}", flush=True)
        except Exception as e:  # record why, go on without this peer
            entry.update(available=False, error=f"{type(e).__name__}: {e}")
            peer.close()
            print(f"[steer_overhead] {name} unavailable: {e}", flush=True)
        peers_info[name] = entry

    settings = list(runners)
    times: dict[str, dict[int, list[float | None]]] = {s: {b: [] for b in args.batch_sizes} for s in settings}
    cpu_times: dict[str, dict[int, list[float | None]]] = {s: {b: [] for b in args.batch_sizes} for s in settings}
    tokens_seen: dict[str, dict[int, list[list[list[int]]]]] = {s: {b: [] for b in args.batch_sizes} for s in settings}
    errors: dict[str, str] = {}
    rounds = args.warmup + args.repeats
    try:
        for r in range(rounds):
            timed = r >= args.warmup
            for b in args.batch_sizes:
                k = r % len(settings)
                for s in settings[k:] + settings[:k]:
                    if s in errors:
                        if timed:
                            times[s][b].append(None)
                            cpu_times[s][b].append(None)
                        continue
                    try:
                        dt, dc, toks = runners[s](b, args.tokens)
                    except Exception as e:
                        errors[s] = f"{type(e).__name__}: {e}"
                        print(f"[steer_overhead] {s} failed: {errors[s]}", flush=True)
                        if timed:
                            times[s][b].append(None)
                            cpu_times[s][b].append(None)
                        continue
                    if len(toks) != b or any(len(t) != args.tokens for t in toks):
                        errors[s] = f"generated {[len(t) for t in toks]} tokens, expected {args.tokens} per row"
                    tokens_seen[s][b].append(toks)
                    if timed:
                        times[s][b].append(dt)
                        cpu_times[s][b].append(dc)
                    print(f"[steer_overhead] round {r + 1}/{rounds}{'' if timed else ' (warm-up)'} batch {b} "
                          f"{s:14s} {b * args.tokens / dt:8.2f} tok/s wall {b * args.tokens / dc:8.2f} tok/s cpu", flush=True)
    finally:
        for p in peers:
            p.close()
    load_end = uptime()
    print(f"[steer_overhead] {load_end}", flush=True)

    results: dict[str, Any] = {}
    for s in settings:
        results[s] = {}
        for b in args.batch_sizes:
            entry: dict[str, Any] = {}
            for kind, tab in (("", times), ("cpu_", cpu_times)):
                ts = [t for t in tab[s][b] if t is not None]
                tps = [b * args.tokens / t for t in ts]
                entry.update({f"{kind}seconds": ts, f"{kind}tokens_per_s": tps,
                              f"{kind}median_tokens_per_s": statistics.median(tps) if tps else None,
                              f"{kind}min_tokens_per_s": min(tps) if tps else None,
                              f"{kind}max_tokens_per_s": max(tps) if tps else None})
                for base in sorted({"hf_plain", s.split("_")[0] + "_plain"}):
                    if base in tab:
                        pairs = [tb / t for t, tb in zip(tab[s][b], tab[base][b]) if t is not None and tb is not None]
                        entry[f"{kind}ratio_to_{base}"] = statistics.median(pairs) if pairs else None
            seen = tokens_seen[s][b]
            entry["deterministic"] = all(t == seen[0] for t in seen) if seen else None
            entry["tokens"] = seen[0] if seen else None  # greedy ids of the first run, one list per row
            results[s][b] = entry

    def toks(s: str, b: int) -> list[list[int]] | None:
        seen = tokens_seen.get(s, {}).get(b) or []
        return seen[0] if seen else None

    checks = []
    pairs = [("steerlab_none", "hf_plain", "our decode loop reproduces HF greedy decoding"),
             ("sv_plain", "hf_plain", "steering-vectors venv's transformers decodes like ours"),
             ("repeng_plain", "hf_plain", "repeng venv's transformers decodes like ours"),
             ("sv_one", "steerlab_one", "same 1-layer steering"), ("repeng_one", "steerlab_one", "same 1-layer steering"),
             ("sv_all", "steerlab_all", "same all-layer steering"), ("repeng_all", "steerlab_all", "same all-layer steering"),
             ("steerlab_one", "steerlab_none", "steering changes the output (expected: differs)"),
             ("steerlab_all", "steerlab_none", "steering changes the output (expected: differs)")]
    for a, bb, what in pairs:
        for b in args.batch_sizes:
            c = compare(toks(a, b), toks(bb, b))
            if c is not None:
                checks.append({"a": a, "b": bb, "batch": b, "what": what, **c})

    targets = compute_targets({k: {str(b): v for b, v in d.items()} for k, d in results.items()}, args.batch_sizes)

    head = _header("steer_overhead", args, local, load_start, load_end)
    head["model"]["dir"] = model_dir
    return {
        **head,
        "config": {"batch_sizes": args.batch_sizes, "tokens": args.tokens, "repeats": args.repeats, "warmup": args.warmup,
                   "layer": args.layer, "norm": args.norm, "seed": args.seed, "threads": args.threads,
                   "prompts": PROMPTS, "greedy": True, "eos": "ignored", "quick": args.quick},
        "settings": {s: LABELS.get(s, s) for s in settings},
        "peers": peers_info,
        "errors": errors,
        "results": {s: {str(b): v for b, v in d.items()} for s, d in results.items()},
        "cross_check": checks,
        "targets": targets,
    }


# --------------------------------------------------------------------------------------------
# report


def _fmt(x: float | None, spec: str = ".1f") -> str:
    return "n/a" if x is None else format(x, spec)


def markdown(rep: dict[str, Any]) -> str:
    m, cfg = rep["machine"], rep["config"]
    bs = cfg["batch_sizes"]
    out = [SECTION, ""]
    out.append(f"Command: `{rep['command']}` (`--help` lists the options; `--quick` is a smoke run; "
               f"`bash benchmarks/peers/setup_venvs.sh` creates the peers' venvs).")
    out.append("")
    out.append(f"Machine: {m['cpu']}, {m['cpu_count']} CPUs, torch {m['torch']} with {m['torch_threads']} intra-op "
               f"thread(s) in every process, transformers {m['transformers']}, Python {m['python']}; {rep['date_utc']}. "
               f"The machine was shared with other jobs: `uptime` at start `{rep['load']['start']}`, "
               f"at end `{rep['load']['end']}`.")
    out.append("")
    out.append(f"Model: embedded {rep['model']['name']} ({rep['model']['n_layers']} layers, hidden "
               f"{rep['model']['hidden_size']}, {rep['model']['dtype']}). Greedy, {cfg['tokens']} new tokens per row with "
               f"EOS ignored, {len(cfg['prompts'])} fixed prompts (batch b: the first b, left padded). "
               f"Vectors: one seeded random direction per layer, norm {cfg['norm']:g}, identical in every library; "
               f"'1 layer' = layer {cfg['layer']}, 'all layers' = 0..{rep['model']['n_layers'] - 1}, added at every token. "
               f"Tokens/s = batch x new tokens / time of one whole generation call (prompt pass included), "
               f"median of {cfg['repeats']} rounds after {cfg['warmup']} warm-up round(s), [min-max] in brackets; "
               f"the settings run interleaved, in an order that rotates every round. "
               f"'wall' uses wall-clock time; 'CPU' uses the process's CPU time, which other jobs on a shared machine "
               f"disturb much less (with one thread per process the two agree on an idle machine). "
               f"'x plain' = median over rounds of the ratio to (a) in the same round; 'x own plain' = the same "
               f"against plain `generate` in the peer's own venv (a peer may run another transformers).")
    out.append("")

    def cell(r: dict[str, Any], kind: str) -> str:
        med = r.get(f"{kind}median_tokens_per_s")
        if med is None:
            return "failed"
        return f"{med:.1f} [{r[f'{kind}min_tokens_per_s']:.1f}-{r[f'{kind}max_tokens_per_s']:.1f}]"

    for b in bs:
        out.append(f"Batch {b}:")
        out.append("")
        out += ["| setting | tok/s wall | x plain wall | tok/s CPU | x plain CPU | x own plain CPU |",
                "|---|---:|---:|---:|---:|---:|"]
        for s, label in rep["settings"].items():
            r = rep["results"][s][str(b)]
            prefix = s.split("_")[0]
            own = r.get(f"cpu_ratio_to_{prefix}_plain") if prefix in ("sv", "repeng") else None
            out.append(f"| {label} | {cell(r, '')} | {_fmt(r.get('ratio_to_hf_plain'), '.3f')} | {cell(r, 'cpu_')} | "
                       f"{_fmt(r.get('cpu_ratio_to_hf_plain'), '.3f')} | {'-' if own is None else _fmt(own, '.3f')} |")
        out.append("")
    noise = []
    for b in bs:
        for kind, clock in (("", "wall"), ("cpu_", "CPU")):
            a = rep["results"].get("hf_plain", {}).get(str(b), {}).get(f"{kind}seconds") or []
            n = rep["results"].get("steerlab_none", {}).get(str(b), {}).get(f"{kind}seconds") or []
            r = sorted(ta / tn for ta, tn in zip(a, n) if ta and tn)
            if len(r) >= 4:
                q = statistics.quantiles(r, n=4)
                noise.append(f"batch {b} {clock} {q[0]:.2f}-{q[2]:.2f} (all {r[0]:.2f}-{r[-1]:.2f})")
    if noise:
        out.append("Noise floor: per-round ratio of (b) to (a), which do the same work, interquartile range "
                   + "; ".join(noise) + ". Differences smaller than this spread are not resolved by this run.")
        out.append("")
    for name, p in rep["peers"].items():
        if p.get("available"):
            v = p.get("versions") or {}
            notes = "; ".join(p.get("notes") or [])
            out.append(f"- {name} {v.get(name)} in its own venv (transformers {v.get('transformers')}, torch {v.get('torch')}; "
                       f"set up with `{p['setup']}`){'; ' + notes if notes else ''}.")
        else:
            out.append(f"- {name}: not measured: {p.get('error')}")
    for s, e in rep["errors"].items():
        out.append(f"- {s} failed: {e}")
    out.append("")
    out.append("Targets: steerlab steered >= 0.95x plain `generate`, and not slower than a peer doing the same steering "
               "(speed vs a peer = median over rounds of peer time / steerlab time in the same round, > 1 = steerlab "
               "faster; the peer's own ratio to plain `generate` in its venv alongside):")
    out.append("")
    names = {prefix: name for name, (prefix, _, _) in PEERS.items()}
    for t in rep["targets"]:
        which = "1 layer" if t["setting"].endswith("_one") else "all layers"
        parts = []
        for clock in ("wall", "cpu"):
            c = t[clock]
            ok = {True: "meets", False: "MISSES", None: "n/a"}[c["meets_0.95"]]
            peers_txt = "; ".join(
                f"{c[f'vs_{prefix}_speed']:.3f}x {name}'s speed (its own {_fmt(c.get(f'{prefix}_ratio_to_own_plain'), '.3f')}x plain)"
                for prefix, name in names.items() if f"vs_{prefix}_speed" in c)
            parts.append(f"{clock.upper() if clock == 'cpu' else clock}: {_fmt(c['ratio_to_hf_plain'], '.3f')}x plain "
                         f"({ok} 0.95)" + (f", {peers_txt}" if peers_txt else ""))
        out.append(f"- batch {t['batch']}, {which}: " + " | ".join(parts))
    out.append("")
    out.append("Correctness cross-check (greedy token ids of each setting's first run; every later round is checked "
               "to give the same ids):")
    out.append("")
    out += ["| compared | batch | identical rows | first differing step per row | meaning |", "|---|---:|---:|---|---|"]
    for c in rep["cross_check"]:
        fd = ", ".join("-" if d is None else str(d) for d in c["first_diff"])
        out.append(f"| {c['a']} vs {c['b']} | {c['batch']} | {c['identical_rows']}/{c['rows']} | {fd} | {c['what']} |")
    nondet = [f"{s} b={b}" for s, d in rep["results"].items() for b, r in d.items() if r.get("deterministic") is False]
    out.append("")
    out.append("All settings produced the same tokens in every round." if not nondet
               else f"Settings whose tokens changed between rounds: {', '.join(nondet)}.")
    out.append("")
    out.append("Layer conventions: steerlab `residual.L`, steering-vectors `layer_activations={L: v}` "
               "(`layer_type=\"decoder_block\"`) and repeng `directions={L: v}` (`ControlModel(model, [L])`) all add to "
               "the output of `model.model.layers[L]` (= HF `hidden_states[L+1]`). steering-vectors also adds on left-pad "
               "positions and repeng from the position whose `position_id` is 0; steerlab skips pads. Pads are masked out of "
               "attention, so this does not change any real token.")
    out.append("")
    return "\n".join(out)


def write_section(path: Path, section: str, title: str = SECTION) -> None:
    """Replace the ``title`` section of ``path`` (or append it), keep the rest."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    lines = text.splitlines()
    start = next((i for i, l in enumerate(lines) if l.strip() == title), None)
    if start is None:
        new = text.rstrip("\n") + "\n\n" + section.rstrip("\n") + "\n"
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ") or lines[i].startswith("# ")),
                   len(lines))
        before = "\n".join(lines[:start]).rstrip("\n")
        after = "\n".join(lines[end:])
        new = (before + "\n\n" if before else "") + section.rstrip("\n") + "\n" + ("\n" + after.rstrip("\n") + "\n" if after else "")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(new)
    os.replace(tmp, path)


def run_monitor(args: argparse.Namespace) -> dict[str, Any]:
    """The ``--monitor`` measurement: HF generate, steerlab generate before monitors (``--before``), now
    without a monitor, now with a no-op monitor; interleaved rounds, as :func:`run`."""
    local, load_start = _setup(args)
    settings = ["hf_plain"] + (["steerlab_before"] if local.before is not None else []) + ["steerlab_none", "steerlab_noop"]
    times: dict[str, dict[int, list[float]]] = {s: {b: [] for b in args.batch_sizes} for s in settings}
    cpu: dict[str, dict[int, list[float]]] = {s: {b: [] for b in args.batch_sizes} for s in settings}
    seen: dict[str, dict[int, list[list[list[int]]]]] = {s: {b: [] for b in args.batch_sizes} for s in settings}
    rounds = args.warmup + args.repeats
    for r in range(rounds):
        timed = r >= args.warmup
        for b in args.batch_sizes:
            k = r % len(settings)
            for s in settings[k:] + settings[:k]:
                dt, dc, toks = local.run(s, b, args.tokens)
                seen[s][b].append(toks)
                if timed:
                    times[s][b].append(dt)
                    cpu[s][b].append(dc)
                print(f"[steer_overhead] round {r + 1}/{rounds}{'' if timed else ' (warm-up)'} batch {b} {s:16s} "
                      f"{b * args.tokens / dt:8.2f} tok/s wall {b * args.tokens / dc:8.2f} tok/s cpu", flush=True)
    load_end = uptime()
    print(f"[steer_overhead] {load_end}", flush=True)
    results: dict[str, dict[str, Any]] = {}
    for s in settings:
        results[s] = {}
        for b in args.batch_sizes:
            entry: dict[str, Any] = {"deterministic": all(t == seen[s][b][0] for t in seen[s][b]),
                                     "tokens": seen[s][b][0]}
            for kind, tab in (("", times), ("cpu_", cpu)):
                tps = [b * args.tokens / t for t in tab[s][b]]
                entry.update({f"{kind}seconds": tab[s][b], f"{kind}median_tokens_per_s": statistics.median(tps),
                              f"{kind}min_tokens_per_s": min(tps), f"{kind}max_tokens_per_s": max(tps)})
                for base in ("hf_plain", "steerlab_none"):
                    entry[f"{kind}ratio_to_{base}"] = statistics.median(
                        tb / t for t, tb in zip(tab[s][b], tab[base][b]))
            results[s][str(b)] = entry
    checks = []
    for a, bb, what in (("steerlab_none", "hf_plain", "our decode loop reproduces HF greedy decoding"),
                        ("steerlab_before", "steerlab_none", "no monitor: the same tokens as before monitors"),
                        ("steerlab_noop", "steerlab_none", "a no-op monitor changes no token")):
        for b in args.batch_sizes:
            if a in seen and bb in seen:
                c = compare(seen[a][b][0], seen[bb][b][0])
                if c is not None:
                    checks.append({"a": a, "b": bb, "batch": b, "what": what, **c})
    return {
        **_header("monitor_overhead", args, local, load_start, load_end),
        "config": {"batch_sizes": args.batch_sizes, "tokens": args.tokens, "repeats": args.repeats,
                   "warmup": args.warmup, "layer": args.layer, "threads": args.threads, "before": args.before,
                   "prompts": PROMPTS, "greedy": True, "eos": "ignored"},
        "settings": {s: MONITOR_LABELS[s] for s in settings},
        "results": results,
        "cross_check": checks,
    }


def monitor_markdown(rep: dict[str, Any]) -> str:
    m, cfg = rep["machine"], rep["config"]
    out = [MONITOR_SECTION, ""]
    out.append(f"Command: `{rep['command']}` (about 2 minutes; `--before REF` times the `generate` of git commit "
               f"REF, loaded from `git show`, against today's other modules).")
    out.append("")
    out.append(f"Machine: {m['cpu']}, {m['cpu_count']} CPUs, torch {m['torch']} with {m['torch_threads']} intra-op "
               f"thread(s), transformers {m['transformers']}, Python {m['python']}; {rep['date_utc']}. Shared with other "
               f"jobs: `uptime` at start `{rep['load']['start']}`, at end `{rep['load']['end']}`.")
    out.append("")
    out.append(f"Model: embedded {rep['model']['name']} ({rep['model']['dtype']}). Greedy, {cfg['tokens']} new tokens "
               f"per row with EOS ignored, the first b of the benchmark's {len(cfg['prompts'])} fixed prompts, unsteered. The no-op "
               f"monitor reads `residual.{cfg['layer']}` every step and answers None for every row (what any monitor "
               f"costs: a read hook, one host sync and a Python call per step). Median of {cfg['repeats']} interleaved "
               f"rounds after {cfg['warmup']} warm-up round(s), [min-max]; 'x (b)' = median over rounds of the time of "
               f"(b) / the time of the setting in the same round (> 1: faster than (b)), 'x (a)' the same against (a). "
               f"Ratios within a few percent of 1 are within this run's noise: (a) and (b0) differ from (b) by as much.")
    out.append("")
    out += ["| setting | batch | tok/s wall | x (b) wall | tok/s CPU | x (b) CPU | x (a) CPU |",
            "|---|---:|---:|---:|---:|---:|---:|"]
    for b in cfg["batch_sizes"]:
        for s, label in rep["settings"].items():
            r = rep["results"][s][str(b)]
            out.append(f"| {label} | {b} | {r['median_tokens_per_s']:.1f} [{r['min_tokens_per_s']:.1f}-"
                       f"{r['max_tokens_per_s']:.1f}] | {r['ratio_to_steerlab_none']:.3f} | "
                       f"{r['cpu_median_tokens_per_s']:.1f} [{r['cpu_min_tokens_per_s']:.1f}-{r['cpu_max_tokens_per_s']:.1f}] | "
                       f"{r['cpu_ratio_to_steerlab_none']:.3f} | {r['cpu_ratio_to_hf_plain']:.3f} |")
    out.append("")
    out += ["| compared | batch | identical rows | meaning |", "|---|---:|---:|---|"]
    for c in rep["cross_check"]:
        out.append(f"| {c['a']} vs {c['b']} | {c['batch']} | {c['identical_rows']}/{c['rows']} | {c['what']} |")
    nondet = [f"{s} b={b}" for s, d in rep["results"].items() for b, r in d.items() if not r.get("deterministic")]
    out.append("")
    out.append("All settings produced the same tokens in every round." if not nondet
               else f"Settings whose tokens changed between rounds: {', '.join(nondet)}.")
    out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render:
        rep = json.loads(Path(args.render).read_text())
        if rep.get("benchmark") != "monitor_overhead":
            rep["targets"] = compute_targets(rep["results"], rep["config"]["batch_sizes"])
        if not args.no_write:
            args.json = args.json or args.render
    else:
        rep = run_monitor(args) if args.monitor else run(args)
    is_monitor = rep.get("benchmark") == "monitor_overhead"
    md = monitor_markdown(rep) if is_monitor else markdown(rep)
    title = MONITOR_SECTION if is_monitor else SECTION
    print()
    print(md)
    if args.json:
        p = Path(args.json)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(rep, indent=1) + "\n")
        print(f"[steer_overhead] wrote {p}")
    if args.markdown:
        write_section(Path(args.markdown), md, title)
        print(f"[steer_overhead] wrote section '{title}' of {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
