"""The ``steerlab`` command line: thin wrappers that parse, call the library and print.

Every expected failure (unknown model, unsupported architecture, bad layer, missing or
malformed file, empty dataset, vector of another model, NaN values) ends with one line on
stderr and exit code 1, never a traceback. ``STEERLAB_DEBUG=1`` shows tracebacks.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, TypeVar

import typer
from rich.console import Console, Group
from rich.markup import escape
from rich.table import Table

app = typer.Typer(
    name="steerlab",
    help="Steer causal LMs at inference time by reading and editing their activations.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

F = TypeVar("F", bound=Callable[..., Any])


def _console() -> Console:
    return Console(highlight=False)


def _err_console() -> Console:
    return Console(stderr=True, highlight=False)


def _fail(message: str, code: int = 1) -> None:
    msg = " ".join(str(message).split())
    _err_console().print(f"[bold red]error:[/] {msg}", markup=True, soft_wrap=True)
    raise typer.Exit(code)


def _errors(fn: F) -> F:
    """Turn expected exceptions into a one-line error and a non-zero exit."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if os.environ.get("STEERLAB_DEBUG"):
            return fn(*args, **kwargs)
        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        except (ValueError, OSError, RuntimeError, KeyError, TypeError) as e:
            text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            _fail(text)

    return wrapper  # type: ignore[return-value]


@contextlib.contextmanager
def _warnings_to_stderr() -> Iterator[None]:
    """Inside the block, each distinct Python warning is printed once as a ``warning:`` line on stderr."""
    def show(message: Warning | str, *args: Any, **kwargs: Any) -> None:
        _err_console().print(f"[bold yellow]warning:[/] {escape(' '.join(str(message).split()))}", markup=True,
                             soft_wrap=True)

    with warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.showwarning = show
        yield


def _load(model: str, dtype: str | None = None, device: str | None = None) -> Any:
    from transformers.utils import logging as hf_logging

    from .models import load_model

    # the CLI prints its own status; keep transformers' warnings out of it (load_model hides its bars)
    hf_logging.set_verbosity_error()
    with _err_console().status(f"loading model '{model}'..."):
        return load_model(model, dtype=dtype, device=device)


def _parse_layers(text: str, n_layers: int) -> list[int]:
    """``"10"``, ``"8,10,12"``, ``"8-12"`` or ``"all"`` -> layer list (negative = from the end)."""
    if text.strip() == "all":
        return list(range(n_layers))

    def resolve(layer: int) -> int:
        resolved = layer + n_layers if layer < 0 else layer
        if not 0 <= resolved < n_layers:
            raise ValueError(f"layer {layer} out of range: this model has layers 0..{n_layers - 1}")
        return resolved

    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        try:
            if "-" in part[1:]:
                a, b = part.split("-", 1) if not part.startswith("-") else ("-" + part[1:].split("-", 1)[0], part[1:].split("-", 1)[1])
                first, last = int(a), int(b)
            else:
                first = last = int(part)
        except ValueError:
            raise ValueError(f"bad layer list '{text}': use e.g. 10, 8,10,12, 8-12 or all") from None
        lo, hi = resolve(first), resolve(last)
        if hi < lo:
            raise ValueError(f"bad layer range '{part}': it runs backwards; write the lower layer first, e.g. {last}-{first}")
        out.extend(range(lo, hi + 1))
    return sorted(set(out))


def _parse_where(text: str) -> str | int:
    return int(text) if text.lstrip("-").isdigit() else text


ModelOpt = typer.Option("embedded", "--model", "-m", help="'embedded', a .gguf file, a local directory or a hub id.")
RayOpt = typer.Option(None, "--ray", metavar="ADDRESS", help="ADDRESS of a Ray cluster, or 'local' to start one here.")
RayWorkersOpt = typer.Option(2, "--ray-workers", min=1, help="With --ray: actors, each with its own model.")


def _ray_cluster(address: str | None, workers: int) -> Any:
    """``--ray ADDRESS``: a :class:`~steerlab.distributed.RayCluster` to enter (address checked on entry);
    without it, nothing."""
    if address is None:
        return contextlib.nullcontext(None)
    from .distributed import RayCluster

    return RayCluster(address, workers=workers)


@app.command()
@_errors
def info(
    model: str = ModelOpt,
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Show the model, its architecture adapter and the available sites."""
    lm = _load(model)
    d = lm.describe()
    d["sites"] = {
        "residual": f"residual.0..{lm.adapter.n_layers - 1} (decoder block output, width {lm.adapter.hidden_size})",
        "heads": f"heads.0..{lm.adapter.n_layers - 1} (o_proj input, {lm.adapter.n_heads} heads x {lm.adapter.head_dim})",
        "attn_out": "attn_out.L (attention block output)",
        "mlp_out": "mlp_out.L (MLP output)",
    }
    if as_json:
        print(json.dumps(d, indent=2))
        return
    table = Table(title=f"steerlab info: {lm.name}", show_header=False)
    for k, v in d.items():
        if k == "sites":
            for kind, text in v.items():
                table.add_row(f"site {kind}", text)
        else:
            table.add_row(k, str(v))
    _console().print(table)


#: `steerlab fit [METHOD] PAIRS_FILE`: the vector fitters of steerlab.fit, plus ITI (per-head probes)
_FIT_METHODS = ("mean_diff", "caa", "pca", "probe", "iti", "fasb", "psr")


def _fit_spec(spec: list[str], method_opt: str | None) -> tuple[str, Path | None]:
    """``[METHOD] PAIRS_FILE`` (or ``PAIRS_FILE`` with ``--method``) -> (method, file); ``fasb`` alone (with
    ``--dataset``) -> (``"fasb"``, None)."""
    if spec == ["fasb"] and method_opt in (None, "fasb"):
        return "fasb", None
    if len(spec) == 1:
        return (method_opt or "mean_diff"), Path(spec[0])
    if len(spec) == 2:
        if spec[0] not in _FIT_METHODS:
            raise ValueError(f"unknown fit method '{spec[0]}': use one of {', '.join(_FIT_METHODS)} "
                             "(steerlab fit [METHOD] PAIRS_FILE)")
        if method_opt is not None and method_opt != spec[0]:
            raise ValueError(f"two methods given ('{spec[0]}' and --method {method_opt}): give one")
        return spec[0], Path(spec[1])
    raise ValueError("expected `steerlab fit [METHOD] PAIRS_FILE`, e.g. steerlab fit iti pairs.jsonl --out iti.safetensors")


@app.command()
@_errors
def fit(
    spec: list[str] = typer.Argument(..., metavar="[METHOD] PAIRS_FILE",
                                     help="Optional method (mean_diff | caa | pca | probe | iti | fasb), then the "
                                          "contrastive pairs: JSONL/JSON/CSV with positive, negative[, prompt] "
                                          "(fasb: or --dataset instead of the file)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output vector file (.safetensors; a .json sidecar is written)."),
    model: str = ModelOpt,
    layers: Optional[str] = typer.Option(None, "--layers", "-l",
                                         help="Layers: 10 | 8,10,12 | 8-12 | all | middle (default). Not for iti."),
    method: Optional[str] = typer.Option(None, help="mean_diff (CAA, default) | pca (repeng-style) | probe (logistic) "
                                                    "| iti (per-head probes, top-k heads)."),
    site: str = typer.Option("residual", help="Site kind: residual | heads | attn_out | mlp_out. Not for iti."),
    positions: str = typer.Option("last", help="last | all | answer (answer span, needs a prompt column). Not for iti."),
    k: Optional[int] = typer.Option(None, "--k", help="iti / fasb: number of heads (ranked by probe accuracy; "
                                                       "default 48 / 24)."),
    alpha: Optional[float] = typer.Option(None, "--alpha", help="iti / fasb: shift in units of each head's activation "
                                                                "std (default 15 / 60)."),
    direction: str = typer.Option("mass_mean", help="iti / fasb: mass_mean | probe."),
    threshold: Optional[float] = typer.Option(None, help="fasb: back up when p_true < this, in (0, 1) (default 0.6)."),
    s: Optional[int] = typer.Option(None, "--s", help="fasb: tokens dropped on a backtrack, >= 1 (default 10)."),
    semantics: str = typer.Option("reference", help="fasb: reference (unsteered keys/values of earlier tokens, as the "
                                                    "reference code) | cached (steered ones kept, as ITI)."),
    dataset: Optional[str] = typer.Option(None, help="fasb: fit on truthfulqa_mc | truthfulqa instead of a pairs file "
                                                     "(ITI's recipe; needs the benchmark data)."),
    limit: Optional[int] = typer.Option(None, min=1, help="fasb --dataset: use this many questions (fixed seed)."),
    chat: bool = typer.Option(False, "--chat/--no-chat", help="Wrap texts in the chat template."),
    batch_size: int = typer.Option(8, min=1),
    streaming: bool = typer.Option(False, help="Keep running statistics only (flat memory). Not for iti."),
    gate: Optional[str] = typer.Option(None, help="psr: relu (PSR, default) | constant (a trained constant vector)."),
    objective: Optional[str] = typer.Option(None, help="psr: mse (prompt steering imitation, default) | ll."),
    epochs: Optional[int] = typer.Option(None, help="psr: training epochs (default 15 for mse, 7 for ll)."),
    draws: Optional[int] = typer.Option(None, help="psr: sampled responses per question and instruction (default 1)."),
    judge: Optional[str] = typer.Option(None, help="psr: proxy (cross-fitted MiniLM trait proxy, default) | none."),
    work_dir: Optional[Path] = typer.Option(None, help="psr: sample cache + training checkpoint (default OUT.work/); "
                                                       "a killed fit continues from it."),
) -> None:
    """Fit a steering vector (CAA / PCA / probe at chosen layers, or ITI over all heads) from contrastive pairs
    and save it as safetensors + JSON; `steerlab generate --vector` uses either kind."""
    from .artifacts import check_vector_output, save_vector
    from .fit import check_fit_options, fit_vector
    from .io import read_pairs

    how, pairs_file = _fit_spec(spec, method)
    how = "mean_diff" if how == "caa" else how
    # everything that needs no model is checked before it loads, and the output before the fit
    check_vector_output(out)
    fasb_only = [name for name, on in (("--threshold", threshold is not None), ("--s", s is not None),
                                       ("--semantics", semantics != "reference"), ("--dataset", dataset is not None),
                                       ("--limit", limit is not None)) if on]
    if fasb_only and how != "fasb":
        raise ValueError(f"{', '.join(fasb_only)} are options of fasb: use `steerlab fit fasb ...`")
    psr_only = [name for name, on in (("--gate", gate is not None), ("--objective", objective is not None),
                                      ("--epochs", epochs is not None), ("--draws", draws is not None),
                                      ("--judge", judge is not None), ("--work-dir", work_dir is not None)) if on]
    if psr_only and how != "psr":
        raise ValueError(f"{', '.join(psr_only)} are options of psr: use `steerlab fit psr TRAIT ...`")
    if how == "psr":
        assert pairs_file is not None
        _fit_psr(str(pairs_file), out, model, layers, positions, gate, objective, epochs, draws, judge, work_dir,
                 [name for name, on in (("--k", k is not None), ("--alpha", alpha is not None),
                                        ("--direction", direction != "mass_mean"), ("--site", site != "residual"),
                                        ("--streaming", streaming), ("--chat", chat)) if on])
        return
    if how == "fasb":
        from .fasb_commands import fasb_config, fit_fasb_command

        given = [name for name, on in (("--layers", layers is not None), ("--site", site != "residual"),
                                       ("--positions", positions != "last"), ("--streaming", streaming)) if on]
        if given:
            raise ValueError(f"{', '.join(given)} do(es) not apply to fasb: it ranks the heads of every layer; "
                             "choose how many with --k")
        config = fasb_config(k, alpha, threshold, s, direction, semantics, batch_size, chat)
        if pairs_file is not None and dataset is not None:
            raise ValueError("give the contrastive pairs file or --dataset, not both")
        if pairs_file is None and dataset is None:
            raise ValueError("fit fasb needs a contrastive pairs file or --dataset truthfulqa_mc")
        if pairs_file is not None:
            read_pairs(pairs_file)  # a bad file fails before the model loads
        lm = _load(model)
        _, summary = fit_fasb_command(lm, config, out, pairs_file, dataset, limit)
        _console().print(summary, markup=False, soft_wrap=True)
        return
    assert pairs_file is not None
    if how == "iti":
        k = 48 if k is None else k
        alpha = 15.0 if alpha is None else alpha
        from .interventions.iti import ITIConfig, fit_iti, records_from_pairs, save_iti

        given = [name for name, on in (("--layers", layers is not None), ("--site", site != "residual"),
                                       ("--positions", positions != "last"), ("--streaming", streaming)) if on]
        if given:
            raise ValueError(f"{', '.join(given)} do(es) not apply to iti: it ranks the heads of every layer; "
                             "choose how many with --k")
        config = ITIConfig(k=k, alpha=alpha, direction=direction, batch_size=batch_size, chat=chat)
        pairs = read_pairs(pairs_file)
        lm = _load(model)
        result = fit_iti(lm, records_from_pairs(pairs), config, progress=True)
        # the whole fit (vector, probes, directions, sigma, heads, split): `generate --vector` reads its vector
        path = save_iti(result, out, data={"pairs": str(pairs_file), "n_pairs": len(pairs)})
        heads = ", ".join(f"{layer}.{head}" for layer, head in result.heads[:8])
        more = f" (+{len(result.heads) - 8} more)" if len(result.heads) > 8 else ""
        _console().print(f"fitted iti on {len(pairs)} pairs: {len(result.heads)} heads (layer.head: {heads}{more}), "
                         f"alpha {alpha:g} -> {path}")
        return
    if (k, alpha, direction) != (None, None, "mass_mean"):
        raise ValueError("--k, --alpha and --direction are options of iti: use `steerlab fit iti PAIRS_FILE`")
    check_fit_options(how, site, positions)
    pairs = read_pairs(pairs_file)
    lm = _load(model)
    layers = layers or "middle"
    layer_list = [lm.adapter.n_layers // 2] if layers == "middle" else _parse_layers(layers, lm.adapter.n_layers)
    vec = fit_vector(lm, pairs, layer_list, method=how, site_kind=site, positions=positions,
                     batch_size=batch_size, streaming=streaming, chat=chat, progress=True)
    path = save_vector(vec, out)
    norms = ", ".join(f"{key}={v:.2f}" for key, v in vec.norms().items())
    _console().print(f"fitted {how} vector on {len(pairs)} pairs at {len(vec.vectors)} site(s) -> {path}\nnorms: {norms}")


def _fit_psr(source: str, out: Path, model: str, layers: str | None, positions: str, gate: str | None,
             objective: str | None, epochs: int | None, draws: int | None, judge: str | None, work_dir: Path | None,
             unused: list[str]) -> None:
    """``steerlab fit psr TRAIT``: sample, filter, train, save (see :mod:`steerlab.psr_commands`)."""
    from .psr_commands import PSRFitSettings, fit_psr_command, trait_definition

    if unused:
        raise ValueError(f"{', '.join(unused)} do(es) not apply to psr")
    trait = trait_definition(source)  # a bad trait file fails before the model loads
    pos = {"last": "answer_only"}.get(positions, positions)
    probe = PSRFitSettings(layers=(0,), gate=gate or "relu", objective=objective or "mse", positions=pos,
                           epochs=epochs, draws=draws or 1, judge=judge or "proxy")
    lm = _load(model)
    layer_list = ([lm.adapter.n_layers // 2] if layers in (None, "middle")
                  else _parse_layers(layers, lm.adapter.n_layers))
    settings = PSRFitSettings(layers=tuple(layer_list), gate=probe.gate, objective=probe.objective, positions=pos,
                              epochs=epochs, draws=probe.draws, judge=probe.judge)
    wd = work_dir if work_dir is not None else out.with_name(out.stem + ".work")
    with _warnings_to_stderr():
        _, summary = fit_psr_command(lm, trait, settings, out, wd)
    _console().print(summary, markup=False, soft_wrap=True)


def _read_prompt_args(prompts: list[str] | None, prompts_file: Path | None) -> list[str]:
    from .generate import check_prompts
    from .io import read_prompts

    items = list(prompts or [])
    if prompts_file is not None:
        items += read_prompts(prompts_file)
    if not items:
        raise ValueError("no prompts: pass them as arguments or with --prompts-file")
    return check_prompts(items)


@app.command()
@_errors
def generate(
    prompts: Optional[list[str]] = typer.Argument(None, help="Prompts (or use --prompts-file)."),
    prompts_file: Optional[Path] = typer.Option(None, "--prompts-file", "-f", help="One prompt per line, or JSONL with 'prompt'."),
    model: str = ModelOpt,
    vector: Optional[Path] = typer.Option(None, "--vector", "-v", help="Steering vector file from `steerlab fit`."),
    strength: Optional[float] = typer.Option(None, "--strength", "-s", help="Multiplier of the vector (default 1; |strength| <= 1e4)."),
    where: Optional[str] = typer.Option(None, help="all | prompt | generated (default) | an integer start position."),
    max_new_tokens: int = typer.Option(64, "--max-new-tokens", "-n", min=1),
    temperature: float = typer.Option(0.0, help="0 = greedy; > 0 samples."),
    top_p: float = typer.Option(1.0),
    seed: Optional[int] = typer.Option(None),
    stop: Optional[list[str]] = typer.Option(None, help="Stop string (repeatable)."),
    chat: bool = typer.Option(True, "--chat/--no-chat", help="Apply the chat template when the model has one."),
    compare: bool = typer.Option(False, "--compare", help="Show unsteered and steered side by side."),
    batch_size: int = typer.Option(8, min=1),
    as_json: bool = typer.Option(False, "--json", help="Print JSON lines instead of a table."),
    method: str = typer.Option("vector", help="vector (add --vector) | fasb (probe-gated steering with backtracking, "
                                              "from --artifact)."),
    artifact: Optional[Path] = typer.Option(None, "--artifact", "-a", help="fasb: the fit from `steerlab fit fasb`."),
    param: Optional[list[str]] = typer.Option(None, "--param", "-p", help="fasb: override a setting KEY=VALUE "
                                                                          "(repeatable), e.g. threshold=0.5 alpha=30."),
    show_gates: bool = typer.Option(False, "--show-gates", help="psr: shade each generated token by its gate value."),
) -> None:
    """Generate text, optionally steered by a vector (--compare shows both), or with FASB (--method fasb --artifact
    FILE: where it backed up is marked). Ctrl-C prints what was generated."""
    from .artifacts import check_vector, load_vector
    from .checks import check_strength

    items = _read_prompt_args(prompts, prompts_file)
    if method not in ("vector", "fasb", "psr"):
        raise ValueError(f"unknown generate method '{method}': use vector, fasb or psr")
    if show_gates and method != "psr":
        raise ValueError("--show-gates belongs to --method psr")
    if method == "psr":
        _generate_psr(items, model, artifact, strength, max_new_tokens, temperature, seed, stop, chat, batch_size,
                      as_json, show_gates,
                      [name for name, on in (("--vector", vector is not None), ("--where", where is not None),
                                             ("--compare", compare), ("--param", bool(param)),
                                             ("--top-p", top_p != 1.0)) if on])
        return
    if method == "fasb":
        _generate_fasb(items, model, artifact, param, max_new_tokens, temperature, stop, chat, batch_size, as_json,
                       [name for name, on in (("--vector", vector is not None), ("--strength", strength is not None),
                                              ("--where", where is not None), ("--compare", compare),
                                              ("--top-p", top_p != 1.0), ("--seed", seed is not None)) if on])
        return
    if artifact is not None or param:
        raise ValueError("--artifact / --param belong to --method fasb")
    if vector is None:
        given = [name for name, value in (("--compare", compare or None), ("--strength", strength), ("--where", where))
                 if value is not None]
        if given:
            raise ValueError(f"{', '.join(given)} without --vector: these steering options need a vector file "
                             "(--vector FILE)")
    strength_v = check_strength(1.0 if strength is None else strength, "--strength")
    where_text = where or "generated"
    where_v = _parse_where(where_text)
    vec = load_vector(vector) if vector is not None else None  # a bad file fails before the model loads
    lm = _load(model)
    if vec is not None:
        check_vector(vec, lm)
    chat = chat and lm.has_chat_template
    runs = [("unsteered", None), ("steered", vec)] if compare else [("steered" if vec else "output", vec)]
    results, interrupted = _generate_batched(lm, items, runs, strength_v, where_v, max_new_tokens, temperature, top_p,
                                             seed, stop, chat, batch_size)
    done = max(len(texts) for texts in results.values())
    shown = {name: texts + [""] * (done - len(texts)) for name, texts in results.items()}
    if as_json:
        for i, p in enumerate(items[:done]):
            print(json.dumps({"prompt": p, **{name: shown[name][i] for name, _ in runs}}))
    elif done:
        title = f"{lm.name}" + (f" | {vector.name} x {strength_v:g} @ {where_text}" if vector is not None else "")
        _print_side_by_side(items[:done], shown, title=title)
    if interrupted:
        _fail(f"interrupted: the output above is what was generated before Ctrl-C ({done} of {len(items)} prompt(s))",
              130)


def _generate_fasb(items: list[str], model: str, artifact: Path | None, param: list[str] | None, max_new_tokens: int,
                   temperature: float, stop: list[str] | None, chat: bool, batch_size: int, as_json: bool,
                   unused: list[str]) -> None:
    """``generate --method fasb``: greedy FASB with a saved fit; the backtracks marked."""
    from .fasb_commands import generate_fasb_command, parse_overrides, render_row
    from .interventions.fasb import FASB_KIND
    from .artifacts import load_intervention

    if unused:
        raise ValueError(f"{', '.join(unused)} do(es) not apply to --method fasb (greedy, steered by its fit)")
    if temperature > 0:
        raise ValueError("--method fasb decodes greedily, as the reference: drop --temperature")
    if artifact is None:
        raise ValueError("--method fasb needs --artifact FILE (from `steerlab fit fasb`)")
    overrides = parse_overrides(param)
    load_intervention(artifact, kind=FASB_KIND)  # a bad file fails before the model loads
    lm = _load(model)
    chat = chat and lm.has_chat_template
    with _warnings_to_stderr():
        rows, config = generate_fasb_command(lm, artifact, items, overrides, max_new_tokens, stop, chat, batch_size)
    if as_json:
        for row in rows:
            print(json.dumps(row.to_dict()))
        return
    table = Table(title=f"{lm.name} | fasb {artifact.name} | alpha {config.alpha:g}, threshold {config.threshold:g}, "
                        f"s {config.s}, {config.semantics}", show_lines=True, expand=True)
    table.add_column("prompt", ratio=1)
    table.add_column("answer ([strike red]dropped[/], [bold green]regenerated[/])", ratio=3)
    for row in rows:
        answer, notes = render_row(row, config)
        table.add_row(row.prompt, Group(answer, notes))
    _console().print(table)


def _generate_psr(items: list[str], model: str, artifact: Path | None, strength: float | None, max_new_tokens: int,
                  temperature: float, seed: int | None, stop: list[str] | None, chat: bool, batch_size: int,
                  as_json: bool, show_gates: bool, unused: list[str]) -> None:
    """``generate --method psr``: steered by a saved PSR model (``--strength`` sets its alpha)."""
    from .artifacts import load_intervention
    from .checks import check_strength
    from .interventions.psr import PSR_KIND, GatedSteering
    from .psr_commands import generate_psr_command, render_gates

    if unused:
        raise ValueError(f"{', '.join(unused)} do(es) not apply to --method psr")
    if artifact is None:
        raise ValueError("--method psr needs --artifact FILE (from `steerlab fit psr`)")
    alpha = None if strength is None else check_strength(strength, "--strength")
    art = load_intervention(artifact, kind=PSR_KIND)  # a bad file fails before the model loads
    lm = _load(model)
    module = GatedSteering.from_artifact(art, lm)
    if alpha is not None:
        module.alpha = alpha
    chat = chat and lm.has_chat_template
    with _warnings_to_stderr():
        rows = generate_psr_command(lm, module, items, max_new_tokens, chat, batch_size, temperature, seed, stop)
    if as_json:
        for row in rows:
            print(json.dumps(row.to_dict() if show_gates else {"prompt": row.prompt, "output": row.text}))
        return
    top = max((g for row in rows for g in row.gates), default=0.0)
    title = f"{lm.name} | psr {artifact.name} | alpha {module.alpha:g}" + (
        f" | gates shaded, darkest = {top:.3g}" if show_gates else "")
    table = Table(title=title, show_lines=True, expand=True)
    table.add_column("prompt", ratio=1)
    table.add_column("output", ratio=3)
    for row in rows:
        table.add_row(row.prompt, render_gates(row, top) if show_gates else row.text)
    _console().print(table)


def _generate_batched(lm: Any, items: list[str], runs: list[tuple[str, Any]], strength: float, where: str | int,
                      max_new_tokens: int, temperature: float, top_p: float, seed: int | None, stop: Any,
                      chat: bool, batch_size: int) -> tuple[dict[str, list[str]], bool]:
    """Texts per run name, and whether Ctrl-C stopped the generation (the texts are then those made so far).

    One bar on stderr counts the tokens of the batch being decoded, labelled with the run and the batch."""
    from .generate import GenerationInterrupted
    from .generate import generate as gen
    from .progress import ProgressBar

    results: dict[str, list[str]] = {name: [] for name, _ in runs}
    starts = range(0, len(items), batch_size)
    with _warnings_to_stderr(), ProgressBar(max_new_tokens, True, "generating", "tok", transient=True) as bar:
        for name, vec in runs:
            for n, i in enumerate(starts, 1):
                chunk = items[i : i + batch_size]
                label = f"{name}" + (f" batch {n}/{len(starts)}" if len(starts) > 1 else "")
                bar.describe(f"generating ({label})" if len(runs) > 1 or len(starts) > 1 else "generating")
                try:
                    out = gen(lm, chunk, steer=vec, strength=strength if vec is not None else None,
                              where=where if vec is not None else None, max_new_tokens=max_new_tokens,
                              do_sample=temperature > 0, temperature=temperature if temperature > 0 else 1.0,
                              top_p=top_p, seed=seed, stop=stop, chat=chat, progress=bar)
                except KeyboardInterrupt as stopped:  # keep what was made: whole chunks, and the decoding one
                    if isinstance(stopped, GenerationInterrupted):
                        results[name].extend(t.strip() for t in stopped.output.texts)
                    return results, True
                results[name].extend(t.strip() for t in out.texts)
    return results, False


def _print_side_by_side(items: list[str], results: dict[str, list[str]], title: str) -> None:
    table = Table(title=title, show_lines=True, expand=True)
    table.add_column("prompt", ratio=1)
    for name in results:
        table.add_column(name, ratio=2)
    for i, p in enumerate(items):
        table.add_row(p, *(results[name][i] for name in results))
    _console().print(table)


analyze_app = typer.Typer(help="Analyse what steering does to the activations.", no_args_is_help=True)
app.add_typer(analyze_app, name="analyze")


@analyze_app.command("prompt-steering")
@_errors
def analyze_prompt_steering(
    trait: str = typer.Argument(..., help="A Persona Vectors trait name (e.g. evil) or a trait JSON file."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for report.json, heatmap.png and the sample cache."),
    model: str = ModelOpt,
    n: int = typer.Option(8, "--n", min=1, help="Prompt pairs (positive samples) to analyse."),
    max_new_tokens: int = typer.Option(48, "--max-new-tokens", min=1),
    seed: int = typer.Option(0),
) -> None:
    """Prompt steering seen as activation steering: the per-layer, per-token change a trait's system prompt makes
    to its own responses (accumulated and local), how concentrated it is over tokens, and a heatmap."""
    from .psr_commands import analyze_command, trait_definition

    definition = trait_definition(trait)
    lm = _load(model)
    with _warnings_to_stderr():
        report = analyze_command(lm, definition, out, n_pairs=n, max_new_tokens=max_new_tokens, seed=seed)
    table = Table(title=f"prompt steering | {definition.trait} | {lm.name} | {report['n_pairs']} pairs "
                        "(constant steering: top-10% share 0.10, CV 0)")
    for col in ("mode", "layer", "top-10% share", "CV", "p90/p10", "constant R^2", "per-token R^2"):
        table.add_column(col)
    for mode, c in report["modes"].items():
        for i, layer in enumerate(c["layers"]):
            if layer % 5 == 0 or layer == c["layers"][-1]:
                table.add_row(mode, str(layer), f"{c['top10_share'][i]:.2f}", f"{c['cv'][i]:.2f}",
                              f"{c['ratio_p90_p10'][i]:.1f}", f"{c['constant_r2'][i]:.2f}",
                              f"{c['per_token_r2'][i]:.2f}")
    _console().print(table)
    _console().print(f"report: {out / 'report.json'}  heatmap: {out / 'heatmap.png'}")


@app.command("export-gguf")
@_errors
def export_gguf_cmd(
    vector: Path = typer.Argument(..., help="Vector file from `steerlab fit` (residual sites only)."),
    out: Path = typer.Argument(..., help="Output .gguf control-vector file for llama.cpp."),
) -> None:
    """Export residual-stream vectors as a llama.cpp GGUF control vector."""
    from .artifacts import export_gguf, load_vector

    vec = load_vector(vector)
    path = export_gguf(vec, out)
    _console().print(f"wrote llama.cpp control vector ({len(vec.vectors)} layer(s)) -> {path}")


@app.command("import-gguf")
@_errors
def import_gguf_cmd(
    gguf_file: Path = typer.Argument(..., help="llama.cpp / repeng GGUF control vector."),
    out: Path = typer.Argument(..., help="Output steerlab vector (.safetensors + .json)."),
) -> None:
    """Import a llama.cpp / repeng GGUF control vector as a steerlab vector (direction.N -> residual.N)."""
    from .artifacts import import_gguf, save_vector

    vec = import_gguf(gguf_file)
    path = save_vector(vec, out)
    _console().print(f"wrote steerlab vector ({len(vec.vectors)} layer(s), hint '{vec.meta.architecture}') -> {path}")


@app.command()
@_errors
def serve(
    model: str = ModelOpt,
    artifacts: Optional[Path] = typer.Option(None, "--artifacts", help="Directory of steerlab artifacts (vectors, "
                                             "fasb, psr) requests may steer with, by file name."),
    host: str = typer.Option("127.0.0.1", help="Interface to listen on (127.0.0.1: this machine only)."),
    port: int = typer.Option(8000, min=0, max=65535),
    dtype: Optional[str] = typer.Option(None, help="float32 | bfloat16 | float16 (default: the model's)."),
    max_tokens: int = typer.Option(512, "--max-tokens", min=1, help="Most new tokens a request may ask for."),
    default_max_tokens: int = typer.Option(128, "--default-max-tokens", min=1,
                                           help="New tokens when a request gives no max_tokens."),
    max_prompt_tokens: int = typer.Option(2048, "--max-prompt-tokens", min=1),
    max_batch: int = typer.Option(16, "--max-batch", min=1, help="Rows decoded together at most."),
    max_queue: int = typer.Option(64, "--max-queue", min=0, help="Requests waiting beyond the batch (more: 429)."),
    timeout: float = typer.Option(300.0, "--timeout", help="Seconds a request may take (then 504)."),
    shutdown_grace: float = typer.Option(30.0, "--shutdown-grace",
                                         help="Seconds Ctrl-C / SIGTERM waits for accepted requests."),
) -> None:
    """Serve the model over an OpenAI-compatible HTTP API with per-request steering, and a playground at /."""
    from .serve.app import create_app, run_server
    from .serve.registry import load_registry
    from .serve.scheduler import Limits

    limits = Limits(max_tokens=max_tokens, max_prompt_tokens=max_prompt_tokens, max_batch=max_batch,
                    max_queue=max_queue, timeout_s=timeout, shutdown_grace_s=shutdown_grace)
    if artifacts is not None and not artifacts.is_dir():
        raise ValueError(f"artifact directory not found: {artifacts}")
    lm = _load(model, dtype)
    registry = load_registry(artifacts, lm)
    for name, why in registry.skipped.items():
        _err_console().print(f"[bold yellow]warning:[/] not serving {escape(name)}: {escape(why)}", markup=True)
    names = ", ".join(sorted(registry.artifacts)) or "none"
    _err_console().print(f"serving {lm.name} on http://{host}:{port}/ (playground) and /v1; artifacts: {names}")
    run_server(create_app(lm, registry, limits, default_max_tokens=default_max_tokens), host, port, shutdown_grace)
    _err_console().print("server stopped")


@app.command()
@_errors
def demo(
    model: str = ModelOpt,
    out_dir: Path = typer.Option(Path("out/demo"), "--out-dir", help="Where the demo's pairs and vector are written."),
    layer: Optional[int] = typer.Option(None, help="Layer to steer (default: the demo's choice for the model)."),
    strength: Optional[float] = typer.Option(None, help="Steering strength (default: the demo's choice)."),
    max_new_tokens: int = typer.Option(40, "--max-new-tokens", "-n", min=1),
) -> None:
    """Fit a 'joyful vs gloomy' vector on the embedded model and show steered vs unsteered text."""
    from .demo import run_demo

    run_demo(model=model, out_dir=out_dir, layer=layer, strength=strength, max_new_tokens=max_new_tokens,
             console=_console(), load=_load, show=_print_side_by_side)


@app.command("eval")
@_errors
def eval_cmd(
    task: str = typer.Argument(..., help="sts | truthfulqa_mc (ITI's instruction + primer) | truthfulqa_mc_lmeval "
                                         "(primer only) | truthfulqa_gen | copa | storycloze | snli | mmlu | sst2 | "
                                         "winogrande | persona/<trait> | caa/<behavior> | ai_risk/<set> "
                                         "(`steerlab list` shows every name)"),
    model: str = ModelOpt,
    method: str = typer.Option("none", help="Steering method: none | caa | iti (not used by sts)."),
    param: Optional[list[str]] = typer.Option(None, "--param", "-p", help="Method hyper-parameter KEY=VALUE (repeatable), e.g. layer=12 multiplier=2."),
    limit: Optional[int] = typer.Option(None, help="Cap the number of items (fixed seed)."),
    folds: int = typer.Option(2, min=1, help="Cross-validation folds, split by question."),
    seed: int = typer.Option(0),
    out: Path = typer.Option(Path("eval_out"), "--out", "-o", help="Output directory: results.json (every task), and results.md, results.png, checkpoint/ (tasks other than sts)."),
    prompt: str = typer.Option("prompteol", help="sts: prompteol | pretcot | ke | metaeol | a template with {s}."),
    layer: Optional[str] = typer.Option(None, help="sts: read-out layer (index, or e.g. -3)."),
    cp: Optional[str] = typer.Option(None, help="sts: contrastive prompting variant ns | nr."),
    cp_layer: Optional[int] = typer.Option(None, help="sts: CP intervention layer (0-based)."),
    alpha: Optional[float] = typer.Option(None, help="sts: CP-NS alpha."),
    tp: bool = typer.Option(False, "--tp", help="sts: token prepending."),
    tp_exit: Optional[int] = typer.Option(None, help="sts: TP exit layer."),
    tasks: Optional[str] = typer.Option(None, help="sts: comma-separated tasks (default: the 7 SentEval STS tasks); name:split for another split."),
    batch_size: int = typer.Option(16, min=1),
    grid: Optional[list[str]] = typer.Option(None, "--grid", "-g", help="Choose a method option on each fold's validation questions: NAME=V1,V2,... (repeatable; the grid grows past an edge its best value sits on)."),
    no_grow: bool = typer.Option(False, "--no-grow", help="Search only the given grid."),
    select: Optional[str] = typer.Option(None, help="Metric the search maximises (default: the task's: mc2, true_info with a coherence floor, acc, p_matching)."),
    coherence_margin: Optional[float] = typer.Option(None, help="truthfulqa_gen search: eligible configurations keep coherence >= unsteered - this (nats/token, default 0.5)."),
    val_limit: Optional[int] = typer.Option(None, min=1, help="Search on the first N validation questions of each fold."),
    ray: Optional[str] = RayOpt,
    ray_workers: int = RayWorkersOpt,
) -> None:
    """Evaluate a task (with a steering method), or STS for sentence embeddings."""
    from .checks import check_output_path

    if task == "sts":
        from .embed.commands import eval_sts_command

        if ray is not None:
            raise ValueError("`eval sts` runs in this process: drop --ray (it shards `eval TASK` and `embed`)")
        unused = [name for name, given in (("--method", method != "none"), ("--param", bool(param)),
                                           ("--folds", folds != 2), ("--seed", seed != 0), ("--grid", bool(grid))) if given]
        if unused:
            raise ValueError(f"{', '.join(unused)} given to `eval sts`, which scores sentence embeddings without "
                             "a steering method: drop them")
        res = eval_sts_command(model=model, prompt=prompt, layer=layer, cp=cp, cp_layer=cp_layer, alpha=alpha, tp=tp,
                               tp_exit=tp_exit, tasks=tasks, batch_size=batch_size, limit=limit,
                               output=out / "results.json")
        _console().print(res["markdown"])
        _console().print(f"wrote {out / 'results.json'}")
        return
    from .evals.commands import make_search, parse_method_options, run_eval
    from .evals.runner import RAW_METRICS, get_task
    from .methods import make_method

    sts_only = [name for name, given in (("--prompt", prompt != "prompteol"), ("--layer", layer is not None),
                                         ("--cp", cp is not None), ("--cp-layer", cp_layer is not None),
                                         ("--alpha", alpha is not None), ("--tp", tp), ("--tp-exit", tp_exit is not None),
                                         ("--tasks", tasks is not None)) if given]
    if sts_only:
        raise ValueError(f"{', '.join(sts_only)} given to `eval {task}`: these options belong to `eval sts`; "
                         "set the method's options with -p KEY=VALUE, e.g. -p layer=12")
    options = parse_method_options(param)
    get_task(task)  # fail on a bad task before loading the model
    make_method(method, **options)  # and on a bad method or option value
    search = make_search(task, method, grid, options, grow=not no_grow, select=select, margin=coherence_margin,
                         val_limit=val_limit)
    check_output_path(out, folder=True)
    with _ray_cluster(ray, ray_workers) as cluster:
        # "tiny" / "tiny:<family>": random test models (run_eval builds them); anything else loads here
        lm = model if model == "tiny" or model.startswith("tiny:") else _load(model)
        shard = None
        if cluster is not None:  # each actor loads the model itself
            from .distributed import ModelSpec

            shard = cluster.eval_shard(ModelSpec(model))
        res = run_eval(task, method, lm, limit, folds, out, seed, batch_size=batch_size, model_id=model,
                       progress=True, method_options=options, search=search, shard=shard)
    m = res["metrics"]
    table = Table(title=f"{task} | {method} | {model}")
    table.add_column("n", justify="right")
    for name in res["metric_names"]:
        table.add_column(name + (" (nats/token)" if name in RAW_METRICS else " (%)"), justify="right")
    table.add_row(str(m["n"]), *("n/a" if m[k] is None else f"{m[k]:.3f}" if k in RAW_METRICS else f"{100 * m[k]:.2f}"
                                 for k in res["metric_names"]))
    _console().print(table)
    for pf in res["per_fold"]:
        if "selection" in pf:
            sel = pf["selection"]
            edge = f"; still at an edge: {', '.join(sel['at_edge'])}" if sel["at_edge"] else ""
            fb = "; no configuration met the coherence floor: the most coherent was taken" if sel["fallback"] else ""
            _console().print(f"fold {pf['fold']}: chose {sel['chosen']} on {sel['n_val']} validation questions "
                             f"({sel['rule']['text']}; {len(sel['candidates'])} tried{edge}{fb})", markup=False,
                             soft_wrap=True)
    _console().print(f"wrote {out / 'results.json'}, {out / 'results.md'}, {out / 'results.png'}")


@app.command()
@_errors
def embed(
    file: Path = typer.Argument(..., help="Sentences: .txt (one per line), .jsonl with 'text', or .csv/.tsv with a 'text' column."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output .npy or .parquet (default: FILE with .npy)."),
    model: str = ModelOpt,
    prompt: str = typer.Option("prompteol", help="prompteol | pretcot | ke | metaeol | a template with {s}."),
    layer: Optional[str] = typer.Option(None, help="Read-out layer (default relative to depth, see docs/embeddings.md)."),
    cp: Optional[str] = typer.Option(None, help="Contrastive prompting: ns | nr."),
    cp_layer: Optional[int] = typer.Option(None),
    alpha: Optional[float] = typer.Option(None),
    tp: bool = typer.Option(False, "--tp", help="Token prepending."),
    tp_exit: Optional[int] = typer.Option(None),
    text_field: str = typer.Option("text", help="Field/column holding the sentence."),
    batch_size: int = typer.Option(32, min=1),
    chunk_size: int = typer.Option(1024, min=1, help="Sentences per checkpointed chunk (resume granularity)."),
    resume: bool = typer.Option(True, "--resume/--restart", help="Continue an interrupted run."),
    ray: Optional[str] = RayOpt,
    ray_workers: int = RayWorkersOpt,
) -> None:
    """Write sentence embeddings of FILE (resumable)."""
    from .embed.commands import embed_command

    options: dict[str, Any] = dict(prompt=prompt, layer=layer, cp=cp, cp_layer=cp_layer, alpha=alpha, tp=tp,
                                   tp_exit=tp_exit)
    with _ray_cluster(ray, ray_workers) as cluster:
        encode_chunks = None
        if cluster is not None:  # each actor loads the model itself and encodes whole chunks
            from .distributed import ModelSpec

            encode_chunks = cluster.embed_chunks(ModelSpec(model), options, batch_size)
        path = embed_command(file, output=out, model=model, text_field=text_field, batch_size=batch_size,
                             chunk_size=chunk_size, resume=resume, encode_chunks=encode_chunks, **options)
    _console().print(f"embeddings -> {path}")


def _version(value: bool) -> None:
    if value:
        from . import __version__

        print(f"steerlab {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", "-V", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """Steer causal LMs at inference time by reading and editing their activations."""


@app.command("list")
@_errors
def list_cmd(
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
) -> None:
    """List evaluation tasks, persona traits, CAA behaviours, ai_risk sets, STS tasks and methods with their options."""
    from .catalog import catalog

    cat = catalog()
    if as_json:
        print(json.dumps(cat.to_dict(), indent=1, default=str))
        return
    con = _console()
    groups = [("tasks", "steerlab eval TASK", cat.tasks), ("persona traits", "steerlab eval persona/TRAIT", cat.persona),
              ("CAA behaviours", "steerlab eval caa/BEHAVIOUR", cat.caa),
              ("ai_risk sets", "steerlab eval ai_risk/SET", cat.ai_risk),
              ("STS tasks", "steerlab eval sts --tasks NAME[:split]", cat.sts)]
    for title, usage, names in groups:
        con.print(f"[bold]{title}[/] ({len(names)}; {usage})")
        con.print("  " + ", ".join(names), soft_wrap=True)
    table = Table(title="methods (steerlab eval TASK --method NAME -p OPTION=VALUE)", title_justify="left")
    table.add_column("method")
    table.add_column("options (defaults)")
    table.add_column("what it does")
    for m in cat.methods:
        opts = ", ".join(f"{k}={v}" for k, v in m.options.items()) or "-"
        table.add_row(m.name, opts, m.summary)
    con.print(table)


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except SystemExit:
        raise
    except Exception as e:  # last resort: never print a traceback to users
        if os.environ.get("STEERLAB_DEBUG"):
            raise
        text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        _err_console().print(f"error: {type(e).__name__}: {text} (set STEERLAB_DEBUG=1 for a traceback)")
        sys.exit(1)


if __name__ == "__main__":
    main()
