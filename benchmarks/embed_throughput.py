"""Embedding throughput: sentences/s of base / +CP-NS / +CP-NR / +TP / +CP+TP on the same sentences.

Every configuration encodes the same sentences (the first ``--n`` distinct sentences of STS-B
dev) with the same batch size. Configurations are timed round-robin, ``--repeats`` times, so
that load from other processes spreads over all of them; the table reports the median time.
Next to wall-clock time it reports *token-layer passes*: the number of (row x token) positions
each decoder layer processed, counted with hooks. That count does not depend on machine load
and shows where the cost comes from (the CP auxiliary pass, TP's extra token).

  python benchmarks/embed_throughput.py --prompts prompteol --n 256 --batch-size 32 --repeats 5
  python benchmarks/embed_throughput.py ... --write-docs   # updates "## Embedding throughput" in docs/benchmarks.md

Targets (issue #4): TP <= 1.08x and CP <= 1.3x the base prompt's time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402

import steerlab  # noqa: E402
from steerlab.data.sts import load_sts  # noqa: E402
from steerlab.embed import Encoder  # noqa: E402

CONFIGS = {
    "base": {},
    "cp-ns": {"cp": "ns"},
    "cp-nr": {"cp": "nr"},
    "tp": {"tp": True},
    "cp-tp": {"cp": "ns", "tp": True},
}
LABEL = {"base": "base", "cp-ns": "+CP-NS", "cp-nr": "+CP-NR", "tp": "+TP", "cp-tp": "+CP-NS+TP"}
TARGET = {"tp": 1.08, "cp-ns": 1.3, "cp-nr": 1.3}
SECTION = "## Embedding throughput"


def count_token_layers(enc: Encoder, sents: list[str], batch_size: int) -> int:
    """Sum over decoder-layer calls of rows x tokens processed (prefix passes included)."""
    total = [0]

    def hook(module: Any, args: Any, kwargs: Any) -> None:
        x = args[0] if args else kwargs["hidden_states"]
        total[0] += int(x.shape[0] * x.shape[1])

    hs = [enc.adapter.layer(enc.model, i).register_forward_pre_hook(hook, with_kwargs=True)
          for i in range(enc.n_layers)]
    try:
        enc.encode(sents, batch_size=batch_size)
    finally:
        for h in hs:
            h.remove()
    return total[0]


def replace_section(path: Path, title: str, body: str) -> None:
    """Replace the ``title`` section (up to the next ``## `` heading) of a markdown file, or append it."""
    text = path.read_text() if path.exists() else ""
    lines = text.splitlines()
    start = next((i for i, l in enumerate(lines) if l.strip() == title), None)
    block = [title, "", *body.rstrip().splitlines(), ""]
    if start is None:
        if lines and lines[-1].strip():
            lines.append("")
        lines += block
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        lines = lines[:start] + block + lines[end:]
    from steerlab.io import atomic_write_text

    atomic_write_text(path, "\n".join(lines).rstrip() + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="embedded")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--prompts", default="prompteol")
    p.add_argument("--configs", default=",".join(CONFIGS))
    p.add_argument("--n", type=int, default=256, help="number of sentences (STS-B dev, first distinct ones)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--share-prefix", default="both", choices=["on", "off", "both"],
                   help="encoder's shared-prompt-prefix optimisation (default: time both)")
    p.add_argument("--data", default=None)
    p.add_argument("--json", default=None, help="write raw timings here")
    p.add_argument("--write-docs", action="store_true", help=f"replace '{SECTION}' in docs/benchmarks.md")
    p.add_argument("--from-json", default=None, help="render a saved --json result instead of measuring")
    a = p.parse_args()
    if a.from_json:
        finish(json.loads(Path(a.from_json).read_text()), a.write_docs)
        return
    if a.threads:
        torch.set_num_threads(a.threads)

    pairs = load_sts("STSBenchmark", "dev", a.data)
    sents = list(dict.fromkeys(s for q in pairs for s in (q.s1, q.s2)))[: a.n]
    lm = steerlab.load_model(a.model, dtype=a.dtype)
    configs = a.configs.split(",")
    modes = {"on": [True], "off": [False], "both": [True, False]}[a.share_prefix]
    encs = {(pr, sh, c): Encoder(lm, prompt=pr, batch_size=a.batch_size, share_prefix=sh, **CONFIGS[c])
            for pr in a.prompts.split(",") for sh in modes for c in configs}
    load0 = os.getloadavg()
    work_full = {k: count_token_layers(e, sents, a.batch_size) for k, e in encs.items()}
    times: dict[tuple[str, bool, str], list[float]] = {k: [] for k in encs}
    cpu: dict[tuple[str, bool, str], list[float]] = {k: [] for k in encs}
    for k, e in encs.items():  # warm-up
        e.encode(sents[: a.batch_size], batch_size=a.batch_size)
    for _ in range(a.repeats):
        for k, e in encs.items():
            c0, t0 = time.process_time(), time.perf_counter()
            e.encode(sents, batch_size=a.batch_size)
            times[k].append(time.perf_counter() - t0)
            cpu[k].append(time.process_time() - c0)
    load1 = os.getloadavg()

    rows = []
    for (pr, sh, c), ts in times.items():
        base = (pr, sh, "base")
        med = statistics.median(ts)
        base_med = statistics.median(times[base]) if base in times else float("nan")
        ratio = med / base_med
        cmed = statistics.median(cpu[(pr, sh, c)])
        cratio = cmed / statistics.median(cpu[base]) if base in cpu else float("nan")
        wratio = work_full[(pr, sh, c)] / work_full[base] if base in work_full else float("nan")
        best_ratio = min(ts) / min(times[base]) if base in times else float("nan")
        target = TARGET.get(c)
        verdict = "–" if target is None else ("meets" if cratio <= target else "misses") + f" <= {target}x"
        rows.append({"prompt": pr, "share_prefix": sh, "config": c, "median_s": med, "min_s": min(ts),
                     "sent_per_s": len(sents) / min(ts), "time_ratio": ratio, "best_time_ratio": best_ratio, "cpu_s": cmed, "cpu_ratio": cratio,
                     "work": work_full[(pr, sh, c)], "work_ratio": wratio, "target": verdict, "times": ts,
                     "cpu_times": cpu[(pr, sh, c)]})

    cmd = "python benchmarks/embed_throughput.py " + " ".join(
        shlex.quote(x) for x in sys.argv[1:] if x != "--write-docs")
    env = (f"{lm.name}, {a.dtype}, {len(sents)} STS-B dev sentences, batch {a.batch_size}, {a.repeats} round-robin "
           f"repeats, torch {torch.__version__}, {torch.get_num_threads()} thread(s), {platform.machine()}, "
           f"load average {load0[0]:.1f} -> {load1[0]:.1f}")
    result = {"rows": rows, "env": env, "command": cmd}
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=1))
    finish(result, a.write_docs)


def render(result: dict[str, Any]) -> str:
    head = ("| prompt | shared prefix | config | sentences/s (best) | wall vs base (best) | wall vs base (median) "
            "| CPU time vs base (median) | token-layer passes vs base | target (CPU time) |\n"
            "|---|---|---|---|---|---|---|---|---|")
    body = "\n".join(
        f"| {r['prompt']} | {'on' if r['share_prefix'] else 'off'} | {LABEL[r['config']]} | {r['sent_per_s']:.1f} "
        f"| {r['best_time_ratio']:.3f}x | {r['time_ratio']:.3f}x | {r['cpu_ratio']:.3f}x | {r['work_ratio']:.3f}x "
        f"| {r['target']} |" for r in result["rows"])
    return f"{head}\n{body}\n\n{result['env']}.\n\nCommand: `{result['command']}`"


def finish(result: dict[str, Any], write_docs: bool) -> None:
    md = render(result)
    print(md)
    if write_docs:
        intro = (
            "Sentences/s of each configuration on the same sentences and batch size "
            "(`benchmarks/embed_throughput.py`). *Wall vs base* compares wall-clock times (best and median "
            "of the round-robin repeats), *CPU time vs base* the process CPU times, which other processes on "
            "a shared machine disturb much less; *token-layer passes* counts the (row x token) positions "
            "every decoder layer processed and does not depend on machine load at all. *Shared prefix* is "
            "the encoder's default optimisation that runs the prompt prefix common to a batch once. "
            "Targets (issue #4): TP <= 1.08x and CP <= 1.3x the base prompt's time; the verdict uses "
            "the CPU-time ratio.\n"
        )
        notes = ROOT / "benchmarks" / "results" / "embed" / "THROUGHPUT_NOTES.md"
        extra = ("\n" + notes.read_text().strip() + "\n") if notes.is_file() else ""
        replace_section(ROOT / "docs" / "benchmarks.md", SECTION, intro + "\n" + md + "\n" + extra)


if __name__ == "__main__":
    main()
