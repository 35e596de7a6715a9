"""FASB on the embedded model (issue #12): TruthfulQA MC / generation and the six MC tasks, against none / CAA /
ITI, with the three ablations, on the protocol of ``benchmarks/tqa_results.py`` (same folds, same fit / validation
/ test questions, same fits: FASB uses each fold's ITI fit -- probes, head ranking, mass-mean directions,
reference sigma -- and adds its own inference options).

* MC: ``k`` is ITI's MC-chosen K of the fold (FASB and ITI steer the same heads); ``alpha`` x ``threshold`` are
  chosen on the fold's validation questions by MC2 (ties MC1), ``s = 10`` (the reference's), growing grids.
* Generation: ``alpha`` x ``threshold`` chosen on the first ``--gen-val`` validation questions by True*Info with
  the coherence floor (unsteered - 0.5 nats/token), the generation rule of ``tqa_results.py``.
* Ablations (with the chosen configuration): ``fixed`` (detect="always", adaptive=False: every token steered at
  alpha -- the paper's "all fixed (= ITI)", here in the reference's cache semantics), ``no_backtrack``,
  ``question`` (detection on the question only), ``no_adaptive`` (strength alpha when the probe fires).
* Six MC tasks (``--stage mc6``): every method with fold-0 TruthfulQA fits and fold-0 MC choices (a transfer test:
  the probes are TruthfulQA's), a fixed seeded subset per task; none / CAA / ITI are re-run with this protocol.
* ``--stage general``: the mechanism with a CAA residual vector and a residual-stream probe on one CAA A/B
  behaviour (no ITI heads).

Every unit writes one JSON file under ``--out`` (default ``benchmarks/results/tqa_v2``; the none / CAA / ITI
units of ``tqa_results.py`` are reused, not recomputed), so a rerun resumes. ``--stage docs`` writes the FASB
section of docs/results.md and the plots.

    OMP_NUM_THREADS=1 STEERLAB_DATA=../shared/data python benchmarks/fasb_results.py --stage mc --fold 0
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import time
from pathlib import Path
from typing import Any, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))

import tqa_results as T  # noqa: E402  (the shared protocol: folds, fits, units, selection)
from tqa_results import Ctx, log, read_json, write_json  # noqa: E402

ROOT = T.ROOT
ALPHAS = (15.0, 30.0, 60.0, 120.0)
THRESHOLDS = (0.5, 0.6, 0.7)
S = 10
ABLATIONS: dict[str, dict[str, Any]] = {
    "fixed": {"detect": "always", "adaptive": False},
    "no_backtrack": {"backtrack": False},
    "question": {"detect": "question"},
    "no_adaptive": {"adaptive": False},
}
#: generation ablations run on the test questions (each costs a full generation pass)
GEN_ABLATIONS = ("fixed", "no_backtrack", "question")


def _thr_step(value: Any, side: int) -> Any:
    nxt = round(float(value) + 0.1 * side, 2)
    return nxt if 0.05 <= nxt <= 0.95 else None


class FASBCtx(Ctx):
    def choose_fasb(self, fold: int) -> dict[str, Any]:
        """MC: alpha x threshold on the fold's validation questions at ITI's chosen K (s = 10)."""
        from steerlab.evals.selection import Rule, doubling, search

        path = self.out / "chosen" / f"fold{fold}_fasb.json"
        rec = read_json(path)
        if rec is not None:
            return rec["chosen"]
        k = int(self.chosen(fold, "iti")["k"])
        axes = {"k": [k], "alpha": list(ALPHAS), "threshold": list(THRESHOLDS), "s": [S]}
        steps = {"alpha": doubling(1.0, 2000.0), "threshold": _thr_step}
        choice = search(axes, lambda c: {m: self.mc_unit(fold, "val", "fasb", c)[m] for m in ("mc1", "mc2", "mc3")},
                        Rule(T.SELECT_BY, ("mc1",)), steps=steps, max_rounds=T.MAX_ROUNDS)
        write_json(path, {"fold": fold, "method": "fasb", "by": T.SELECT_BY, "n": len(self.folds[fold]["val"]),
                          **choice.to_dict()})
        log(f"fold {fold} fasb: chose {choice.config} (MC2 {choice.metrics['mc2']:.3f}); at edge {choice.at_edge}")
        return choice.config

    def choose_fasb_gen(self, fold: int, n_val: int) -> dict[str, Any]:
        """Generation: alpha x threshold on the first ``n_val`` validation questions (True*Info, coherence floor)."""
        from steerlab.evals.runner import GEN_MARGIN
        from steerlab.evals.selection import Rule, doubling, search

        path = self.out / "chosen" / f"fold{fold}_fasb_gen.json"
        rec = read_json(path)
        if rec is not None and rec["n"] == n_val:
            return rec["chosen"]
        qs = self.gen_questions(fold, "val", n_val)
        metrics = ("true", "info", "true_info", "coherence", "repetition", "degenerate", "empty")

        def evaluate(cfg: dict[str, Any]) -> dict[str, Any]:
            r = self.gen_unit(fold, "val", "fasb", cfg, qs)
            return {m: r[m] for m in metrics}

        ref = {m: self.gen_unit(fold, "val", "none", {}, qs)[m] for m in metrics}
        k = int(self.chosen(fold, "iti")["k"])
        axes = {"k": [k], "alpha": list(ALPHAS), "threshold": list(THRESHOLDS), "s": [S]}
        steps = {"alpha": doubling(1.0, 2000.0), "threshold": _thr_step}
        rule = Rule("true_info", ("true",), coherence="coherence", margin=GEN_MARGIN)
        choice = search(axes, evaluate, rule, ref, steps, T.MAX_ROUNDS)
        write_json(path, {"fold": fold, "method": "fasb", "n": n_val, **choice.to_dict()})
        log(f"fold {fold} fasb generation: chose {choice.config} (True*Info {choice.metrics['true_info']:.3f}, "
            f"coherence {choice.metrics['coherence']:.3f} vs unsteered {ref['coherence']:.3f}); at edge {choice.at_edge}")
        return choice.config

    def run_fasb_mc(self, folds: Sequence[int], ablations: Sequence[str]) -> None:
        for fold in folds:
            cfg = self.choose_fasb(fold)
            self.mc_unit(fold, "test", "fasb", cfg)
            for name in ablations:
                self.mc_unit(fold, "test", "fasb", {**cfg, **ABLATIONS[name]})

    def run_fasb_gen(self, folds: Sequence[int], n_val: int, per_fold: int | None, ablations: Sequence[str],
                     ablation_per_fold: int | None) -> None:
        for fold in folds:
            cfg = self.choose_fasb_gen(fold, n_val)
            test = self.gen_questions(fold, "test", per_fold)
            self.gen_unit(fold, "test", "fasb", cfg, test)
            sub = test if ablation_per_fold is None else test[:ablation_per_fold]  # the seeded order's first N
            for name in ablations:
                self.gen_unit(fold, "test", "fasb", {**cfg, **ABLATIONS[name]}, sub)

    def run_threshold_sweep(self, folds: Sequence[int], n_val: int, thresholds: Sequence[float]) -> None:
        """The backtrack rate (and True / Info / coherence) across thresholds at the generation-chosen alpha, on the
        same validation questions: for the plot, after the choice (the grid around the reference's 0.6 backtracked
        on every answer)."""
        for fold in folds:
            cfg = self.choose_fasb_gen(fold, n_val)
            qs = self.gen_questions(fold, "val", n_val)
            for t in thresholds:
                self.gen_unit(fold, "val", "fasb", {**cfg, "threshold": float(t)}, qs)

    def run_mc6(self, limit: int, seed: int = 0, ablations: Sequence[str] = GEN_ABLATIONS,  # type: ignore[override]
                tasks: Sequence[str] | None = None) -> None:
        """Every method on the six tasks with fold-0 TruthfulQA fits and fold-0 MC choices (``mc6_v2/``)."""
        from steerlab.data.registry import load_dataset
        from steerlab.evals.multiple_choice import evaluate_prompts, to_prompts

        runs: list[tuple[str, str, dict[str, Any]]] = [("none", "none", {}), ("caa", "caa", self.chosen(0, "caa")),
                                                       ("iti", "iti", self.chosen(0, "iti"))]
        fasb = self.choose_fasb(0)
        runs.append(("fasb", "fasb", fasb))
        runs += [(f"fasb_{name}", "fasb", {**fasb, **ABLATIONS[name]}) for name in ablations]
        for task in (tasks or T.MC_TASKS):
            items = load_dataset(task, limit=limit, seed=seed)
            for label, method, cfg in runs:
                path = self.out / "mc6_v2" / f"{task}_{label}.json"
                if path.exists():
                    continue
                fm = self.fitted(0, method, cfg)
                t = time.time()
                res = evaluate_prompts(self.lm, to_prompts(task, items), task=task, **fm.eval_kwargs(),
                                       batch_size=self.bs)
                write_json(path, {"task": task, "method": label, "config": cfg, "fit_fold": 0, "n": res.n,
                                  "limit": limit, "seed": seed, "acc": res.acc, "acc_norm": res.acc_norm,
                                  "acc_char": res.acc_char, "seconds": round(time.time() - t, 1),
                                  "per_item": [float(p["pred"] == p["label"]) for p in res.predictions]})
                log(f"{task} {label}: acc {res.acc:.3f} (n={res.n}, {time.time() - t:.0f}s)")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stage", required=True, choices=["mc", "gen", "sweep", "mc6", "general", "docs"])
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "tqa_v2"))
    ap.add_argument("--fold", type=int, choices=[0, 1], default=None)
    ap.add_argument("--gen-val", type=int, default=T.GEN_VAL)
    ap.add_argument("--gen-per-fold", type=int, default=None)
    ap.add_argument("--gen-ablations", default=",".join(GEN_ABLATIONS))
    ap.add_argument("--gen-ablation-per-fold", type=int, default=None,
                    help="test questions per fold for the generation ablations (the seeded order's first N)")
    ap.add_argument("--mc6-limit", type=int, default=200)
    ap.add_argument("--mc6-tasks", default="", help="comma-separated tasks, in this order (default: all six; a second "
                                                   "process given them reversed shares the work)")
    ap.add_argument("--ablations", default=",".join(GEN_ABLATIONS),
                    help="MC and six-task ablations to run (fixed, no_backtrack, question, no_adaptive)")
    ap.add_argument("--batch-size", type=int, default=8)
    args = ap.parse_args(argv)
    out = Path(args.out)
    folds = (0, 1) if args.fold is None else (args.fold,)
    if args.stage == "docs":
        import fasb_docs

        fasb_docs.write(out)
        return 0
    ctx = FASBCtx(out, args.batch_size)
    mc_abl = [a for a in args.ablations.split(",") if a]
    if args.stage == "mc":
        ctx.run_fasb_mc(folds, mc_abl)
    elif args.stage == "gen":
        abl = [a for a in args.gen_ablations.split(",") if a]
        ctx.run_fasb_gen(folds, args.gen_val, args.gen_per_fold, abl, args.gen_ablation_per_fold)
    elif args.stage == "sweep":
        ctx.run_threshold_sweep(folds, args.gen_val, (0.1, 0.2, 0.3, 0.4))
    elif args.stage == "mc6":
        ctx.run_mc6(args.mc6_limit, ablations=mc_abl, tasks=[t for t in args.mc6_tasks.split(",") if t] or None)
    elif args.stage == "general":
        import fasb_general

        fasb_general.run(ctx)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
