"""Per-head probe fitting: steerlab's batched fit of all heads vs one scikit-learn model per head.

1. Capture last-token head activations (``o_proj`` input, every layer) of the embedded model for
   TruthfulQA ``"Q: {question} A: {choice}"`` pairs, label = ``mc2_targets`` value, for the
   first ``--questions`` questions of ``$STEERLAB_DATA/truthfulqa/mc_task.json``.
2. Split 80/20 by question (seed 42), as ITI does.
3. Time (a) :func:`steerlab.probes.fit_head_probes` on all ``L*H`` heads and (b) scikit-learn
   ``LogisticRegression(max_iter=1000)`` fitted per head (the ITI reference's probe), on the
   same float32 training rows; both wall-clock and process CPU time (the machine may be shared).
4. Agreement: per-head validation accuracy (identical heads, largest difference), validation
   probabilities, and the overlap of the top-K head sets.
5. A scale check on synthetic data of TruthfulQA's full size (6204 pairs, the embedded model's
   30 x 9 x 64 heads): the batched fit on all heads, scikit-learn on ``--scale-sklearn-heads``
   heads, extrapolated.

Writes ``docs/bench/probe_fit.json``, ``docs/img/iti_probe_accuracy.png`` (layer x head heat
map of validation accuracy) and the section "## Per-head probe fitting" of ``docs/benchmarks.md``.

    python benchmarks/probe_fit.py                      # 100 questions (738 pairs)
    python benchmarks/probe_fit.py --questions 20 --no-scale   # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Per-head probe fitting"


def _uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "n/a"


def _timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w0, time.process_time() - c0


def load_pairs(n_questions: int) -> tuple[list[tuple[str, str, int, str]], int]:
    from steerlab.data import data_path

    root = os.environ.get("STEERLAB_DATA") or ROOT.parent / "shared" / "data"  # as the test suite
    rows = json.loads(data_path("truthfulqa", "mc_task.json", root=root).read_text(encoding="utf-8"))
    rows = rows[:n_questions] if n_questions > 0 else rows
    records = []
    for q in rows:
        for choice, label in q["mc2_targets"].items():
            records.append((f"Q: {q['question']} A:", f" {choice}", int(label), q["question"]))
    return records, len(rows)


def sklearn_per_head(x: torch.Tensor, y: np.ndarray, tr: np.ndarray, heads: list[tuple[int, int]]) -> dict[str, Any]:
    """Fit ``LogisticRegression(max_iter=1000)`` per head on float32 rows; returns models and iterations."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    xn = x.numpy()
    models = {}
    not_converged = 0
    for layer, head in heads:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf = LogisticRegression(max_iter=1000).fit(xn[tr, layer, head], y[tr])
        not_converged += int(clf.n_iter_[0] >= 1000)
        models[(layer, head)] = clf
    return {"models": models, "not_converged": not_converged}


def exact_reference(probes: Any, x: torch.Tensor, y: np.ndarray, tr: np.ndarray, va: np.ndarray,
                    n_heads_checked: int) -> dict[str, Any]:
    """Against tightly converged scikit-learn (float64, tol 1e-10) on evenly spaced heads: same optimum?"""
    from sklearn.linear_model import LogisticRegression

    n_layers, n_heads = probes.val_acc.shape
    step = max(1, (n_layers * n_heads) // n_heads_checked)
    heads = [(i // n_heads, i % n_heads) for i in range(0, n_layers * n_heads, step)][:n_heads_checked]
    xd = x.double().numpy()
    p_mine = probes.predict_proba(x).double().numpy()
    max_prob, max_default, same_acc = 0.0, 0.0, 0
    for layer, head in heads:
        clf = LogisticRegression(tol=1e-10, max_iter=100000).fit(xd[tr, layer, head], y[tr])
        p = clf.predict_proba(xd[:, layer, head])[:, 1]
        max_prob = max(max_prob, float(np.abs(p - p_mine[:, layer, head]).max()))
        same_acc += int(abs(clf.score(xd[va, layer, head], y[va]) - float(probes.val_acc[layer, head])) < 1e-6)
        default = LogisticRegression(max_iter=1000).fit(x[tr, layer, head].numpy(), y[tr])
        p_def = default.predict_proba(xd[:, layer, head])[:, 1]
        max_default = max(max_default, float(np.abs(p - p_def).max()))
    return {"heads_checked": len(heads), "prob_max_abs_diff_all_rows": max_prob, "val_acc_identical": same_acc,
            "sklearn_default_vs_tight_prob_max_abs_diff": max_default}


def compare(probes: Any, models: dict, x: torch.Tensor, y: np.ndarray, va: np.ndarray, k: int) -> dict[str, Any]:
    """Validation-accuracy and probability agreement between the batched probes and sklearn's."""
    xn = x.numpy()
    n_layers, n_heads = probes.val_acc.shape
    sk_acc = np.full((n_layers, n_heads), np.nan)
    max_prob = 0.0
    mean_prob = []
    p_mine = probes.predict_proba(x[va]).double().numpy()  # (Nva, L, H)
    for (layer, head), clf in models.items():
        sk_acc[layer, head] = clf.score(xn[va, layer, head], y[va])
        p_sk = clf.predict_proba(xn[va, layer, head].astype(np.float64))[:, 1]
        d = np.abs(p_sk - p_mine[:, layer, head])
        max_prob = max(max_prob, float(d.max()))
        mean_prob.append(float(d.mean()))
    mine = probes.val_acc.double().numpy()
    have = ~np.isnan(sk_acc)
    diff = np.abs(mine[have] - sk_acc[have])
    same = diff * len(va) < 0.5  # accuracies are multiples of 1/len(va); ours are float32
    out: dict[str, Any] = {
        "heads_compared": int(have.sum()),
        "val_acc_identical": int(same.sum()),
        "val_acc_identical_frac": float(same.mean()),
        "val_acc_max_abs_diff": float(diff.max()),
        "val_acc_mean_abs_diff": float(diff.mean()),
        "val_acc_within_1_example": int((diff * len(va) < 1.5).sum()),
        "val_acc_max_diff_in_examples": int(round(float(diff.max()) * len(va))),
        "val_prob_max_abs_diff": max_prob,
        "val_prob_mean_abs_diff": float(np.mean(mean_prob)),
    }
    if have.all():
        flat = sk_acc.flatten()
        sk_top = {(int(i) // n_heads, int(i) % n_heads) for i in np.argsort(-flat, kind="stable")[:k]}
        mine_top = set(probes.top_k(k))
        out[f"top{k}_overlap"] = len(sk_top & mine_top)
        out["sklearn_val_acc"] = sk_acc.round(6).tolist()
    return out


def heatmap(acc: np.ndarray, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 7.5))
    im = ax.imshow(acc, aspect="auto", cmap="viridis", origin="lower")
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_xticks(range(acc.shape[1]))
    ax.set_title(title, fontsize=8)
    fig.colorbar(im, ax=ax, label="validation accuracy")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def scale_check(n: int, n_sklearn: int, seed: int, repeats: int) -> dict[str, Any]:
    """Synthetic data of TruthfulQA's full size: batched fit of all heads vs sklearn on a subset."""
    from steerlab.probes import fit_head_probes

    g = torch.Generator().manual_seed(seed)
    L, H, D = 30, 9, 64
    x = torch.randn(n, L, H, D, generator=g)
    x *= torch.exp(torch.randn(1, L, H, D, generator=g))  # unequal feature scales
    y = (torch.rand(n, generator=g) < 0.46).long()
    shift = torch.randn(L, H, D, generator=g) * 0.05 * torch.rand(L, H, 1, generator=g)
    x[y == 1] += shift * 10
    perm = torch.randperm(n, generator=g)
    tr, va = perm[: int(0.8 * n)], perm[int(0.8 * n):]
    walls, cpus = [], []
    for _ in range(repeats):
        probes, w, c = _timed(lambda: fit_head_probes(x, y, tr, va))
        walls.append(w)
        cpus.append(c)
    step = max(1, (L * H) // n_sklearn)
    heads = [(i // H, i % H) for i in range(0, L * H, step)][:n_sklearn]
    sk, w_sk, c_sk = _timed(lambda: sklearn_per_head(x, y.numpy(), tr.numpy(), heads))
    agree = compare(probes, sk["models"], x, y.numpy(), va.numpy(), k=0)
    scale = L * H / len(heads)
    return {
        "n_examples": n, "n_train": int(tr.numel()), "shape": [n, L, H, D],
        "batched_wall_s": float(np.median(walls)), "batched_cpu_s": float(np.median(cpus)),
        "batched_wall_s_all": walls, "newton_steps": probes.n_iter,
        "sklearn_heads_measured": len(heads), "sklearn_wall_s_measured": w_sk, "sklearn_cpu_s_measured": c_sk,
        "sklearn_wall_s_extrapolated": w_sk * scale, "sklearn_cpu_s_extrapolated": c_sk * scale,
        "ratio_wall": w_sk * scale / float(np.median(walls)), "ratio_cpu": c_sk * scale / float(np.median(cpus)),
        "sklearn_not_converged": sk["not_converged"],
        "agreement": {k: v for k, v in agree.items() if k != "sklearn_val_acc"},
    }


def write_section(md_path: Path, text: str) -> None:
    body = text.strip() + "\n"
    if md_path.is_file():
        old = md_path.read_text(encoding="utf-8")
        pat = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.S | re.M)
        if pat.search(old):
            new = pat.sub(lambda _: body + "\n", old, count=1)
        else:
            new = old.rstrip("\n") + "\n\n" + body
    else:
        new = "# Benchmarks\n\n" + body
    md_path.parent.mkdir(parents=True, exist_ok=True)
    md_path.write_text(new.rstrip("\n") + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--questions", type=int, default=100, help="first N TruthfulQA questions (0: all 817)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3, help="timing repeats of the batched fit (median reported)")
    ap.add_argument("--k", type=int, default=48, help="top-K heads compared")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--cache", type=Path, default=None, help="reuse/save captured activations here (.safetensors)")
    ap.add_argument("--no-scale", action="store_true", help="skip the synthetic full-size scale check")
    ap.add_argument("--scale-sklearn-heads", type=int, default=27)
    ap.add_argument("--exact-heads", type=int, default=27, help="heads checked against a tightly converged sklearn")
    ap.add_argument("--threads", type=lambda v: [int(t) for t in v.split(",")], default=[1, 0],
                    help="comma-separated torch/BLAS thread counts to time, 0 = library defaults (default: 1,0)")
    ap.add_argument("--json", type=Path, default=ROOT / "docs" / "bench" / "probe_fit.json")
    ap.add_argument("--img", type=Path, default=ROOT / "docs" / "img" / "iti_probe_accuracy.png")
    ap.add_argument("--md", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = ap.parse_args(argv)

    import sklearn
    import transformers

    import steerlab
    from steerlab.interventions.iti import capture_heads, split_by_group
    from steerlab.probes import fit_head_probes
    from threadpoolctl import threadpool_limits

    started = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    up_start = _uptime()
    records, n_q = load_pairs(args.questions)
    y = np.array([r[2] for r in records])
    tr_t, va_t = split_by_group([r[3] for r in records], 0.2, args.seed)
    tr, va = tr_t.numpy(), va_t.numpy()

    lm = steerlab.load_model("embedded")
    a = lm.adapter
    capture_s = None
    if args.cache is not None and args.cache.is_file():
        with safe_open(str(args.cache), framework="pt") as f:
            x = f.get_tensor("x")
            capture_s = float(f.metadata()["capture_s"]) if f.metadata().get("capture_s") else None
        print(f"loaded activations {tuple(x.shape)} from {args.cache}", flush=True)
    else:
        print(f"capturing {len(records)} pairs from {n_q} questions ...", flush=True)
        x, capture_s, _ = _timed(lambda: capture_heads(lm, [(r[0], r[1]) for r in records], args.batch_size))
        if args.cache is not None:
            args.cache.parent.mkdir(parents=True, exist_ok=True)
            save_file({"x": x.contiguous()}, str(args.cache), metadata={"capture_s": str(capture_s)})
    assert tuple(x.shape) == (len(records), a.n_layers, a.n_heads, a.head_dim)
    yt = torch.from_numpy(y)
    heads = [(layer, head) for layer in range(a.n_layers) for head in range(a.n_heads)]
    default_threads = torch.get_num_threads()
    timings: list[dict[str, Any]] = []
    probes, sk = None, None
    for threads in args.threads:
        t = threads if threads > 0 else default_threads
        label = f"{threads} thread(s) each" if threads > 0 else f"library defaults ({default_threads} torch threads, BLAS default)"
        print(f"[{label}] batched fit ...", flush=True)
        with threadpool_limits(limits=threads if threads > 0 else None):
            torch.set_num_threads(t)
            fit_head_probes(x[:64], yt[:64])  # warm-up (first-call allocations, BLAS init)
            walls, cpus = [], []
            for _ in range(args.repeats):
                pr, w, c = _timed(lambda: fit_head_probes(x, yt, tr_t, va_t))
                walls.append(w)
                cpus.append(c)
            print(f"[{label}] scikit-learn per head ...", flush=True)
            skr, sk_wall, sk_cpu = _timed(lambda: sklearn_per_head(x, y, tr, heads))
            torch.set_num_threads(default_threads)
        if probes is None:
            probes, sk = pr, skr
        wall, cpu = float(np.median(walls)), float(np.median(cpus))
        timings.append({"threads": threads, "label": label, "batched_wall_s": wall, "batched_cpu_s": cpu,
                        "batched_wall_s_all": walls, "batched_cpu_s_all": cpus,
                        "sklearn_wall_s": sk_wall, "sklearn_cpu_s": sk_cpu,
                        "ratio_wall": sk_wall / wall, "ratio_cpu": sk_cpu / cpu})
    assert probes is not None and sk is not None
    agree = compare(probes, sk["models"], x, y, va, args.k)
    print("tight scikit-learn reference ...", flush=True)
    exact = exact_reference(probes, x, y, tr, va, args.exact_heads)

    acc = probes.val_acc.numpy()
    heatmap(acc, args.img, f"ITI probes, {a.n_layers}x{a.n_heads} heads, embedded model\n"
                           f"TruthfulQA {n_q} questions ({len(records)} pairs), val split by question")
    top = probes.top_k(args.k)
    result: dict[str, Any] = {
        "command": "python benchmarks/probe_fit.py" + ("" if argv is None else " " + " ".join(argv)),
        "argv": sys.argv[1:],
        "started_utc": started,
        "uptime_start": up_start,
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                    "torch_threads_default": torch.get_num_threads(), "torch": torch.__version__,
                    "sklearn": sklearn.__version__, "transformers": transformers.__version__,
                    "python": platform.python_version()},
        "model": {"name": lm.name, "layers": a.n_layers, "heads": a.n_heads, "head_dim": a.head_dim},
        "data": {"questions": n_q, "pairs": len(records), "true": int(y.sum()), "train": len(tr), "val": len(va),
                 "split": f"80/20 by question, seed {args.seed}"},
        "capture_s": capture_s,
        "batched": {"newton_steps": probes.n_iter, "converged": int(probes.converged.sum()),
                    "settings": "float64 values/gradients, float32 Hessians, C=1.0, no standardisation, "
                                "8 MiB chunks of heads"},
        "sklearn": {"heads": len(heads), "not_converged": sk["not_converged"],
                    "settings": "LogisticRegression(max_iter=1000), lbfgs, C=1.0, float32 input, one model per head"},
        "timings": timings,
        "agreement": {k: v for k, v in agree.items() if k != "sklearn_val_acc"},
        "agreement_tight_sklearn": exact,
        "val_acc": probes.val_acc.numpy().round(6).tolist(),
        "sklearn_val_acc": agree.get("sklearn_val_acc"),
        f"top{args.k}": [list(h) for h in top],
        "best_head": {"layer": top[0][0], "head": top[0][1], "val_acc": float(probes.val_acc[top[0]])},
    }
    if not args.no_scale:
        print("scale check (synthetic, full TruthfulQA size) ...", flush=True)
        with threadpool_limits(limits=1):
            torch.set_num_threads(1)
            result["scale_check"] = scale_check(6204, args.scale_sklearn_heads, args.seed, args.repeats)
            torch.set_num_threads(default_threads)
    result["uptime_end"] = _uptime()
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1), encoding="utf-8")
    write_section(args.md, markdown(result, args))
    print(json.dumps({k: result[k] for k in ("batched", "sklearn", "timings", "agreement", "agreement_tight_sklearn")},
                     indent=1))
    if "scale_check" in result:
        print(json.dumps({k: v for k, v in result["scale_check"].items() if k != "batched_wall_s_all"}, indent=1))
    return 0


def markdown(r: dict[str, Any], args: argparse.Namespace) -> str:
    m, d, b, s, ag = r["machine"], r["data"], r["batched"], r["sklearn"], r["agreement"]
    cmd = "python benchmarks/probe_fit.py" + ("" if not r["argv"] else " " + " ".join(r["argv"]))
    img = os.path.relpath(args.img, args.md.parent)
    lines = [
        SECTION,
        "",
        f"Command: `{cmd}` (writes `docs/bench/probe_fit.json`, `docs/img/iti_probe_accuracy.png` and this section; "
        "`--cache FILE` stores the captured activations, or reuses them when the file exists).",
        "",
        f"Machine: {m['cpus']} CPUs ({m['processor']}), torch {m['torch']}, scikit-learn {m['sklearn']}, Python {m['python']}; {r['started_utc']}. Shared with other jobs: "
        f"`uptime` at start `{r['uptime_start']}`, at end `{r['uptime_end']}`; wall-clock times are noisy, "
        "process CPU times much less so. With one thread each (torch and BLAS, via threadpoolctl) the two "
        "sides compare like for like on one core; with the libraries' default threads on this busy machine, "
        "waiting threads burn CPU time, and more so for many small scikit-learn fits than for a few batched calls: "
        "that row is dominated by thread oversubscription and varies several-fold between runs; the one-thread "
        "row is the like-for-like comparison.",
        "",
        f"Data: embedded model ({r['model']['layers']} layers x {r['model']['heads']} heads x "
        f"{r['model']['head_dim']} dims = {r['model']['layers'] * r['model']['heads']} probes), last-token `o_proj` "
        f"inputs of `Q: {{question}} A: {{choice}}` for the first {d['questions']} TruthfulQA questions "
        f"({d['pairs']} pairs, {d['true']} true), {d['split']}: {d['train']} train / {d['val']} validation rows."
        + (f" Capture took {r['capture_s']:.0f} s." if r.get("capture_s") else ""),
        "",
        "Seconds to fit all 270 head probes (steerlab: median of "
        f"{len(r['timings'][0]['batched_wall_s_all'])} runs, {b['newton_steps']} Newton steps; scikit-learn: "
        f"`LogisticRegression(max_iter=1000)` fitted on each of the {s['heads']} heads, all measured):",
        "",
        "| threads | steerlab `fit_head_probes` wall / CPU | scikit-learn per head wall / CPU | ratio wall | ratio CPU |",
        "|---|---:|---:|---:|---:|",
        *[f"| {t['label']} | {t['batched_wall_s']:.2f} / {t['batched_cpu_s']:.2f} | "
          f"{t['sklearn_wall_s']:.2f} / {t['sklearn_cpu_s']:.2f} | **{t['ratio_wall']:.1f}x** | **{t['ratio_cpu']:.1f}x** |"
          for t in r["timings"]],
        "",
        f"Agreement with scikit-learn's default fit: validation accuracy identical on {ag['val_acc_identical']} of "
        f"{ag['heads_compared']} heads and within one validation example on {ag['val_acc_within_1_example']} "
        f"(mean difference {ag['val_acc_mean_abs_diff']:.4f}, largest {ag['val_acc_max_abs_diff']:.4f} = "
        f"{ag['val_acc_max_diff_in_examples']} of {d['val']} examples); validation probabilities differ by at most "
        f"{ag['val_prob_max_abs_diff']:.1e} (mean {ag['val_prob_mean_abs_diff']:.1e}); top-{args.k} head sets "
        f"share {ag.get(f'top{args.k}_overlap', 'n/a')} heads. scikit-learn hit max_iter on {s['not_converged']} heads. "
        f"Best head: layer {r['best_head']['layer']}, head {r['best_head']['head']} "
        f"(validation accuracy {r['best_head']['val_acc']:.3f}).",
        "",
        f"Against a tightly converged scikit-learn (float64 input, `tol=1e-10`) on {r['agreement_tight_sklearn']['heads_checked']} "
        f"evenly spaced heads: probabilities on all rows within {r['agreement_tight_sklearn']['prob_max_abs_diff_all_rows']:.1e}, "
        f"validation accuracy identical on {r['agreement_tight_sklearn']['val_acc_identical']} of them. Both solve the same "
        "problem; the differences above come from the default `tol=1e-4` stopping rule of scikit-learn's L-BFGS "
        f"(on these heads its default fit is up to {r['agreement_tight_sklearn']['sklearn_default_vs_tight_prob_max_abs_diff']:.1e} "
        "in probability away from its own converged solution).",
        "",
        f"![validation accuracy per head]({img})",
    ]
    sc = r.get("scale_check")
    if sc:
        sa = sc["agreement"]
        lines += [
            "",
            f"Scale check (one thread each), synthetic data of TruthfulQA's full size ({sc['n_examples']} rows, {sc['n_train']} train, "
            f"30 x 9 x 64 heads, unequal feature scales): batched fit {sc['batched_wall_s']:.2f} s wall / "
            f"{sc['batched_cpu_s']:.2f} s CPU ({sc['newton_steps']} Newton steps); scikit-learn measured on "
            f"{sc['sklearn_heads_measured']} evenly spaced heads ({sc['sklearn_wall_s_measured']:.2f} s wall / "
            f"{sc['sklearn_cpu_s_measured']:.2f} s CPU) and extrapolated to 270: {sc['sklearn_wall_s_extrapolated']:.1f} s "
            f"wall / {sc['sklearn_cpu_s_extrapolated']:.1f} s CPU, i.e. **{sc['ratio_wall']:.1f}x** wall / "
            f"**{sc['ratio_cpu']:.1f}x** CPU. Validation accuracy identical on {sa['val_acc_identical']} of "
            f"{sa['heads_compared']} measured heads, probabilities within {sa['val_prob_max_abs_diff']:.1e}.",
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
