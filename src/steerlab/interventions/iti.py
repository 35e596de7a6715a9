"""Inference-Time Intervention (ITI, Li et al. 2023) as a steerlab method.

Recipe (see ``docs/iti.md``):

1. Labelled ``(prompt, answer, label)`` records, e.g. TruthfulQA's ``"Q: {question} A:"`` with
   each ``mc2_targets`` choice as the answer and 1 for a true choice.
2. One :func:`~steerlab.capture.capture` call over every ``heads.L`` site (the input of
   ``o_proj``) at the last token: activations ``(N, L, H, D)``.
3. An 80/20 train/validation split *by question* (seeded), one logistic probe per head, all
   fitted at once (:func:`~steerlab.probes.fit_head_probes`), the top ``K`` heads by
   validation accuracy.
4. Per selected head a unit direction (mass-mean by default, or the probe weights) scaled by
   ``alpha * sigma``: a :class:`~steerlab.vectors.SteeringVector` on ``heads.L`` sites.

Steering reuses :func:`steerlab.generate` / :class:`~steerlab.interventions.add.AddIntervention`:
``generate(lm, prompts, steer=fit.steer())`` shifts every generated token
(``where="generated"``, which includes the last prompt token so the first generated token is
steered). For multiple-choice scoring ITI steers from the answer start: :func:`answer_steers`.

:func:`fold_into_bias` bakes the shift into ``o_proj.bias`` (``bias += W_o @ shift``) for
zero-overhead serving; that steers *every* position (prompt included) and mutates the model
inside the ``with`` block only.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields, replace
from os import PathLike
from pathlib import Path
from typing import Any, Collection, Iterator, Mapping, Sequence, Union

import torch
from torch import nn

from ..artifacts import (InterventionArtifact, TensorSpec, VectorError, artifact_vector, check_vector,
                         load_intervention, save_intervention, vector_artifact)
from ..capture import capture
from ..checks import check_strength
from ..models import LoadedModel
from ..probes import (DIRECTIONS, TIES, Head, HeadProbes, fit_head_probes, head_directions, iti_vector,
                      projection_std, shift_vector)
from ..sites import Site, SiteKind
from ..vectors import SteeringVector
from .add import Steer, Where

__all__ = [
    "ITIConfig",
    "ITIExample",
    "ITIFit",
    "records_from_pairs",
    "reference_sigma_texts",
    "capture_heads",
    "split_by_group",
    "fit_iti",
    "answer_steers",
    "fold_into_bias",
    "ITI_KIND",
    "iti_artifact",
    "iti_from_artifact",
    "save_iti",
    "load_iti",
]

#: the artifact kind of a whole :class:`ITIFit`
ITI_KIND = "iti"


@dataclass(frozen=True)
class ITIConfig:
    """ITI hyper-parameters.

    ``k`` heads (ITI: 48), strength ``alpha`` (ITI: 15), ``direction`` ``"mass_mean"`` (ITI's
    "center of mass") or ``"probe"``, ``where`` the steered positions at generation
    (``"generated"``: every generated token). ``val_fraction`` of the *groups* (questions)
    goes to validation, shuffled with ``seed``; with ``val_fraction=0`` heads are ranked by
    training accuracy (:func:`fit_iti`'s ``val_groups`` replaces this split with a given one).
    ``c`` / ``standardize`` are passed to the probes; ``batch_size`` and ``chat`` to the capture;
    ``ties`` orders heads of equal accuracy (:meth:`steerlab.probes.HeadProbes.ranking`).
    """

    k: int = 48
    alpha: float = 15.0
    direction: str = "mass_mean"
    where: Where = "generated"
    val_fraction: float = 0.2
    seed: int = 42
    c: float = 1.0
    standardize: bool = False
    batch_size: int = 16
    chat: bool = False
    ties: str = "other"

    def __post_init__(self) -> None:
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise ValueError(f"k must be a positive integer, got {self.k!r}")
        check_strength(self.alpha, "alpha")
        if self.direction not in DIRECTIONS:
            raise ValueError(f"unknown direction {self.direction!r}: use one of {', '.join(DIRECTIONS)}")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if not self.c > 0:
            raise ValueError(f"c must be > 0, got {self.c}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.ties not in TIES:
            raise ValueError(f"unknown ties {self.ties!r}: use one of {', '.join(TIES)}")


@dataclass(frozen=True)
class ITIExample:
    """One probing example: ``prompt + answer`` is the text, ``label`` 1 (desired) or 0.

    ``group`` (default: the prompt) keeps all answers to one question on the same side of the
    train/validation split.
    """

    prompt: str
    answer: str
    label: int
    group: str | None = None

    @property
    def key(self) -> str:
        return self.prompt if self.group is None else self.group


Record = Union[ITIExample, tuple[str, str, int], tuple[str, str, int, str]]


def records_from_pairs(pairs: Sequence[Any]) -> list[ITIExample]:
    """ITI probing records from contrast pairs (:class:`steerlab.ContrastPair`: ``positive``, ``negative``,
    optional ``prompt``): ``prompt + positive`` labelled 1, ``prompt + negative`` labelled 0, both in one
    group so that a pair never straddles the train/validation split."""
    out: list[ITIExample] = []
    for i, p in enumerate(pairs):
        prompt = getattr(p, "prompt", None) or ""
        group = f"pair {i}: {prompt}"
        out += [ITIExample(prompt, p.positive, 1, group), ITIExample(prompt, p.negative, 0, group)]
    return out


def _examples(records: Sequence[Record]) -> list[ITIExample]:
    if isinstance(records, (str, ITIExample)):
        raise TypeError("records must be a list of ITIExample or (prompt, answer, label[, group]) tuples")
    out: list[ITIExample] = []
    for i, r in enumerate(records):
        if isinstance(r, (tuple, list)) and len(r) in (3, 4):
            r = ITIExample(*r)
        if not isinstance(r, ITIExample):
            raise TypeError(f"record {i} must be an ITIExample or a (prompt, answer, label[, group]) tuple")
        if not isinstance(r.prompt, str) or not isinstance(r.answer, str) or not r.answer:
            raise ValueError(f"record {i} needs a prompt text and a non-empty answer text")
        if isinstance(r.label, bool) or r.label not in (0, 1):
            raise ValueError(f"record {i} has label {r.label!r}; labels must be 0 or 1")
        out.append(r)
    if not out:
        raise ValueError("no records given")
    labels = {r.label for r in out}
    if len(labels) < 2:
        raise ValueError(f"all records have label {labels.pop()}: ITI needs both true (1) and false (0) answers")
    return out


def reference_sigma_texts(qa: Sequence[tuple[str, str]], seed: int = 42) -> list[str]:
    """ITI's sigma prompts: ``"Q: {question} A: {answer} Q: {random question}"`` for each ``(question, answer)``
    (honest_llama's ``tqa_gen_end_q`` activations, read at the last token). The random question is drawn,
    with ``seed``, from the questions given -- pass the fit questions only: the reference draws from all
    817, test questions included."""
    questions = sorted({q for q, _ in qa})
    if not questions:
        raise ValueError("no questions to build ITI's sigma prompts from")
    g = torch.Generator().manual_seed(int(seed))
    picks = torch.randint(len(questions), (len(qa),), generator=g).tolist()
    return [f"Q: {q} A: {a.strip()} Q: {questions[i]}" for (q, a), i in zip(qa, picks)]


def capture_heads(
    lm: LoadedModel,
    items: Sequence[Any],
    batch_size: int = 16,
    chat: bool = False,
    progress: bool = False,
    layers: Sequence[int] | None = None,
) -> torch.Tensor:
    """Last-token head activations ``(N, L, H, D)`` (float32, CPU) at every ``heads.L`` site.

    One :func:`~steerlab.capture.capture` call over all layers (or ``layers``); ``items`` are
    texts or ``(prompt, answer)`` pairs.
    """
    a = lm.adapter
    layer_list = list(range(a.n_layers)) if layers is None else [a.check_layer(int(l)) for l in layers]
    sites = [Site(SiteKind.HEADS, layer) for layer in layer_list]
    cap = capture(lm, items, sites, positions="last", batch_size=batch_size, chat=chat, progress=progress)
    n = cap.n_items
    x = torch.empty(n, len(layer_list), a.n_heads, a.head_dim)
    for i, site in enumerate(sites):
        x[:, i] = cap.acts.pop(site.key).view(n, a.n_heads, a.head_dim)
    return x


def split_by_group(groups: Sequence[str], val_fraction: float = 0.2, seed: int = 42) -> tuple[torch.Tensor, torch.Tensor]:
    """Row indices ``(train, val)`` with every group wholly on one side.

    Groups are shuffled with ``seed``; ``round(n_groups * val_fraction)`` of them (at least one
    when ``val_fraction > 0``, and never all) go to validation.
    """
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    order: dict[str, int] = {}
    for g in groups:
        order.setdefault(g, len(order))
    n_groups = len(order)
    if n_groups == 0:
        raise ValueError("no rows to split")
    n_val = 0 if val_fraction == 0 else max(1, round(n_groups * val_fraction))
    if n_val >= n_groups:
        raise ValueError(f"cannot split {n_groups} group(s) into train and validation: need at least 2")
    gen = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(n_groups, generator=gen)
    is_val = torch.zeros(n_groups, dtype=torch.bool)
    is_val[perm[:n_val]] = True
    gid = torch.tensor([order[g] for g in groups], dtype=torch.long)
    rows_val = is_val[gid]
    return (~rows_val).nonzero().flatten(), rows_val.nonzero().flatten()


def _given_split(groups: Sequence[str], val_groups: Collection[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Row indices ``(train, val)``: rows whose group is in ``val_groups`` are validation."""
    val = set(val_groups)
    is_val = torch.tensor([g in val for g in groups], dtype=torch.bool)
    if bool(is_val.all()):
        raise ValueError("every record is in val_groups: no rows left to train the probes")
    return (~is_val).nonzero().flatten(), is_val.nonzero().flatten()


@dataclass
class ITIFit:
    """A fitted ITI: the steering vector plus what produced it.

    ``directions`` ``(L, H, D)`` unit vectors and ``sigma`` ``(L, H)`` are given for every head
    (the vector uses the selected ``heads`` only), so FASB-style methods can reuse them.
    """

    vector: SteeringVector
    probes: HeadProbes
    heads: list[Head]
    directions: torch.Tensor
    sigma: torch.Tensor
    train_idx: torch.Tensor
    val_idx: torch.Tensor
    config: ITIConfig = field(default_factory=ITIConfig)

    def steer(self, strength: float = 1.0, where: Where | None = None) -> Steer:
        """A :class:`Steer` for :func:`steerlab.generate` (``where`` defaults to the config's)."""
        return Steer(self.vector, float(strength), self.config.where if where is None else where)

    def with_k(self, k: int, alpha: float | None = None, lm: LoadedModel | None = None) -> "ITIFit":
        """The same fit with the top ``k`` heads of the same ranking (and ``alpha``, default the config's):
        a sweep over ``k`` / ``alpha`` without fitting again. ``lm`` fills the vector's model fields."""
        by = "val" if self.val_idx.numel() else "train"
        heads = self.probes.top_k(k, by=by, ties=self.config.ties)
        cfg = replace(self.config, k=k, alpha=self.config.alpha if alpha is None else float(alpha))
        keep = {k2: v for k2, v in (self.vector.meta.extra or {}).items()
                if k2 not in ("alpha", "k", "selected_heads", "sigma", "val_acc")}
        keep["val_acc"] = [float(self.probes.val_acc[l, h]) for l, h in heads]
        vector = shift_vector(self.directions, self.sigma, heads, cfg.alpha, lm=lm, extra=keep)
        return ITIFit(vector, self.probes, heads, self.directions, self.sigma, self.train_idx, self.val_idx, cfg)


def fit_iti(
    lm: LoadedModel,
    records: Sequence[Record],
    config: ITIConfig | None = None,
    *,
    activations: torch.Tensor | None = None,
    progress: bool = False,
    sigma_texts: Sequence[str] | None = None,
    val_groups: Collection[str] | None = None,
) -> ITIFit:
    """Fit ITI from labelled ``(prompt, answer, label[, group])`` records.

    ``activations`` (``(N, L, H, D)``, from :func:`capture_heads` on the same records) skips the
    capture, e.g. to sweep ``k`` / ``alpha`` / ``direction`` without re-running the model.
    Mass-mean directions use every record (train and validation), as ITI does. ``sigma`` (the scale
    of each head's shift) is the std of the projection on the direction over the last tokens of
    ``sigma_texts`` when given -- ITI's reference takes it over separate ``"Q: {q} A: {answer} Q: {random
    question}"`` prompts (:func:`reference_sigma_texts`) -- and over the probe records otherwise.
    ``val_groups`` (group keys, e.g. questions) gives the probes' validation rows: the records of those
    groups rank the heads and the others train the probes, as ITI does with its own 80/20 split of the
    training fold (the harness passes its validation questions); without it ``config.val_fraction``
    of the groups are drawn with ``config.seed`` (:func:`split_by_group`).
    """
    cfg = config or ITIConfig()
    ex = _examples(records)
    a = lm.adapter
    total = a.n_layers * a.n_heads
    if cfg.k > total:
        raise ValueError(f"k={cfg.k} is larger than the number of heads ({a.n_layers} x {a.n_heads} = {total})")
    y = torch.tensor([r.label for r in ex], dtype=torch.long)
    if val_groups is None:
        train_idx, val_idx = split_by_group([r.key for r in ex], cfg.val_fraction, cfg.seed)
    else:
        train_idx, val_idx = _given_split([r.key for r in ex], val_groups)
    if int(y[train_idx].sum()) in (0, train_idx.numel()):
        raise ValueError("the training split has a single class; give more records or change the seed")
    if activations is None:
        x = capture_heads(lm, [(r.prompt, r.answer) for r in ex], cfg.batch_size, cfg.chat, progress)
    else:
        x = activations
        expected = (len(ex), a.n_layers, a.n_heads, a.head_dim)
        if tuple(x.shape) != expected:
            raise ValueError(f"activations have shape {tuple(x.shape)}; expected {expected} for these records")
    probes = fit_head_probes(x, y, train_idx, val_idx if val_idx.numel() else None, c=cfg.c,
                             standardize=cfg.standardize)
    heads = probes.top_k(cfg.k, by="val" if val_idx.numel() else "train", ties=cfg.ties)
    directions = head_directions(x, y, cfg.direction, probes)
    if sigma_texts is not None:
        if not sigma_texts:
            raise ValueError("sigma_texts is empty: give the prompts sigma is measured on, or None for the records")
        xs = capture_heads(lm, list(sigma_texts), cfg.batch_size, cfg.chat, progress)
        sigma = projection_std(xs, directions)
    else:
        sigma = projection_std(x, directions)
    extra = {"val_fraction": cfg.val_fraction if val_groups is None else "given", "seed": cfg.seed,
             "n_train": int(train_idx.numel()),
             "n_val": int(val_idx.numel()), "chat": cfg.chat,
             "val_acc": [float(probes.val_acc[l, h]) for l, h in heads],
             "sigma_from": "records" if sigma_texts is None else f"{len(sigma_texts)} sigma_texts"}
    vector = iti_vector(x, y, heads, direction=cfg.direction, alpha=cfg.alpha, probes=probes, lm=lm, extra=extra,
                        sigma=sigma)
    return ITIFit(vector, probes, heads, directions, sigma, train_idx, val_idx, cfg)


def answer_steers(vector: SteeringVector, answer_starts: Sequence[int] | torch.Tensor,
                  strength: float = 1.0) -> list[Steer]:
    """One :class:`Steer` per row that shifts every token from the row's answer start on.

    ITI's multiple-choice scoring: pass each row's prompt token count (the index of its first
    answer token among its real tokens).
    """
    starts = answer_starts.tolist() if isinstance(answer_starts, torch.Tensor) else list(answer_starts)
    return [Steer(vector, float(strength), int(s)) for s in starts]


def _out_shift(module: nn.Module, shift: torch.Tensor) -> torch.Tensor:
    """``W_o @ shift`` for an ``nn.Linear`` or a GPT-2 style ``Conv1D`` (weight ``(in, out)``), float32."""
    w = getattr(module, "weight", None)
    if not isinstance(w, torch.Tensor) or w.ndim != 2 or not hasattr(module, "bias"):
        raise ValueError(f"cannot fold into a {type(module).__name__}: need a linear layer with a bias slot")
    if isinstance(module, nn.Linear):
        return w.float() @ shift
    if type(module).__name__ == "Conv1D" and w.shape[0] == shift.shape[0]:
        return shift @ w.float()
    raise ValueError(f"cannot fold into a {type(module).__name__}: only nn.Linear and Conv1D are supported")


@contextmanager
def fold_into_bias(lm: LoadedModel, vector: SteeringVector, strength: float = 1.0) -> Iterator[LoadedModel]:
    """Inside the block, ``o_proj.bias += W_o @ (strength * shift)`` on every ``heads.L`` site.

    Equivalent to steering with ``where="all"`` (every position, prompt included) at no extra
    cost per token. This **mutates the model** for everyone using it while the block runs: where
    ``o_proj`` has no bias (Llama-style models) a bias parameter is created, and on exit it is
    removed again (``bias = None``); an existing bias is restored from a saved copy, so the
    model is bit-for-bit what it was. Only ``heads`` sites can be folded.
    """

    check_vector(vector, lm)
    strength = check_strength(strength)
    bad = [k for k in vector.vectors if Site.parse(k).kind is not SiteKind.HEADS]
    if bad:
        raise ValueError(f"only heads sites can be folded into o_proj.bias, not {', '.join(bad)}")
    plan: list[tuple[nn.Module, torch.Tensor]] = []
    with torch.no_grad():
        for key, v in vector.vectors.items():
            module = lm.adapter.o_proj(lm.model, Site.parse(key).layer)
            w = module.weight
            plan.append((module, _out_shift(module, v.to(w.device, torch.float32) * float(strength))))
    saved: list[tuple[nn.Module, torch.Tensor | None]] = []
    try:
        with torch.no_grad():
            for module, delta in plan:
                w = module.weight
                bias = module.bias
                if bias is None:
                    saved.append((module, None))
                    module.bias = nn.Parameter(delta.to(w.dtype), requires_grad=False)
                else:
                    saved.append((module, bias.detach().clone()))
                    bias.copy_((bias.float() + delta.to(bias.device)).to(bias.dtype))
        yield lm
    finally:
        with torch.no_grad():
            for module, old in reversed(saved):
                if old is None:
                    module.bias = None
                else:
                    module.bias.copy_(old)


# ---------------------------------------------------------------------------------------------
# artifacts: a whole fit in one file


def iti_artifact(fit: ITIFit, data: Mapping[str, Any] | None = None) -> InterventionArtifact:
    """The whole fit as an ``"iti"`` artifact: the steering vector (``heads.L``), the probes
    (``probes/weights`` ``(L, H, D)``, ``probes/biases``, ``probes/train_acc``, ``probes/val_acc``,
    ``probes/converged``), ``directions`` ``(L, H, D)``, ``sigma`` ``(L, H)``, the selected ``heads``
    ``(k, 2)``, the split (``split/train_idx``, ``split/val_idx``); the config and the probes' settings in
    ``params``, ``data`` as given (what it was fitted on)."""
    base = vector_artifact(fit.vector, kind=ITI_KIND)
    pr = fit.probes
    n_layers, n_heads, head_dim = pr.shape
    model = replace(base.model, n_layers=base.model.n_layers or n_layers, n_heads=n_heads, head_dim=head_dim,
                    heads_width=base.model.heads_width or n_heads * head_dim)
    tensors = dict(base.tensors)
    specs = dict(base.specs)
    lh, lhd = ("layers", "heads"), ("layers", "heads", "head_dim")
    parts: list[tuple[str, torch.Tensor, str, tuple[str, ...], bool]] = [
        ("probes/weights", pr.weights, "probe_weights", lhd, True),
        ("probes/biases", pr.biases, "probe_biases", lh, True),
        ("probes/train_acc", pr.train_acc, "probe_accuracy", lh, True),
        ("probes/val_acc", pr.val_acc, "probe_accuracy", lh, False),  # NaN without validation rows
        ("directions", fit.directions, "directions", lhd, True),
        ("sigma", fit.sigma, "scales", lh, True),
        ("heads", torch.tensor(fit.heads, dtype=torch.long).reshape(-1, 2), "selected_heads", ("*", "*"),
         True),
        ("split/train_idx", fit.train_idx.long(), "train_rows", ("*",), True),
        ("split/val_idx", fit.val_idx.long(), "val_rows", ("*",), True),
    ]
    if pr.converged is not None:
        parts.append(("probes/converged", pr.converged, "probe_converged", lh, True))
    for name, t, role, dims, finite in parts:
        tensors[name] = t.detach().to("cpu").contiguous()
        specs[name] = TensorSpec(role, dims=dims, finite=finite)
    params = {**asdict(fit.config), "probes": {"c": pr.c, "standardize": pr.standardize, "n_iter": pr.n_iter}}
    return replace(base, model=model, tensors=tensors, specs=specs, params=params, data=dict(data or {}))


def iti_from_artifact(art: InterventionArtifact) -> ITIFit:
    """Rebuild an :class:`ITIFit` from its ``"iti"`` artifact (see :func:`iti_artifact`)."""
    if art.kind != ITI_KIND:
        raise VectorError(f"a {art.what} is not an {ITI_KIND} artifact")
    t = art.tensors
    need = ["probes/weights", "probes/biases", "probes/train_acc", "probes/val_acc", "directions", "sigma",
            "heads", "split/train_idx", "split/val_idx"]
    missing = [n for n in need if n not in t]
    if missing:
        raise VectorError(f"the iti artifact lacks the tensor '{missing[0]}'")
    known = {f.name for f in fields(ITIConfig)}
    settings = dict(art.params.get("probes", {}))
    try:
        config = ITIConfig(**{k: v for k, v in art.params.items() if k in known})
    except (TypeError, ValueError) as e:
        raise VectorError(f"the iti artifact has bad hyper-parameters: {e}") from None
    probes = HeadProbes(t["probes/weights"], t["probes/biases"], t["probes/train_acc"], t["probes/val_acc"],
                        c=float(settings.get("c", config.c)),
                        standardize=bool(settings.get("standardize", config.standardize)),
                        n_iter=int(settings.get("n_iter", 0)), converged=t.get("probes/converged"))
    heads = [(int(layer), int(head)) for layer, head in t["heads"].tolist()]
    return ITIFit(artifact_vector(art), probes, heads, t["directions"], t["sigma"], t["split/train_idx"],
                  t["split/val_idx"], config)


def save_iti(fit: ITIFit, path: str | PathLike[str], data: Mapping[str, Any] | None = None) -> Path:
    """Save a whole fit (see :func:`iti_artifact`) atomically; ``data`` describes what it was fitted on.
    :func:`~steerlab.artifacts.load_vector` reads its steering vector, :func:`load_iti` all of it."""
    return save_intervention(iti_artifact(fit, data), path)


def load_iti(path: str | PathLike[str], lm: LoadedModel | None = None) -> ITIFit:
    """Read a fit saved by :func:`save_iti`; with ``lm``, refused unless it fits that model."""
    return iti_from_artifact(load_intervention(path, lm, kind=ITI_KIND))
