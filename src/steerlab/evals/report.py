"""Reports from ``results.json``: a markdown table (with the exact command) and a PNG bar plot.

:func:`markdown_report` and :func:`plot_results` take one results dict or several (e.g. the same
task under ``none``, ``caa`` and ``iti``): one table row / one group of bars per result.
:func:`write_report` writes ``results.md`` and ``results.png`` next to ``results.json``.
Matplotlib runs on the ``Agg`` backend (no display needed).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..files import atomic_write, atomic_write_text

__all__ = ["load_results", "markdown_report", "plot_results", "write_report", "RAW_METRICS"]

Results = Mapping[str, Any]
#: metrics shown as they are, not in percent: the coherence is a mean log-prob in nats per token
RAW_METRICS = frozenset({"coherence"})


def load_results(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a ``results.json`` (or the folder holding one)."""
    p = Path(path)
    if p.is_dir():
        p = p / "results.json"
    with open(p, encoding="utf-8") as f:
        return json.load(f)


def _as_list(results: Results | Sequence[Results]) -> list[Results]:
    if isinstance(results, Mapping):
        return [results]
    out = list(results)
    if not out:
        raise ValueError("no results to report")
    return out


def _fmt(x: Any, name: str = "") -> str:
    if x is None:
        return "n/a"
    return f"{float(x):.3f}" if name in RAW_METRICS else f"{100 * float(x):.2f}"


def _label(r: Results) -> str:
    cfg = r.get("method_config") or {}
    opts = ", ".join(f"{k}={v}" for k, v in cfg.items() if v is not None)
    return f"{r['method']} ({opts})" if opts else str(r["method"])


def markdown_report(results: Results | Sequence[Results]) -> str:
    """A markdown table of the metrics (percent) per method, per-fold lines, and the commands."""
    rs = _as_list(results)
    metrics = list(rs[0]["metric_names"])
    first = rs[0]
    lines = [f"# {first['task']} - {first['model']}", "",
             f"{first['folds']}-fold cross-validation by question, limit {first['limit']}, seed {first['seed']}; "
             "metrics in percent, averaged over held-out items"
             + ("; coherence: mean log-prob per token under the unsteered model (nats)" if
                any(m in RAW_METRICS for m in metrics) else "") + ".", ""]
    lines.append("| method | n | " + " | ".join(metrics) + " |")
    lines.append("|---|---:|" + "---:|" * len(metrics))
    for r in rs:
        m = r["metrics"]
        lines.append(f"| {_label(r)} | {m['n']} | " + " | ".join(_fmt(m.get(k), k) for k in metrics) + " |")
    lines += ["", "Per fold:", "", "| method | fold | n | " + " | ".join(metrics) + " |",
              "|---|---:|---:|" + "---:|" * len(metrics)]
    for r in rs:
        for f in r["per_fold"]:
            lines.append(f"| {r['method']} | {f['fold']} | {f['n']} | " + " | ".join(_fmt(f.get(k), k) for k in metrics)
                         + " |")
    searched = [(r, f) for r in rs for f in r["per_fold"] if "selection" in f]
    if searched:
        lines += ["", "Validation search (each fold's validation questions; the chosen configuration was then "
                  "scored on the held-out ones):", ""]
        for r, f in searched:
            sel = f["selection"]
            tried = "; ".join(f"{c['config']}: " + ", ".join(
                f"{k} {_fmt(c['metrics'].get(k), k)}" for k in metrics if c["metrics"].get(k) is not None)
                + ("" if c["eligible"] else " (below the coherence floor)") for c in sel["candidates"])
            ref = sel.get("reference")
            ref_text = "" if not ref else " Unsteered: " + ", ".join(
                f"{k} {_fmt(ref.get(k), k)}" for k in metrics if ref.get(k) is not None) + "."
            lines.append(f"- {r['method']} fold {f['fold']} ({sel['n_val']} questions, {sel['rule']['text']}): "
                         f"**chose {sel['chosen']}**" + (f", still at an edge: {', '.join(sel['at_edge'])}"
                                                          if sel["at_edge"] else "")
                         + (" (fallback: none met the coherence floor)" if sel["fallback"] else "")
                         + f". Tried: {tried}.{ref_text}")
    lines += ["", "Commands:", ""]
    for r in rs:
        lines += ["```", str(r.get("command") or "(not recorded)"), "```"]
    lines.append(f"config hash{'es' if len(rs) > 1 else ''}: " + ", ".join(f"`{r['config_hash']}`" for r in rs))
    return "\n".join(lines) + "\n"


def plot_results(results: Results | Sequence[Results], path: str | os.PathLike[str]) -> Path:
    """A grouped bar plot (metrics on the x axis, one bar per method; fold values as dots) as PNG."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    import numpy as np

    rs = _as_list(results)
    metrics = [m for m in rs[0]["metric_names"] if m not in RAW_METRICS]  # a percent axis
    x = np.arange(len(metrics))
    width = 0.8 / len(rs)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.6 * len(metrics) * max(1, len(rs)) / 1.5), 3.6), dpi=100)
    try:
        for j, r in enumerate(rs):
            vals = [100 * (r["metrics"].get(k) or 0.0) for k in metrics]
            pos = x - 0.4 + width * (j + 0.5)
            ax.bar(pos, vals, width, label=_label(r))
            for f in r["per_fold"]:
                ax.plot(pos, [100 * (f.get(k) or 0.0) for k in metrics], "k.", markersize=4, clip_on=False)
        ax.set_xticks(x, metrics)
        ax.set_ylabel("percent")
        ax.set_ylim(0, 103)
        ax.set_title(f"{rs[0]['task']} - {rs[0]['model']}", fontsize=9)
        legend = ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=1, frameon=False)
        fig.tight_layout()
        out = atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", metadata={"Software": None},
                                                         bbox_extra_artists=(legend,), bbox_inches="tight"))
    finally:
        plt.close(fig)
    return out


def write_report(results: Results | Sequence[Results], out_dir: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write ``results.md`` and ``results.png`` into ``out_dir``; returns their paths."""
    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    md = atomic_write_text(d / "results.md", markdown_report(results))
    png = plot_results(results, d / "results.png")
    return md, png
