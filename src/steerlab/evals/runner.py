"""Run one task x one method with k-fold cross-validation, resumably.

:func:`run_task` loads the task's items (``limit`` drawn with ``seed``), splits them into
``folds`` folds by question (:func:`~steerlab.evals.truthfulqa.kfold_by_question`), fits the
method on each fold's training questions (80/20 fit/validation split, seed 42, as ITI/FASB) and
scores that fold's held-out questions. Every scored item is appended as one JSON line to
``OUT/checkpoint/<config hash>.jsonl`` (one ``write`` per line, ``fsync`` after each chunk of
items). A run started again with the same configuration reads that file, skips the finished
items (and the fitting of folds with nothing left to score) and scores the rest; a torn last
line from a killed process is dropped. ``results.json`` is written atomically at the end and
contains no timings, so the same configuration gives the same file.

Tasks: ``truthfulqa_mc`` (MC-json items, MC1/MC2/MC3; ITI's instruction + QA primer, the ITI/FASB protocol),
``truthfulqa_mc_lmeval`` (the same without the instruction, as lm-evaluation-harness), ``truthfulqa_gen`` (CSV items, greedy
generation judged by ``run_task(..., judge=...)``, by default
:func:`~steerlab.evals.judges.default_judge`; the judge's name is part of the run's configuration and hash;
True / Info / True*Info), the six MC tasks (acc / acc_norm / acc_char) and the behaviour sets
``persona/<trait>``, ``caa/<behavior>``, ``ai_risk/<set>`` (p_matching / matching_rate).

Items are scored in fixed chunks of ``chunk_size`` consecutive held-out items of a fold, so a
resumed run batches exactly like an uninterrupted one (bit-identical scores) unless it was
killed in the middle of writing a chunk.

``run_task(..., shard=...)`` hands the work to other processes (:mod:`steerlab.distributed`: a Ray
cluster) as :class:`FoldJob` s: a fold's fit (or validation search) together with its chunks, or, for
a method that fits nothing, one chunk. A worker runs a job with :func:`run_fold_job`, the code the
in-process loop runs, on its own copy of the model, and returns the checkpoint records it made; this
process writes them, so the checkpoint, its resumption and ``results.json`` are the same either way.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from ..checks import check_output_path
from ..files import atomic_write_text
from ..methods import make_method
from ..methods.base import FittedMethod, Method
from ..progress import ProgressBar
from ..models import LoadedModel
from .gen_judge import GenerationJudge
from .report import RAW_METRICS
from .selection import Choice, Rule, Step, config_key, doubling, grid, search, stepping
from .truthfulqa import kfold_by_question, train_val_split
from .truthfulqa_gen import gen_judge

__all__ = ["TaskSpec", "TASK_NAMES", "get_task", "task_names", "config_hash", "Checkpoint", "run_task",
           "write_json_atomic", "RESULTS_FORMAT", "Evaluate", "Search", "GEN_MARGIN", "RAW_METRICS", "FoldJob",
           "FoldWork", "Shard", "MemoryCheckpoint", "run_fold_job"]

RESULTS_FORMAT = 1
Rows = list[dict[str, Any]]
#: ``evaluate(lm, items, fitted, batch_size, judge)`` -> one row per item (``judge`` is None unless the task
#: uses one)
Evaluate = Callable[[LoadedModel, Sequence[Any], FittedMethod, int, Any], Rows]


@dataclass(frozen=True)
class TaskSpec:
    """A task for the runner: where its items come from, how one chunk is scored, its metrics."""

    name: str
    dataset: str
    split: str | None
    metrics: tuple[str, ...]
    evaluate: Evaluate
    group: Callable[[Any, int], str]
    #: rows -> metrics (default: the mean of each metric over rows)
    aggregate: Callable[[Sequence[dict[str, Any]]], dict[str, float | None]] | None = None
    #: scored by a judge (``run_task``'s ``judge``, part of the configuration hash)
    uses_judge: bool = False
    #: how the task's prompts are built (part of the configuration hash when not empty)
    protocol: dict[str, Any] = field(default_factory=dict)
    #: how a validation search chooses hyper-parameters (:class:`Search`)
    select: Rule = Rule("mc2")


#: the coherence margin of the generation rule: a configuration is eligible when its mean log-prob per
#: token under the unsteered model is at most this many nats below the unsteered answers'
GEN_MARGIN = 0.5


@dataclass(frozen=True)
class Search:
    """A validation search inside each fold (issue #11): method options over ``axes``, scored on the fold's
    validation questions (the 20 % the method is not fitted on; the first ``val_limit`` of them), the
    best by ``rule`` (default: the task's), the grid grown past an edge the best point sits on
    (``grow``, at most ``max_rounds`` times: floats double / halve, integers step by their smallest gap)."""

    axes: dict[str, tuple[Any, ...]]
    rule: Rule | None = None
    grow: bool = True
    max_rounds: int = 3
    val_limit: int | None = None

    def __post_init__(self) -> None:
        if not self.axes:
            raise ValueError("a search needs at least one axis (--grid NAME=V1,V2,...)")
        for name, values in self.axes.items():
            if not values:
                raise ValueError(f"grid axis '{name}' has no values")
            if len(set(map(repr, values))) != len(values):
                raise ValueError(f"grid axis '{name}' repeats a value")
        if self.val_limit is not None and (isinstance(self.val_limit, bool) or self.val_limit < 1):
            raise ValueError(f"val_limit must be a positive integer, got {self.val_limit!r}")
        if self.max_rounds < 0:
            raise ValueError(f"max_rounds must be >= 0, got {self.max_rounds}")

    def to_dict(self, rule: Rule) -> dict[str, Any]:
        return {"axes": {k: list(v) for k, v in self.axes.items()}, "rule": rule.to_dict(), "grow": self.grow,
                "max_rounds": self.max_rounds, "val_limit": self.val_limit}

    def steps(self) -> dict[str, Step]:
        """Growth per numeric axis: positive floats double / halve; other numbers step by the smallest gap."""
        out: dict[str, Step] = {}
        for name, values in self.axes.items():
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
                continue
            vals = sorted(values)
            if all(isinstance(v, int) for v in vals):
                gap = min((b - a for a, b in zip(vals, vals[1:])), default=1)
                out[name] = stepping(int(gap), min(0, vals[0]), 10 ** 9)
            elif vals[0] > 0:
                out[name] = doubling(lo=vals[0] / 64, hi=vals[-1] * 64)
        return out


def _eval_truthfulqa(instruction: bool) -> Evaluate:
    def run(lm: LoadedModel, items: Sequence[Any], fm: FittedMethod, batch_size: int, judge: Any) -> Rows:
        from .truthfulqa import evaluate_truthfulqa_mc

        res = evaluate_truthfulqa_mc(lm, items, **fm.eval_kwargs(), instruction=instruction, batch_size=batch_size)
        return [{"mc1": r.mc1, "mc2": r.mc2, "mc3": r.mc3} for r in res.per_question]

    return run


def _eval_mc(task: str) -> Evaluate:
    def run(lm: LoadedModel, items: Sequence[Any], fm: FittedMethod, batch_size: int, judge: Any) -> Rows:
        from .multiple_choice import evaluate_prompts, to_prompts

        res = evaluate_prompts(lm, to_prompts(task, items), task=task, **fm.eval_kwargs(), batch_size=batch_size)
        return [{"acc": float(p["pred"] == p["label"]), "acc_norm": float(p["pred_norm"] == p["label"]),
                 "acc_char": float(p["pred_char"] == p["label"]), "pred": p["pred"], "label": p["label"]}
                for p in res.predictions]

    return run


def _eval_behavior(name: str) -> Evaluate:
    def run(lm: LoadedModel, items: Sequence[Any], fm: FittedMethod, batch_size: int, judge: Any) -> Rows:
        from .persona import evaluate_behavior

        res = evaluate_behavior(lm, items, name=name, **fm.eval_kwargs(), batch_size=batch_size)
        return [{"p_matching": p, "matching_rate": float(p > 0.5)} for p in res.probs]

    return run


def _eval_truthfulqa_gen(lm: LoadedModel, items: Sequence[Any], fm: FittedMethod, batch_size: int,
                         judge: Any) -> Rows:
    from .truthfulqa_gen import evaluate_truthfulqa_gen

    steer = fm.generate_steer()
    res = evaluate_truthfulqa_gen(lm, items, steer, judge, interventions=fm.interventions, batch_size=batch_size,
                                  progress=False, adaptive=fm.adaptive)
    rows = []
    for r in res.records:
        row: dict[str, Any] = {"truthful": r.truthful, "informative": r.informative, "answer": r.answer,
                               "judge": res.judge}
        if r.coherence is not None:
            row.update(r.coherence.to_dict())
        if r.steering is not None:  # FASB: whether and how the answer was steered
            row["steered"] = bool(r.steering)
            row["backtracked"] = any(e["kind"] == "backtrack" for e in r.steering)
            row["p_true"] = r.steering[0]["p_true"] if r.steering else None
            row["fasb_strength"] = r.steering[0]["strength"] if r.steering else None
        rows.append(row)
    return rows


def _aggregate_gen(rows: Sequence[dict[str, Any]]) -> dict[str, float | None]:
    """TruthfulQA generation: True / Info over the answers the judge decided; True*Info = their product;
    the coherence measures (mean log-prob per token under the unsteered model, repetition, degenerate and
    empty rates) over every answer."""
    t = [float(r["truthful"]) for r in rows if r.get("truthful") is not None]
    i = [float(r["informative"]) for r in rows if r.get("informative") is not None]
    mt, mi = _mean(t), _mean(i)
    out: dict[str, float | None] = {"true": mt, "info": mi, "true_info": None if mt is None or mi is None else mt * mi}
    for key, field_ in (("coherence", "loglik"), ("repetition", "repetition"), ("degenerate", "degenerate"),
                        ("empty", "empty")):
        vals = [float(r[field_]) for r in rows if r.get(field_) is not None]
        out[key] = _mean(vals) if len(vals) == len(rows) else None
    return out


def _question(it: Any, i: int) -> str:
    return str(it.question).strip()


def _index(it: Any, i: int) -> str:
    return str(i)


_MC_TASKS = ("copa", "storycloze", "snli", "mmlu", "sst2", "winogrande")
_BEHAVIOR_PREFIXES = ("persona/", "caa/", "ai_risk/")
TASK_NAMES: tuple[str, ...] = ("truthfulqa_mc", "truthfulqa_mc_lmeval", "truthfulqa_gen", *_MC_TASKS, "persona/<trait>", "caa/<behavior>",
                               "ai_risk/<set>")


def task_names() -> list[str]:
    """Every concrete task name the runner accepts (behaviour sets expanded from the data registry)."""
    from ..data.registry import dataset_names

    behav = [n for n in dataset_names() if n.startswith(_BEHAVIOR_PREFIXES)]
    return ["truthfulqa_mc", "truthfulqa_mc_lmeval", "truthfulqa_gen", *_MC_TASKS, *behav]


def get_task(name: str) -> TaskSpec:
    """The :class:`TaskSpec` of ``name``; ``ValueError`` for unknown tasks."""
    if name in ("truthfulqa_mc", "truthfulqa_mc_lmeval"):
        # ITI's / FASB's protocol: ITI's instruction, then the QA primer; `_lmeval`: the primer only, as
        # lm-evaluation-harness scores it (steerlab's default before issue #11)
        instruction = name == "truthfulqa_mc"
        return TaskSpec(name, "truthfulqa_mc", None, ("mc1", "mc2", "mc3"), _eval_truthfulqa(instruction), _question,
                        protocol={"instruction": instruction}, select=Rule("mc2", ("mc1",)))
    if name == "truthfulqa_gen":
        return TaskSpec(name, "truthfulqa", None,
                        ("true", "info", "true_info", "coherence", "repetition", "degenerate", "empty"),
                        _eval_truthfulqa_gen, _question, _aggregate_gen, uses_judge=True,
                        select=Rule("true_info", ("true",), coherence="coherence", margin=GEN_MARGIN))
    if name in _MC_TASKS:
        return TaskSpec(name, name, None, ("acc", "acc_norm", "acc_char"), _eval_mc(name), _index,
                        select=Rule("acc", ("acc_norm",)))
    if name.startswith(_BEHAVIOR_PREFIXES):
        from ..data.registry import get_spec

        try:
            get_spec(name)
        except (KeyError, ValueError):
            raise ValueError(f"unknown behaviour set '{name}'") from None
        return TaskSpec(name, name, None, ("p_matching", "matching_rate"), _eval_behavior(name), _question,
                        select=Rule("p_matching"))
    raise ValueError(f"unknown task '{name}': choose from {', '.join(TASK_NAMES)}")


# ----------------------------------------------------------------------------------- checkpoint


def config_hash(config: dict[str, Any]) -> str:
    """A short SHA-256 of the canonical JSON of ``config``."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class Checkpoint:
    """Append-only JSONL of finished items (``{"kind": "item", "fold", "index", ...}``) and fold fits.

    Each line is one ``os.write`` on an ``O_APPEND`` descriptor; :meth:`sync` fsyncs. On open,
    an unterminated last line (a write cut by a kill) is truncated away and unparsable lines
    are ignored.
    """

    def __init__(self, path: Path, config: dict[str, Any]) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._empty()
        if path.exists():
            self._load()
        new = not path.exists() or path.stat().st_size == 0
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        if new:
            self.append({"kind": "config", "config": config})
            self.sync()

    def _empty(self) -> None:
        self.items: dict[int, dict[str, Any]] = {}
        self.fits: dict[int, dict[str, Any]] = {}
        #: validation rows of a search: (fold, configuration key) -> index -> row
        self.vals: dict[tuple[int, str], dict[int, dict[str, Any]]] = {}
        #: a search's choice per fold
        self.selects: dict[int, dict[str, Any]] = {}

    def _load(self) -> None:
        data = self.path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end < len(data):  # torn tail
            with open(self.path, "r+b") as f:
                f.truncate(end)
                f.flush()
                os.fsync(f.fileno())
        for line in data[:end].splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            self._keep(rec)

    def _keep(self, rec: dict[str, Any]) -> None:
        kind = rec.get("kind")
        if kind == "item":
            self.items[int(rec["index"])] = rec
        elif kind == "fit":
            self.fits[int(rec["fold"])] = rec
        elif kind == "val":
            self.vals.setdefault((int(rec["fold"]), str(rec["point"])), {})[int(rec["index"])] = rec
        elif kind == "select":
            self.selects[int(rec["fold"])] = rec

    def append(self, rec: dict[str, Any]) -> dict[str, Any]:
        """Append one record as one line; returns it as it will read back (keys sorted, JSON types)."""
        line = json.dumps(rec, sort_keys=True)
        os.write(self.fd, (line + "\n").encode())
        back = json.loads(line)
        self._keep(back)
        return back

    def sync(self) -> None:
        os.fsync(self.fd)

    def close(self) -> None:
        os.close(self.fd)

    def fold_records(self, fold: int) -> list[dict[str, Any]]:
        """The records a fold's fit and validation search read back (fit, choice, validation rows)."""
        out = [r for r in (self.fits.get(fold), self.selects.get(fold)) if r is not None]
        for (f, _), rows in self.vals.items():
            if f == fold:
                out.extend(rows.values())
        return out


class MemoryCheckpoint(Checkpoint):
    """A :class:`Checkpoint` in memory, for a worker: it starts from ``records`` (what the real checkpoint
    holds of the job's fold) and keeps what is appended, as it reads back, in :attr:`new`."""

    def __init__(self, records: Sequence[dict[str, Any]] = ()) -> None:
        self._empty()
        self.new: list[dict[str, Any]] = []
        for rec in records:
            self._keep(rec)

    def append(self, rec: dict[str, Any]) -> dict[str, Any]:
        back = json.loads(json.dumps(rec, sort_keys=True))
        self._keep(back)
        self.new.append(back)
        return back

    def sync(self) -> None:
        pass

    def close(self) -> None:
        pass


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically (:func:`steerlab.files.atomic_write_text`)."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


# ------------------------------------------------------------------------------------------ run


def _mean(xs: Sequence[float]) -> float | None:
    return float(sum(xs) / len(xs)) if xs else None


def _summary(rows: Sequence[dict[str, Any]], spec: TaskSpec) -> dict[str, Any]:
    if spec.aggregate is not None:
        return {"n": len(rows), **spec.aggregate(rows)}
    return {"n": len(rows), **{m: _mean([float(r[m]) for r in rows]) for m in spec.metrics}}


@dataclass(frozen=True)
class FoldJob:
    """Work one process can do alone: fit fold ``fold`` on its training questions (or search its options on
    their validation part), then score ``chunks``, each chunk of held-out items in one evaluator call."""

    fold: int
    train: tuple[int, ...]
    chunks: tuple[tuple[int, ...], ...]


@dataclass(frozen=True)
class FoldWork:
    """What every :class:`FoldJob` of one run shares; picklable (no model: a worker brings its own).

    ``records``: what the checkpoint already holds of each fold's fit and search (a resumed run).
    ``judge``: the judge ``run_task`` was given (None: the default), made into a
    :class:`~steerlab.evals.gen_judge.GenerationJudge` on the worker's model."""

    task: str
    method: str
    method_config: dict[str, Any]
    items: tuple[Any, ...]
    groups: tuple[str, ...]
    batch_size: int
    chunk_size: int
    search: Search | None = None
    rule: Rule | None = None
    judge: Any = None
    records: dict[int, list[dict[str, Any]]] = field(default_factory=dict)


#: ``shard(work, jobs)`` runs every job elsewhere (:func:`run_fold_job` on a model of the same weights) and
#: yields ``(job, records)`` as each finishes, in any order
Shard = Callable[[FoldWork, Sequence[FoldJob]], Iterable[tuple[FoldJob, list[dict[str, Any]]]]]


def run_fold_job(lm: LoadedModel, work: FoldWork, job: FoldJob) -> list[dict[str, Any]]:
    """Do ``job`` on ``lm`` with the code :func:`run_task` runs in process; returns the checkpoint records it
    made (the fold's fit, its search's validation rows and choice, one ``item`` record per scored item)."""
    spec = get_task(work.task)
    method = make_method(work.method, **work.method_config)
    judge = gen_judge(lm, work.judge, batch_size=work.batch_size) if spec.uses_judge else None
    ckpt = MemoryCheckpoint(work.records.get(job.fold, ()))
    _run_fold(lm, method, spec, work.items, work.groups, job, ckpt, work.search, work.rule, work.batch_size,
              work.chunk_size, judge)
    return ckpt.new


def _run_fold(lm: LoadedModel, method: Method, spec: TaskSpec, items: Sequence[Any], groups: Sequence[str],
              job: FoldJob, ckpt: Checkpoint, search_: Search | None, rule: Rule | None, batch_size: int,
              chunk_size: int, judge: Any, progress: bool = False,
              after_chunk: Callable[[int, list[int]], None] | None = None) -> None:
    """Fit (or search) the fold, then score its chunks, appending every record to ``ckpt``."""
    f = job.fold
    if search_ is not None and rule is not None:
        fitted = _search_fold(lm, method, spec, items, job.train, ckpt, f, search_, rule, batch_size, chunk_size,
                              judge, progress)
    else:
        fitted = _fit_fold(lm, method, items, job.train, ckpt, f)
    for chunk in job.chunks:
        rows = spec.evaluate(lm, [items[i] for i in chunk], fitted, batch_size, judge)
        if len(rows) != len(chunk):
            raise RuntimeError(f"evaluator returned {len(rows)} rows for {len(chunk)} items")
        for i, row in zip(chunk, rows):
            ckpt.append({"kind": "item", "fold": f, "index": i, "group": groups[i], **row})
        ckpt.sync()
        if after_chunk is not None:
            after_chunk(f, list(chunk))


def run_task(
    lm: LoadedModel,
    task: str,
    method: Method,
    out: str | os.PathLike[str],
    *,
    limit: int | None = None,
    folds: int = 2,
    seed: int = 0,
    split: str | None = None,
    root: Any = None,
    batch_size: int = 8,
    chunk_size: int = 8,
    model_id: str | None = None,
    command: str | None = None,
    progress: bool = False,
    on_chunk: Callable[[int, list[int]], None] | None = None,
    judge: Any = None,
    search: Search | None = None,
    shard: Shard | None = None,
) -> dict[str, Any]:
    """Evaluate ``method`` on ``task`` with ``folds``-fold cross-validation; returns (and writes) results.

    ``search`` (:class:`Search`) chooses the method's options inside each fold on its validation
    questions before the held-out questions are scored; every validation row and each fold's choice
    are checkpointed, and ``results.json`` carries the choices (``selection``).

    ``folds=1`` (only for methods that fit nothing, e.g. ``none``) scores every item once.
    ``on_chunk(fold, indices)`` is called after each chunk is checkpointed (tests use it to
    count scored items and to interrupt a run). ``judge`` scores tasks that need one (``truthfulqa_gen``;
    default :func:`~steerlab.evals.judges.default_judge`); its ``name`` is part of the configuration and so
    of the checkpoint's hash: runs with different judges never resume each other. Other tasks refuse one.

    ``shard`` (:data:`Shard`, e.g. :meth:`steerlab.distributed.RayCluster.eval_shard`) runs the folds' fits and
    chunks in other processes (see the module doc); the results are those of the in-process run. The
    records of a job reach the checkpoint when the whole job is done, and ``on_chunk`` is called then.
    """
    from ..data.registry import load_dataset

    spec = get_task(task)
    if judge is not None and not spec.uses_judge:
        raise ValueError(f"task '{task}' is not scored by a judge: drop judge=")
    if shard is not None and isinstance(judge, GenerationJudge):
        raise ValueError("a GenerationJudge holds a model and cannot be sent to workers: pass the truth / info "
                         "judge itself (judge=), each worker adds its coherence scorer")
    given_judge = judge
    if spec.uses_judge:
        judge = gen_judge(lm, judge, batch_size=batch_size)
    rule = None
    if search is not None:
        if not method.needs_fit:
            raise ValueError(f"method '{method.name}' has no options to search: drop the grid")
        rule = search.rule or spec.select
        for point in grid(search.axes):  # unknown or bad options fail here, before anything is written
            _variant(method, point)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive integer, got {limit!r}")
    if not isinstance(folds, int) or folds < 1:
        raise ValueError(f"folds must be a positive integer, got {folds!r}")
    if folds == 1 and method.needs_fit:
        raise ValueError(f"method '{method.name}' is fitted: it needs folds >= 2 (held-out evaluation)")
    if chunk_size < 1 or batch_size < 1:
        raise ValueError("chunk_size and batch_size must be >= 1")
    validate = getattr(method, "validate", None)
    if validate is not None:  # options that depend on the model (e.g. CAA's layer), before anything is written
        validate(lm)
    check_output_path(out, folder=True)
    items = load_dataset(spec.dataset, split if split is not None else spec.split, root=root, limit=limit, seed=seed)
    if not items:
        raise ValueError(f"task '{task}' has no items")
    groups = [spec.group(it, i) for i, it in enumerate(items)]
    if folds == 1:
        fold_list: list[tuple[int, tuple[int, ...], tuple[int, ...]]] = [(0, (), tuple(range(len(items))))]
    else:
        if len(set(groups)) < folds:
            raise ValueError(f"limit {limit} gives {len(set(groups))} distinct question(s): too few for {folds} folds")
        fold_list = [(f.index, f.train, f.test) for f in kfold_by_question(groups, folds, seed)]

    config = {
        "format": RESULTS_FORMAT, "task": task, "split": split, "limit": limit, "seed": seed, "folds": folds,
        "method": method.name, "method_config": method.config_dict(),
        "model": model_id or f"{lm.name}|{lm.source}", "batch_size": batch_size, "chunk_size": chunk_size,
    }
    if spec.protocol:
        config["protocol"] = dict(spec.protocol)
    if spec.uses_judge:
        name = getattr(judge, "name", "")
        if not isinstance(name, str) or not name or name.startswith(";"):
            raise ValueError("the judge needs a non-empty `name` (it is part of the run's configuration)")
        config["judge"] = name
    if search is not None and rule is not None:
        config["search"] = search.to_dict(rule)
    h = config_hash(config)
    out_dir = Path(out)
    ckpt = Checkpoint(out_dir / "checkpoint" / f"{h}.jsonl", config)
    # the chunks still to score, per fold: consecutive held-out items, finished ones left out
    jobs: list[FoldJob] = []
    for f, train, test in fold_list:
        chunks = tuple(c for c in (tuple(i for i in test[s:s + chunk_size] if i not in ckpt.items)
                                   for s in range(0, len(test), chunk_size)) if c)
        if not chunks:
            continue
        if shard is not None and search is None and not method.needs_fit:
            jobs.extend(FoldJob(f, tuple(train), (c,)) for c in chunks)  # nothing to fit: a job per chunk
        else:
            jobs.append(FoldJob(f, tuple(train), chunks))
    todo = sum(len(c) for job in jobs for c in job.chunks)
    try:
        with ProgressBar(todo, progress and todo > 0, f"{task} [{method.name}]") as bar:
            def after_chunk(f: int, chunk: list[int]) -> None:
                bar.advance(len(chunk))
                if on_chunk is not None:
                    on_chunk(f, chunk)

            if shard is None:
                for job in jobs:
                    _run_fold(lm, method, spec, items, groups, job, ckpt, search, rule, batch_size, chunk_size,
                              judge, progress, after_chunk)
            elif jobs:
                work = FoldWork(task, method.name, method.config_dict(), tuple(items), tuple(groups), batch_size,
                                chunk_size, search, rule, given_judge,
                                {job.fold: ckpt.fold_records(job.fold) for job in jobs})
                for job, records in shard(work, jobs):
                    for rec in records:
                        # chunk jobs of one fold each bring the fold's (identical) fit record: keep the first
                        if rec.get("kind") == "fit" and int(rec["fold"]) in ckpt.fits:
                            continue
                        ckpt.append(rec)
                    ckpt.sync()
                    for chunk in job.chunks:
                        after_chunk(job.fold, list(chunk))
    finally:
        ckpt.close()

    per_fold = []
    for f, train, test in fold_list:
        rows = [ckpt.items[i] for i in test]
        fit_info = ckpt.fits.get(f, {}).get("info", {})
        entry = {"fold": f, "n_train": len(train), **_summary(rows, spec), "fit": fit_info}
        if f in ckpt.selects:
            entry["selection"] = {k: v for k, v in ckpt.selects[f].items() if k not in ("kind", "fold")}
        per_fold.append(entry)
    all_rows = [ckpt.items[i] for i in range(len(items))]
    results = {
        "format": RESULTS_FORMAT,
        "task": task,
        "method": method.name,
        "method_config": method.config_dict(),
        "model": config["model"],
        **({"judge": config["judge"]} if spec.uses_judge else {}),
        **({"protocol": config["protocol"]} if spec.protocol else {}),
        **({"search": config["search"]} if search is not None else {}),
        "limit": limit,
        "folds": folds,
        "seed": seed,
        "split": split,
        "config_hash": h,
        "command": command,
        "metric_names": list(spec.metrics),
        "metrics": _summary(all_rows, spec),
        "per_fold": per_fold,
        "items": [{k: v for k, v in r.items() if k != "kind"} for r in all_rows],
    }
    write_json_atomic(out_dir / "results.json", results)
    return results


def _fit_fold(lm: LoadedModel, method: Method, items: Sequence[Any], train: Sequence[int], ckpt: Checkpoint,
              fold: int) -> FittedMethod:
    if not method.needs_fit:
        fitted = method.fit(lm, [], [])
    else:
        tr, va = _split(train)
        fitted = method.fit(lm, [items[i] for i in tr], [items[i] for i in va])
    info = json.loads(json.dumps(fitted.info, default=str))
    if fold not in ckpt.fits:
        ckpt.append({"kind": "fit", "fold": fold, "info": info})
        ckpt.sync()
    return fitted


# ------------------------------------------------------------------------------ validation search


def _variant(method: Method, point: dict[str, Any]) -> Method:
    """``method`` with the options of ``point`` (a new instance from the method registry)."""
    return make_method(method.name, **{**method.config_dict(), **point})


def _split(train: Sequence[int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The fold's fit / validation questions: ITI's 80/20 split of its training questions (seed 42)."""
    return train_val_split(train, 0.2, 42) if len(train) >= 5 else (tuple(train), ())


def _search_fold(lm: LoadedModel, method: Method, spec: TaskSpec, items: Sequence[Any], train: Sequence[int],
                 ckpt: Checkpoint, fold: int, search_: Search, rule: Rule, batch_size: int, chunk_size: int,
                 judge: Any, progress: bool = False) -> FittedMethod:
    """Choose the method's options on the fold's validation questions, then fit the chosen variant."""
    tr, va = _split(train)
    if not va:
        raise ValueError(f"fold {fold} has {len(train)} training question(s): too few for a validation split")
    val = list(va)[: search_.val_limit]
    train_items, val_items = [items[i] for i in tr], [items[i] for i in va]
    strength = getattr(method, "strength_option", None)
    inference = tuple(getattr(method, "inference_options", ()))
    fits: dict[str, FittedMethod] = {}
    models: dict[str, Any] = {}

    def fitted_for(point: dict[str, Any]) -> FittedMethod:
        variant = _variant(method, point)
        validate = getattr(variant, "validate", None)
        if validate is not None:
            validate(lm)
        cfg = variant.config_dict()
        if inference:  # one fit per value of the other options; the inference options applied to it
            key = config_key({k: v for k, v in cfg.items() if k not in inference})
            if key not in models:
                models[key] = variant.fit_model(lm, train_items, val_items)  # type: ignore[attr-defined]
            return variant.fitted(models[key], lm)  # type: ignore[attr-defined]
        scale = None
        if strength is not None and isinstance(cfg.get(strength), (int, float)) and cfg[strength] != 0:
            scale = float(cfg[strength])  # fit once at strength 1, scale the steer
            variant = _variant(method, {**point, strength: 1.0})
        key = config_key(variant.config_dict())
        if key not in fits:
            fits[key] = variant.fit(lm, train_items, val_items)
        fm = fits[key]
        if scale is None:
            return fm
        return FittedMethod(fm.steer, (1.0 if fm.strength is None else fm.strength) * scale, fm.interventions,
                            fm.steer_from, {**fm.info, strength: scale})

    def evaluate(point: dict[str, Any] | None) -> dict[str, Any]:
        key = "unsteered" if point is None else config_key(point)
        done = ckpt.vals.setdefault((fold, key), {})
        todo = [i for i in val if i not in done]
        if todo:
            try:
                fm = FittedMethod() if point is None else fitted_for(point)
            except ValueError as e:  # e.g. a grown layer the model does not have
                return {"error": str(e)}
            label = f"fold {fold} validation {'unsteered' if point is None else point}"
            with ProgressBar(len(todo), progress, label) as bar:
                for c in range(0, len(todo), chunk_size):
                    chunk = todo[c:c + chunk_size]
                    rows = spec.evaluate(lm, [items[i] for i in chunk], fm, batch_size, judge)
                    for i, row in zip(chunk, rows):
                        ckpt.append({"kind": "val", "fold": fold, "point": key, "index": i, **row})
                    ckpt.sync()
                    bar.advance(len(chunk))
        return _summary([done[i] for i in val], spec)

    reference = evaluate(None) if rule.coherence else None
    choice: Choice = search(search_.axes, evaluate, rule, reference, search_.steps() if search_.grow else {},
                            search_.max_rounds if search_.grow else 0)
    if fold not in ckpt.selects:
        ckpt.append({"kind": "select", "fold": fold, "n_val": len(val), **choice.to_dict()})
        ckpt.sync()
    fitted = fitted_for(choice.config)
    info = json.loads(json.dumps({**fitted.info, "chosen": choice.config}, default=str))
    if fold not in ckpt.fits:
        ckpt.append({"kind": "fit", "fold": fold, "info": info})
        ckpt.sync()
    return fitted
