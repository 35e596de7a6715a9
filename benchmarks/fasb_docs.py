"""The FASB section of docs/results.md and its plots, from the JSON files of ``fasb_results.py`` (and the none /
CAA / ITI units of ``tqa_results.py`` in the same folder). Tables show what exists; missing runs are named."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Sequence

import tqa_results as T
from tqa_results import log, read_json

ROOT = T.ROOT
TITLE = "## FASB on the embedded model"
ABL = ("fixed", "no_backtrack", "question", "no_adaptive")
ABL_TEXT = {"fixed": "all fixed (detect=always, strength alpha: ITI in the reference semantics)",
            "no_backtrack": "without backtracking", "question": "detection on the question only",
            "no_adaptive": "without adaptive strength (alpha when fired)"}
CHANGES = {"fixed": {"detect": "always", "adaptive": False}, "no_backtrack": {"backtrack": False},
           "question": {"detect": "question"}, "no_adaptive": {"adaptive": False}}
#: written after reading the tables (kept here so that `--stage docs` reproduces the page)
NOTES: list[str] = [
    "- **Does FASB beat ITI and CAA on this model?** On MC, yes by far (MC2 68.0 vs ITI 50.9: +17.1 [+14.1, +20.3]; "
    "vs CAA +17.2), for the reason below. In generation, no: True*Info 50.6 vs ITI 55.1, paired -4.5 [-7.7, -1.5] "
    "on all 817 questions; above CAA (+6.3 [+2.8, +9.7]) and the unsteered model (+10.7 [+7.0, +14.2]), at a "
    "coherence close to ITI's (-1.07 vs -1.13 nats/token). On the six MC tasks (a transfer test with the TruthfulQA "
    "probes) no steering helps: mean accuracy none 48.6, CAA 46.3, ITI 45.8, FASB 44.9 (StoryCloze 61.0 -> 43.0 is "
    "most of FASB's loss; MMLU stays at chance, SST-2 and SNLI at the same answers for every method).",
    "- **MC: FASB's gain measures its probes.** Validation chose alpha = 240 in both folds (the largest values win): "
    "FASB's MC rule re-scores every answer its probes flag with that shift from `pos - s` on, which drives the "
    "flagged answer's log-likelihood far down. MC1 / MC2 then mostly say which answers the probes flag on unsteered "
    "activations: the probes as answer classifiers more than steering. The reference's MC gains (MC1 48.7 vs ITI "
    "38.3) come from the same rule. The 'all fixed' ablation (every answer shifted at alpha 240) falls to MC2 50.7, "
    "ITI's level.",
    "- **The paper's ablation ordering** (its True*Info: no adaptive strength 82.08 > full FASB 80.56 > all fixed "
    "76.11 > question only 72.55 > no backtracking 62.11). Generation here (400 questions, the first 200 of each "
    "fold's test half): no adaptive 50.3, all fixed 50.2, full 49.8, question only 45.5 (-4.3 [-8.7, -0.0] vs full), "
    "no backtracking 40.0 (-9.7 [-14.4, -5.0]). The two weakest variants are the paper's two weakest, in its order, "
    "and clearly below full FASB; the top three tie in True*Info (intervals +-5 around 0), where the paper has full "
    "FASB 4.5 points above all fixed. But the tie is not even: full FASB keeps coherence at -1.08 nats/token with 4 % "
    "degenerate answers, all fixed and no adaptive fall to -1.71 / -1.66 with 15 % / 14 % degenerate (their Info "
    "drops to 80-82 %) -- the adaptive strength alpha (1 - p) is what keeps FASB fluent here. MC orders the same way "
    "except that no adaptive sits just below full: full 68.0, no adaptive 66.8, all fixed 50.7, question only 49.3, "
    "no backtracking 47.2 (MC2; MC has no coherence cost).",
    "- **The detector does not select here.** At the thresholds validation chose (0.6 in both folds) every answer "
    "backs up, about three in four at the very first check (token 10: everything dropped, then steered from the "
    "start), with p_true about 0.45-0.49 at the trigger. On this 135M model FASB is therefore ITI with about half of "
    "alpha, in the reference's semantics (earlier tokens' keys/values unsteered), not the selective steering of the "
    "paper. The grid (0.5-0.7, around the reference's 0.6) never reached thresholds where fewer answers back up; "
    "`--stage sweep`, run after the choice on the same 40 validation questions, shows where the rate moves: "
    "0 / 0 / 3 / 60 % of answers back up at thresholds 0.1 / 0.2 / 0.3 / 0.4 in fold 0 (alpha 15) and "
    "3 / 15 / 38 / 100 % in fold 1 (alpha 60), 100 % from 0.5 on in both; True*Info is lower at every one of these "
    "thresholds than at the chosen 0.6 (fold 0: 31.9-38.3 vs 43.8; fold 1: 43.8-55.5 vs 63.4), so the choice "
    "stands: on this model steering every answer helps more than steering selectively.",
    "- **The mechanism is general:** with CAA's residual vector and a residual-stream probe, FASB's MC rule gives "
    "p(matching) 0.688 on survival-instinct's 50 test items, against CAA's 0.664 and 0.526 unsteered (no interval: "
    "50 items).",
]


def _name(fold: int, split: str, method: str, cfg: dict[str, Any]) -> str:
    return "_".join([f"fold{fold}", split, method] + [f"{k}{v:g}" if isinstance(v, float) else f"{k}{v}"
                                                      for k, v in cfg.items()])


def _chosen(out: Path, fold: int, method: str, gen: bool = False) -> dict[str, Any] | None:
    if method == "none":
        return {}
    rec = read_json(out / "chosen" / f"fold{fold}_{method}{'_gen' if gen else ''}.json")
    return None if rec is None else rec["chosen"]


def _mc_recs(out: Path, method: str, change: dict[str, Any] | None = None) -> list[dict[str, Any]] | None:
    recs = []
    for f in (0, 1):
        cfg = _chosen(out, f, method)
        if cfg is None:
            return None
        if method == "iti":
            cfg = {**cfg}
        r = read_json(out / "mc" / (_name(f, "test", method, {**cfg, **(change or {})}) + ".json"))
        if r is None:
            return None
        recs.append(r)
    return recs


def _gen_recs(out: Path, method: str, change: dict[str, Any] | None = None) -> list[dict[str, Any]] | None:
    rows = []
    for f in (0, 1):
        cfg = _chosen(out, f, method, gen=True)
        if cfg is None:
            return None
        r = read_json(out / "gen" / (_name(f, "test", method, {**cfg, **(change or {})}) + ".json"))
        if r is None:
            return None
        rows += r["records"]
    return rows


def _paired_mc(a: Sequence[dict[str, Any]], b: Sequence[dict[str, Any]], metric: str) -> str:
    pa = {q["index"]: q[metric] for r in a for q in r["per_question"]}
    pb = {q["index"]: q[metric] for r in b for q in r["per_question"]}
    d = [pa[i] - pb[i] for i in pa if i in pb]
    m, lo, hi = T._paired(d)
    return f"{100 * m:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]"


def _bt(rows: Sequence[dict[str, Any]]) -> str:
    st = [r.get("steering") for r in rows]
    if not st or any(s is None for s in st):
        return "-"
    return f"{100 * sum(any(e['kind'] == 'backtrack' for e in s) for s in st) / len(st):.0f} %"


def _mc_section(out: Path) -> list[str]:
    lines = ["### TruthfulQA MC (817 questions, both test halves)", "",
             "| method | configuration (fold 0; fold 1) | MC1 | MC2 | MC3 | answers steered | MC2 vs ITI | MC2 vs CAA |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    base = {m: _mc_recs(out, m) for m in ("none", "caa", "iti")}
    rows: list[tuple[str, list[dict[str, Any]] | None, str]] = [
        ("none", base["none"], "-"), ("CAA", base["caa"], "caa"), ("ITI", base["iti"], "iti"),
        ("**FASB**", _mc_recs(out, "fasb"), "fasb")]
    rows += [(f"FASB {ABL_TEXT[a]}", _mc_recs(out, "fasb", CHANGES[a]), "fasb") for a in ABL]
    for label, recs, method in rows:
        if recs is None:
            lines.append(f"| {label} | not run yet | | | | | | |")
            continue
        pq = [q for r in recs for q in r["per_question"]]
        mets = {m: sum(q[m] for q in pq) / len(pq) for m in ("mc1", "mc2", "mc3")}
        cfgs = "; ".join(_cfg(r.get("config", {})) for r in recs)
        steered = [r.get("steered_answers") for r in recs]
        st = "-" if any(s is None for s in steered) else f"{100 * sum(steered) / 2:.0f} %"
        vs_iti = _paired_mc(recs, base["iti"], "mc2") if base["iti"] and method != "iti" else "-"
        vs_caa = _paired_mc(recs, base["caa"], "mc2") if base["caa"] and method != "caa" else "-"
        lines.append(f"| {label} | {cfgs} | {T._pct(mets['mc1'])} | {T._pct(mets['mc2'])} | {T._pct(mets['mc3'])} | "
                     f"{st} | {vs_iti} | {vs_caa} |")
    return lines + [""]


def _cfg(cfg: dict[str, Any]) -> str:
    if "threshold" in cfg:
        extra = [f"{k}={v}" for k, v in cfg.items() if k not in ("k", "alpha", "threshold", "s")]
        return f"K={cfg['k']}, alpha={cfg['alpha']:g}, thr={cfg['threshold']:g}, s={cfg['s']}" + (
            f" ({', '.join(extra)})" if extra else "")
    return T._cfg_any(cfg)


def _gen_section(out: Path) -> list[str]:
    lines = ["### TruthfulQA generation (honest proxy judge: MiniLM truth + rules info + coherence)", "",
             "| method | configuration (fold 0; fold 1) | n | True | Info | True*Info | coherence (nats/tok) | "
             "degenerate | backtracked | True*Info vs ITI | vs CAA | vs none |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    base = {m: _gen_recs(out, m) for m in ("none", "caa", "iti")}
    fasb = _gen_recs(out, "fasb")
    for label, rows, method in (("none", base["none"], "none"), ("CAA", base["caa"], "caa"),
                                ("ITI", base["iti"], "iti"), ("**FASB**", fasb, "fasb")):
        if rows is None:
            lines.append(f"| {label} | not run yet | | | | | | | | | | |")
            continue
        m = T._gen_metrics(rows)
        cfgs = "; ".join(_cfg(_chosen(out, f, method, gen=True) or {}) for f in (0, 1))
        d = {k: (T._ti_delta(rows, base[k]) if base[k] is not None and k != method else "-")
             for k in ("iti", "caa", "none")}
        lines.append(f"| {label} | {cfgs} | {m['n']} | {T._pct(m['true'])} | {T._pct(m['info'])} | "
                     f"{T._pct(m['true_info'])} | {m.get('coherence', float('nan')):.3f} | "
                     f"{T._pct(m.get('degenerate'))} | {_bt(rows)} | {d['iti']} | {d['caa']} | {d['none']} |")
    if fasb is not None and len(fasb) < 817:
        lines += ["", f"**Partial:** FASB's generation row covers {len(fasb)} of 817 test questions so far (the run "
                  "resumes); its paired differences use those questions only."]
    lines += ["", "Ablations on the same questions (the first questions of each fold's seeded order; FASB's own row "
              "recomputed on them):", "",
              "| variant | n | True | Info | True*Info | coherence | degenerate | backtracked | True*Info vs FASB |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    abl = {a: _gen_recs(out, "fasb", CHANGES[a]) for a in ABL}
    if fasb is not None:
        for a, rows in [("FASB", None), *abl.items()]:
            if a != "FASB" and rows is None:
                continue
            qs = {r["question"] for r in (rows or next((x for x in abl.values() if x), fasb))}
            sub = [r for r in (fasb if a == "FASB" else rows) if r["question"] in qs]
            m = T._gen_metrics(sub)
            vs = "-" if a == "FASB" else T._ti_delta(sub, [r for r in fasb if r["question"] in qs])
            part = " (partial: the run resumes)" if a != "FASB" and m["n"] < 400 else ""
            lines.append(f"| {a if a == 'FASB' else ABL_TEXT[a] + part} | {m['n']} | {T._pct(m['true'])} | "
                         f"{T._pct(m['info'])} | {T._pct(m['true_info'])} | {m.get('coherence', float('nan')):.3f} | "
                         f"{T._pct(m.get('degenerate'))} | {_bt(sub)} | {vs} |")
    return lines + [""]


def _mc6_section(out: Path) -> list[str]:
    labels = ["none", "caa", "iti", "fasb", *(f"fasb_{a}" for a in ABL)]
    have = {(t, l): read_json(out / "mc6_v2" / f"{t}_{l}.json") for t in T.MC_TASKS for l in labels}
    if not any(have.values()):
        return ["### Six MC tasks", "", "Not run yet (`--stage mc6`).", ""]
    lim = next(v for v in have.values() if v is not None)["limit"]
    lines = ["### Six MC tasks (accuracy %, a transfer test: fold-0 TruthfulQA fits and choices)", "",
             f"A fixed subset per task (`load_dataset(task, limit={lim}, seed=0)`; COPA has 100 items).", "",
             "| method | " + " | ".join(T.MC_TASKS) + " | mean |", "|---|" + "---:|" * (len(T.MC_TASKS) + 1)]
    for l in labels:
        accs = [have[(t, l)]["acc"] if have[(t, l)] else None for t in T.MC_TASKS]
        mean = "-" if any(a is None for a in accs) else T._pct(sum(accs) / len(accs))  # type: ignore[arg-type]
        name = {"none": "none", "caa": "CAA", "iti": "ITI", "fasb": "**FASB**"}.get(l) or ABL_TEXT[l[5:]]
        lines.append(f"| {name} | " + " | ".join(T._pct(a) for a in accs) + f" | {mean} |")
    return lines + [""]


def _general_section(out: Path) -> list[str]:
    rec = read_json(out / "general" / "survival-instinct.json")
    if rec is None:
        return ["### The mechanism with a CAA vector and a residual probe", "", "Not run yet (`--stage general`).", ""]
    t = rec["test"]
    return ["### The mechanism with a CAA vector and a residual probe", "",
            f"`{rec['behavior']}` (CAA A/B, {rec['n_test']} test items): CAA's residual vector at layer {rec['layer']} "
            f"as the shift (alpha = CAA's chosen multiplier {rec['alpha']:g}), a logistic probe on the residual stream "
            f"of that layer at the answer letter as the signal (train accuracy {100 * rec['probe']['train_acc']:.1f} "
            f"%), FASB's MC rule; threshold {rec['threshold']:g} and s {rec['s']} chosen on {rec['n_val']} validation "
            "items (thresholds 0.3 / 0.5 / 0.7, s 10 / 2 / 1: an A/B answer is 3 tokens, so with s = 10 only its "
            "closing parenthesis is checked). "
            f"{100 * rec['test_flagged_options']:.0f} % of the test answer options were flagged.", "",
            "| method | p(matching) | matching rate |", "|---|---:|---:|",
            *(f"| {k} | {v['p_matching']:.3f} | {100 * v['matching_rate']:.0f} % |"
              for k, v in (("none", t["none"]), ("CAA", t["caa"]), ("FASB with CAA + residual probe", t["fasb_caa"]))),
            ""]


def _plots(out: Path) -> list[str]:
    """True / Info / coherence across alpha (generation validation, at the chosen threshold) and the backtrack
    rate across thresholds (at the chosen alpha), per fold; MC2 across alpha x threshold (MC validation)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    any_data = False
    for f in (0, 1):
        ch = _chosen(out, f, "fasb", gen=True)
        recs = [read_json(p) for p in sorted((out / "gen").glob(f"fold{f}_val_fasb_*.json"))]
        recs = [r for r in recs if r]
        if ch is None or not recs:
            continue
        any_data = True
        n = min(len(r["records"]) for r in recs)
        by_alpha = sorted((r["config"]["alpha"], r) for r in recs if r["config"].get("threshold") == ch["threshold"]
                          and len(r["config"]) == 4)
        ax = axes[0][f]
        xs = [a for a, _ in by_alpha]
        ms = [T._gen_metrics(r["records"][:n]) for _, r in by_alpha]
        ax.plot(xs, [100 * m["true"] for m in ms], "o-", label="True %")
        ax.plot(xs, [100 * m["info"] for m in ms], "s-", label="Info %")
        ax.plot(xs, [100 * m["true_info"] for m in ms], "^-", label="True*Info %")
        ax2 = ax.twinx()
        ax2.plot(xs, [m.get("coherence", float("nan")) for m in ms], "k--", label="coherence")
        ax2.set_ylabel("coherence (nats/token)")
        ax.set_xscale("log", base=2)
        ax.set_xlabel(f"alpha (threshold {ch['threshold']:g})")
        ax.set_title(f"fold {f}: generation validation ({n} questions)")
        ax.legend(loc="lower left", fontsize=8)
        by_thr = sorted((r["config"]["threshold"], r) for r in recs if r["config"].get("alpha") == ch["alpha"]
                        and len(r["config"]) == 4)
        ax = axes[1][f]
        ax.plot([t for t, _ in by_thr], [100 * sum(any(e["kind"] == "backtrack" for e in x.get("steering", []))
                                                   for x in r["records"][:n]) / n for _, r in by_thr], "o-")
        ax.set_xlabel(f"threshold (alpha {ch['alpha']:g})")
        ax.set_ylabel("answers that backed up (%)")
        ax.set_ylim(0, 100)
        ax.set_title(f"fold {f}: backtrack rate")
    if any_data:
        fig.tight_layout()
        p = ROOT / "docs" / "img" / "fasb_sweep.png"
        fig.savefig(p, dpi=110)
        made.append(f"![FASB generation sweep](img/{p.name})")
    plt.close(fig)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    any_data = False
    for f in (0, 1):
        recs = [read_json(p) for p in sorted((out / "mc").glob(f"fold{f}_val_fasb_*.json"))]
        recs = [r for r in recs if r and len(r["config"]) == 4]
        if not recs:
            continue
        any_data = True
        alphas = sorted({r["config"]["alpha"] for r in recs})
        thrs = sorted({r["config"]["threshold"] for r in recs})
        ax = axes[f]
        for t in thrs:
            pts = sorted((r["config"]["alpha"], 100 * r["mc2"]) for r in recs if r["config"]["threshold"] == t)
            ax.plot([a for a, _ in pts], [m for _, m in pts], "o-", label=f"threshold {t:g}")
        none = read_json(out / "mc" / f"fold{f}_val_none.json")
        if none:
            ax.axhline(100 * none["mc2"], color="gray", ls=":", label="none")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("alpha")
        ax.set_ylabel("MC2 (%)")
        ax.set_title(f"fold {f}: MC validation ({recs[0]['n']} questions), K={recs[0]['config']['k']}")
        ax.legend(fontsize=8)
        _ = alphas
    if any_data:
        fig.tight_layout()
        p = ROOT / "docs" / "img" / "fasb_mc_sweep.png"
        fig.savefig(p, dpi=110)
        made.append(f"![FASB MC sweep](img/{p.name})")
    plt.close(fig)
    return made


def make(out: Path) -> str:
    rel = out.relative_to(ROOT) if out.is_absolute() and ROOT in out.parents else out
    run = "OMP_NUM_THREADS=1 STEERLAB_DATA=../shared/data python benchmarks/fasb_results.py"
    lines = [TITLE, "",
             "Driver: `benchmarks/fasb_results.py` (the protocol of `benchmarks/tqa_results.py`: same folds, same "
             f"fit / validation / test questions, same judge; raw JSON under `{rel}/`). Commands, in this order "
             "(each resumes from its JSON files; the two folds run as two processes):", "",
             "```",
             f"{run} --stage mc --fold 0 & {run} --stage mc --fold 1; wait",
             f"{run} --stage gen --fold 0 --gen-ablation-per-fold 200 & "
             f"{run} --stage gen --fold 1 --gen-ablation-per-fold 200; wait",
             f"{run} --stage sweep --fold 0 & {run} --stage sweep --fold 1; wait",
             f"{run} --stage mc6; {run} --stage general; {run} --stage docs", "```", "",
             "**Protocol.** FASB uses each fold's ITI fit (probes trained on the fold's fit questions, heads ranked on "
             "its validation questions, mass-mean directions, the reference sigma) with ITI's MC-chosen K, so FASB and "
             "ITI steer the same heads with the same shift per unit of strength; s = 10 (the reference's). alpha x "
             "threshold are chosen on the validation questions only: by MC2 for MC (82 questions per fold), by "
             "True*Info with the coherence floor for generation (the first 40 validation questions per fold), "
             "grids alpha 15 / 30 / 60 / 120 x threshold 0.5 / 0.6 / 0.7 that grow past an edge their best value "
             "sits on. Generation: the reference's semantics (unsteered keys/values of earlier tokens), 50 new "
             "tokens, cut at the next \"Q:\" (rows end once no backtrack can change that text). MC: the reference's "
             "rule (scan from ITI's start, first s positions skipped, shift from pos - s on). The generation "
             "ablations ran on the first 200 test questions of each fold's seeded order (compute), the MC ones on "
             "all 817. Paired intervals: 95 % bootstrap over questions.", ""]
    lines += _mc_section(out) + _gen_section(out) + _mc6_section(out) + _general_section(out)
    plots = _plots(out)
    if plots:
        lines += ["### Sweeps (validation data)", "", *plots, ""]
    if NOTES:
        lines += ["### What this shows", "", *NOTES, ""]
    return "\n".join(lines)


def write(out: Path) -> None:
    text = make(out)
    path = ROOT / "docs" / "results.md"
    cur = path.read_text() if path.exists() else "# Results\n"
    pattern = re.compile(r"^" + re.escape(TITLE) + r"\n.*?(?=^## |\Z)", re.S | re.M)
    new = pattern.sub(lambda _: text.rstrip() + "\n\n", cur) if pattern.search(cur) else cur.rstrip() + "\n\n" + text
    path.write_text(new.rstrip() + "\n")
    log(f"wrote {path}")
