"""``steerlab eval`` as a plain function: :func:`run_eval` (the typer command only parses and calls it).

Bad input raises ``ValueError`` with a one-line message (unknown task or method, bad limit,
folds, or method option). The run writes into ``out``: ``results.json``, ``results.md``,
``results.png`` and ``checkpoint/<config hash>.jsonl`` (resumed when the same command runs again).
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Any, Callable, Sequence

from ..checks import check_output_path

__all__ = ["run_eval", "parse_method_options", "parse_grid", "make_search", "resolve_model", "eval_command"]


def parse_method_options(options: Sequence[str] | None) -> dict[str, str]:
    """``["layer=3", "multiplier=2"]`` -> ``{"layer": "3", "multiplier": "2"}`` (values converted later)."""
    out: dict[str, str] = {}
    for opt in options or ():
        key, sep, value = opt.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ValueError(f"bad method option {opt!r}: use KEY=VALUE, e.g. layer=12")
        out[key] = value.strip()
    return out


def parse_grid(method: str, options: Sequence[str] | None) -> dict[str, tuple[Any, ...]]:
    """``["multiplier=1,2,4"]`` -> ``{"multiplier": (1.0, 2.0, 4.0)}``, each value converted to the method
    option's type (``ValueError`` for unknown methods, options or values)."""
    from ..methods import METHODS, make_method
    from ..methods.base import config_from_kwargs

    if method not in METHODS:
        make_method(method)  # the one "unknown method" message
    cfg_cls = METHODS[method][1]
    axes: dict[str, tuple[Any, ...]] = {}
    for opt in options or ():
        key, sep, text = opt.partition("=")
        key = key.strip().replace("-", "_")
        values = [v.strip() for v in text.split(",") if v.strip()]
        if not sep or not key or not values:
            raise ValueError(f"bad grid {opt!r}: use NAME=V1,V2,..., e.g. multiplier=1,2,4")
        if key in axes:
            raise ValueError(f"grid axis '{key}' is given twice")
        axes[key] = tuple(getattr(config_from_kwargs(cfg_cls, method, {key: v}), key) for v in values)
    return axes


def make_search(task: str, method: str, grid: Sequence[str] | None, options: dict[str, Any], *, grow: bool = True,
                select: str | None = None, margin: float | None = None, val_limit: int | None = None) -> Any:
    """The :class:`~steerlab.evals.runner.Search` of ``steerlab eval --grid ...`` (None without a grid).

    ``select`` replaces the task's metric (its tie-breaks and coherence floor stay), ``margin`` the
    coherence margin of a rule that has one."""
    from dataclasses import replace

    from .runner import Search, get_task

    if not grid:
        if select is not None or margin is not None or val_limit is not None or not grow:
            raise ValueError("--select, --coherence-margin, --val-limit and --no-grow need a --grid")
        return None
    axes = parse_grid(method, grid)
    both = sorted(set(axes) & set(options))
    if both:
        raise ValueError(f"'{both[0]}' is both a --param and a --grid axis: give it once")
    spec = get_task(task)
    rule = spec.select
    if select is not None:
        if select not in spec.metrics:
            raise ValueError(f"--select {select}: task '{task}' reports {', '.join(spec.metrics)}")
        rule = replace(rule, metric=select, tiebreak=tuple(m for m in rule.tiebreak if m != select))
    if margin is not None:
        if rule.coherence is None:
            raise ValueError(f"--coherence-margin: task '{task}' has no coherence measure")
        rule = replace(rule, margin=float(margin))
    return Search(axes, rule, grow=grow, val_limit=val_limit)


def resolve_model(model: Any, dtype: str | None = None, device: str | None = None) -> tuple[Any, str]:
    """A :class:`~steerlab.models.LoadedModel` and its id for the config hash.

    ``model`` is a loaded model, ``"tiny"`` / ``"tiny:<family>"`` (random test models) or anything
    :func:`steerlab.load_model` accepts.
    """
    from ..models import LoadedModel

    if isinstance(model, LoadedModel):
        return model, f"{model.name}|{model.source}"
    if not isinstance(model, str) or not model.strip():
        raise ValueError(f"bad model {model!r}")
    if model == "tiny" or model.startswith("tiny:"):
        from ..testing import tiny_model

        lm = tiny_model(model.partition(":")[2] or "llama")
    else:
        from ..models import load_model

        lm = load_model(model, dtype=dtype, device=device)
    return lm, model


def eval_command(task: str, method: str, model: str, limit: int | None, folds: int, out: Any, seed: int,
                 options: dict[str, Any], search: Any = None) -> str:
    """The ``steerlab eval`` command line that reproduces a run."""
    argv = ["steerlab", "eval", task, "--method", method, "--model", model]
    if limit is not None:
        argv += ["--limit", str(limit)]
    argv += ["--folds", str(folds), "--seed", str(seed), "--out", str(out)]
    for k, v in options.items():
        argv += ["--param", f"{k}={v}"]
    if search is not None:
        for k, values in search.axes.items():
            argv += ["--grid", f"{k}={','.join(str(v) for v in values)}"]
        if not search.grow:
            argv += ["--no-grow"]
        if search.rule is not None:
            argv += ["--select", search.rule.metric]
            if search.rule.coherence is not None:
                argv += ["--coherence-margin", f"{search.rule.margin:g}"]
        if search.val_limit is not None:
            argv += ["--val-limit", str(search.val_limit)]
    return shlex.join(argv)


def run_eval(
    task: str,
    method: str = "none",
    model: Any = "embedded",
    limit: int | None = None,
    folds: int = 2,
    out: str | os.PathLike[str] = "eval_out",
    seed: int = 0,
    *,
    split: str | None = None,
    root: Any = None,
    batch_size: int = 8,
    chunk_size: int = 8,
    progress: bool = True,
    report: bool = True,
    dtype: str | None = None,
    device: str | None = None,
    model_id: str | None = None,
    on_chunk: Callable[[int, list[int]], None] | None = None,
    method_options: dict[str, Any] | None = None,
    search: Any = None,
    shard: Any = None,
    **method_kwargs: Any,
) -> dict[str, Any]:
    """Evaluate ``method`` on ``task`` (``folds``-fold CV by question) and write the results and report to ``out``.

    ``method_kwargs`` configure the method (``layer=12, multiplier=2.0`` for CAA; ``k=48,
    alpha=15`` for ITI); strings are converted to the option's type. ``root`` is the data root
    (default: ``$STEERLAB_DATA``, then the user cache). ``model`` may be a loaded model; ``model_id``
    (e.g. the ``--model`` text it was loaded from) then names it in the command and config hash.
    ``method_options`` is the same as ``method_kwargs`` as a dict (use it for options whose names
    clash with this function's own keywords, e.g. CAA's ``batch_size``). ``search``
    (:class:`~steerlab.evals.runner.Search`, e.g. from :func:`make_search`) chooses options on each
    fold's validation questions first. ``shard`` (:meth:`steerlab.distributed.RayCluster.eval_shard`) runs the
    folds' fits and scoring in other processes, with the same results. Returns the results dict.
    """
    method_kwargs = {**(method_options or {}), **method_kwargs}
    from ..methods import make_method
    from .report import write_report
    from .runner import get_task, run_task

    get_task(task)  # unknown task -> ValueError before loading a model
    m = make_method(method, **method_kwargs)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"--limit must be a positive integer, got {limit!r}")
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 1:
        raise ValueError(f"--folds must be a positive integer, got {folds!r}")
    if folds == 1 and m.needs_fit:
        raise ValueError(f"method '{method}' is fitted: use --folds 2 or more (held-out evaluation)")
    if limit is not None and limit < folds:
        raise ValueError(f"--limit {limit} is smaller than --folds {folds}")
    check_output_path(out, folder=True)  # before the model loads
    lm, resolved_id = resolve_model(model, dtype, device)
    model_id = model_id or resolved_id
    command = eval_command(task, method, model_id.split("|")[0], limit, folds, out, seed, method_kwargs, search)
    results = run_task(lm, task, m, Path(out), limit=limit, folds=folds, seed=seed, split=split, root=root,
                       batch_size=batch_size, chunk_size=chunk_size, model_id=model_id, command=command,
                       progress=progress, on_chunk=on_chunk, search=search, shard=shard)
    if report:
        write_report(results, out)
    return results
