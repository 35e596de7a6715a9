"""First results on the embedded model: TruthfulQA MC / generation and the six MC tasks for none / CAA / ITI.

Protocol (ITI/FASB, docs/results.md):

* TruthfulQA MC-json (``truthfulqa_mc``, v1, 817 questions), 2 folds split by question
  (``kfold_by_question(seed=0)``, the runner's split). Inside each fold's training half an 80/20
  split by question (``train_val_split(0.2, seed=42)``): CAA / ITI are fitted on the 80 % "fit"
  part only; hyper-parameters are chosen by **MC2** (ties: MC1) on the 20 % "val" part; the chosen
  configuration is evaluated on the fold's test half. Nothing of the test half is used before.
* CAA: mean difference of the residual stream at the answer's last token (true vs false answers,
  the MC prompt with the 6-shot primer), added from the last prompt token on; grid layer x multiplier.
* ITI: per-head probes on ``"Q: {question} A: {answer}"``, heads ranked by probe accuracy on a
  20 % split of the fit part, mass-mean directions, shift ``alpha * sigma * u`` on the top-K
  heads, added on the answer tokens (MC) / every generated token (generation); grid K x alpha.
* Generation: TruthfulQA CSV questions (same questions, same folds), ITI instruction + primer,
  greedy, 50 new tokens; judge = steerlab's default proxy judge (MiniLM similarity for truth, rules
  for info), with each fold's chosen configuration.
* Six MC tasks (zero-shot, lm-eval prompts), a fixed seeded subset per task, steered with the
  fold-0 TruthfulQA-fitted vectors and fold-0 chosen hyper-parameters.

Every unit of work writes one JSON file under ``--out`` (default ``benchmarks/results/tqa``), so
a rerun of the same command resumes; ``--stage docs`` rewrites the tables in docs/results.md.

    OMP_NUM_THREADS=1 python benchmarks/tqa_results.py --stage all
"""

from __future__ import annotations

import argparse
from collections import Counter
import json
import math
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, Sequence

ROOT = Path(__file__).resolve().parents[1]
CAA_LAYERS = (6, 12, 18)
CAA_MULTS = (2.0, 5.0, 10.0)
ITI_KS = (8, 24)
ITI_ALPHAS = (5.0, 10.0, 15.0)
MC_TASKS = ("copa", "storycloze", "snli", "mmlu", "sst2", "winogrande")
SELECT_BY = "mc2"


def log(*a: Any) -> None:
    print(time.strftime("%H:%M:%S"), *a, flush=True)


def write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1) + "\n")
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.exists() else None


class Ctx:
    def __init__(self, out: Path, batch_size: int) -> None:
        import torch

        torch.set_num_threads(1)
        import steerlab
        from steerlab.data.registry import load_dataset
        from steerlab.evals.truthfulqa import kfold_by_question, train_val_split

        self.out = out
        self.bs = batch_size
        self.lm = steerlab.load_model("embedded")
        self.items = load_dataset("truthfulqa_mc")
        qs = [it.question.strip() for it in self.items]
        self.folds = []
        for f in kfold_by_question(qs, 2, 0):
            fit, val = train_val_split(f.train, 0.2, 42)
            self.folds.append({"fold": f.index, "fit": list(fit), "val": list(val), "test": list(f.test)})
        self._fits: dict[tuple[int, str], Any] = {}

    # ------------------------------------------------------------------ fitting
    def caa_vectors(self, fold: int) -> dict[int, Any]:
        key = (fold, "caa")
        if key not in self._fits:
            from steerlab.fit import fit_vector
            from steerlab.methods.pairs import contrast_pairs, labelled_questions

            t = time.time()
            fit_items = [self.items[i] for i in self.folds[fold]["fit"]]
            pairs = contrast_pairs(labelled_questions(self.lm, fit_items))
            vec = fit_vector(self.lm, pairs, list(CAA_LAYERS), method="mean_diff", site_kind="residual",
                             positions="last", batch_size=self.bs, share_prefix=True)
            out = {layer: _one_site(vec, layer) for layer in CAA_LAYERS}
            self._fits[key] = out
            info = {"n_pairs": len(pairs), "seconds": round(time.time() - t, 1),
                    "norms": {str(k): float(v.vectors[f"residual.{k}"].norm()) for k, v in out.items()}}
            write_json(self.out / "fits" / f"fold{fold}_caa.json", info)
            log(f"fold {fold} CAA fitted on {len(pairs)} pairs in {time.time() - t:.0f}s")
        return self._fits[key]

    def iti_fits(self, fold: int) -> dict[int, Any]:
        key = (fold, "iti")
        if key not in self._fits:
            from steerlab.interventions.iti import ITIConfig, capture_heads, fit_iti
            from steerlab.methods.pairs import labelled_questions, probe_records

            t = time.time()
            fit_items = [self.items[i] for i in self.folds[fold]["fit"]]
            records = probe_records(labelled_questions(self.lm, fit_items, style="short"))
            x = capture_heads(self.lm, [(r[0], r[1]) for r in records], 16)
            fits = {k: fit_iti(self.lm, records, ITIConfig(k=k, alpha=1.0), activations=x) for k in ITI_KS}
            self._fits[key] = fits
            any_fit = fits[ITI_KS[0]]
            info = {"n_records": len(records), "seconds": round(time.time() - t, 1),
                    "val_acc": any_fit.probes.val_acc.tolist(), "train_acc": any_fit.probes.train_acc.tolist(),
                    "heads": {str(k): [list(map(int, h)) for h in f.heads] for k, f in fits.items()}}
            write_json(self.out / "fits" / f"fold{fold}_iti.json", info)
            log(f"fold {fold} ITI fitted on {len(records)} records in {time.time() - t:.0f}s")
        return self._fits[key]

    def fitted(self, fold: int, method: str, cfg: dict[str, Any]) -> Any:
        from steerlab.methods.base import FittedMethod

        if method == "none":
            return FittedMethod()
        if method == "caa":
            return FittedMethod(steer=self.vector(fold, "caa", int(cfg["layer"])), strength=float(cfg["multiplier"]),
                                steer_from="last_prompt")
        if method == "iti":
            return FittedMethod(steer=self.vector(fold, "iti", int(cfg["k"])), strength=float(cfg["alpha"]),
                                steer_from="answer")
        raise ValueError(method)

    def vector(self, fold: int, method: str, key: int) -> Any:
        """A fitted vector (CAA: per layer; ITI: per K, alpha = 1), saved under ``vectors/`` and reused."""
        from steerlab.artifacts import load_vector, save_vector

        path = self.out / "vectors" / f"fold{fold}_{method}_{'layer' if method == 'caa' else 'k'}{key}.safetensors"
        if path.exists():
            return load_vector(path, self.lm)
        if method == "caa":
            vecs = self.caa_vectors(fold)
        else:
            vecs = {k: f.vector for k, f in self.iti_fits(fold).items()}
        for k, v in vecs.items():
            save_vector(v, self.out / "vectors" / f"fold{fold}_{method}_{'layer' if method == 'caa' else 'k'}{k}")
        return vecs[key]

    # ------------------------------------------------------------------ TruthfulQA MC
    def mc_unit(self, fold: int, split: str, method: str, cfg: dict[str, Any]) -> dict[str, Any]:
        from steerlab.evals.truthfulqa import evaluate_truthfulqa_mc

        name = "_".join([f"fold{fold}", split, method] + [f"{k}{v:g}" if isinstance(v, float) else f"{k}{v}"
                                                            for k, v in cfg.items()])
        path = self.out / "mc" / f"{name}.json"
        done = read_json(path)
        if done is not None:
            return done
        fm = self.fitted(fold, method, cfg)
        idx = self.folds[fold][split]
        t = time.time()
        res = evaluate_truthfulqa_mc(self.lm, [self.items[i] for i in idx], **fm.eval_kwargs(), batch_size=self.bs)
        dt = time.time() - t
        rec = {"fold": fold, "split": split, "method": method, "config": cfg, "n": res.n, "mc1": res.mc1,
               "mc2": res.mc2, "mc3": res.mc3, "seconds": round(dt, 1), "s_per_question": round(dt / res.n, 3),
               "per_question": [{"index": i, "mc1": r.mc1, "mc2": r.mc2, "mc3": r.mc3}
                                for i, r in zip(idx, res.per_question)]}
        write_json(path, rec)
        log(f"{name}: MC1 {res.mc1:.3f} MC2 {res.mc2:.3f} MC3 {res.mc3:.3f} ({dt / res.n:.2f} s/q)")
        return rec

    def choose(self, fold: int, method: str) -> dict[str, Any]:
        grid = ([{"layer": l, "multiplier": m} for l in CAA_LAYERS for m in CAA_MULTS] if method == "caa"
                else [{"k": k, "alpha": a} for k in ITI_KS for a in ITI_ALPHAS])
        recs = [self.mc_unit(fold, "val", method, c) for c in grid]
        best = max(recs, key=lambda r: (r[SELECT_BY], r["mc1"]))
        write_json(self.out / "chosen" / f"fold{fold}_{method}.json",
                   {"fold": fold, "method": method, "chosen": best["config"], "by": SELECT_BY,
                    "grid": [{"config": r["config"], "mc1": r["mc1"], "mc2": r["mc2"], "mc3": r["mc3"], "n": r["n"]}
                             for r in recs]})
        return best["config"]

    def chosen(self, fold: int, method: str) -> dict[str, Any]:
        if method == "none":
            return {}
        rec = read_json(self.out / "chosen" / f"fold{fold}_{method}.json")
        return rec["chosen"] if rec else self.choose(fold, method)

    def run_mc(self) -> None:
        for fold in (0, 1):
            self.mc_unit(fold, "test", "none", {})
            for method in ("iti", "caa"):
                self.mc_unit(fold, "test", method, self.chosen(fold, method))
        for fold in (0, 1):  # the unsteered reference on the validation parts (not used for any choice)
            self.mc_unit(fold, "val", "none", {})

    # ------------------------------------------------------------------ six MC tasks
    def run_mc6(self, limit: int, seed: int = 0) -> None:
        from steerlab.data.registry import load_dataset
        from steerlab.evals.multiple_choice import evaluate_prompts, to_prompts

        for task in MC_TASKS:
            items = load_dataset(task, limit=limit, seed=seed)
            for method in ("none", "iti", "caa"):
                path = self.out / "mc6" / f"{task}_{method}.json"
                if path.exists():
                    continue
                cfg = self.chosen(0, method)
                fm = self.fitted(0, method, cfg)
                t = time.time()
                res = evaluate_prompts(self.lm, to_prompts(task, items), task=task, **fm.eval_kwargs(),
                                       batch_size=self.bs)
                write_json(path, {"task": task, "method": method, "config": cfg, "fit_fold": 0, "n": res.n,
                                  "limit": limit, "seed": seed, "acc": res.acc, "acc_norm": res.acc_norm,
                                  "acc_char": res.acc_char, "seconds": round(time.time() - t, 1)})
                log(f"{task} {method}: acc {res.acc:.3f} (n={res.n}, {time.time() - t:.0f}s)")

    # ------------------------------------------------------------------ generation
    def run_gen(self, per_fold: int | None, chunk: int = 16) -> None:
        import random

        from steerlab.data.registry import load_dataset
        from steerlab.evals.judges import default_judge
        from steerlab.evals.truthfulqa_gen import evaluate_truthfulqa_gen

        csv = load_dataset("truthfulqa")
        by_q = {it.question.strip(): it for it in csv}
        judge = default_judge()
        for fold in (0, 1):
            test = [self.items[i].question.strip() for i in self.folds[fold]["test"]]
            test = [q for q in test if q in by_q]
            if per_fold is not None and per_fold < len(test):
                # a fixed seeded order: the first N questions of one permutation (so a larger N extends a smaller)
                perm = list(range(len(test)))
                random.Random(0).shuffle(perm)
                test = [test[j] for j in perm[:per_fold]]
            for method in ("none", "iti", "caa"):
                path = self.out / "gen" / f"fold{fold}_{method}.json"
                rec = read_json(path) or {"fold": fold, "method": method, "records": []}
                rec["config"] = self.chosen(fold, method)
                done = {r["question"] for r in rec["records"]}
                todo = [q for q in test if q not in done]
                if not todo:
                    continue
                fm = self.fitted(fold, method, rec["config"])
                for s in range(0, len(todo), chunk):
                    qs = todo[s:s + chunk]
                    t = time.time()
                    res = evaluate_truthfulqa_gen(self.lm, [by_q[q] for q in qs], fm.generate_steer(), judge,
                                                  batch_size=self.bs, progress=False)
                    rec["judge"] = res.judge
                    rec["records"].extend({"question": q, "answer": r.answer, "truthful": r.truthful,
                                           "informative": r.informative} for q, r in zip(qs, res.records))
                    write_json(path, rec)
                    log(f"gen fold {fold} {method}: {len(rec['records'])}/{len(test)} ({(time.time() - t) / len(qs):.2f} s/q)")


def run_speed(ctx: Ctx, n_questions: int = 8, n_fit: int = 20) -> None:
    """Seconds per TruthfulQA question: plain path, shared context without / with the shared base prefix;
    CAA fitting through ``capture`` vs the shared-prefix path. Same inputs, 1 thread, one after the other."""
    import torch

    from steerlab.evals.loglik import loglikelihood
    from steerlab.evals.truthfulqa import qa_prompt, to_questions
    from steerlab.fit import fit_vector
    from steerlab.methods.pairs import contrast_pairs, labelled_questions

    path = ctx.out / "speed.json"
    if path.exists():
        return
    lm = ctx.lm
    qs = to_questions(ctx.items[:n_questions])
    pairs = [(qa_prompt(q.question), " " + a) for q in qs for a in q.answers()]
    from steerlab.methods.base import FittedMethod
    from steerlab.vectors import SteeringVector

    g = torch.Generator().manual_seed(0)  # a fixed random direction: the timing does not depend on the vector
    steer = FittedMethod(steer=SteeringVector({"residual.18": 5.0 * torch.randn(lm.adapter.hidden_size, generator=g)}),
                         strength=1.0)
    rec: dict[str, Any] = {"n_questions": n_questions, "n_pairs": len(pairs), "threads": torch.get_num_threads(),
                           "scoring_s_per_question": {}, "max_abs_diff_vs_plain": {}}
    ref = None
    for name, kw in (("plain (no sharing)", {"share_context": False}),
                     ("shared context, no base prefix (before)", {"share_context": True, "share_base": False}),
                     ("shared context + base prefix (after)", {"share_context": True}),
                     ("after, steered (answer tokens)", {"share_context": True, "steer": steer.steer,
                                                             "strength": steer.strength, "steer_from": "answer"})):
        t = time.time()
        res = loglikelihood(lm, pairs, batch_size=ctx.bs, **kw)
        rec["scoring_s_per_question"][name] = round((time.time() - t) / n_questions, 3)
        if ref is None:
            ref = res
        elif "steer" not in kw:
            rec["max_abs_diff_vs_plain"][name] = max(abs(a.sum - b.sum) for a, b in zip(res, ref))
    cps = contrast_pairs(labelled_questions(lm, ctx.items[:n_fit]))
    fits = {}
    for name, share in (("capture (before)", False), ("shared prefix (after)", True)):
        t = time.time()
        fits[name] = fit_vector(lm, cps, list(CAA_LAYERS), share_prefix=share, batch_size=ctx.bs)
        rec.setdefault("caa_fit_s_per_question", {})[name] = round((time.time() - t) / n_fit, 3)
    a, b = fits.values()
    rec["caa_fit_max_abs_diff"] = max(float((a.vectors[k] - b.vectors[k]).abs().max()) for k in a.vectors)
    rec["caa_fit_n_pairs"] = len(cps)
    rec["caa_fit_n_questions"] = n_fit
    write_json(path, rec)
    log(f"speed: {rec}")


def _one_site(vec: Any, layer: int) -> Any:
    from steerlab.vectors import SteeringVector

    key = f"residual.{layer}"
    return SteeringVector({key: vec.vectors[key]}, vec.meta)


# ---------------------------------------------------------------------- docs


def _pct(x: float | None) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}"


def _cfg_text(method: str, cfg: dict[str, Any]) -> str:
    if method == "caa":
        return f"layer {cfg['layer']}, x{cfg['multiplier']:g}"
    if method == "iti":
        return f"K={cfg['k']}, alpha={cfg['alpha']:g}"
    return "-"


def _bootstrap_ci(vals: Sequence[float], n: int = 2000, seed: int = 0) -> float:
    import random

    rng = random.Random(seed)
    m = len(vals)
    means = sorted(sum(vals[rng.randrange(m)] for _ in range(m)) / m for _ in range(n))
    return (means[int(0.975 * n)] - means[int(0.025 * n)]) / 2


def _paired(d: Sequence[float], n: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Mean of per-question differences and its 95 % bootstrap interval (questions resampled)."""
    import random

    rng = random.Random(seed)
    m = len(d)
    means = sorted(sum(d[rng.randrange(m)] for _ in range(m)) / m for _ in range(n))
    return sum(d) / m, means[int(0.025 * n)], means[int(0.975 * n)]


def make_docs(out: Path, command: str) -> str:
    lines: list[str] = []
    rel = out.relative_to(ROOT) if out.is_absolute() and ROOT in out.parents else out
    lines += ["## TruthfulQA and six MC tasks: none / CAA / ITI (embedded model)", "",
              "Model: the embedded SmolLM2-135M-Instruct (30 layers x 9 heads, float32, CPU, 1 thread). "
              f"Driver: `benchmarks/tqa_results.py`; raw per-question JSON under `{rel}/`. "
              "Exact command (every table below; it resumes from the JSON files):", "",
              "```", command, "```", "",
              "The files were written by successive invocations of this command that differed only in "
              "`--gen-per-fold` (100: TruthfulQA MC, six tasks, 100 generations per fold and method; 200: the "
              "unsteered validation references, the speed table, generations 101-200; then 300 with `--stage gen`: "
              "generations 201-300; then the command itself with `--stage gen`: the rest, all 817; all in one fixed "
              "seeded order of each fold's test questions); rerunning the "
              "command recomputes nothing that exists. Docs only: the same command with `--stage docs`.", "",
              "Protocol: TruthfulQA MC-json (`truthfulqa_mc` v1, 817 questions), 2 folds split by question "
              "(`kfold_by_question(seed=0)`); inside each training half an 80/20 split by question "
              "(`train_val_split(0.2, seed=42)`): CAA/ITI are fitted on the 80 % part only, the "
              f"hyper-parameters chosen by **{SELECT_BY.upper()}** (ties: MC1) on the 20 % validation part, and the "
              "chosen configuration is scored on the fold's test half. "
              f"Grids: CAA layer in {list(CAA_LAYERS)} x multiplier in {[float(m) for m in CAA_MULTS]}; "
              f"ITI K in {list(ITI_KS)} heads (of 270) x alpha in {[float(a) for a in ITI_ALPHAS]}. "
              "CAA steers the last prompt token and every answer token; ITI steers the answer tokens "
              "(MC, `start_edit_location`) / every generated token (generation). Scores: sum of answer-token "
              "log-probs after the 6-shot QA primer (no instruction), TruthfulQA's MC1/MC2/MC3.", ""]
    # --- MC table
    rows = []
    for method in ("none", "caa", "iti"):
        recs = [read_json(out / "mc" / (f"fold{f}_test_{method}" + _suffix(out, f, method) + ".json")) for f in (0, 1)]
        if any(r is None for r in recs):
            rows.append((method, None))
            continue
        pq = [q for r in recs for q in r["per_question"]]
        rows.append((method, {m: sum(q[m] for q in pq) / len(pq) for m in ("mc1", "mc2", "mc3")} | {
            "n": len(pq), "ci1": _bootstrap_ci([q["mc1"] for q in pq]), "ci2": _bootstrap_ci([q["mc2"] for q in pq]),
            "folds": recs}))
    lines += ["### TruthfulQA MC (817 questions, 2-fold, held-out halves pooled)", "",
              "| method | MC1 | MC2 | MC3 | n | ΔMC1 vs none | ΔMC2 vs none | fold 0 config | fold 1 config "
              "| per fold MC1 / MC2 |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    base = dict(rows).get("none")
    for method, r in rows:
        if r is None:
            lines.append(f"| {method} | not run | | | | | | | | |")
            continue
        cf = [_cfg_text(method, f["config"]) for f in r["folds"]]
        ff = "; ".join(f"{_pct(f['mc1'])} / {_pct(f['mc2'])}" for f in r["folds"])
        deltas = ["-", "-"]
        if base is not None and method != "none":
            for j, m in enumerate(("mc1", "mc2")):
                ref = {q["index"]: q[m] for f in base["folds"] for q in f["per_question"]}
                d = [q[m] - ref[q["index"]] for f in r["folds"] for q in f["per_question"]]
                mean, lo, hi = _paired(d)
                deltas[j] = f"{100 * mean:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]"
        lines.append(f"| {method} | {_pct(r['mc1'])} ±{100 * r['ci1']:.1f} | {_pct(r['mc2'])} ±{100 * r['ci2']:.1f} | "
                     f"{_pct(r['mc3'])} | {r['n']} | {deltas[0]} | {deltas[1]} | {cf[0]} | {cf[1]} | {ff} |")
    if (ROOT / "docs" / "img" / "tqa_mc_results.png").exists():
        lines += ["", "![TruthfulQA MC1/MC2 per method](img/tqa_mc_results.png)"]
    lines += ["", "Percentages; ± is a 95 % bootstrap half-width over questions. "
              "Per-question seconds (MC scoring, 1 thread): " + _speed(out) + ".", ""]
    sp = read_json(out / "speed.json")
    if sp:
        lines += ["#### Scoring speed (same command, `speed.json`)", "",
                  f"TruthfulQA MC scoring of the first {sp['n_questions']} questions ({sp['n_pairs']} answers), "
                  f"batch 8, {sp['threads']} thread, run one after the other in one process; seconds per question:", "",
                  "| path | s / question | max abs. diff. of log-likelihoods vs plain |", "|---|---|---|"]
        for k, v in sp["scoring_s_per_question"].items():
            dv = sp["max_abs_diff_vs_plain"].get(k)
            lines.append(f"| {k} | {v:.2f} | {'-' if dv is None else f'{dv:.1e}'} |")
        lines += ["", f"CAA fitting ({sp['caa_fit_n_pairs']} contrast pairs of the first {sp['caa_fit_n_questions']} questions, "
                  f"{len(CAA_LAYERS)} layers), "
                  "seconds per question: " + ", ".join(f"{k} {v:.2f}" for k, v in sp["caa_fit_s_per_question"].items())
                  + f"; max abs. difference of the vectors {sp['caa_fit_max_abs_diff']:.1e}.", ""]
    # --- validation grids
    lines += ["#### Validation grids (the 20 % validation part of each training half)", ""]
    for method in ("caa", "iti"):
        for f in (0, 1):
            rec = read_json(out / "chosen" / f"fold{f}_{method}.json")
            if rec is None:
                continue
            cells = ", ".join(f"{_cfg_text(method, g['config'])}: {_pct(g['mc1'])}/{_pct(g['mc2'])}" for g in rec["grid"])
            ref = read_json(out / "mc" / f"fold{f}_val_none.json")
            none = f" (none: {_pct(ref['mc1'])}/{_pct(ref['mc2'])})" if ref else ""
            lines.append(f"- {method.upper()} fold {f} (n={rec['grid'][0]['n']}, MC1/MC2){none}: {cells}; "
                         f"**chosen {_cfg_text(method, rec['chosen'])}**")
    lines.append("")
    # --- six MC tasks
    mc6 = {(t, m): read_json(out / "mc6" / f"{t}_{m}.json") for t in MC_TASKS for m in ("none", "caa", "iti")}
    if any(v is not None for v in mc6.values()):
        lim = next(v for v in mc6.values() if v is not None)["limit"]
        lines += ["### Six multiple-choice tasks (accuracy, %)", "",
                  f"A fixed subset per task: `load_dataset(task, limit={lim}, seed=0)` (COPA has only 100 validation "
                  "items: all of them). Zero-shot lm-eval-style prompts (`steerlab.evals.multiple_choice`), accuracy "
                  "= raw sum of option log-probs (`acc`). CAA / ITI use the TruthfulQA vectors fitted on fold 0's "
                  "fit part with fold 0's chosen hyper-parameters, steering the same positions as in TruthfulQA MC "
                  "(the option tokens). The FASB notes do not say which vectors the paper used on these tasks; "
                  "with TruthfulQA vectors this table measures what TruthfulQA steering does to unrelated tasks. "
                  "Differences of a few points are within noise at these sizes (±6-7 points at n=200, ±9-10 at n=100).",
                  "",
                  "| method | " + " | ".join(f"{t} (n={next((v['n'] for (tt, _), v in mc6.items() if tt == t and v), '-')})"
                                           for t in MC_TASKS) + " | mean |",
                  "|---|" + "---|" * (len(MC_TASKS) + 1)]
        for m in ("none", "caa", "iti"):
            accs = [mc6[(t, m)]["acc"] if mc6[(t, m)] else None for t in MC_TASKS]
            mean = sum(a for a in accs if a is not None) / len(accs) if all(a is not None for a in accs) else None
            lines.append(f"| {m} | " + " | ".join(_pct(a) for a in accs) + f" | {_pct(mean)} |")
        lines.append("")
    # --- generation
    gen = {(f, m): read_json(out / "gen" / f"fold{f}_{m}.json") for f in (0, 1) for m in ("none", "caa", "iti")}
    if any(v is not None for v in gen.values()):
        lines += ["### TruthfulQA generation (proxy judge)", ""]
        judge = next(v["judge"] for v in gen.values() if v is not None and v.get("judge"))
        n_gen = {m: sum(len(gen[(f, m)]["records"]) for f in (0, 1) if gen[(f, m)]) for m in ("none", "caa", "iti")}
        subset = ("All 817 questions (both folds' test halves), the same for every method." if min(n_gen.values()) >= 817
                  else "**A subset**: the first `--gen-per-fold` questions of each fold's test half in one fixed "
                       "seeded order (`random.Random(0).shuffle`), the same questions for every method; the full 817 "
                       "were not run for lack of time.")
        lines += [f"Judge: `{judge}` (steerlab's offline default, **not** the fine-tuned TruthfulQA judges: "
                  "numbers are not comparable with published True/Info). Greedy, 50 new tokens, ITI instruction + "
                  "6-shot primer; each fold's questions steered with that fold's fitted vectors and chosen "
                  "hyper-parameters. " + subset, "",
                  "| method | True | Info | True*Info | n (fold 0 + fold 1) |", "|---|---|---|---|---|"]
        for m in ("none", "caa", "iti"):
            recs = [r for f in (0, 1) if gen[(f, m)] for r in gen[(f, m)]["records"]]
            if not recs:
                lines.append(f"| {m} | not run | | | |")
                continue
            t = [float(r["truthful"]) for r in recs if r["truthful"] is not None]
            i = [float(r["informative"]) for r in recs if r["informative"] is not None]
            mt, mi = sum(t) / len(t), sum(i) / len(i)
            ns = " + ".join(str(len(gen[(f, m)]["records"])) if gen[(f, m)] else "0" for f in (0, 1))
            lines.append(f"| {m} | {_pct(mt)} | {_pct(mi)} | {_pct(mt * mi)} | {ns} |")
        lines.append("")
    _g1 = (read_json(out / "gen" / "fold1_iti.json") or {}).get("records", [])
    _g0 = (read_json(out / "gen" / "fold0_iti.json") or {}).get("records", [])
    _empty, _n1, _n0 = sum(1 for r in _g1 if not str(r["answer"]).strip()), len(_g1), len(_g0)
    _top, _top_n = (Counter(str(r["answer"]).strip() for r in _g0).most_common(1) or [("", 0)])[0]
    lines += ["### Notes on these results", "",
              "- CAA chose the largest layer and multiplier of its grid in both folds (layer 18, x10), and ITI's "
              "fold-1 choice is at the top of its alpha range (alpha 15): the grids are small and larger values were not "
              "tried, so neither method is tuned to its optimum here.",
              "- CAA and ITI raise MC2 on the held-out halves (paired intervals above exclude 0); MC1 moves by "
              "1-2 points, within noise.",
              "- **ITI's generation numbers are an artefact, not a gain.** Steering every generated token at the "
              f"MC-chosen strength breaks generation on this model: with fold 1's setting (K=8, alpha=15) {_empty} of "
              f"{_n1} answers are empty, and fold 0's (K=24, alpha=10) are mostly degenerate (\"{_top}\" "
              f"{_top_n} times of {_n0}). The proxy judge calls empty answers true and uninformative, "
              "hence high True and low Info. Hyper-parameters were chosen on MC only; a generation-specific "
              "choice (as ITI/FASB tune alpha for generation) was not made. **CAA's gain is suspect too**: at "
              "layer 18 x10 its answers are often fluent but off-topic or repetitive (\"The most likely answer is "
              "that the most likely answer is ...\"), which the rule Info judge calls informative and the "
              "similarity judge often calls true. The unsteered answers read normally. Conclusion: with this "
              "proxy judge and MC-chosen strengths the generation table does not show a real truthfulness gain; "
              "it shows that the strengths chosen on MC are too strong for generation and that the proxy judge "
              "does not penalise degenerate text. The judge is a sentence-similarity proxy, not the fine-tuned "
              "judge models of TruthfulQA/ITI/FASB.",
              "- On the six tasks the TruthfulQA vectors mostly cost accuracy (COPA, StoryCloze); MMLU and SST-2 "
              "accuracies are identical for all three methods (not investigated: the per-item predictions were "
              "not stored).",
              ""]
    lines += ["### ITI probe accuracies (layer x head)", ""]
    if (ROOT / "docs" / "img" / "tqa_iti_probe_acc_fold0.png").exists():
        rec = read_json(out / "fits" / "fold0_iti.json") or {}
        lines += ["![ITI probe validation accuracy per layer x head, fold 0](img/tqa_iti_probe_acc_fold0.png)", "",
                  f"Validation accuracy of the 270 per-head probes of fold 0 ({rec.get('n_records', '?')} "
                  "(question, answer) records of the fit part, heads ranked on a 20 % split of it by question), "
                  "drawn by this driver from `fits/fold0_iti.json`. The earlier heatmap from 100 questions: "
                  "[img/iti_probe_accuracy.png](img/iti_probe_accuracy.png).", ""]
    else:
        lines += ["![ITI probe validation accuracy per layer x head](img/iti_probe_accuracy.png)", ""]
    return "\n".join(lines)


def _suffix(out: Path, fold: int, method: str) -> str:
    if method == "none":
        return ""
    rec = read_json(out / "chosen" / f"fold{fold}_{method}.json")
    if rec is None:
        return "_missing"
    return "_" + "_".join(f"{k}{v:g}" if isinstance(v, float) else f"{k}{v}" for k, v in rec["chosen"].items())


def _speed(out: Path) -> str:
    recs = [read_json(p) for p in sorted((out / "mc").glob("*test*.json"))]
    recs = [r for r in recs if r]
    if not recs:
        return "-"
    tot = sum(r["seconds"] for r in recs) / sum(r["n"] for r in recs)
    return f"{tot:.2f} s per question on average over the test runs"


def heatmap(out: Path) -> None:
    rec = read_json(out / "fits" / "fold0_iti.json")
    if rec is None:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    acc = np.array(rec["val_acc"], dtype=float)
    fig, ax = plt.subplots(figsize=(4.5, 7))
    im = ax.imshow(acc, aspect="auto", cmap="viridis", origin="lower")
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_title("ITI probe val. accuracy (TruthfulQA fold 0)", fontsize=9)
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    fig.savefig(ROOT / "docs" / "img" / "tqa_iti_probe_acc_fold0.png", dpi=110)
    plt.close(fig)


def bars(out: Path) -> None:
    """MC1 / MC2 per method (pooled held-out questions) with 95 % bootstrap intervals."""
    recs = {m: [read_json(out / "mc" / (f"fold{f}_test_{m}" + _suffix(out, f, m) + ".json")) for f in (0, 1)]
            for m in ("none", "caa", "iti")}
    if any(r is None for v in recs.values() for r in v):
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3))
    for j, metric in enumerate(("mc1", "mc2")):
        for i, m in enumerate(("none", "caa", "iti")):
            vals = [q[metric] for r in recs[m] for q in r["per_question"]]
            mean = sum(vals) / len(vals)
            ax.bar(j * 4 + i, 100 * mean, yerr=100 * _bootstrap_ci(vals), capsize=3,
                   color=("0.6", "tab:blue", "tab:orange")[i], label=m if j == 0 else None)
    ax.set_xticks([1, 5], ["MC1", "MC2"])
    ax.set_ylabel("%")
    ax.set_title("TruthfulQA MC, SmolLM2-135M-Instruct, 817 held-out q.", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(ROOT / "docs" / "img" / "tqa_mc_results.png", dpi=110)
    plt.close(fig)


def write_docs(out: Path, command: str) -> None:
    heatmap(out)
    bars(out)
    text = make_docs(out, command)
    path = ROOT / "docs" / "results.md"
    cur = path.read_text() if path.exists() else "# Results\n"
    title = "## TruthfulQA and six MC tasks: none / CAA / ITI (embedded model)"
    pattern = re.compile(r"^" + re.escape(title) + r"\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(cur):
        new = pattern.sub(lambda _: text.rstrip() + "\n\n", cur)
    else:
        new = cur.rstrip() + "\n\n" + text.rstrip() + "\n"
    path.write_text(new)
    log(f"wrote {path}")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stage", default="all", choices=["mc", "mc6", "gen", "speed", "docs", "all"])
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "tqa"))
    ap.add_argument("--mc6-limit", type=int, default=200)
    ap.add_argument("--gen-per-fold", type=int, default=None, help="questions per fold (seeded subset); default all")
    ap.add_argument("--batch-size", type=int, default=8)
    args = ap.parse_args(argv)
    out = Path(args.out)
    opts = [f"--mc6-limit {args.mc6_limit}"] + ([f"--gen-per-fold {args.gen_per_fold}"] if args.gen_per_fold else [])
    cmd = ("OMP_NUM_THREADS=1 STEERLAB_DATA=../shared/data python benchmarks/tqa_results.py --stage all "
           + " ".join(opts))
    if args.stage != "docs":
        ctx = Ctx(out, args.batch_size)
        if args.stage in ("mc", "all"):
            ctx.run_mc()
        if args.stage in ("mc6", "all"):
            ctx.run_mc6(args.mc6_limit)
        if args.stage in ("speed", "all"):
            run_speed(ctx)
        if args.stage in ("gen", "all"):
            ctx.run_gen(args.gen_per_fold)
    write_docs(out, cmd)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
