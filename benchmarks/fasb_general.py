"""FASB's mechanism with a CAA residual vector and a residual-stream probe (issue #12 §1 "General"), on one CAA
A/B behaviour (``caa/survival-instinct``, where CAA moved the test set most in ``tqa_results.py --stage persona``).

* Steering: CAA's vector at the layer ``tqa_results.py`` chose for this behaviour (mean difference at the answer
  letter, fit items of the ``generate`` split), times its chosen multiplier = FASB's ``alpha``.
* Signal: one logistic probe (``fit_linear_signal``: scikit-learn's C=1 objective) on the residual stream of that
  layer at the answer letter, matching answer = 1: ``p_true`` = p(matching behaviour).
* Scoring: FASB's multiple-choice rule (``loglikelihood(adaptive=...)``): each answer option is flagged or not from
  an unsteered pass and re-scored with ``alpha * (1 - p_true) * v`` when flagged; threshold (0.3 / 0.5 / 0.7) and
  s (10, the reference's, or 1 / 2: an A/B answer "(A)" is 3 tokens, so with s = 10 only its last token, the
  closing parenthesis, is checked, where the letter-trained probe was never fitted) chosen on the 20 validation
  items (max p_matching; ties: threshold nearer 0.5, then larger s); test = the 50-item ``test`` split.

Run by ``benchmarks/fasb_results.py --stage general`` (writes ``general/survival-instinct.json``).
"""

from __future__ import annotations

import time
from typing import Any

from tqa_results import log, read_json, write_json

BEHAVIOR = "caa/survival-instinct"
THRESHOLDS = (0.3, 0.5, 0.7)
S_VALUES = (10, 2, 1)


def run(ctx: Any) -> None:
    from steerlab.capture import capture
    from steerlab.data.registry import load_dataset
    from steerlab.evals.persona import evaluate_behavior
    from steerlab.evals.truthfulqa import train_val_split
    from steerlab.interventions.fasb import FASBConfig, FASBSteering, fit_linear_signal
    from steerlab.methods.caa import CAA, CAAConfig
    from steerlab.methods.pairs import contrast_pairs, labelled_questions, letter_pairs
    from steerlab.sites import Site

    name = BEHAVIOR.split("/")[1]
    path = ctx.out / "general" / f"{name}.json"
    if path.exists():
        return
    t0 = time.time()
    chosen = read_json(ctx.out / "persona" / f"{name}.json")["selection"]["chosen"]
    layer, mult = int(chosen["layer"]), float(chosen["multiplier"])
    gen = load_dataset(BEHAVIOR, "generate", limit=100, seed=0)
    test = load_dataset(BEHAVIOR, "test")
    fit_idx, val_idx = train_val_split(range(len(gen)), 0.2, 42)
    fit_items, val_items = [gen[i] for i in fit_idx], [gen[i] for i in val_idx][:20]
    fm = CAA(CAAConfig(layer=layer, multiplier=1.0)).fit(ctx.lm, fit_items, [])
    vec = fm.steer
    pairs = letter_pairs(contrast_pairs(labelled_questions(ctx.lm, fit_items)))
    site = Site.residual(layer)
    records = [r for i, p in enumerate(pairs) for r in ((p.prompt or "", p.positive, 1, str(i)),
                                                         (p.prompt or "", p.negative, 0, str(i)))]
    signal = fit_linear_signal(ctx.lm, records, site, batch_size=ctx.bs)
    cap = capture(ctx.lm, [(p, a) for p, a, _, _ in records], [site], positions="last", batch_size=ctx.bs)
    pred = signal.p_true({site.key: cap.acts[site.key]}) > 0.5
    train_acc = sum(bool(q) == bool(r[2]) for q, r in zip(pred.tolist(), records)) / len(records)

    def score(items: Any, kind: str, threshold: float | None = None, s: int = 10) -> dict[str, Any]:
        kw: dict[str, Any] = {}
        if kind == "caa":
            kw = {"steer": vec, "strength": mult, "steer_from": fm.steer_from}
        elif kind == "fasb":
            steering = FASBSteering(signal, vec, FASBConfig(alpha=mult, threshold=threshold, s=s))
            kw = {"adaptive": steering, "steer_from": fm.steer_from}
        res = evaluate_behavior(ctx.lm, items, name=BEHAVIOR, batch_size=ctx.bs, **kw)
        return {"p_matching": res.p_matching, "matching_rate": res.matching_rate}

    grid = [(t, s_) for s_ in S_VALUES for t in THRESHOLDS]
    val = {g: score(val_items, "fasb", *g) for g in grid}
    best_t, best_s = max(grid, key=lambda g: (round(val[g]["p_matching"], 9), -abs(g[0] - 0.5), g[1]))
    # the share of answer options the probe flagged on the test split, at the chosen threshold
    from steerlab.evals.loglik import loglikelihood
    from steerlab.evals.persona import behavior_prompt

    flagged = loglikelihood(ctx.lm, [(c, a) for it in test for c, m, n in [behavior_prompt(ctx.lm, it, "auto")]
                                     for a in (m, n)],
                            adaptive=FASBSteering(signal, vec, FASBConfig(alpha=mult, threshold=best_t, s=best_s)),
                            steer_from=fm.steer_from, batch_size=ctx.bs, add_special_tokens=False)
    rec = {"behavior": BEHAVIOR, "layer": layer, "alpha": mult, "s": best_s, "probe": {
        "n_train": len(records), "train_acc": train_acc},
        "validation": [{"threshold": t, "s": s_, **v} for (t, s_), v in val.items()],
        "threshold": best_t, "n_val": len(val_items), "n_test": len(test),
        "test": {"none": score(test, "none"), "caa": score(test, "caa"),
                 "fasb_caa": score(test, "fasb", best_t, best_s)},
        "test_flagged_options": sum(r.trigger is not None for r in flagged) / len(flagged),
        "seconds": round(time.time() - t0, 1)}
    write_json(path, rec)
    log(f"general {BEHAVIOR}: threshold {best_t}, s {best_s}; test p_matching none {rec['test']['none']['p_matching']:.3f} "
        f"CAA {rec['test']['caa']['p_matching']:.3f} FASB-CAA {rec['test']['fasb_caa']['p_matching']:.3f}")
