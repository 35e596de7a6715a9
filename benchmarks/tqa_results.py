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
#: starting grids; a grid grows past an edge its best point sits on (steerlab.evals.selection.search)
CAA_LAYERS = (9, 12, 15, 18, 21)
CAA_MULTS = (2.0, 5.0, 10.0, 20.0)
ITI_KS = (12, 24, 48)
ITI_ALPHAS = (5.0, 10.0, 20.0, 40.0)
MAX_ROUNDS = 3
#: validation questions per fold for the generation search (the first N of the validation part)
GEN_VAL = 40
#: generation strength grids (at the MC-chosen layer / K); they grow past an edge like the MC grids
GEN_CAA_MULTS = (1.0, 2.0, 4.0, 8.0)
#: CAA A/B behaviours: generate-split items used (fit 80 % / validation 20 %, at most PERSONA_VAL), grids
PERSONA_FIT = 100
PERSONA_VAL = 20
PERSONA_LAYERS = (6, 9, 12)
PERSONA_MULTS = (2.0, 4.0, 8.0)
GEN_ITI_ALPHAS = (2.5, 5.0, 10.0, 20.0)
MC_TASKS = ("copa", "storycloze", "snli", "mmlu", "sst2", "winogrande")
SELECT_BY = "mc2"
#: the MC protocol of issue #11: ITI's instruction + primer; ITI steers from the second answer token
INSTRUCTION = True
ITI_STEER_FROM = "second_answer"


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
        from steerlab.evals.truthfulqa_gen import gen_judge

        self.csv = {it.question.strip(): it for it in load_dataset("truthfulqa")}
        self.judge = gen_judge(self.lm, None, batch_size=batch_size)  # the honest judge: MiniLM + rules + coherence

    # ------------------------------------------------------------------ fitting
    def fit_items(self, fold: int) -> tuple[list[Any], list[Any]]:
        return ([self.items[i] for i in self.folds[fold]["fit"]], [self.items[i] for i in self.folds[fold]["val"]])

    def caa_vector(self, fold: int, layer: int) -> Any:
        """CAA's mean difference at ``layer`` (fit part only, the CAA method's pairs), cached as safetensors."""
        from steerlab.artifacts import load_vector, save_vector
        from steerlab.fit import fit_vector
        from steerlab.methods.pairs import contrast_pairs, labelled_questions, letter_pairs

        path = self.out / "vectors" / f"fold{fold}_caa_layer{layer}.safetensors"
        if path.exists():
            return load_vector(path, self.lm)
        t = time.time()
        fit_items, _ = self.fit_items(fold)
        pairs = letter_pairs(contrast_pairs(labelled_questions(self.lm, fit_items)))
        layers = sorted({layer, *CAA_LAYERS} - {int(p.stem.split("layer")[1]) for p in
                                                (self.out / "vectors").glob(f"fold{fold}_caa_layer*.safetensors")})
        vec = fit_vector(self.lm, pairs, layers, method="mean_diff", site_kind="residual", positions="last",
                         batch_size=self.bs, share_prefix=True)
        for l in layers:
            save_vector(_one_site(vec, l), self.out / "vectors" / f"fold{fold}_caa_layer{l}")
        info = read_json(self.out / "fits" / f"fold{fold}_caa.json") or {"n_pairs": len(pairs), "layers": {}}
        info["layers"].update({str(l): {"norm": float(vec.vectors[f"residual.{l}"].norm()),
                                        "seconds": round((time.time() - t) / len(layers), 1)} for l in layers})
        write_json(self.out / "fits" / f"fold{fold}_caa.json", info)
        log(f"fold {fold} CAA fitted on {len(pairs)} pairs at layers {layers} in {time.time() - t:.0f}s")
        return load_vector(path, self.lm)

    def iti_fit(self, fold: int) -> Any:
        """ITI through the harness method (probes on the fit part, heads ranked on the val part, reference
        sigma from the fit + val questions), cached as one ITI artifact; K / alpha sweep with ``with_k``."""
        from steerlab.interventions.iti import load_iti, save_iti
        from steerlab.methods.iti import ITI, ITIMethodConfig

        key = (fold, "iti")
        if key in self._fits:
            return self._fits[key]
        path = self.out / "fits" / f"fold{fold}_iti.safetensors"
        if path.exists():
            fit = load_iti(path, self.lm)
        else:
            t = time.time()
            method = ITI(ITIMethodConfig(k=max(ITI_KS), alpha=1.0, steer_from=ITI_STEER_FROM))
            fit = method.fit_model(self.lm, *self.fit_items(fold))
            save_iti(fit, path, {"fold": fold, "fit_questions": len(self.folds[fold]["fit"]),
                                 "val_questions": len(self.folds[fold]["val"])})
            write_json(self.out / "fits" / f"fold{fold}_iti.json",
                       {"seconds": round(time.time() - t, 1), "n_probe_train": int(fit.train_idx.numel()),
                        "n_probe_val": int(fit.val_idx.numel()), "val_acc": fit.probes.val_acc.tolist(),
                        "train_acc": fit.probes.train_acc.tolist(), "sigma": fit.sigma.tolist(),
                        "ranking": [list(h) for h in fit.probes.ranking("val", fit.config.ties)[:96]]})
            log(f"fold {fold} ITI fitted in {time.time() - t:.0f}s")
        self._fits[key] = fit
        return fit

    def fitted(self, fold: int, method: str, cfg: dict[str, Any]) -> Any:
        from steerlab.methods.base import FittedMethod

        if method == "none":
            return FittedMethod()
        if method == "caa":
            return FittedMethod(steer=self.caa_vector(fold, int(cfg["layer"])), strength=float(cfg["multiplier"]),
                                steer_from="last_prompt")
        if method == "iti":
            vec = self.iti_fit(fold).with_k(int(cfg["k"]), 1.0, self.lm).vector
            return FittedMethod(steer=vec, strength=float(cfg["alpha"]),
                                steer_from=cfg.get("steer_from", ITI_STEER_FROM))
        if method == "fasb":  # ITI's fit of this fold (probes, ranking, directions, sigma), FASB's inference options
            from steerlab.interventions.fasb import FASBConfig, FASBFit
            from steerlab.methods.fasb import FASB, FASBMethodConfig

            iti = self.iti_fit(fold)
            fit = FASBFit(iti, FASBConfig(k=iti.config.k))
            return FASB(FASBMethodConfig(**{"steer_from": ITI_STEER_FROM, **cfg})).fitted(fit, self.lm)
        raise ValueError(method)

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
        res = evaluate_truthfulqa_mc(self.lm, [self.items[i] for i in idx], **fm.eval_kwargs(),
                                     instruction=INSTRUCTION, batch_size=self.bs)
        dt = time.time() - t
        rec = {"fold": fold, "split": split, "method": method, "config": cfg, "n": res.n, "mc1": res.mc1,
               "mc2": res.mc2, "mc3": res.mc3, "seconds": round(dt, 1), "s_per_question": round(dt / res.n, 3),
               "instruction": INSTRUCTION, "steer_from": fm.steer_from if fm.steered else None,
               **({"steered_answers": res.config["steered_answers"]} if "steered_answers" in res.config else {}),
               "per_question": [{"index": i, "mc1": r.mc1, "mc2": r.mc2, "mc3": r.mc3}
                                for i, r in zip(idx, res.per_question)]}
        write_json(path, rec)
        log(f"{name}: MC1 {res.mc1:.3f} MC2 {res.mc2:.3f} MC3 {res.mc3:.3f} ({dt / res.n:.2f} s/q)")
        return rec

    def choose(self, fold: int, method: str) -> dict[str, Any]:
        from steerlab.evals.selection import Rule, doubling, search, stepping

        n_layers = self.lm.adapter.n_layers
        if method == "caa":
            axes = {"layer": list(CAA_LAYERS), "multiplier": list(CAA_MULTS)}
            steps = {"layer": stepping(3, 0, n_layers - 1), "multiplier": doubling(0.25, 1000.0)}
        else:
            axes = {"k": list(ITI_KS), "alpha": list(ITI_ALPHAS)}
            steps = {"k": doubling(1, n_layers * self.lm.adapter.n_heads, integer=True), "alpha": doubling(0.5, 1000.0)}
        rule = Rule(SELECT_BY, ("mc1",))
        choice = search(axes, lambda c: {m: self.mc_unit(fold, "val", method, c)[m] for m in ("mc1", "mc2", "mc3")},
                        rule, steps=steps, max_rounds=MAX_ROUNDS)
        rec = {"fold": fold, "method": method, "by": SELECT_BY, "n": len(self.folds[fold]["val"]), **choice.to_dict()}
        write_json(self.out / "chosen" / f"fold{fold}_{method}.json", rec)
        log(f"fold {fold} {method}: chose {choice.config} (MC2 {choice.metrics['mc2']:.3f}); at edge: {choice.at_edge}")
        return choice.config

    def chosen(self, fold: int, method: str) -> dict[str, Any]:
        if method == "none":
            return {}
        rec = read_json(self.out / "chosen" / f"fold{fold}_{method}.json")
        return rec["chosen"] if rec else self.choose(fold, method)

    def run_ablate(self) -> None:
        """Issue #11 §2 measured: ITI's chosen configurations scored on the test halves with steering from the
        first answer token (``steer_from="answer"``, steerlab before #11) instead of the second (the reference)."""
        for fold in (0, 1):
            self.mc_unit(fold, "test", "iti", {**self.chosen(fold, "iti"), "steer_from": "answer"})

    def run_mc(self, folds: Sequence[int] = (0, 1)) -> None:
        for fold in folds:
            self.mc_unit(fold, "val", "none", {})  # the unsteered reference on the validation part
            for method in ("iti", "caa"):
                self.chosen(fold, method)
        for fold in folds:
            self.mc_unit(fold, "test", "none", {})
            for method in ("iti", "caa"):
                self.mc_unit(fold, "test", method, self.chosen(fold, method))

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
    def gen_questions(self, fold: int, split: str, limit: int | None) -> list[str]:
        """A fold's questions in one fixed seeded order (so a larger ``limit`` extends a smaller one)."""
        import random

        qs = [self.items[i].question.strip() for i in self.folds[fold][split]]
        qs = [q for q in qs if q in self.csv]
        perm = list(range(len(qs)))
        random.Random(0).shuffle(perm)
        qs = [qs[j] for j in perm]
        return qs if limit is None else qs[:limit]

    def gen_unit(self, fold: int, split: str, method: str, cfg: dict[str, Any], questions: Sequence[str],
                 chunk: int = 16) -> dict[str, Any]:
        """Greedy answers to ``questions`` judged by the honest generation judge; one file per configuration,
        extended chunk by chunk (resumable). Returns the file's record with the aggregate over ``questions``."""
        from steerlab.evals.coherence import Coherence, summarize
        from steerlab.evals.truthfulqa_gen import evaluate_truthfulqa_gen

        name = "_".join([f"fold{fold}", split, method] + [f"{k}{v:g}" if isinstance(v, float) else f"{k}{v}"
                                                            for k, v in cfg.items()])
        path = self.out / "gen" / f"{name}.json"
        rec = read_json(path) or {"fold": fold, "split": split, "method": method, "config": cfg, "records": []}
        done = {r["question"] for r in rec["records"]}
        todo = [q for q in questions if q not in done]
        if todo:
            fm = self.fitted(fold, method, cfg)
            for s in range(0, len(todo), chunk):
                qs = todo[s:s + chunk]
                t = time.time()
                res = evaluate_truthfulqa_gen(self.lm, [self.csv[q] for q in qs], fm.generate_steer(), self.judge,
                                              batch_size=self.bs, progress=False, adaptive=fm.adaptive)
                rec["judge"] = res.judge
                rec["records"].extend({"question": q, "answer": r.answer, "truthful": r.truthful,
                                       "informative": r.informative, **r.coherence.to_dict(),
                                       **({} if r.steering is None else {"steering": list(r.steering)})}
                                      for q, r in zip(qs, res.records))
                rec["seconds"] = round(rec.get("seconds", 0.0) + time.time() - t, 1)
                write_json(path, rec)
                log(f"gen {name}: {len(rec['records'])} ({(time.time() - t) / len(qs):.2f} s/q)")
        want = set(questions)
        rows = [r for r in rec["records"] if r["question"] in want]
        t = [float(r["truthful"]) for r in rows if r["truthful"] is not None]
        i = [float(r["informative"]) for r in rows if r["informative"] is not None]
        mt, mi = (sum(t) / len(t) if t else float("nan")), (sum(i) / len(i) if i else float("nan"))
        coh = summarize([Coherence(r["loglik"], r["n_tokens"], r["repetition"], r["degenerate"], r["empty"])
                         for r in rows])
        return {**rec, "n": len(rows), "true": mt, "info": mi, "true_info": mt * mi, **coh}

    def choose_gen(self, fold: int, method: str, n_val: int) -> dict[str, Any]:
        """Generation hyper-parameters on the fold's validation questions (the first ``n_val``): the strength
        at the MC-chosen layer / K, by True*Info with coherence >= unsteered - GEN_MARGIN."""
        from steerlab.evals.runner import GEN_MARGIN
        from steerlab.evals.selection import Rule, doubling, search

        path = self.out / "chosen" / f"fold{fold}_{method}_gen.json"
        rec = read_json(path)
        if rec is not None and rec["n"] == n_val:
            return rec["chosen"]
        qs = self.gen_questions(fold, "val", n_val)
        metrics = ("true", "info", "true_info", "coherence", "repetition", "degenerate", "empty")

        def evaluate(cfg: dict[str, Any]) -> dict[str, Any]:
            r = self.gen_unit(fold, "val", method, cfg, qs)
            return {m: r[m] for m in metrics}

        ref = {m: self.gen_unit(fold, "val", "none", {}, qs)[m] for m in metrics}
        mc = self.chosen(fold, method)
        if method == "caa":
            axes, steps = {"layer": [mc["layer"]], "multiplier": list(GEN_CAA_MULTS)}, {"multiplier": doubling(0.125, 1000.0)}
        else:
            axes, steps = {"k": [mc["k"]], "alpha": list(GEN_ITI_ALPHAS)}, {"alpha": doubling(0.25, 1000.0)}
        rule = Rule("true_info", ("true",), coherence="coherence", margin=GEN_MARGIN)
        choice = search(axes, evaluate, rule, ref, steps, MAX_ROUNDS)
        write_json(path, {"fold": fold, "method": method, "n": n_val, **choice.to_dict()})
        log(f"fold {fold} {method} generation: chose {choice.config} (True*Info {choice.metrics['true_info']:.3f}, "
            f"coherence {choice.metrics['coherence']:.3f} vs unsteered {ref['coherence']:.3f}); at edge {choice.at_edge}")
        return choice.config

    def run_gen(self, per_fold: int | None, n_val: int, folds: Sequence[int] = (0, 1)) -> None:
        for fold in folds:
            for method in ("iti", "caa"):
                self.choose_gen(fold, method, n_val)
        for fold in folds:
            test = self.gen_questions(fold, "test", per_fold)
            self.gen_unit(fold, "test", "none", {}, test)
            for method in ("iti", "caa"):
                self.gen_unit(fold, "test", method, self.choose_gen(fold, method, n_val), test)


def run_rejudge(ctx: Ctx, chunk: int = 64) -> None:
    """The first run's generated answers (benchmarks/results/tqa/gen) judged again by the honest judge, so the
    history table can separate what the judge changed from what the methods' fixes changed."""
    from steerlab.evals.truthfulqa_gen import generation_prompt

    for f in (0, 1):
        for m in ("none", "caa", "iti"):
            src = read_json(OLD_OUT / "gen" / f"fold{f}_{m}.json")
            path = ctx.out / "rejudged_v1" / f"fold{f}_{m}.json"
            if src is None or path.exists():
                continue
            t = time.time()
            recs = []
            for s in range(0, len(src["records"]), chunk):
                part = src["records"][s:s + chunk]
                qs = [r["question"] for r in part]
                res = ctx.judge.judge_many(qs, [generation_prompt(q, answer_cue=True) for q in qs],
                                           [r["answer"] for r in part], [ctx.csv[q] for q in qs])
                recs += [{"question": r["question"], "answer": r["answer"], "truthful": v.truthful,
                          "informative": v.informative, **v.coherence.to_dict()} for r, v in zip(part, res)]
            write_json(path, {"fold": f, "method": m, "config": src.get("config"), "judge": ctx.judge.name,
                              "records": recs})
            log(f"rejudged fold {f} {m}: {len(recs)} answers ({time.time() - t:.0f}s)")


def run_persona(ctx: Ctx, fit_limit: int = PERSONA_FIT, val_limit: int = PERSONA_VAL) -> None:
    """CAA on the seven CAA A/B behaviours, CAA's own protocol: vectors from the ``generate`` split (read at the
    answer letter), layer and multiplier chosen on a held-out 20 % of it (max p_matching), scored on the 50-item
    ``test`` split with the chosen multiplier, its negation, and unsteered. One JSON file per behaviour."""
    from steerlab.data.registry import dataset_names, load_dataset
    from steerlab.evals.persona import evaluate_behavior
    from steerlab.evals.selection import Rule, doubling, search, stepping
    from steerlab.evals.truthfulqa import train_val_split
    from steerlab.methods.base import FittedMethod
    from steerlab.methods.caa import CAA, CAAConfig

    n_layers = ctx.lm.adapter.n_layers
    for name in [n for n in dataset_names() if n.startswith("caa/")]:
        path = ctx.out / "persona" / f"{name.split('/')[1]}.json"
        if path.exists():
            continue
        t = time.time()
        gen = load_dataset(name, "generate", limit=fit_limit, seed=0)
        test = load_dataset(name, "test")
        fit_idx, val_idx = train_val_split(range(len(gen)), 0.2, 42)
        fit_items, val_items = [gen[i] for i in fit_idx], [gen[i] for i in val_idx][:val_limit]
        fits: dict[int, FittedMethod] = {}

        def fitted(cfg: dict[str, Any]) -> FittedMethod:
            layer = int(cfg["layer"])
            if layer not in fits:
                fits[layer] = CAA(CAAConfig(layer=layer, multiplier=1.0)).fit(ctx.lm, fit_items, [])
            fm = fits[layer]
            return FittedMethod(fm.steer, float(cfg["multiplier"]), steer_from=fm.steer_from, info=fm.info)

        def score(items: Sequence[Any], fm: FittedMethod) -> dict[str, Any]:
            res = evaluate_behavior(ctx.lm, items, name=name, **fm.eval_kwargs(), batch_size=ctx.bs)
            return {"p_matching": res.p_matching, "matching_rate": res.matching_rate, "probs": res.probs}

        def evaluate(cfg: dict[str, Any]) -> dict[str, Any]:
            r = score(val_items, fitted(cfg))
            return {k: r[k] for k in ("p_matching", "matching_rate")}

        choice = search({"layer": list(PERSONA_LAYERS), "multiplier": list(PERSONA_MULTS)}, evaluate,
                        Rule("p_matching"), steps={"layer": stepping(3, 0, n_layers - 1),
                                                   "multiplier": doubling(0.25, 1000.0)}, max_rounds=MAX_ROUNDS)
        chosen = choice.config
        rows = {"none": score(test, FittedMethod()), "caa+": score(test, fitted(chosen)),
                "caa-": score(test, fitted({**chosen, "multiplier": -chosen["multiplier"]}))}
        write_json(path, {"behavior": name, "n_fit": len(fit_items), "n_val": len(val_items), "n_test": len(test),
                          "selection": choice.to_dict(), "test": rows, "seconds": round(time.time() - t, 1)})
        log(f"{name}: chose {chosen}; test p_matching none {rows['none']['p_matching']:.3f} "
            f"+ {rows['caa+']['p_matching']:.3f} - {rows['caa-']['p_matching']:.3f} ({time.time() - t:.0f}s)")


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


OLD_OUT = ROOT / "benchmarks" / "results" / "tqa"
GEN_METRICS = ("true", "info", "true_info", "coherence", "repetition", "degenerate", "empty")


def _mc_pooled(out: Path, method: str) -> dict[str, Any] | None:
    recs = [read_json(out / "mc" / (f"fold{f}_test_{method}" + _suffix(out, f, method) + ".json")) for f in (0, 1)]
    if any(r is None for r in recs):
        return None
    pq = [q for r in recs for q in r["per_question"]]
    return {**{m: sum(q[m] for q in pq) / len(pq) for m in ("mc1", "mc2", "mc3")}, "n": len(pq),
            "ci1": _bootstrap_ci([q["mc1"] for q in pq]), "ci2": _bootstrap_ci([q["mc2"] for q in pq]), "folds": recs}


def _gen_rows(out: Path, method: str, new: bool) -> list[dict[str, Any]] | None:
    """Pooled test-half generation records of ``method`` (the new layout: gen/fold{f}_test_{method}_{cfg}.json)."""
    recs = []
    for f in (0, 1):
        if not new:
            r = read_json(out / "gen" / f"fold{f}_{method}.json")
        else:
            cfg = {} if method == "none" else (read_json(out / "chosen" / f"fold{f}_{method}_gen.json") or {}).get("chosen")
            if cfg is None:
                return None
            name = "_".join([f"fold{f}", "test", method] + [f"{k}{v:g}" if isinstance(v, float) else f"{k}{v}"
                                                             for k, v in cfg.items()])
            r = read_json(out / "gen" / f"{name}.json")
        if r is None:
            return None
        recs.append(r)
    return [x for r in recs for x in r["records"]]


def _gen_metrics(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    t = [float(r["truthful"]) for r in rows if r["truthful"] is not None]
    i = [float(r["informative"]) for r in rows if r["informative"] is not None]
    mt, mi = sum(t) / len(t), sum(i) / len(i)
    out = {"true": mt, "info": mi, "true_info": mt * mi, "n": len(rows)}
    if rows and "loglik" in rows[0]:
        n = len(rows)
        out.update({"coherence": sum(r["loglik"] for r in rows) / n, "repetition": sum(r["repetition"] for r in rows) / n,
                    "degenerate": sum(r["degenerate"] for r in rows) / n, "empty": sum(r["empty"] for r in rows) / n})
    return out


def _ti_delta(rows: Sequence[dict[str, Any]], base: Sequence[dict[str, Any]], n: int = 2000, seed: int = 0) -> str:
    """True*Info of ``rows`` minus that of ``base`` (same questions), with a paired bootstrap interval."""
    import random

    ref = {r["question"]: r for r in base}
    pairs = [(r, ref[r["question"]]) for r in rows if r["question"] in ref]

    def ti(sample: Sequence[tuple[dict[str, Any], dict[str, Any]]], j: int) -> float:
        t = [float(p[j]["truthful"]) for p in sample if p[j]["truthful"] is not None]
        i = [float(p[j]["informative"]) for p in sample if p[j]["informative"] is not None]
        return (sum(t) / len(t)) * (sum(i) / len(i))

    rng = random.Random(seed)
    m = len(pairs)
    draws = sorted(ti(s, 0) - ti(s, 1) for s in ([pairs[rng.randrange(m)] for _ in range(m)] for _ in range(n)))
    d = ti(pairs, 0) - ti(pairs, 1)
    return f"{100 * d:+.1f} [{100 * draws[int(0.025 * n)]:+.1f}, {100 * draws[int(0.975 * n)]:+.1f}]"


def _cfg_any(cfg: dict[str, Any]) -> str:
    if "layer" in cfg:
        return f"layer {cfg['layer']}, x{cfg['multiplier']:g}"
    if "k" in cfg:
        return f"K={cfg['k']}, alpha={cfg['alpha']:g}"
    return "-"


def make_docs(out: Path, command: str) -> str:
    lines: list[str] = []
    rel = out.relative_to(ROOT) if out.is_absolute() and ROOT in out.parents else out
    lines += ["## TruthfulQA and six MC tasks: none / CAA / ITI (embedded model)", "",
              "Model: the embedded SmolLM2-135M-Instruct (30 layers x 9 heads, float32, CPU, 1 thread). "
              f"Driver: `benchmarks/tqa_results.py`; raw JSON under `{rel}/`. Exact commands, in this order (every "
              "stage resumes from the JSON files, so rerunning recomputes nothing that exists; the runs wrote to a "
              "scratch folder with `--out`, copied here unchanged):", "",
              "```", command, "```", "",
              "**Protocol (issue #11).** TruthfulQA MC-json (`truthfulqa_mc` v1, 817 questions), 2 folds split by "
              "question (`kfold_by_question(seed=0)`); inside each training half ITI's 80/20 split by question "
              "(`train_val_split(0.2, seed=42)`). CAA's vectors come from the 80 % fit part; ITI's probes are "
              "trained on the fit part and its heads ranked on the 20 % validation part (ITI's recipe), its "
              "mass-mean directions use both, and its sigma is ITI's: the std over `\"Q: q A: a Q: q'\"` prompts of "
              "the fit + validation questions. All hyper-parameters are chosen on the 20 % validation part only; "
              "nothing of a fold's test half is used before it is scored. MC scoring: ITI's instruction + the 6-shot "
              "primer (the ITI/FASB protocol, runner task `truthfulqa_mc`), sum of answer-token log-probs, "
              "TruthfulQA's MC1/MC2/MC3. CAA steers the last prompt token and every answer token; ITI steers from the "
              "**second** answer token (ITI's `start_edit_location`). Generation: every generated token steered.",
              "",
              f"Hyper-parameters: MC by **MC2** (ties MC1) on each fold's validation part (~82 questions) over CAA "
              f"layer {list(CAA_LAYERS)} x multiplier {list(CAA_MULTS)} and ITI K {list(ITI_KS)} x alpha "
              f"{list(ITI_ALPHAS)}; generation by **True\\*Info with coherence >= unsteered - 0.5 nats/token** on "
              f"the first {GEN_VAL} validation questions of each fold (fixed seeded order) over the strength only "
              f"(CAA multiplier {list(GEN_CAA_MULTS)} at the MC-chosen layer, ITI alpha {list(GEN_ITI_ALPHAS)} at "
              f"the MC-chosen K). Every grid grows past an edge its best value sits on "
              f"(`steerlab.evals.selection.search`, at most {MAX_ROUNDS} rounds: layers by 3, strengths and K "
              "doubled / halved); the lists below show every configuration tried.", ""]
    lines += ["**How CAA is adapted to TruthfulQA** (not stated in the CAA paper, which uses A/B items): each "
              "contrast pair is (6-shot primer + question, a true free-text answer) vs (the same prompt, a false "
              "answer), true and false answers cycled so each is used at least once; the residual stream is read at "
              "the **last answer token**. On A/B sets (`caa/*`, `ai_risk/*`, the table below) CAA reads the answer "
              "**letter** of \"(A)\"/\"(B)\", as CAA's `generate_vectors.py` does (position -2 of prompt + "
              "\"(A)\"); before issue #11 steerlab read \")\" there. On caa/refusal (24 training, 12 held-out items, "
              "layer 12) the letter read gives p(matching) none 0.511, +8 0.610, -8 0.408; the \")\" read gave +8 "
              "0.587, -8 0.516 (`pytest tests/test_methods.py -k steers_toward`).", ""]
    # --- MC table
    rows = {m: _mc_pooled(out, m) for m in ("none", "caa", "iti")}
    lines += ["### TruthfulQA MC (817 questions, 2-fold, held-out halves pooled)", "",
              "| method | MC1 | MC2 | MC3 | n | ΔMC1 vs none | ΔMC2 vs none | fold 0 config | fold 1 config "
              "| per fold MC1 / MC2 |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    base = rows.get("none")
    for method, r in rows.items():
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
    lines += ["", "Percentages; ± is a 95 % bootstrap half-width over questions; Δ: mean per-question difference "
              "with its 95 % paired bootstrap interval. Per-question seconds (MC scoring, 1 thread, two processes "
              "on two cores): " + _speed(out) + ".", ""]
    abl = [read_json(out / "mc" / (f"fold{f}_test_iti" + _suffix(out, f, "iti") + "_steer_fromanswer.json")) for f in (0, 1)]
    if rows.get("iti") and all(abl):
        pq_new = {q["index"]: q for f in rows["iti"]["folds"] for q in f["per_question"]}
        pq_old = [q for r in abl for q in r["per_question"]]
        d = {m: _paired([pq_new[q["index"]][m] - q[m] for q in pq_old]) for m in ("mc1", "mc2")}
        lines += ["**ITI's MC steering start (issue #11 §2).** The same chosen ITI configurations steering from the "
                  "first answer token (`steer_from=\"answer\"`, steerlab before #11) instead of the second (ITI's "
                  f"`start_edit_location`): MC1 {_pct(sum(q['mc1'] for q in pq_old) / len(pq_old))}, MC2 "
                  f"{_pct(sum(q['mc2'] for q in pq_old) / len(pq_old))}; second minus first: MC1 "
                  f"{100 * d['mc1'][0]:+.1f} [{100 * d['mc1'][1]:+.1f}, {100 * d['mc1'][2]:+.1f}], MC2 "
                  f"{100 * d['mc2'][0]:+.1f} [{100 * d['mc2'][1]:+.1f}, {100 * d['mc2'][2]:+.1f}] (`--stage ablate`).", ""]
    lines += ["#### MC validation searches (each fold's ~82 validation questions, MC1 / MC2 %)", ""]
    for method in ("caa", "iti"):
        for f in (0, 1):
            rec = read_json(out / "chosen" / f"fold{f}_{method}.json")
            if rec is None:
                continue
            cells = ", ".join(f"{_cfg_text(method, c['config'])}: {_pct(c['metrics']['mc1'])}/{_pct(c['metrics']['mc2'])}"
                              for c in rec["candidates"])
            ref = read_json(out / "mc" / f"fold{f}_val_none.json")
            none = f" (none: {_pct(ref['mc1'])}/{_pct(ref['mc2'])})" if ref else ""
            edge = f"; still at an edge: {', '.join(rec['at_edge'])}" if rec["at_edge"] else ""
            lines.append(f"- {method.upper()} fold {f}{none}: {cells}; **chosen {_cfg_text(method, rec['chosen'])}**{edge}")
    lines.append("")
    # --- generation
    gen = {m: _gen_rows(out, m, True) for m in ("none", "caa", "iti")}
    if any(v is not None for v in gen.values()):
        judge = next((read_json(p) or {}).get("judge") for p in sorted((out / "gen").glob("*_test_*.json")))
        lines += ["### TruthfulQA generation (proxy judge + coherence)", "",
                  f"Judge: `{judge}` -- steerlab's offline proxy, **not** the fine-tuned TruthfulQA judges: True / "
                  "Info are not comparable with published numbers. Coherence = mean log-prob per answer token under "
                  "the unsteered model (nats; higher is more fluent for this model); degenerate = word-3-gram "
                  "repetition >= 0.3 (then not informative); empty answers count as \"I have no comment.\". Greedy, "
                  "50 new tokens, ITI instruction + 6-shot primer; each fold's test questions steered with that "
                  "fold's vectors and its generation-chosen strength.", "",
                  "| method | True | Info | True*Info | ΔTrue*Info vs none | coherence | repetition | degenerate | empty | n "
                  "| fold 0 config | fold 1 config |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for m in ("none", "caa", "iti"):
            if gen[m] is None:
                lines.append(f"| {m} | not run | | | | | | | | | |")
                continue
            g = _gen_metrics(gen[m])
            cfgs = ["-" if m == "none" else _cfg_any((read_json(out / "chosen" / f"fold{f}_{m}_gen.json") or {})
                                                   .get("chosen", {})) for f in (0, 1)]
            delta = "-" if m == "none" or gen["none"] is None else _ti_delta(gen[m], gen["none"])
            lines.append(f"| {m} | {_pct(g['true'])} | {_pct(g['info'])} | {_pct(g['true_info'])} | {delta} | "
                         f"{g['coherence']:.3f} | {_pct(g['repetition'])} | {_pct(g['degenerate'])} | {_pct(g['empty'])} | "
                         f"{g['n']} | {cfgs[0]} | {cfgs[1]} |")
        lines += ["", "Percentages except coherence; Δ: difference of True*Info with a 95 % paired bootstrap interval "
                  "(questions resampled, 2000 draws).", "", "#### Generation validation searches (first "
                  f"{GEN_VAL} validation questions per fold; True*Info % / coherence)", ""]
        for m in ("caa", "iti"):
            for f in (0, 1):
                rec = read_json(out / "chosen" / f"fold{f}_{m}_gen.json")
                if rec is None:
                    continue
                ref = rec["reference"]
                cells = ", ".join(f"{_cfg_any(c['config'])}: {_pct(c['metrics']['true_info'])} / "
                                  f"{c['metrics']['coherence']:.2f}" + ("" if c["eligible"] else " (below floor)")
                                  for c in rec["candidates"])
                edge = f"; still at an edge: {', '.join(rec['at_edge'])}" if rec["at_edge"] else ""
                fb = "; **no configuration met the floor: the most coherent was taken**" if rec["fallback"] else ""
                lines.append(f"- {m.upper()} fold {f} (none: {_pct(ref['true_info'])} / {ref['coherence']:.2f}, floor "
                             f"{ref['coherence'] - 0.5:.2f}): {cells}; **chosen {_cfg_any(rec['chosen'])}**{edge}{fb}")
        lines.append("")
    # --- six MC tasks
    mc6 = {(t, m): read_json(out / "mc6" / f"{t}_{m}.json") for t in MC_TASKS for m in ("none", "caa", "iti")}
    if any(v is not None for v in mc6.values()):
        lim = next(v for v in mc6.values() if v is not None)["limit"]
        lines += ["### Six multiple-choice tasks (accuracy, %)", "",
                  f"A fixed subset per task: `load_dataset(task, limit={lim}, seed=0)` (COPA has only 100 validation "
                  "items: all of them). Zero-shot lm-eval-style prompts, accuracy = raw sum of option log-probs "
                  "(`acc`). CAA / ITI use the TruthfulQA vectors of fold 0 with fold 0's MC-chosen hyper-parameters, "
                  "steering the option tokens as in TruthfulQA MC. This measures what TruthfulQA steering does to "
                  "unrelated tasks (±6-7 points of noise at n=200, ±9-10 at n=100).", "",
                  "| method | " + " | ".join(f"{t} (n={next((v['n'] for (tt, _), v in mc6.items() if tt == t and v), '-')})"
                                           for t in MC_TASKS) + " | mean |",
                  "|---|" + "---|" * (len(MC_TASKS) + 1)]
        for m in ("none", "caa", "iti"):
            accs = [mc6[(t, m)]["acc"] if mc6[(t, m)] else None for t in MC_TASKS]
            mean = sum(a for a in accs if a is not None) / len(accs) if all(a is not None for a in accs) else None
            lines.append(f"| {m} | " + " | ".join(_pct(a) for a in accs) + f" | {_pct(mean)} |")
        lines.append("")
    # --- CAA A/B behaviours
    per = [read_json(p) for p in sorted((out / "persona").glob("*.json"))]
    if per:
        r0 = per[0]
        lines += ["### CAA A/B behaviours (p(matching answer), %)", "",
                  f"CAA's own protocol on its seven A/B sets: vectors from the `generate` split (first "
                  f"{PERSONA_FIT} items in a seeded order, 80 % fit), read at the answer **letter**; layer x "
                  f"multiplier chosen by p(matching) on the other 20 % (at most {PERSONA_VAL} items; grid layer "
                  f"{list(PERSONA_LAYERS)} x multiplier {list(PERSONA_MULTS)}, grown past edges); scored on the "
                  f"{r0['n_test']}-item `test` split unsteered, with the chosen multiplier (+) and its negation (-).", "",
                  "| behaviour | none | CAA + | CAA - | chosen | its validation p(matching) |", "|---|---|---|---|---|---|"]
        for r in per:
            t = r["test"]
            sel = r["selection"]
            edge = " (at edge: " + ", ".join(sel["at_edge"]) + ")" if sel["at_edge"] else ""
            lines.append(f"| {r['behavior']} | {_pct(t['none']['p_matching'])} | {_pct(t['caa+']['p_matching'])} | "
                         f"{_pct(t['caa-']['p_matching'])} | {_cfg_any(sel['chosen'])}{edge} | "
                         f"{_pct(sel['metrics']['p_matching'])} |")
        lines.append("")
    lines += _history(out)
    lines += ["### Notes on these results", ""] + [f"- {n}" for n in NOTES] + [""]
    lines += ["### ITI probe accuracies (layer x head)", ""]
    if (ROOT / "docs" / "img" / "tqa_iti_probe_acc_fold0.png").exists():
        lines += ["![ITI probe validation accuracy per layer x head, fold 0](img/tqa_iti_probe_acc_fold0.png)", "",
                  "Validation accuracy of the 270 per-head probes of fold 0 (trained on the fit part's (question, "
                  "answer) records, scored on the validation part's), drawn by this driver from `fits/fold0_iti.json`.", ""]
    return "\n".join(lines)


#: written after reading the tables (kept in the driver so `--stage docs` reproduces the page)
NOTES: list[str] = [
    "**MC.** ITI and CAA both raise MC2 on the held-out halves by about 6 points (paired intervals exclude 0); "
    "ITI also raises MC1 by 3.1 points [+0.2, +5.9], CAA's MC1 change is within noise. With ITI's own sigma the "
    "chosen alphas (40 and 20) are ITI's scale; the first run's ITI gain (+3.6 MC2) came from a sigma about twice as "
    "large, probes on 64 % of the training half and no instruction.",
    "**The two folds choose very different ITI settings** (K=48, alpha 40 vs K=6, alpha 20): on ~82 validation "
    "questions neighbouring grid points differ by 1-3 MC2 points, about the noise of that sample. CAA chose layer 18 "
    "x10 in both folds, now inside a grid that was grown around it.",
    "**ITI's reference MC start costs MC2 here**: steering from the second answer token (ITI's "
    "`start_edit_location`, the default for the ITI/FASB protocol) scores 1.8 MC2 points below steering from the first "
    "with the same configurations (line above). It stays the default because it is the protocol the ITI and FASB "
    "numbers were made with; `steer_from=\"answer\"` is the other choice.",
    "**The instruction** (ITI/FASB protocol) moves the unsteered model little on 817 questions: MC2 45.0 -> 44.6, "
    "MC1 25.5 -> 24.8 (the first run had no instruction; nothing else changed for `none`).",
    "**Generation (proxy judge).** With strengths chosen on a generation validation metric, ITI raises True*Info "
    "by 15.2 points [+11.7, +18.8] (True 43.8 -> 60.0, Info unchanged at ~92) and CAA by 4.4 [+1.3, +7.6] (Info "
    "falls to 85.9, 6.5 % of its answers loop). Both cost coherence: -0.74 -> -1.13 (ITI) and -0.93 (CAA) nats per "
    "token under the unsteered model, inside the 0.5 margin they were chosen with. The generation-chosen ITI "
    "strengths (alpha 5 and 20) are at or below the MC-chosen ones (40 and 20): MC rewards stronger steering than "
    "fluent generation tolerates, which is what broke the first run's ITI answers (400 of 408 empty). These are "
    "proxy-judge numbers (MiniLM similarity to the reference answers for truth, rules for info), not the fine-tuned "
    "judges': a shift towards reference-like wording can count as truth here.",
    "**CAA A/B behaviours.** The unsteered 135M model is near chance on these sets (p(matching) 48-53 %). CAA "
    "moves p(matching) the intended way (+ above none above -) on survival-instinct (52.6 -> 66.4 / 40.9), "
    "hallucination, sycophancy, refusal and coordinate-other-ais; corrigible-neutral-HHH does not move, and "
    "myopic-reward goes the wrong way on the test split (+ 49.2, - 54.7) although its validation choice was "
    "positive. 50 test items per set: differences under ~10 points are within noise.",
    "**The first run's generation gains were the judge's.** Re-judged with the honest judge, the first run's own "
    "answers score True*Info 11.8 for CAA (was 55.7) and 20.2 for ITI (was 41.3), at coherence -1.70 and -1.48; the "
    "unsteered answers barely move (40.1 -> 39.8). The new answers, with strengths chosen on generation, keep "
    "44.3 and 55.1 at coherence -0.93 and -1.13.",
    "**Coherence alone is not a sufficient floor**: in fold 0's ITI generation search alpha 20 made every answer a "
    "loop (repetition 0.79, all degenerate) yet its coherence (-1.24) passed the floor (-1.24 = -0.74 - 0.5), "
    "because a loop is likely under the model once it has started; the degenerate -> not informative rule is what "
    "gives it True*Info 0. Conversely in fold 1 the floor excluded ITI alpha 40, the best True*Info on validation "
    "(56.1) at coherence -1.87.",
]


def _history(out: Path) -> list[str]:
    """The first run's numbers (benchmarks/results/tqa, before issue #11) beside this run's."""
    if not (OLD_OUT / "mc").exists():
        return []
    lines = ["### History: the first run (before issue #11) beside this one", "",
             "The first tables (commit `7aaed40` and before; raw files in `benchmarks/results/tqa/`) were made with "
             "ITI's sigma over the probe records (about twice ITI's, so their alphas 5-15 are ITI's 10-30), ITI's MC "
             "steering from the first answer token, no instruction in MC scoring, ITI probes on 64 % of each "
             "training half, small grids whose choices sat at their edges, generation strengths chosen on MC, and a "
             "judge that called empty and looping answers true / informative. They changed because each of these "
             "was fixed under issue #11.", "",
             "| | MC1 old | MC1 new | MC2 old | MC2 new | True*Info old | True*Info old answers, new judge | "
             "True*Info new | Info old | Info new | coherence old answers | coherence new |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for m in ("none", "caa", "iti"):
        o, n = _mc_pooled(OLD_OUT, m), _mc_pooled(out, m)
        go, gn = _gen_rows(OLD_OUT, m, False), _gen_rows(out, m, True)
        rj = [x for f in (0, 1) for x in (read_json(out / "rejudged_v1" / f"fold{f}_{m}.json") or {}).get("records", [])]
        go_m = _gen_metrics(go) if go else None
        gn_m = _gen_metrics(gn) if gn else None
        rj_m = _gen_metrics(rj) if len(rj) == 817 else None
        coh = lambda g: "-" if not g or "coherence" not in g else f"{g['coherence']:.3f}"  # noqa: E731
        lines.append(f"| {m} | {_pct(o and o['mc1'])} | {_pct(n and n['mc1'])} | {_pct(o and o['mc2'])} | "
                     f"{_pct(n and n['mc2'])} | {_pct(go_m and go_m['true_info'])} | {_pct(rj_m and rj_m['true_info'])} | "
                     f"{_pct(gn_m and gn_m['true_info'])} | {_pct(go_m and go_m['info'])} | {_pct(gn_m and gn_m['info'])} | "
                     f"{coh(rj_m)} | {coh(gn_m)} |")
    old6 = {(t, m): read_json(OLD_OUT / "mc6" / f"{t}_{m}.json") for t in MC_TASKS for m in ("none", "caa", "iti")}
    if all(old6.values()) and not (out / "mc6").exists():
        lines += ["", "**Six MC tasks, first run** (the table below is the first run's, with its old "
                  "ITI vectors and MC-chosen settings; re-run with every method in \"FASB on the embedded model\" below, `mc6_v2/`: none and CAA give the same numbers there, ITI's new vectors 45.8 on average). Accuracy %, "
                  "`load_dataset(task, limit=200, seed=0)`, fold-0 TruthfulQA vectors:", "",
                  "| method | " + " | ".join(f"{t} (n={old6[(t, 'none')]['n']})" for t in MC_TASKS) + " | mean |",
                  "|---|" + "---|" * (len(MC_TASKS) + 1)]
        for m in ("none", "caa", "iti"):
            accs = [old6[(t, m)]["acc"] for t in MC_TASKS]
            lines.append(f"| {m} | " + " | ".join(_pct(a) for a in accs) + f" | {_pct(sum(accs) / len(accs))} |")
    lines += ["", "Old generation numbers are under the old judge (empty / looping answers counted as the judge "
              "said); \"old answers, new judge\" re-judges the first run's 817 answers per method with the honest "
              "judge (`--stage rejudge`, `rejudged_v1/`); the new ones are this run's answers under the honest judge. The old MC configurations: CAA layer 18 x10 in both "
              "folds, ITI K=24 alpha 10 / K=8 alpha 15 (old sigma).", ""]
    return lines


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
    ap.add_argument("--stage", default="all", choices=["mc", "mc6", "gen", "persona", "rejudge", "ablate", "speed",
                                                       "docs", "all"])
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "tqa_v2"))
    ap.add_argument("--fold", type=int, choices=[0, 1], default=None,
                    help="only this fold (run two processes, one per fold, on two cores); docs need both")
    ap.add_argument("--mc6-limit", type=int, default=200)
    ap.add_argument("--gen-per-fold", type=int, default=None, help="questions per fold (seeded subset); default all")
    ap.add_argument("--gen-val", type=int, default=GEN_VAL, help="validation questions per fold for the generation search")
    ap.add_argument("--batch-size", type=int, default=8)
    args = ap.parse_args(argv)
    out = Path(args.out)
    run = "OMP_NUM_THREADS=1 STEERLAB_DATA=../shared/data python benchmarks/tqa_results.py"
    cmd = "\n".join([f"{run} --stage mc --fold 0 & {run} --stage mc --fold 1; wait   # two cores",
                     f"{run} --stage gen --fold 0 --gen-val {args.gen_val} & {run} --stage gen --fold 1 --gen-val "
                     f"{args.gen_val}; wait",
                     f"{run} --stage ablate; {run} --stage persona; {run} --stage rejudge",
                     f"{run} --stage docs"])
    folds = (0, 1) if args.fold is None else (args.fold,)
    if args.stage != "docs":
        ctx = Ctx(out, args.batch_size)
        if args.stage in ("mc", "all"):
            ctx.run_mc(folds)
        if args.stage in ("gen", "all"):
            ctx.run_gen(args.gen_per_fold, args.gen_val, folds)
        if args.stage in ("mc6", "all") and args.fold in (None, 0):
            ctx.run_mc6(args.mc6_limit)
        if args.stage in ("persona", "all") and args.fold is None:
            run_persona(ctx)
        if args.stage in ("rejudge", "all") and args.fold is None:
            run_rejudge(ctx)
        if args.stage in ("ablate", "all") and args.fold is None:
            ctx.run_ablate()
        if args.stage in ("speed", "all") and args.fold is None:
            run_speed(ctx)
    if args.stage in ("docs", "all") and args.fold is None:
        write_docs(out, cmd)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
