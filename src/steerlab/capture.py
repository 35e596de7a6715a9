"""Record activations at sites and token positions over a dataset, batched and padding-safe.

Two ways to read a dataset:

* :func:`capture` stores the activations: one ``(n_rows, width)`` float32 tensor per site, plus
  ``item_index`` / ``token_index`` saying which item and which of its tokens each row is.
  With ``positions="last"`` there is exactly one row per item, so ``acts[key][i]`` is item ``i``.
* :func:`capture_stats` / :func:`capture_pair_stats` stream: they keep only per-class counts,
  sums and second moments (float64), so memory stays flat in the dataset size.

Positions are counted over an item's *real* tokens (left padding excluded), so a batch gives
the same rows as one-by-one runs:

* ``"last"``   - the last token;
* ``LastK(k)`` - the last ``k`` tokens (fewer when the item is shorter);
* ``"all"``    - every token;
* ``Mask(rows)`` - an explicit per-item boolean mask over the item's tokens;
* ``"answer"`` - for ``(prompt, answer)`` items: the tokens after the prompt's tokens. The
  prompt is tokenized alone and with the answer appended; the answer span is every token past
  the prompt's token count.

Items are texts or ``(prompt, answer)`` pairs. The forward pass stops (:class:`StopForward`)
after the deepest layer a site needs, so later layers and the LM head never run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Hashable, Iterator, Sequence, Union

import torch

from .hooks import HookManager, StepState, StopForward, positions_from_mask
from .models import LoadedModel
from .progress import ProgressBar
from .runtime import forward, position_ids
from .sites import Site, site_width

__all__ = [
    "LastK",
    "Mask",
    "PositionSpec",
    "Item",
    "Captured",
    "Moments",
    "ClassStats",
    "PairStats",
    "capture",
    "capture_stats",
    "capture_pair_stats",
    "describe_positions",
    "parse_positions",
    "as_sites",
]


@dataclass(frozen=True)
class LastK:
    """The last ``k`` real tokens of each item."""

    k: int

    def __post_init__(self) -> None:
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise ValueError(f"LastK needs a positive integer k, got {self.k!r}")


@dataclass(frozen=True)
class Mask:
    """An explicit per-item mask: ``rows[i][t]`` selects token ``t`` of item ``i`` (real tokens only)."""

    rows: tuple[tuple[bool, ...], ...]

    def __init__(self, rows: Sequence[Sequence[bool]]) -> None:
        object.__setattr__(self, "rows", tuple(tuple(bool(v) for v in r) for r in rows))


PositionSpec = Union[str, LastK, Mask]
Item = Union[str, tuple[str, str]]
_NAMED = ("last", "all", "answer")
_REDUCE = ("none", "mean")


def parse_positions(spec: PositionSpec) -> PositionSpec:
    """Validate a position spec; also accepts ``"last_K"`` / ``"lastK"`` text for :class:`LastK`."""
    if isinstance(spec, (LastK, Mask)):
        return spec
    if isinstance(spec, str):
        s = spec.strip().lower()
        if s in _NAMED:
            return s
        tail = s[4:].lstrip("_:") if s.startswith("last") else ""
        if tail.isdigit():
            return LastK(int(tail))
    raise ValueError(
        f"bad positions {spec!r}: use 'last', 'all', 'answer', LastK(k) (or 'last_K') or Mask(rows)"
    )


def describe_positions(spec: PositionSpec) -> str:
    """A short stable text for metadata: ``last``, ``last_4``, ``all``, ``answer``, ``mask``."""
    spec = parse_positions(spec)
    if isinstance(spec, LastK):
        return f"last_{spec.k}"
    if isinstance(spec, Mask):
        return "mask"
    return spec


def as_sites(sites: Site | str | Sequence[Site | str]) -> list[Site]:
    """Normalise ``Site`` objects or ``"kind.layer"`` strings into a list of sites."""
    if isinstance(sites, (Site, str)):
        sites = [sites]
    out = [s if isinstance(s, Site) else Site.parse(s) for s in sites]
    if not out:
        raise ValueError("no sites given")
    return out


# ---------------------------------------------------------------------------------------------
# results


@dataclass
class Captured:
    """Stored activations.

    ``acts[key]`` is ``(n_rows, width)`` float32 on the CPU; row ``r`` comes from item
    ``item_index[r]`` at token ``token_index[r]`` (index among the item's real tokens; -1 when
    rows were averaged per item). Rows are ordered by item, then token.
    """

    acts: dict[str, torch.Tensor]
    item_index: torch.Tensor
    token_index: torch.Tensor
    n_items: int
    positions: str
    reduce: str = "none"

    def __getitem__(self, key: str | Site) -> torch.Tensor:
        return self.acts[key.key if isinstance(key, Site) else key]

    @property
    def keys(self) -> list[str]:
        return list(self.acts)

    @property
    def one_row_per_item(self) -> bool:
        return self.item_index.numel() == self.n_items and bool(
            (self.item_index == torch.arange(self.n_items)).all()
        )

    def per_item_mean(self, key: str | Site) -> torch.Tensor:
        """``(n_items, width)``: the mean of each item's rows (zeros for an item with no rows)."""
        x = self[key]
        return _mean_by_index(x, self.item_index, self.n_items)

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.acts.values()) + self.item_index.numel() * 16


def _mean_by_index(x: torch.Tensor, index: torch.Tensor, n: int) -> torch.Tensor:
    out = torch.zeros(n, x.shape[-1], dtype=x.dtype, device=x.device)
    out.index_add_(0, index.to(x.device), x)
    counts = torch.bincount(index, minlength=n).clamp(min=1).to(x.dtype).to(x.device)
    return out / counts[:, None]


@dataclass
class Moments:
    """Running count, sum and (optionally) sum of outer products of row vectors, in float64."""

    width: int
    second: bool = True
    count: int = 0
    sum: torch.Tensor = field(init=False)
    outer: torch.Tensor | None = field(init=False)

    def __post_init__(self) -> None:
        self.sum = torch.zeros(self.width, dtype=torch.float64)
        self.outer = torch.zeros(self.width, self.width, dtype=torch.float64) if self.second else None

    def update(self, x: torch.Tensor) -> None:
        """Add the rows of ``x`` (``(n, width)``)."""
        if x.numel() == 0:
            return
        x = x.detach().to("cpu", torch.float64)
        self.count += x.shape[0]
        self.sum += x.sum(0)
        if self.outer is not None:
            self.outer.addmm_(x.T, x)

    def merge(self, other: "Moments") -> "Moments":
        """Add another accumulator's data into this one (returns self)."""
        self.count += other.count
        self.sum += other.sum
        if self.outer is not None:
            if other.outer is None:
                raise ValueError("cannot merge moments without second moments into ones with them")
            self.outer += other.outer
        return self

    @property
    def mean(self) -> torch.Tensor:
        if self.count == 0:
            raise ValueError("no rows accumulated")
        return self.sum / self.count

    def second_moment(self) -> torch.Tensor:
        """``E[x x^T]`` (uncentered)."""
        if self.outer is None:
            raise ValueError("second moments were not accumulated (second=False)")
        if self.count == 0:
            raise ValueError("no rows accumulated")
        return self.outer / self.count

    def cov(self, unbiased: bool = True) -> torch.Tensor:
        """Covariance of the rows (``ddof=1`` when ``unbiased``)."""
        if self.outer is None:
            raise ValueError("second moments were not accumulated (second=False)")
        n = self.count
        if n < (2 if unbiased else 1):
            raise ValueError(f"need at least {2 if unbiased else 1} rows for a covariance, have {n}")
        mu = self.sum / n
        return (self.outer - n * torch.outer(mu, mu)) / (n - 1 if unbiased else n)


@dataclass
class ClassStats:
    """Per-class :class:`Moments` of one site's rows."""

    width: int
    second: bool = True
    classes: dict[Hashable, Moments] = field(default_factory=dict)

    def update(self, x: torch.Tensor, labels: Sequence[Hashable]) -> None:
        """Add rows ``x`` with one label per row."""
        if len(labels) != x.shape[0]:
            raise ValueError(f"{len(labels)} labels for {x.shape[0]} rows")
        groups: dict[Hashable, list[int]] = {}
        for i, lab in enumerate(labels):
            groups.setdefault(lab, []).append(i)
        for lab, idx in groups.items():
            m = self.classes.get(lab)
            if m is None:
                m = self.classes[lab] = Moments(self.width, self.second)
            m.update(x[idx])

    def __getitem__(self, label: Hashable) -> Moments:
        return self.classes[label]

    @property
    def labels(self) -> list[Hashable]:
        return list(self.classes)

    def count(self, label: Hashable) -> int:
        return self.classes[label].count

    def mean(self, label: Hashable) -> torch.Tensor:
        return self.classes[label].mean

    def cov(self, label: Hashable, unbiased: bool = True) -> torch.Tensor:
        return self.classes[label].cov(unbiased)

    def total(self) -> Moments:
        """All classes pooled."""
        out = Moments(self.width, self.second)
        for m in self.classes.values():
            out.merge(m)
        return out


@dataclass
class PairStats:
    """Streaming statistics of paired items: positives, negatives and their differences.

    ``diff`` accumulates ``pos_i - neg_i`` per pair (one row per pair, items reduced to one row
    each), the input of PCA on paired differences.
    """

    pos: Moments
    neg: Moments
    diff: Moments

    @property
    def mean_difference(self) -> torch.Tensor:
        return self.pos.mean - self.neg.mean


# ---------------------------------------------------------------------------------------------
# batching


@dataclass(frozen=True)
class _Prepared:
    """Formatted texts and per-item prompt token counts (0 for plain texts)."""

    texts: list[str]
    prompt_lens: list[int]
    lengths: list[int]
    add_special_tokens: bool


@dataclass
class _Batch:
    """Rows of one forward pass: ``acts[key]`` is ``(n_rows, width)`` float32 on the CPU."""

    items: list[int]
    acts: dict[str, torch.Tensor]
    item_index: torch.Tensor
    token_index: torch.Tensor


def _check_items(items: Sequence[Item]) -> None:
    if isinstance(items, str):
        raise TypeError("items must be a list of texts or (prompt, answer) pairs, not a single text")
    if len(items) == 0:
        raise ValueError("no items given")
    for i, it in enumerate(items):
        if isinstance(it, str):
            if not it:
                raise ValueError(f"item {i} is an empty string")
        elif isinstance(it, (tuple, list)) and len(it) == 2 and all(isinstance(s, str) for s in it):
            if not it[1]:
                raise ValueError(f"item {i} has an empty answer")
        else:
            kind = type(it).__name__
            raise TypeError(f"item {i} must be a text or a (prompt, answer) pair of texts, got {kind}")


def _prepare(lm: LoadedModel, items: Sequence[Item], chat: bool, need_answer: bool) -> _Prepared:
    """Format items (chat template on the prompt part) and count prompt and full token lengths."""
    _check_items(items)
    add_special = not chat
    texts: list[str] = []
    prompt_texts: list[str | None] = []
    for it in items:
        if isinstance(it, str):
            if need_answer:
                raise ValueError("positions='answer' needs (prompt, answer) items, got a plain text")
            texts.append(lm.format_prompt(it, chat=chat))
            prompt_texts.append(None)
        else:
            prompt = lm.format_prompt(it[0], chat=chat)
            texts.append(prompt + it[1])
            prompt_texts.append(prompt)
    tok = lm.tokenizer
    lengths = [len(ids) for ids in tok(texts, add_special_tokens=add_special)["input_ids"]]
    to_count = [p for p in prompt_texts if p is not None]
    counted = iter(tok(to_count, add_special_tokens=add_special)["input_ids"]) if to_count else iter(())
    prompt_lens = [0 if p is None else len(next(counted)) for p in prompt_texts]
    for i, (pl, n) in enumerate(zip(prompt_lens, lengths)):
        if n == 0:
            raise ValueError(f"item {i} tokenizes to no tokens")
        if need_answer and pl >= n:
            raise ValueError(f"item {i}: the answer adds no tokens after the prompt's {pl} tokens")
    return _Prepared(texts, prompt_lens, lengths, add_special)


def _selection(
    spec: PositionSpec, mask: torch.Tensor, prompt_lens: torch.Tensor, item_ids: list[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Bool ``(batch, seq)`` selection of the tokens to record, and per-token real-token index."""
    real = mask.bool()
    pos = torch.where(real, mask.long().cumsum(-1) - 1, torch.full_like(mask.long(), -1))
    n_real = real.sum(-1, keepdim=True)
    if spec == "last":
        sel = real & (pos == n_real - 1)
    elif spec == "all":
        sel = real
    elif spec == "answer":
        sel = real & (pos >= prompt_lens[:, None])
    elif isinstance(spec, LastK):
        sel = real & (pos >= n_real - spec.k)
    elif isinstance(spec, Mask):
        sel = torch.zeros_like(real)
        for b, i in enumerate(item_ids):
            row = spec.rows[i]
            n = int(n_real[b])
            if len(row) != n:
                raise ValueError(f"mask for item {i} has {len(row)} entries; the item has {n} tokens")
            sel[b, real[b]] = torch.tensor(row, dtype=torch.bool)
    else:  # pragma: no cover - parse_positions guarantees the cases above
        raise ValueError(f"bad positions {spec!r}")
    return sel, pos


def _recorder(store: dict[str, torch.Tensor], sel: dict[str, torch.Tensor]) -> Any:
    """A read-only hook that keeps the selected rows (float32, CPU) of its site."""

    def fn(x: torch.Tensor, site: Site, state: StepState) -> None:
        store[site.key] = x[sel["mask"]].detach().to("cpu", torch.float32)
        return None

    return fn


def _stopper(x: torch.Tensor, site: Site, state: StepState) -> None:
    raise StopForward


def _order(prep: _Prepared, sort_by_length: bool, group: int) -> list[int]:
    """Item order for batching: groups of ``group`` consecutive items kept together, longest first."""
    n = len(prep.texts)
    if not sort_by_length:
        return list(range(n))
    groups = [list(range(s, min(s + group, n))) for s in range(0, n, group)]
    groups.sort(key=lambda g: -max(prep.lengths[i] for i in g))
    return [i for g in groups for i in g]


def _iter_batches(
    lm: LoadedModel,
    items: Sequence[Item],
    sites: list[Site],
    spec: PositionSpec,
    batch_size: int,
    chat: bool,
    reduce: str,
    progress: bool,
    sort_by_length: bool = True,
    group: int = 1,
    label: str = "capture",
) -> Iterator[_Batch]:
    """Run the model over ``items`` in batches and yield the selected rows of every site."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if reduce not in _REDUCE:
        raise ValueError(f"bad reduce {reduce!r}: use 'none' or 'mean'")
    spec = parse_positions(spec)
    if isinstance(spec, Mask) and len(spec.rows) != len(items):
        raise ValueError(f"Mask has {len(spec.rows)} rows for {len(items)} items")
    adapter = lm.adapter
    sites = [s.normalized(adapter) for s in sites]
    prep = _prepare(lm, items, chat, need_answer=spec == "answer")
    order = _order(prep, sort_by_length, group)
    if group > 1 and batch_size % group:
        batch_size += group - batch_size % group

    store: dict[str, torch.Tensor] = {}
    sel: dict[str, torch.Tensor] = {}
    hm = HookManager(lm.model, adapter)
    for site in sorted(set(Site(s.kind, s.layer) for s in sites)):
        hm.add(site, _recorder(store, sel))
    hm.add(Site.residual(max(s.layer for s in sites)), _stopper)
    keys = sorted({s.key for s in sites})

    with ProgressBar(len(items), progress, label) as bar:
        for start in range(0, len(order), batch_size):
            ids = order[start:start + batch_size]
            texts = [prep.texts[i] for i in ids]
            enc = lm.encode(texts, chat=False, add_special_tokens=prep.add_special_tokens)
            mask = enc["attention_mask"]
            plens = torch.tensor([prep.prompt_lens[i] for i in ids], dtype=torch.long)
            m, pos = _selection(spec, mask.cpu(), plens, ids)
            sel["mask"] = m.to(mask.device)
            store.clear()
            hm.set_state(positions=positions_from_mask(mask), prompt_lens=plens.to(mask.device))
            # no_grad, not inference_mode: results stay usable with autograd
            forward(lm, hm, input_ids=enc["input_ids"], attention_mask=mask, position_ids=position_ids(mask),
                    use_cache=False)
            missing = [k for k in keys if k not in store]
            if missing:
                raise RuntimeError(f"no activations recorded at {', '.join(missing)}")
            local = m.nonzero(as_tuple=False)
            local_item, tok = local[:, 0], pos[local[:, 0], local[:, 1]]
            acts = {k: store[k] for k in keys}
            if reduce == "mean":
                acts = {k: _mean_by_index(v, local_item, len(ids)) for k, v in acts.items()}
                local_item = torch.arange(len(ids))
                tok = torch.full((len(ids),), -1, dtype=torch.long)
            item_index = torch.tensor(ids, dtype=torch.long)[local_item]
            yield _Batch(ids, acts, item_index, tok)
            bar.advance(len(ids))


# ---------------------------------------------------------------------------------------------
# public entry points


def capture(
    lm: LoadedModel,
    items: Sequence[Item],
    sites: Site | str | Sequence[Site | str],
    positions: PositionSpec = "last",
    batch_size: int = 8,
    chat: bool = False,
    progress: bool = False,
    reduce: str = "none",
    sort_by_length: bool = True,
) -> Captured:
    """Record activations of ``items`` at ``sites`` and ``positions``.

    ``reduce="mean"`` averages each item's selected rows into one row per item (e.g. the mean
    over an answer span). Batches are formed from items of similar length (``sort_by_length``);
    the result is always in item order.
    """
    site_list = as_sites(sites)
    spec = parse_positions(positions)
    chunks: dict[str, list[torch.Tensor]] = {}
    items_idx: list[torch.Tensor] = []
    toks: list[torch.Tensor] = []
    batches = _iter_batches(lm, items, site_list, spec, batch_size, chat, reduce, progress, sort_by_length)
    for batch in batches:
        for k, v in batch.acts.items():
            chunks.setdefault(k, []).append(v)
        items_idx.append(batch.item_index)
        toks.append(batch.token_index)
    item_index = torch.cat(items_idx)
    token_index = torch.cat(toks)
    order = torch.argsort(item_index, stable=True)
    identity = bool((order == torch.arange(order.numel())).all())
    acts = {}
    for k in list(chunks):  # one site at a time, so the transient copies stay small
        x = torch.cat(chunks.pop(k))
        acts[k] = x if identity else x[order]
        del x
    if not identity:
        item_index, token_index = item_index[order], token_index[order]
    return Captured(acts, item_index, token_index, len(items), describe_positions(spec), reduce)


def capture_stats(
    lm: LoadedModel,
    items: Sequence[Item],
    labels: Sequence[Hashable],
    sites: Site | str | Sequence[Site | str],
    positions: PositionSpec = "last",
    batch_size: int = 8,
    chat: bool = False,
    progress: bool = False,
    reduce: str = "none",
    second_moments: bool = True,
) -> dict[str, ClassStats]:
    """Stream per-class count, sum and sum of outer products (float64) of every site's rows.

    Each recorded row counts once under its item's label (with multi-token positions and
    ``reduce="none"`` every selected token is a sample). Memory is ``O(width^2)`` per class and
    site, independent of the number of items; ``second_moments=False`` keeps only means.
    """
    if len(labels) != len(items):
        raise ValueError(f"{len(labels)} labels for {len(items)} items")
    site_list = as_sites(sites)
    widths = {s.key: site_width(lm.adapter, s.kind) for s in site_list}
    stats = {k: ClassStats(w, second_moments) for k, w in widths.items()}
    batches = _iter_batches(lm, items, site_list, positions, batch_size, chat, reduce, progress,
                            label="stats")
    for batch in batches:
        row_labels = [labels[i] for i in batch.item_index.tolist()]
        for k, v in batch.acts.items():
            stats[k].update(v, row_labels)
    return stats


def capture_pair_stats(
    lm: LoadedModel,
    pairs: Sequence[tuple[Item, Item]],
    sites: Site | str | Sequence[Site | str],
    positions: PositionSpec = "last",
    batch_size: int = 8,
    chat: bool = False,
    progress: bool = False,
    second_moments: bool = True,
) -> dict[str, PairStats]:
    """Stream statistics of ``(positive, negative)`` pairs: each side, and ``positive - negative``.

    Every item is reduced to one row (its only row for ``"last"``, else the mean of its
    selected tokens). Both sides of a pair run in the same batch, so only the current batch is
    ever held in memory.
    """
    if len(pairs) == 0:
        raise ValueError("no pairs given")
    for i, p in enumerate(pairs):
        if not isinstance(p, (tuple, list)) or len(p) != 2:
            raise TypeError(f"pair {i} must be a (positive, negative) tuple")
    items: list[Item] = [side for p in pairs for side in p]
    spec = parse_positions(positions)
    if isinstance(spec, Mask):
        raise ValueError("Mask positions are not supported for pair statistics; use capture() instead")
    site_list = as_sites(sites)
    widths = {s.key: site_width(lm.adapter, s.kind) for s in site_list}
    out = {k: PairStats(Moments(w, second_moments), Moments(w, second_moments), Moments(w, second_moments))
           for k, w in widths.items()}
    reduce = "none" if spec == "last" else "mean"
    for batch in _iter_batches(lm, items, site_list, spec, max(batch_size, 2), chat, reduce, progress,
                               group=2, label="pair stats"):
        idx = batch.item_index
        is_pos = idx % 2 == 0
        pos_rows, neg_rows = is_pos.nonzero().flatten(), (~is_pos).nonzero().flatten()
        # pair p's rows: positive 2p, negative 2p+1 -> sort both sides by pair index
        pos_rows = pos_rows[torch.argsort(idx[pos_rows])]
        neg_rows = neg_rows[torch.argsort(idx[neg_rows])]
        if not torch.equal(idx[pos_rows] // 2, idx[neg_rows] // 2):  # pragma: no cover - group=2 prevents it
            raise RuntimeError("a pair was split across batches")
        for k, v in batch.acts.items():
            st = out[k]
            st.pos.update(v[pos_rows])
            st.neg.update(v[neg_rows])
            st.diff.update(v[pos_rows] - v[neg_rows])
    return out
