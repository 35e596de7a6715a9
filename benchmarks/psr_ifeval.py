"""PSR on the IFEval format subset (issue #13 §5), embedded model: none / prompting / CAA (difference of means) /
constant-LL / S-PSR LL / A-PSR LL / S-PSR LL + prompting, one steering model per instruction.

Protocol (:mod:`steerlab.psr_ifeval`; every unit writes a file under ``--out``, so a rerun resumes):

* **data** (``--stage data``): per instruction group (26: 12 format instructions, 14 response languages),
  ``--requests`` training requests (IFEval prompts outside the eval set, instructions removed, seeded shuffle;
  ``--language-requests`` x 1 draw for a response language) with the instruction appended in the checker's own
  words, ``--draws`` samples each of ``--tokens`` tokens at ``--temperature`` (0.7: at 1 the embedded model
  followed 1 of 16 sampled instructions in a first try); kept when the instruction's checker passes (strict) and the sample is not degenerate; at most
  ``--max-triplets`` train. A group with fewer than ``MIN_TRIPLETS`` kept gets no steering model (its prompts
  are answered unsteered by every steering method, and the table says how many).
* **fit** (``--stage fit --method M``): M in ``spsr_ll, const_ll, apsr_ll`` (AdamW lr 1e-3, 7 epochs, no
  regulariser, answer-only positions: the spec's IFEval settings; S-PSR and constant at layer ``--layer``,
  A-PSR on every layer) and ``dim`` (the mean prompt effect over the kept triplets' response tokens at
  ``--layer``: CAA / Stolfo et al.'s instruction vector).
* **eval** (``--stage eval --method M``): the 163 prompts, greedy, ``--eval-tokens`` tokens, strength 1 (the
  spec: alpha fixed at 1 for IFEval); M in ``none, prompt`` (the instruction in the prompt), the fitted methods
  (request alone), and ``spsr_ll+prompt`` (the instruction in the prompt and S-PSR). IFEval accuracy with
  lm-eval's checkers (strict and loose), coherence under the unsteered model given the request alone.
* ``--stage docs`` writes the IFEval part of the PSR section of docs/results.md.

    OMP_NUM_THREADS=1 STEERLAB_DATA=../shared/data python benchmarks/psr_ifeval.py --stage data
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

import torch
import tqa_results as T
from embed_throughput import replace_section
from psr_results import log, read_json, write_json

import steerlab as sl
from steerlab.data.ifeval import load_ifeval_format, load_ifeval_requests
from steerlab.interventions.psr import GatedSteering, load_psr, save_psr
from steerlab.prompt_steering import PromptPair, encode_triplet
from steerlab.psr_eval import difference_of_means
from steerlab.psr_ifeval import InstructionGroup, instruction_groups, instruction_triplets, run_ifeval, sample_group
from steerlab.psr_train import PSRTrainConfig, train_psr

ROOT = Path(__file__).resolve().parents[1]
TITLE = "## PSR on the IFEval format subset"
MIN_TRIPLETS = 4
FITTED = ("dim", "const_ll", "spsr_ll", "apsr_ll")
CONDITIONS = ("none", "prompt", *FITTED, "spsr_ll+prompt")
LABELS = {"none": "none (request alone)", "prompt": "prompting (instruction in the prompt)",
          "dim": "CAA (difference of means, layer 15)", "const_ll": "constant, LL (layer 15)",
          "spsr_ll": "S-PSR, LL (layer 15)", "apsr_ll": "A-PSR, LL (all layers)",
          "spsr_ll+prompt": "S-PSR, LL + prompting"}


def slug(eval_id: str) -> str:
    return eval_id.replace(":", "__")


class Ctx:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.dir = Path(args.out)
        self.lm = sl.load_model("embedded")
        self.prompts = load_ifeval_format()
        self.groups = instruction_groups(self.prompts)
        requests = load_ifeval_requests([p.key for p in self.prompts])
        random.Random(0).shuffle(requests)
        self.requests = requests[: args.requests]

    def data(self) -> None:
        for g in self.groups:
            path = self.dir / "triplets" / f"{slug(g.eval_id)}.json"
            if path.is_file():
                continue
            t = time.time()
            requests, draws = self.requests_for(g)
            samples = sample_group(self.lm, g, requests, self.dir / "samples" / f"{slug(g.eval_id)}.jsonl",
                                   draws=draws, max_new_tokens=self.args.tokens, temperature=self.args.temperature,
                                   seed=0)
            triplets, report = instruction_triplets(self.lm, g, requests, samples)
            write_json(path, {"report": report.to_dict(), "triplets": [asdict(p) for p in triplets],
                              "seconds": round(time.time() - t, 1)})
            log(f"{g.eval_id}: {report.n_followed} of {report.n_samples} followed, {report.n_kept} kept "
                f"({time.time() - t:.0f} s)")

    def requests_for(self, g: InstructionGroup) -> tuple[list[str], int]:
        """The training requests and draws per request of a group (fewer for a response language: one or two
        eval prompts each, and the model rarely writes them)."""
        if g.instruction_id == "language:response_language":
            return self.requests[: self.args.language_requests], 1
        return self.requests, self.args.draws

    def triplets(self, g: InstructionGroup) -> list[Any]:
        rec = read_json(self.dir / "triplets" / f"{slug(g.eval_id)}.json")
        if rec is None:
            raise SystemExit("run --stage data first")
        pairs = [PromptPair(**t) for t in rec["triplets"]][: self.args.max_triplets]
        return [encode_triplet(self.lm, p, max_response_tokens=self.args.tokens) for p in pairs]

    def fit(self, g: InstructionGroup, method: str) -> GatedSteering | None:
        path = self.dir / "fits" / method / f"{slug(g.eval_id)}.safetensors"
        if path.is_file():
            return load_psr(path, self.lm)
        train = self.triplets(g)
        if len(train) < MIN_TRIPLETS:
            return None
        layer = self.args.layer
        if method == "dim":
            z = difference_of_means(self.lm, train, layer)
            module = GatedSteering(self.lm, [layer], gate="constant", init={"z": {layer: z}}, train_z=False)
            save_psr(module, path, params={"method": method, "instruction": g.eval_id}, data={"n_train": len(train)})
            return module
        layers = list(range(self.lm.adapter.n_layers)) if method.startswith("apsr") else [layer]
        module = GatedSteering(self.lm, layers, gate="constant" if method.startswith("const") else "relu", seed=0)
        cfg = PSRTrainConfig(objective="ll", reg_weight=0.0, normalize=False)
        t = time.time()
        res = train_psr(self.lm, module, train, (), cfg, checkpoint=path.with_suffix(".ckpt"), progress=False)
        save_psr(module, path, params={"method": method, "instruction": g.eval_id, **asdict(cfg)},
                 data={"n_train": len(train)}, extra={"training": res.to_dict()})
        log(f"fit {method} {g.eval_id}: {len(train)} triplets, loss {res.epoch_losses[0]:.3f} -> "
            f"{res.epoch_losses[-1]:.3f}, {time.time() - t:.0f} s")
        return module

    def eval(self, method: str) -> None:
        path = self.dir / "eval" / f"{method.replace('+', '_')}.json"
        if path.is_file():
            return
        t = time.time()
        base = method.split("+")[0]
        modules: dict[str, GatedSteering | None] = {}
        if base in FITTED:
            modules = {g.eval_id: self.fit(g, base) for g in self.groups}
        group_of = {p.key: g.eval_id for g in self.groups for p in g.prompts}
        run = run_ifeval(self.lm, self.prompts, with_instruction=method == "prompt" or method.endswith("+prompt"),
                         module_for=lambda p: modules.get(group_of[p.key]), alpha=1.0,
                         max_new_tokens=self.args.eval_tokens, progress=True)
        steered = sum(len(g.prompts) for g in self.groups if modules.get(g.eval_id) is not None)
        write_json(path, {"method": method, "n_steered_prompts": steered, "seconds": round(time.time() - t, 1),
                          **run.to_dict()})
        s = run.summary
        log(f"eval {method}: strict {s['prompt_level_strict_acc']:.3f}, loose {s['prompt_level_loose_acc']:.3f}, "
            f"coherence {run.coherence:.3f}, {steered} prompts steered, {time.time() - t:.0f} s")


def docs(args: argparse.Namespace) -> None:
    out = Path(args.out)
    reports = [read_json(p)["report"] for p in sorted((out / "triplets").glob("*.json"))]
    trained = [r for r in reports if min(r["n_kept"], args.max_triplets) >= MIN_TRIPLETS]
    lines = [f"Command: `OMP_NUM_THREADS=1 STEERLAB_DATA=../shared/data python benchmarks/psr_ifeval.py --stage "
             f"data|fit|eval|docs --method M` (protocol in its docstring): {args.requests} training requests x "
             f"{args.draws} samples of {args.tokens} tokens at temperature {args.temperature:g} per format instruction "
             f"({args.language_requests} x 1 per response language), answers of {args.eval_tokens} tokens, "
             "strength 1; embedded SmolLM2-135M-Instruct, float32.", "",
             f"Training data: {len(trained)} of {len(reports)} instruction groups had at least {MIN_TRIPLETS} samples "
             "that followed the instruction (the checker's verdict), so only they got steering models; the others' "
             "prompts are answered unsteered by every steering method.", "",
             "| instruction | samples | followed (checker, strict) | kept |", "|---|---|---|---|"]
    lines += [f"| {r['eval_id']} | {r['n_samples']} | {r['n_followed']} | {r['n_kept']} |" for r in reports]
    lines += ["", "| method | prompts steered | prompt-level strict | Δ strict vs none [95 % CI] | Δ strict vs prompting "
              "[95 % CI] | prompt-level loose | coherence (nats/token) | degenerate |", "|---|---|---|---|---|---|---|---|"]
    runs = {m: read_json(out / "eval" / f"{m.replace('+', '_')}.json") for m in CONDITIONS}

    def delta(e: dict[str, Any], ref: str) -> str:
        base = runs[ref]
        if base is None or e is base:
            return "-"
        d = [float(a["prompt_strict"]) - float(b["prompt_strict"]) for a, b in zip(e["results"], base["results"])]
        mean, lo, hi = T._paired(d)
        return f"{mean:+.3f} [{lo:+.3f}, {hi:+.3f}]"

    for m, e in runs.items():
        if e is None:
            continue
        s = e["summary"]
        lines.append(f"| {LABELS[m]} | {e['n_steered_prompts']} | {s['prompt_level_strict_acc']:.3f} | "
                     f"{delta(e, 'none')} | {delta(e, 'prompt')} | {s['prompt_level_loose_acc']:.3f} | "
                     f"{e['coherence']:.3f} | {e['degenerate']:.2f} |")
    lines += ["", "Δ: mean per-prompt difference in strict accuracy, with a 95 % paired bootstrap interval over the 163 "
              "prompts. Coherence: log-likelihood per token under the unsteered model given the request alone (the same "
              "reference for every row).", ""]
    done = [m for m, e in runs.items() if e is not None]
    if done:
        lines += ["Strict accuracy per instruction (registry id; the 14 languages pooled; n = eval prompts):", "",
                  "| instruction | n | " + " | ".join(LABELS[m] for m in done) + " |",
                  "|---|---|" + "---|" * len(done)]
        per = {m: runs[m]["summary"]["per_instruction"] for m in done}
        for iid, row in per[done[0]].items():
            lines.append(f"| {iid} | {row['n']} | " + " | ".join(f"{per[m][iid]['strict_acc']:.2f}" for m in done) + " |")
        lines.append("")
    replace_section(ROOT / "docs" / "results.md", TITLE, "\n".join(lines))
    log("wrote docs/results.md")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stage", required=True, choices=["data", "fit", "eval", "docs"])
    ap.add_argument("--method", default="spsr_ll")
    ap.add_argument("--layer", type=int, default=15)
    ap.add_argument("--requests", type=int, default=24)
    ap.add_argument("--language-requests", type=int, default=8)
    ap.add_argument("--draws", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--max-triplets", type=int, default=8)
    ap.add_argument("--eval-tokens", type=int, default=128)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "psr" / "ifeval"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    if args.stage == "docs":
        docs(args)
        return 0
    ctx = Ctx(args)
    if args.stage == "data":
        ctx.data()
    elif args.stage == "fit":
        for m in args.method.split(","):
            for g in ctx.groups:
                ctx.fit(g, m)
    else:
        for m in args.method.split(","):
            ctx.eval(m)
    return 0


if __name__ == "__main__":
    sys.exit(main())
