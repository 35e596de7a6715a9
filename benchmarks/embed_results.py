"""Sentence-embedding results on STS: base / +CP-NS / +CP-NR / +TP / +CP+TP per prompt.

Resumable: embeddings are cached per (encoder settings, sentence set) in chunk files under
``--cache`` (default ``runs/embed_cache``, git-ignored), and every scored configuration is one
JSON file under ``--out`` (default ``benchmarks/results/embed``) holding its settings, scores,
timing and the exact command. Re-running a command skips finished cells and continues a
half-computed one from its last chunk. CK (the CP paper's average of the PretCoT and KE
embeddings) is computed from the cached PretCoT and KE embeddings, with no extra forward pass.

Subcommands (all read data from ``$STEERLAB_DATA`` or ``--data``):

  test         score configurations on the 7 STS test sets (STS12-16 "all", STS-B, SICK-R)
  sweep-layer  STS-B dev Spearman of every read-out layer (one pass per prompt)
  sweep-cp     STS-B dev grid over CP layer x alpha (variant ns) or layer (nr)
  sweep-tp     STS-B dev over TP exit layers
  best         print the dev-best settings found by the sweeps (as flags for ``test``)
  table        markdown tables from the cell JSONs; ``--write-docs`` updates docs/results.md

Examples::

  python benchmarks/embed_results.py test --prompts prompteol --configs base,cp-ns,cp-nr,tp,cp-tp
  python benchmarks/embed_results.py sweep-cp --prompts prompteol --cp-layers 2,3,4,5,6 --alphas 0.5,1,2,3,4
  python benchmarks/embed_results.py table --write-docs
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402

import steerlab  # noqa: E402
from steerlab.embed import Encoder  # noqa: E402
from steerlab.embed.io import ChunkStore, fingerprint  # noqa: E402
from steerlab.embed.variants import encode_cp_variants, with_cp  # noqa: E402
from steerlab.evals.sts import TASK_SHORT, load_tasks, score_tasks, unique_sentences  # noqa: E402
from steerlab.data.sts import STS_TASKS  # noqa: E402

CONFIGS = ("base", "cp-ns", "cp-nr", "tp", "cp-tp")
CONFIG_LABEL = {"base": "base", "cp-ns": "+CP-NS", "cp-nr": "+CP-NR", "tp": "+TP", "cp-tp": "+CP-NS+TP"}
PROMPT_LABEL = {"prompteol": "PromptEOL", "pretcot": "PretCoT", "ke": "KE", "ck": "CK", "metaeol": "MetaEOL"}
DEV = ("STSBenchmark:dev",)
_MODEL_CACHE: dict[tuple[str, str], Any] = {}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def command_line() -> str:
    return "python benchmarks/embed_results.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def get_model(name: str, dtype: str) -> Any:
    key = (name, dtype)
    if key not in _MODEL_CACHE:
        _MODEL_CACHE.clear()
        _MODEL_CACHE[key] = steerlab.load_model(name, dtype=dtype)
    return _MODEL_CACHE[key]


def encoder_kwargs(config: str, a: argparse.Namespace, prompt: str) -> dict[str, Any]:
    """Encoder settings of one configuration; ``None`` values fall back to the paper defaults,
    or with ``--from-dev`` to the best STS-B dev values of the sweeps (CP+TP combines the best
    CP-NS and the best TP settings; it is not tuned jointly)."""
    k = read_layer(a, prompt)
    kw: dict[str, Any] = {"prompt": prompt, "layer": k}
    cp_layer, alpha, tp_exit = pick(a.cp_layer, prompt), pick(a.alpha, prompt), pick(a.tp_exit, prompt)
    nr_layer = pick(a.cp_layer_nr, prompt) if a.cp_layer_nr else cp_layer
    if getattr(a, "from_dev", False):
        best = best_settings(a, k).get(prompt, {})
        if "cp_ns" in best:
            cp_layer, alpha = best["cp_ns"]["cp_layer"], best["cp_ns"]["alpha"]
        if "cp_nr" in best:
            nr_layer = best["cp_nr"]["cp_layer"]
        if "tp" in best:
            tp_exit = best["tp"]["tp_exit"]
    if config in ("cp-ns", "cp-tp"):
        kw["cp"] = {"variant": "ns", "layer": cp_layer, "alpha": alpha}
    if config == "cp-nr":
        kw["cp"] = {"variant": "nr", "layer": nr_layer}
    if config in ("tp", "cp-tp"):
        kw["tp"] = {"exit": tp_exit}
    if config not in CONFIGS:
        raise SystemExit(f"unknown config '{config}': choose from {', '.join(CONFIGS)}")
    return kw


def read_layer(a: argparse.Namespace, prompt: str) -> int:
    """The read-out layer of ``prompt``: ``--layer`` (a value, ``prompt=value,...``, or ``dev`` for
    the best layer of the STS-B dev layer sweep), else the prompt's default."""
    from steerlab.embed import default_layer, resolve_layer

    n = get_model(a.model, a.dtype).adapter.n_layers
    value = pick(a.layer, prompt)
    if value == "dev":
        path = cell_path(a, "dev", f"sweep-layer__{prompt}")
        if not path.is_file():
            raise SystemExit(f"--layer dev: run `sweep-layer --prompts {prompt}` first ({path} is missing)")
        return int(json.loads(path.read_text())["best_layer"])
    return default_layer(prompt, n) if value is None else resolve_layer(value, n, prompt)


def pick(value: Any, prompt: str) -> Any:
    """A flag value: either one value for every prompt or ``prompt=value,prompt=value``."""
    if value is None or not isinstance(value, str):
        return value
    if "=" in value:
        table = dict(item.split("=", 1) for item in value.split(","))
        value = table.get(prompt)
        if value is None:
            return None
    return _num(value)


def _num(v: str) -> Any:
    try:
        return int(v)
    except ValueError:
        try:
            return float(v)
        except ValueError:
            return v


def _store(enc: Encoder, sents: list[str], a: argparse.Namespace) -> ChunkStore:
    """The chunk cache of one encoder on one sentence list (keyed by the encoder's settings and
    the sentences only, so any cell with the same encoder on the same sentences reuses it)."""
    meta = {"encoder": enc.describe()}
    folder = Path(a.cache) / enc.lm.name / fingerprint({"meta": meta, "n": len(sents), "s": sents[:3]})
    return ChunkStore(folder, sents, enc.embedding_dim, meta, chunk_size=a.chunk)


def cached_embeddings(enc: Encoder, sents: list[str], a: argparse.Namespace, tag: str) -> tuple[np.ndarray, float]:
    """Embeddings of ``sents`` (cached and resumable); returns them and the seconds spent now."""
    embs, spent = cached_embeddings_multi([enc], sents, a, tag)
    return embs[0], spent


def cached_embeddings_multi(encs: list[Encoder], sents: list[str], a: argparse.Namespace,
                            tag: str) -> tuple[list[np.ndarray], float]:
    """Embeddings of several encoders that differ only in CP: every chunk missing from any of
    their caches is computed for all of them at once with
    :func:`steerlab.embed.variants.encode_cp_variants`. Resumable per chunk."""
    stores = [_store(e, sents, a) for e in encs]
    missing = [set(s.missing()) for s in stores]
    todo = sorted(set().union(*missing))
    spent = 0.0
    if todo:
        log(f"{tag}: {len(todo)}/{stores[0].n_chunks} chunks to compute")
        plain = with_cp(encs[0], None)
    for i in todo:
        lo, hi = stores[0].bounds(i)
        t0 = time.perf_counter()
        outs = encode_cp_variants(plain, sents[lo:hi], [e.cp for e in encs], batch_size=a.batch_size)
        dt = time.perf_counter() - t0
        spent += dt
        for s, m, o in zip(stores, missing, outs):
            if i in m:
                s.write(i, o)
        log(f"{tag}: chunk {i + 1}/{stores[0].n_chunks} ({hi - lo} sentences x {len(encs)} settings, "
            f"{(hi - lo) / dt:.1f} sent/s)")
    return [s.load() for s in stores], spent


def sentence_set(tasks: dict[str, list]) -> list[str]:
    return sorted(unique_sentences(tasks), key=lambda s: (len(s), s))


def cell_path(a: argparse.Namespace, split: str, name: str) -> Path:
    return Path(a.out) / a.dtype / split / f"{name}.json"


def write_cell(path: Path, cell: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(cell, indent=1, default=str))
    os.replace(tmp, path)


def env_info(a: argparse.Namespace) -> dict[str, Any]:
    return {"torch": torch.__version__, "threads": torch.get_num_threads(), "python": platform.python_version(),
            "machine": platform.machine(), "dtype": a.dtype, "batch_size": a.batch_size}


def run_cell(a: argparse.Namespace, split: str, name: str, tasks: dict[str, list], sents: list[str],
             kw: dict[str, Any], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return run_cells(a, split, [(name, kw, extra or {})], tasks, sents)[0]


def _family(kw: dict[str, Any]) -> str:
    """Cells that differ only in CP share one main pass (steerlab.embed.variants)."""
    return json.dumps({k: v for k, v in kw.items() if k != "cp"}, sort_keys=True, default=str)


def run_cells(a: argparse.Namespace, split: str, items: list[tuple[str, dict[str, Any], dict[str, Any]]],
              tasks: dict[str, list], sents: list[str]) -> list[dict[str, Any]]:
    """Score cells ``(name, encoder kwargs, extra fields)``; finished cells are skipped, and the
    embeddings of cells that differ only in their CP setting are computed together: one main
    pass with a key/value cache, then one last-token step per CP setting (exact; see
    ``steerlab.embed.variants``)."""
    lm = get_model(a.model, a.dtype)
    cells: dict[str, dict[str, Any]] = {}
    todo: dict[str, list[tuple[str, dict[str, Any], dict[str, Any], Encoder]]] = {}
    for name, kw, extra in items:
        path = cell_path(a, split, name)
        enc = Encoder(lm, batch_size=a.batch_size, **kw)
        if path.is_file() and not a.force:
            cell = json.loads(path.read_text())
            if cell.get("encoder") == json.loads(json.dumps(enc.describe(), default=str)):
                log(f"{name}: done already ({cell['average']:.2f})")
                cells[name] = cell
                continue
        todo.setdefault(_family(kw), []).append((name, kw, extra, enc))
    for group in todo.values():
        names = [g[0] for g in group]
        embs, spent = cached_embeddings_multi([g[3] for g in group], sents, a,
                                              f"{split}/{names[0]}" + (f" (+{len(names) - 1} sharing its pass)"
                                                                       if len(names) > 1 else ""))
        for (name, kw, extra, enc), emb in zip(group, embs):
            res = score_tasks(tasks, dict(zip(sents, emb)))
            cell = {"name": name, "split": split, "encoder": enc.describe(), **res.to_dict(),
                    "seconds_this_run": round(spent, 1), "shared_pass_with": [n for n in names if n != name],
                    "n_sentences": len(sents), "command": command_line(), "env": env_info(a), **extra,
                    "date": time.strftime("%Y-%m-%d %H:%M:%S")}
            write_cell(cell_path(a, split, name), cell)
            log(f"{name}: avg {res.average:.2f}  " + "  ".join(f"{k}={v:.2f}" for k, v in res.scores.items()))
            cells[name] = cell
    return [cells[name] for name, _, _ in items]


# ----------------------------------------------------------------------------- test
def cmd_test(a: argparse.Namespace) -> None:
    tasks = load_tasks(a.tasks.split(",") if a.tasks else None, a.data, a.limit)
    sents = sentence_set(tasks)
    split = "test" if not a.limit else f"test-limit{a.limit}"
    log(f"{len(sents)} distinct sentences in {', '.join(tasks)}")
    prompts = a.prompts.split(",")
    configs = a.configs.split(",")
    setting = a.setting
    for prompt in prompts:
        run_cells(a, split, [(f"{setting}__{prompt}__{config}", encoder_kwargs(config, a, prompt),
                              {"prompt": prompt, "config": config, "setting": setting}) for config in configs],
                  tasks, sents)
    if "pretcot" in prompts and "ke" in prompts:
        for config in configs:
            ck_cell(a, split, setting, config, tasks, sents)


def ck_cell(a: argparse.Namespace, split: str, setting: str, config: str, tasks: dict[str, list],
            sents: list[str]) -> None:
    """CK = mean of the PretCoT and KE embeddings of the same configuration."""
    lm = get_model(a.model, a.dtype)
    parts, descs = [], []
    for prompt in ("pretcot", "ke"):
        enc = Encoder(lm, batch_size=a.batch_size, **encoder_kwargs(config, a, prompt))
        emb, _ = cached_embeddings(enc, sents, a, f"{split}/{setting}__{prompt}__{config}")
        parts.append(emb)
        descs.append(enc.describe())
    emb = (parts[0] + parts[1]) / 2.0
    res = score_tasks(tasks, dict(zip(sents, emb)))
    name = f"{setting}__ck__{config}"
    write_cell(cell_path(a, split, name), {
        "name": name, "split": split, "encoder": {"ck_of": descs}, **res.to_dict(), "n_sentences": len(sents),
        "command": command_line(), "env": env_info(a), "prompt": "ck", "config": config, "setting": setting,
        "date": time.strftime("%Y-%m-%d %H:%M:%S")})
    log(f"{name}: avg {res.average:.2f}")


# ----------------------------------------------------------------------------- sweeps (STS-B dev only)
def dev_data(a: argparse.Namespace) -> tuple[dict[str, list], list[str]]:
    tasks = load_tasks(list(DEV), a.data, a.limit)
    return tasks, sentence_set(tasks)


def cmd_sweep_layer(a: argparse.Namespace) -> None:
    tasks, sents = dev_data(a)
    lm = get_model(a.model, a.dtype)
    n = lm.adapter.n_layers
    ks = list(range(max(1, a.min_layer), n + 1))
    for prompt in a.prompts.split(","):
        name = f"sweep-layer__{prompt}"
        path = cell_path(a, "dev", name)
        enc = Encoder(lm, prompt=prompt, batch_size=a.batch_size)
        if path.is_file() and not a.force:
            log(f"{name}: done already")
            continue
        meta = {"encoder": enc.describe(), "layers": ks, "tag": "sweep-layer"}
        folder = Path(a.cache) / lm.name / fingerprint({"meta": meta, "n": len(sents), "s": sents[:3]})
        store = ChunkStore(folder, sents, len(ks) * enc.embedding_dim, meta, chunk_size=a.chunk)

        def encode(chunk: list[str], bar: Any) -> np.ndarray:
            out = enc.encode_layers(chunk, ks, batch_size=a.batch_size, show_progress_bar=bar)
            return np.concatenate([out[k] for k in ks], axis=1)

        t0 = time.perf_counter()
        store.fill(sents, encode, progress=False)
        spent = time.perf_counter() - t0
        emb = store.load().reshape(len(sents), len(ks), enc.embedding_dim)
        scores = {}
        for j, k in enumerate(ks):
            scores[str(k)] = score_tasks(tasks, dict(zip(sents, emb[:, j]))).average
        best = max(scores, key=lambda k: scores[k])
        write_cell(path, {"name": name, "prompt": prompt, "split": "dev", "scores_by_layer": scores,
                          "best_layer": int(best), "best": scores[best], "default_layer": enc.layer,
                          "seconds_this_run": round(spent, 1), "command": command_line(), "env": env_info(a),
                          "date": time.strftime("%Y-%m-%d %H:%M:%S")})
        log(f"{name}: best layer {best} ({scores[best]:.2f}); default {enc.layer} ({scores[str(enc.layer)]:.2f})")


def cmd_sweep_cp(a: argparse.Namespace) -> None:
    """All grid points of a prompt share one main pass (they differ only in CP)."""
    tasks, sents = dev_data(a)
    layers = [int(x) for x in a.cp_layers.split(",")]
    variants = ["ns", "nr"] if a.variant == "both" else [a.variant]
    for prompt in a.prompts.split(","):
        items = []
        for variant in variants:
            for l in layers:
                for al in ([float(x) for x in a.alphas.split(",")] if variant == "ns" else [None]):
                    cp: dict[str, Any] = {"variant": variant, "layer": l}
                    if al is not None:
                        cp["alpha"] = al
                    k = read_layer(a, prompt)
                    name = f"sweep-cp-{variant}__{prompt}__k{k}_l{l}" + (f"_a{al:g}" if al is not None else "")
                    kw = {"prompt": prompt, "layer": k, "cp": cp}
                    items.append((name, kw, {"prompt": prompt, "sweep": f"cp-{variant}", "cp_layer": l, "alpha": al}))
        run_cells(a, "dev", items, tasks, sents)


def cmd_sweep_tp(a: argparse.Namespace) -> None:
    tasks, sents = dev_data(a)
    for prompt in a.prompts.split(","):
        for e in [int(x) for x in a.exits.split(",")]:
            k = read_layer(a, prompt)
            kw = {"prompt": prompt, "layer": k, "tp": {"exit": e}}
            run_cell(a, "dev", f"sweep-tp__{prompt}__k{k}_e{e}", tasks, sents, kw,
                     {"prompt": prompt, "sweep": "tp", "tp_exit": e})


def dev_base(a: argparse.Namespace, prompt: str) -> None:
    tasks, sents = dev_data(a)
    k = read_layer(a, prompt)
    run_cell(a, "dev", f"dev-base__{prompt}__k{k}", tasks, sents, {"prompt": prompt, "layer": k},
             {"prompt": prompt, "sweep": "base"})


def cmd_dev_base(a: argparse.Namespace) -> None:
    for prompt in a.prompts.split(","):
        dev_base(a, prompt)


def load_cells(a: argparse.Namespace, split: str) -> list[dict[str, Any]]:
    folder = Path(a.out) / a.dtype / split
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))] if folder.is_dir() else []


def best_settings(a: argparse.Namespace, layer: int | None = None) -> dict[str, dict[str, Any]]:
    """Best CP-NS / CP-NR / TP settings per prompt on STS-B dev (only sweeps read at ``layer``)."""
    cells = load_cells(a, "dev")
    best: dict[str, dict[str, Any]] = {}
    for c in cells:
        p, sweep = c.get("prompt"), c.get("sweep")
        if not p or not sweep or (layer is not None and (c.get("encoder") or {}).get("layer") != layer):
            continue
        key = {"cp-ns": "cp_ns", "cp-nr": "cp_nr", "tp": "tp"}.get(sweep)
        if key is None:
            continue
        cur = best.setdefault(p, {}).get(key)
        if cur is None or c["average"] > cur["dev"]:
            best[p][key] = {"dev": c["average"], "cp_layer": c.get("cp_layer"), "alpha": c.get("alpha"),
                            "tp_exit": c.get("tp_exit"), "n": 1 + (cur or {}).get("n", 0)}
        else:
            cur["n"] += 1
    return best


def cmd_best(a: argparse.Namespace) -> None:
    """Dev-best settings; with ``--layer`` only among sweeps read at each prompt's layer."""
    if a.layer is None:
        print(json.dumps(best_settings(a), indent=1))
        return
    out = {p: best_settings(a, read_layer(a, p)).get(p, {}) for p in a.prompts.split(",")}
    print(json.dumps(out, indent=1))


# ----------------------------------------------------------------------------- tables
def _fmt_params(c: dict[str, Any]) -> str:
    e = c.get("encoder") or {}
    if "ck_of" in e:
        return "mean of PretCoT and KE cells"
    bits = [f"read {e.get('layer')}/{e.get('n_layers')}"]
    if e.get("cp"):
        cp = e["cp"]
        bits.append(f"CP-{cp['variant'].upper()} l={cp['layer']}" + (f" a={cp['alpha']:g}" if cp["variant"] == "ns" else ""))
    if e.get("tp"):
        bits.append(f"TP [{e['tp']['start']},{e['tp']['exit']})")
    return ", ".join(bits)


def test_table(cells: list[dict[str, Any]], setting: str) -> str:
    cells = [c for c in cells if c.get("setting") == setting]
    if not cells:
        return ""
    order_p = ["prompteol", "pretcot", "ke", "ck", "metaeol"]
    cells.sort(key=lambda c: (order_p.index(c["prompt"]) if c["prompt"] in order_p else 99,
                              CONFIGS.index(c["config"]) if c["config"] in CONFIGS else 99))
    tasks = list(STS_TASKS)
    head = "| prompt | config | " + " | ".join(TASK_SHORT.get(t, t) for t in tasks) + " | Avg. | settings |"
    lines = [head, "|" + "---|" * (len(tasks) + 4)]
    for c in cells:
        sc = c["scores"]
        vals = " | ".join(f"{sc[t]:.2f}" if t in sc else "–" for t in tasks)
        lines.append(f"| {PROMPT_LABEL.get(c['prompt'], c['prompt'])} | {CONFIG_LABEL.get(c['config'], c['config'])} "
                     f"| {vals} | **{c['average']:.2f}** | {_fmt_params(c)} |")
    return "\n".join(lines)


def sweep_tables(cells: list[dict[str, Any]]) -> str:
    out = []
    order = ["prompteol", "pretcot", "ke", "ck", "metaeol"]

    def rank(p: str) -> int:
        return order.index(p) if p in order else len(order)

    layer = sorted((c for c in cells if c.get("name", "").startswith("sweep-layer__")), key=lambda c: rank(c["prompt"]))
    for c in layer:
        sc = c["scores_by_layer"]
        out.append(f"Read-out layer, {PROMPT_LABEL.get(c['prompt'], c['prompt'])} (STS-B dev Spearman x100; "
                   f"default {c['default_layer']}, best {c['best_layer']}):\n")
        ks = list(sc)
        out.append("| layer | " + " | ".join(ks) + " |")
        out.append("|" + "---|" * (len(ks) + 1))
        out.append("| dev | " + " | ".join(f"{sc[k]:.1f}" for k in ks) + " |\n")
    grid = [c for c in cells if c.get("sweep") in ("cp-ns", "cp-nr", "tp")]
    def k_of(c: dict[str, Any]) -> int:
        return int((c.get("encoder") or {}).get("layer", 0))

    for (prompt, sweep, k) in sorted({(c["prompt"], c["sweep"], k_of(c)) for c in grid},
                                     key=lambda t: (rank(t[0]), t[2], t[1])):
        cs = [c for c in grid if c["prompt"] == prompt and c["sweep"] == sweep and k_of(c) == k]
        label = f"{PROMPT_LABEL.get(prompt, prompt)}, read-out layer {k}"
        if sweep == "cp-ns":
            ls = sorted({c["cp_layer"] for c in cs})
            als = sorted({c["alpha"] for c in cs})
            out.append(f"CP-NS, {label} (STS-B dev; rows: 0-based CP layer, columns: alpha):\n")
            out.append("| layer | " + " | ".join(f"{x:g}" for x in als) + " |")
            out.append("|" + "---|" * (len(als) + 1))
            for l in ls:
                row = {c["alpha"]: c["average"] for c in cs if c["cp_layer"] == l}
                out.append(f"| {l} | " + " | ".join(f"{row[x]:.2f}" if x in row else "–" for x in als) + " |")
            out.append("")
        else:
            key = "cp_layer" if sweep == "cp-nr" else "tp_exit"
            xs = sorted(c[key] for c in cs)
            row = {c[key]: c["average"] for c in cs}
            what = "0-based CP layer" if sweep == "cp-nr" else "TP exit (layers [1, exit))"
            out.append(f"{sweep.upper()}, {label} (STS-B dev; {what}):\n")
            out.append("| " + key + " | " + " | ".join(str(x) for x in xs) + " |")
            out.append("|" + "---|" * (len(xs) + 1))
            out.append("| dev | " + " | ".join(f"{row[x]:.2f}" for x in xs) + " |\n")
    base = [c for c in cells if c.get("sweep") == "base"]
    if base:
        out.append("Base prompts on STS-B dev (reference for the sweeps):\n")
        out.append("| prompt | dev | settings |")
        out.append("|---|---|---|")
        for c in base:
            out.append(f"| {PROMPT_LABEL.get(c['prompt'], c['prompt'])} | {c['average']:.2f} | {_fmt_params(c)} |")
        out.append("")
    return "\n".join(out)


def plot_layer_sweep(cells: list[dict[str, Any]], path: Path) -> Path | None:
    """Line plot of the read-out layer sweeps (one line per prompt); ``None`` if there are none."""
    sweeps = [c for c in cells if c.get("name", "").startswith("sweep-layer__")]
    if not sweeps:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.6))
    for c in sweeps:
        ks = [int(k) for k in c["scores_by_layer"]]
        ax.plot(ks, list(c["scores_by_layer"].values()), marker=".", label=PROMPT_LABEL.get(c["prompt"], c["prompt"]))
    ax.set_xlabel("read-out layer k (hidden_states[k])")
    ax.set_ylabel("STS-B dev Spearman x100")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def cmd_table(a: argparse.Namespace) -> None:
    test_cells = load_cells(a, "test")
    settings = sorted({c.get("setting") for c in test_cells if c.get("setting")})
    parts = []
    for s in settings:
        cmds = sorted({c["command"] for c in test_cells if c.get("setting") == s})
        parts.append(f"#### Setting `{s}`\n\n" + test_table(test_cells, s) + "\n\nCommands:\n\n```\n"
                     + "\n".join(cmds) + "\n```\n")
    dev_cells = load_cells(a, "dev")
    dev_cmds = sorted({c["command"] for c in dev_cells if c.get("command")})
    text = "\n".join(parts) + ("\n#### STS-B dev sweeps\n\n" + sweep_tables(dev_cells)
                                + "\nCommands (each writes one JSON per cell under `benchmarks/results/embed/<dtype>/dev/`):"
                                  "\n\n```\n" + "\n".join(dev_cmds) + "\n```\n" if dev_cells else "")
    print(text)
    if a.write_docs:
        notes = Path(a.out) / "NOTES.md"
        intro = (
            "Training-free sentence embeddings of the embedded model (SmolLM2-135M-Instruct, 30 layers) on the "
            "SentEval STS protocol: Spearman x100 between cosine similarity and gold score on STS12-16 (pooled "
            "\"all\" setting), STS-B test and SICK-R test, and their average. Every number below was measured by "
            "`benchmarks/embed_results.py` (one JSON per cell under `benchmarks/results/embed/<dtype>/`); the exact "
            "commands are listed under each table. Settings are chosen on STS-B dev only. Method details: "
            "`docs/embeddings.md`.\n"
        )
        img = plot_layer_sweep(dev_cells, ROOT / "docs" / "img" / "embed_layer_sweep.png")
        if img is not None:
            text += ("\n![STS-B dev Spearman by read-out layer](img/embed_layer_sweep.png)\n\n"
                     "*STS-B dev Spearman x100 of each prompt's last-token state after k of 30 layers "
                     "(`sweep-layer`; raw residual stream for k < 30, final-norm output at 30).*\n")
        body = intro + "\n" + (notes.read_text().strip() + "\n\n" if notes.is_file() else "") + text
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from embed_throughput import replace_section

        replace_section(ROOT / "docs" / "results.md", "## Sentence embeddings", body)


PLAN = [
    # (why, arguments) - run in order by `plan`; every step is resumable and skips finished cells.
    # Cells that differ only in CP share one main pass (exact), so a whole CP grid costs about
    # one pass plus one last-token step per grid point.
    ("fp32 vs bf16 check on STS-B dev", "dev-base --prompts prompteol --dtype float32"),
    ("read-out layer sweep (dev)", "sweep-layer --prompts prompteol,pretcot,ke"),
    ("base prompts on STS-B dev at the dev-best layer", "dev-base --prompts prompteol,pretcot,ke --layer dev"),
    ("CP-NS layer x alpha and CP-NR layer sweeps (dev), the paper's grid",
     "sweep-cp --variant both --prompts prompteol,pretcot,ke --layer dev --cp-layers 2,3,4,5,6 --alphas 0.5,1,2,3,4"),
    ("TP exit sweep (dev)", "sweep-tp --prompts prompteol,pretcot,ke --layer dev --exits 2,3,4,5,7,10"),
    ("all rows, dev-tuned (read-out layer, CP, TP chosen on STS-B dev; CK from PretCoT and KE)",
     "test --prompts prompteol,pretcot,ke --configs base,cp-ns,cp-nr,tp,cp-tp --layer dev --from-dev --setting dev-tuned"),
    ("all rows, paper defaults scaled to depth",
     "test --prompts prompteol,pretcot,ke --configs base,cp-ns,cp-nr,tp,cp-tp --setting paper-defaults"),
]


def cmd_plan(a: argparse.Namespace) -> None:
    """Run the whole plan step by step (each step is a separate, resumable command)."""
    import subprocess

    for i, (why, args) in enumerate(PLAN, 1):
        if a.only and i not in a.only:
            continue
        argv = shlex.split(args)
        if "--dtype" not in argv:
            argv += ["--dtype", a.dtype]
        argv += ["--batch-size", str(a.batch_size)]
        if a.threads:
            argv += ["--threads", str(a.threads)]
        log(f"plan step {i}/{len(PLAN)}: {why}: {' '.join(argv)}")
        rc = subprocess.call([sys.executable, str(Path(__file__).resolve()), *argv])
        if rc != 0:
            raise SystemExit(f"plan step {i} failed with exit code {rc}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--model", default="embedded")
        sp.add_argument("--dtype", default="float32")
        sp.add_argument("--batch-size", type=int, default=32)
        sp.add_argument("--chunk", type=int, default=512, help="sentences per cached chunk (resume granularity)")
        sp.add_argument("--data", default=None, help="data root (default: $STEERLAB_DATA)")
        sp.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "embed"))
        sp.add_argument("--cache", default=str(ROOT / "runs" / "embed_cache"))
        sp.add_argument("--prompts", default="prompteol")
        sp.add_argument("--layer", default=None, help="read-out layer (k of hidden_states), or prompt=k,...")
        sp.add_argument("--limit", type=int, default=None, help="first N pairs per task (smoke runs)")
        sp.add_argument("--force", action="store_true", help="recompute finished cells")
        sp.add_argument("--threads", type=int, default=None)

    t = sub.add_parser("test")
    common(t)
    t.add_argument("--configs", default=",".join(CONFIGS))
    t.add_argument("--tasks", default=None)
    t.add_argument("--setting", default="paper-defaults", help="label of this parameter setting in the tables")
    t.add_argument("--cp-layer", default=None, help="0-based CP layer, or prompt=l,...")
    t.add_argument("--cp-layer-nr", default=None, help="CP-NR layer if different, or prompt=l,...")
    t.add_argument("--alpha", default=None, help="CP-NS alpha, or prompt=a,...")
    t.add_argument("--tp-exit", default=None, help="TP exit layer, or prompt=e,...")
    t.add_argument("--from-dev", action="store_true", help="use the dev-best CP/TP settings of the sweeps")
    t.set_defaults(fn=cmd_test)

    s = sub.add_parser("sweep-layer")
    common(s)
    s.add_argument("--min-layer", type=int, default=1)
    s.set_defaults(fn=cmd_sweep_layer)

    s = sub.add_parser("sweep-cp")
    common(s)
    s.add_argument("--variant", default="both", choices=["ns", "nr", "both"])
    s.add_argument("--cp-layers", default="2,3,4,5,6")
    s.add_argument("--alphas", default="0.5,1,2,3,4")
    s.set_defaults(fn=cmd_sweep_cp)

    s = sub.add_parser("sweep-tp")
    common(s)
    s.add_argument("--exits", default="2,3,4,5,6,7,8,10")
    s.set_defaults(fn=cmd_sweep_tp)

    s = sub.add_parser("dev-base")
    common(s)
    s.set_defaults(fn=cmd_dev_base)

    s = sub.add_parser("best")
    common(s)
    s.set_defaults(fn=cmd_best)

    s = sub.add_parser("table")
    common(s)
    s.add_argument("--write-docs", action="store_true", help="replace '## Sentence embeddings' in docs/results.md")
    s.set_defaults(fn=cmd_table)

    s = sub.add_parser("plan", help="run the planned steps in order (see PLAN)")
    s.add_argument("--dtype", default="bfloat16")
    s.add_argument("--batch-size", type=int, default=32)
    s.add_argument("--only", type=lambda v: [int(x) for x in v.split(",")], default=None, help="step numbers")
    s.add_argument("--threads", type=int, default=None)
    s.set_defaults(fn=cmd_plan)

    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    a.fn(a)


if __name__ == "__main__":
    main()
