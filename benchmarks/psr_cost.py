"""What PSR costs at inference (issue #13 §6): wall time of generation steered by S-PSR (one gated layer) and
A-PSR (every layer gated) against plain generation and against constant steering (CAA at one layer), at 64 new
tokens, batch 1 and 8.

Model: the embedded SmolLM2-135M-Instruct, float32, 1 thread. Prompts: 8 fixed Persona Vectors questions in the
chat template, greedy, no stop string; rows may end at EOS, so the time is reported per generated token
(tokens counted per setting). The PSR modules have random parameters with the
gate bias set so that gates are open (the cost is the same either way: the gate is computed on every steered
token). Median of ``--repeats`` interleaved rounds. Targets: S-PSR <= 1.05x, A-PSR <= 1.15x plain.

    OMP_NUM_THREADS=1 STEERLAB_DATA=../shared/data python benchmarks/psr_cost.py --repeats 5 --write-docs
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import torch
from embed_throughput import replace_section

import steerlab as sl
from steerlab.data.persona_vectors import load_trait
from steerlab.files import atomic_write_text
from steerlab.interventions.psr import GatedSteering
from steerlab.vectors import SteeringVector, VectorMeta

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## PSR inference cost"
OUT = ROOT / "docs" / "bench" / "psr_cost.json"


def _uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except OSError:
        return "n/a"


def _open(module: GatedSteering) -> GatedSteering:
    with torch.no_grad():
        for b in module.b:
            b.fill_(1.0)
        for z in module.z:
            z.mul_(0.01)  # small: the text stays close to the plain one, so lengths stay comparable
    return module


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--write-docs", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    lm = sl.load_model("embedded")
    questions = list(load_trait("evil", "eval").questions[:8])
    prompts = [lm.format_prompt(q, chat=True) for q in questions]
    n_layers, d = lm.adapter.n_layers, lm.adapter.hidden_size
    s_psr = _open(GatedSteering(lm, [15], seed=1))
    a_psr = _open(GatedSteering(lm, list(range(n_layers)), seed=1))
    meta = VectorMeta(model_name=lm.name, architecture=lm.adapter.family, hidden_size=d, n_layers=n_layers)
    caa = SteeringVector({"residual.15": torch.randn(d, generator=torch.Generator().manual_seed(0)) * 0.01}, meta)
    settings: dict[str, dict[str, Any]] = {
        "plain": {}, "CAA (1 layer)": {"steer": caa, "where": "generated"},
        "S-PSR (layer 15)": {"interventions": [s_psr]}, f"A-PSR ({n_layers} layers)": {"interventions": [a_psr]},
    }
    rows = []
    for batch in (1, 8):
        ps = prompts[:batch]
        times: dict[str, list[float]] = {k: [] for k in settings}
        tokens: dict[str, int] = {}
        for name, kw in settings.items():  # warm-up
            sl.generate(lm, ps, max_new_tokens=4, **kw)
        for _ in range(args.repeats):
            for name, kw in settings.items():
                t = time.perf_counter()
                out = sl.generate(lm, ps, max_new_tokens=args.max_new_tokens, **kw)
                times[name].append(time.perf_counter() - t)
                tokens[name] = sum(len(x) for x in out.tokens)
        base = statistics.median(times["plain"]) / tokens["plain"]
        for name in settings:
            per_tok = statistics.median(times[name]) / tokens[name]
            rows.append({"batch": batch, "setting": name, "median_s": statistics.median(times[name]),
                         "tokens": tokens[name], "s_per_token": per_tok, "vs_plain": per_tok / base})
            print(f"batch {batch} {name:>22}: {statistics.median(times[name]):.2f} s, {tokens[name]} tokens, "
                  f"{per_tok * 1e3:.1f} ms/token, {per_tok / base:.3f}x plain", flush=True)
    rec = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": platform.processor() or
           platform.machine(), "torch": torch.__version__, "threads": 1, "repeats": args.repeats,
           "max_new_tokens": args.max_new_tokens, "load": _uptime(), "rows": rows}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(OUT, json.dumps(rec, indent=2) + "\n")
    if args.write_docs:
        write_docs(rec)
    return 0


def write_docs(rec: dict[str, Any]) -> None:
    """Replace (or append) the PSR section of docs/benchmarks.md."""
    lines = [f"Embedded SmolLM2-135M-Instruct, float32, 1 thread, greedy, {rec['max_new_tokens']} new tokens, 8 Persona "
             f"Vectors questions (chat template); median of {rec['repeats']} interleaved rounds; time per generated "
             "token (rows may stop at EOS, so tokens are counted per setting). Targets (issue #13): S-PSR <= 1.05x, "
             f"A-PSR <= 1.15x plain. Load while measuring: `{rec['load']}`.", "",
             "| batch | setting | median s | tokens | ms / token | vs plain |", "|---|---|---|---|---|---|"]
    for r in rec["rows"]:
        lines.append(f"| {r['batch']} | {r['setting']} | {r['median_s']:.2f} | {r['tokens']} | "
                     f"{r['s_per_token'] * 1e3:.1f} | {r['vs_plain']:.3f}x |")
    lines += ["", "Command: `OMP_NUM_THREADS=1 STEERLAB_DATA=../shared/data python benchmarks/psr_cost.py --repeats "
              f"{rec['repeats']} --write-docs` (raw numbers: `docs/bench/psr_cost.json`)."]
    replace_section(ROOT / "docs" / "benchmarks.md", SECTION, "\n".join(lines))


if __name__ == "__main__":
    raise SystemExit(main())
