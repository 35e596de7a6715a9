"""The one forward engine every pass goes through.

Everything that runs the model to read or score text builds on this module:

* **padded batches** - :func:`encode_pair` / :func:`collate` (left padding, one position-id convention:
  :func:`position_ids` counts real tokens only, so a row's numbers do not depend on its batch);
* **a forward with the hook manager**, with or without gradients (:func:`forward`,
  :func:`token_logprobs`: teacher-forced log-probabilities of the continuation tokens);
* **a shared prefix run once** and its KV cache reused: :class:`BasePrefix` / :func:`base_prefix`
  (a prefix every row shares, e.g. a few-shot primer), :func:`prefix_cache` (each distinct per-row
  prefix once), :func:`suffix_batch` (the per-row rest, right padded on top of the cache);
* **read-outs of block outputs** at chosen positions (:func:`block_outputs`, :func:`last_token_hidden`),
  through hooks on the blocks as :mod:`steerlab.capture` reads them (``hidden_states[-1]`` is after the
  final norm, so it is never used).

It sits below capture, fitting, log-likelihood scoring, the evaluators and the encoder, and imports
only the model, hook and site layers.
"""

from __future__ import annotations

import copy
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch
from transformers import DynamicCache

from .hooks import HookManager, StepState, StopForward, positions_from_mask
from .models import LoadedModel
from .sites import Site, SiteKind

__all__ = [
    "EncodedPair",
    "Batch",
    "encode_pair",
    "collate",
    "position_ids",
    "forward",
    "forward_logits",
    "token_logprobs",
    "batches",
    "group_batches",
    "cache_shareable",
    "BasePrefix",
    "common_prefix_len",
    "base_prefix",
    "MIN_BASE_PREFIX",
    "copy_cache",
    "prefix_cache",
    "suffix_batch",
    "block_outputs",
    "last_token_hidden",
]


def position_ids(mask: torch.Tensor, offset: int = 0) -> torch.Tensor:
    """Position ids of a left-padded batch: ``offset`` + the index of each token among its row's real
    tokens (pads get ``offset + 1``: they are masked out, any value works)."""
    mask = mask.long()
    return offset + (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)


def forward(lm: LoadedModel, hooks: HookManager | None = None, *, grad: bool = False, **inputs: Any) -> Any:
    """``lm.model(**inputs)`` with ``hooks`` active (may be None), with gradients when ``grad`` (the model's
    own weights are never made trainable here: only tensors that already require grad, e.g. an
    intervention's parameters, receive them). Returns the model output (None when a hook ended the pass
    with :class:`~steerlab.hooks.StopForward`)."""
    out = None
    with _pass(hooks, grad):
        out = lm.model(**inputs)
    return out


@contextmanager
def _pass(hooks: HookManager | None, grad: bool) -> Iterator[None]:
    """One forward pass's context: the grad mode asked for, and ``hooks`` active (when given)."""
    with ExitStack() as stack:
        stack.enter_context(torch.enable_grad() if grad else torch.no_grad())
        if hooks is not None:
            stack.enter_context(hooks)
        yield


def token_logprobs(lm: LoadedModel, batch: "Batch", hooks: HookManager | None = None, *,
                   grad: bool = False) -> tuple[list[torch.Tensor], list[bool]]:
    """Teacher-forced log-probabilities of each row's continuation tokens (float32; on the model's device
    and differentiable when ``grad``, else detached on the CPU), and whether every one was the greedy
    choice. ``hooks`` (e.g. steering) get the batch's token positions and context lengths as state."""
    keep = int(batch.cont_lens.max()) + 1
    if hooks is not None:
        hooks.set_state(positions=positions_from_mask(batch.attention_mask), prompt_lens=batch.context_lens)
    with _pass(hooks, grad):
        logits = forward_logits(lm.model, batch, keep)
        logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)  # predicts the last keep-1 tokens
        targets = batch.input_ids[:, -(keep - 1):]
        tok_lp = logp.gather(-1, targets[..., None]).squeeze(-1)
        greedy = logp.argmax(-1) == targets
    rows, flags = [], []
    for r, n in enumerate(batch.cont_lens.tolist()):
        rows.append(tok_lp[r, -n:] if grad else tok_lp[r, -n:].detach().cpu())
        flags.append(bool(greedy[r, -n:].all()))
    return rows, flags


@dataclass(frozen=True)
class EncodedPair:
    """Token ids of ``context + continuation`` and where the continuation starts."""

    ids: tuple[int, ...]
    context_len: int
    n_chars: int

    @property
    def cont_len(self) -> int:
        return len(self.ids) - self.context_len


@dataclass
class Batch:
    """Left-padded tensors for a batch of :class:`EncodedPair`."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    context_lens: torch.Tensor  # real context tokens per row
    cont_lens: torch.Tensor  # continuation tokens per row


def encode_pair(tokenizer: Any, context: str, continuation: str, add_special_tokens: bool = True) -> EncodedPair:
    """Tokenize a (context, continuation) pair the lm-evaluation-harness way (see the module doc)."""
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    if not continuation:
        raise ValueError("empty continuation: nothing to score")
    whole = list(tokenizer(context + continuation, add_special_tokens=add_special_tokens)["input_ids"])
    ctx = list(tokenizer(context, add_special_tokens=add_special_tokens)["input_ids"]) if context else []
    if not ctx:  # nothing to condition on: start from BOS/EOS like lm-evaluation-harness
        start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        if start is None:
            raise ValueError("empty context and the tokenizer has no BOS/EOS token to start from")
        whole = [int(start)] + list(tokenizer(continuation, add_special_tokens=False)["input_ids"])
        ctx = [int(start)]
    if len(whole) <= len(ctx):
        raise ValueError(f"continuation {continuation!r} adds no tokens to its context")
    return EncodedPair(tuple(int(t) for t in whole), len(ctx), len(continuation))


def collate(pairs: Sequence[EncodedPair], pad_id: int, device: torch.device | str = "cpu") -> Batch:
    """Left-pad encoded pairs into one batch (position ids count real tokens only)."""
    width = max(len(p.ids) for p in pairs)
    ids = torch.full((len(pairs), width), int(pad_id), dtype=torch.long)
    mask = torch.zeros((len(pairs), width), dtype=torch.long)
    for r, p in enumerate(pairs):
        ids[r, width - len(p.ids):] = torch.tensor(p.ids, dtype=torch.long)
        mask[r, width - len(p.ids):] = 1
    pos = position_ids(mask)
    return Batch(ids.to(device), mask.to(device), pos.to(device),
                 torch.tensor([p.context_len for p in pairs], device=device),
                 torch.tensor([p.cont_len for p in pairs], device=device))


def forward_logits(model: Any, batch: Batch, keep: int) -> torch.Tensor:
    """Logits of the last ``keep`` positions (every model accepting ``logits_to_keep``, else sliced). Runs in
    the caller's grad mode (see :func:`forward`)."""
    kw = dict(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids,
              use_cache=False)
    try:
        return model(**kw, logits_to_keep=keep).logits[:, -keep:]
    except TypeError:
        return model(**kw).logits[:, -keep:]


def batches(order: Sequence[int], size: int) -> Iterator[list[int]]:
    for s in range(0, len(order), size):
        yield list(order[s:s + size])


def group_batches(order: Sequence[int], group: Sequence[int], size: int) -> Iterator[list[int]]:
    """Batches of whole groups (consecutive in ``order``) of at most ``size`` rows, unless one group is larger."""
    cur: list[int] = []
    k = 0
    while k < len(order):
        j = k
        while j < len(order) and group[order[j]] == group[order[k]]:
            j += 1
        g = list(order[k:j])
        if cur and len(cur) + len(g) > size:
            yield cur
            cur = []
        cur.extend(g)
        k = j
    if cur:
        yield cur


def cache_shareable(model: Any) -> bool:
    """Whether the model's KV cache can be split into a shared prefix and per-row suffixes."""
    try:
        cache = DynamicCache(config=model.config)
    except Exception:  # noqa: BLE001 - an exotic config: take the plain path
        return False
    sliding = getattr(cache, "is_sliding", None)
    if isinstance(sliding, (list, tuple)) and any(sliding):
        return False
    return not any(getattr(layer, "is_linear", False) for layer in getattr(cache, "layers", []))


@dataclass
class BasePrefix:
    """A token prefix shared by every scored row and its KV cache (batch 1), computed once
    without hooks (:func:`base_prefix`); :meth:`expand` hands out independent copies."""

    ids: tuple[int, ...]
    cache: Any

    @property
    def length(self) -> int:
        return len(self.ids)

    def expand(self, n: int) -> Any:
        """A new cache holding ``n`` copies of the base rows (the stored cache is left untouched)."""
        out = copy.deepcopy(self.cache)
        out.batch_select_indices(torch.zeros(n, dtype=torch.long, device=self.cache_device))
        return out

    @property
    def cache_device(self) -> torch.device:
        for layer in getattr(self.cache, "layers", []):
            keys = getattr(layer, "keys", None)
            if isinstance(keys, torch.Tensor):
                return keys.device
        return torch.device("cpu")


def common_prefix_len(seqs: Sequence[Sequence[int]]) -> int:
    """Length of the longest token prefix shared by all ``seqs`` (0 for none)."""
    if not seqs:
        return 0
    first = seqs[0]
    n = min(len(s) for s in seqs)
    for s in seqs[1:]:
        k = 0
        while k < n and s[k] == first[k]:
            k += 1
        n = k
        if n == 0:
            break
    return n


def base_prefix(lm: LoadedModel, ids: Sequence[int], stop_after: int | None = None) -> BasePrefix:
    """Run ``ids`` once (no padding, no steering) and keep its KV cache as a :class:`BasePrefix`.

    ``stop_after``: the pass ends after that block (its cache then holds layers ``0..stop_after`` only),
    for callers whose later passes stop there too (e.g. an embedding read-out layer)."""
    model = lm.model
    x = torch.tensor([list(ids)], dtype=torch.long, device=lm.device)
    cache = DynamicCache(config=model.config)
    if stop_after is not None:
        hooks = HookManager(model, lm.adapter).add(Site(SiteKind.RESIDUAL, int(stop_after)), _stop)
        forward(lm, hooks, input_ids=x, position_ids=position_ids(torch.ones_like(x)), past_key_values=cache,
                use_cache=True)
        return BasePrefix(tuple(int(t) for t in ids), cache)
    with torch.no_grad():
        try:
            model(input_ids=x, past_key_values=cache, use_cache=True, logits_to_keep=1)
        except TypeError:
            cache = DynamicCache(config=model.config)
            model(input_ids=x, past_key_values=cache, use_cache=True)
    return BasePrefix(tuple(int(t) for t in ids), cache)


def _stop(x: torch.Tensor, site: Site, state: StepState) -> None:
    raise StopForward


#: a shared base prefix is only worth its own forward pass from this many tokens on
MIN_BASE_PREFIX = 8


def copy_cache(cache: Any) -> Any:
    return copy.deepcopy(cache)


def suffix_batch(pairs: Sequence[EncodedPair], pad_id: int, device: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids and mask of each pair's suffix: its last context token + continuation."""
    suffixes = [p.ids[p.context_len - 1:] for p in pairs]
    sw = max(len(x) for x in suffixes)
    sids = torch.full((len(pairs), sw), int(pad_id), dtype=torch.long)
    smask = torch.zeros((len(pairs), sw), dtype=torch.long)
    for r, x in enumerate(suffixes):
        sids[r, : len(x)] = torch.tensor(x, dtype=torch.long)
        smask[r, : len(x)] = 1
    return sids.to(device), smask.to(device)


def last_token_hidden(
    lm: LoadedModel,
    items: Sequence[tuple[str, str]],
    layers: Sequence[int],
    *,
    add_special_tokens: bool = True,
    batch_size: int = 8,
) -> dict[int, torch.Tensor]:
    """The residual stream after each block in ``layers`` at the last token of ``prompt + answer``.

    ``items`` are ``(prompt, answer)`` texts, tokenized as one string (as
    :func:`steerlab.capture.capture` does). The prefix all items share (e.g. a few-shot primer) runs
    once, each distinct prompt once more on top of it, and the answers in length-sorted passes
    on top of their prompt's cache (the shared-context path of :func:`loglikelihood`), so this is
    several times faster than a full forward pass per item when prompts are long and shared.
    No hooks are installed (unsteered). Returns ``{layer: (len(items), hidden) float32 CPU}``.
    """
    layers = [int(x) for x in layers]
    tok = lm.tokenizer
    enc = []
    for prompt, answer in items:
        whole = tuple(int(t) for t in tok(prompt + answer, add_special_tokens=add_special_tokens)["input_ids"])
        ctx = list(tok(prompt, add_special_tokens=add_special_tokens)["input_ids"]) if prompt else []
        # the "context" is what the items may share: at most all but the last token
        n_ctx = max(1, min(len(ctx), len(whole) - 1))
        while n_ctx > 1 and whole[:n_ctx] != tuple(ctx[:n_ctx]):  # prompt/answer merged at the seam
            n_ctx -= 1
        enc.append(EncodedPair(whole, n_ctx, len(answer)))
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    out = {layer: torch.zeros(len(enc), lm.adapter.hidden_size) for layer in layers}
    keys: dict[tuple[int, ...], int] = {}
    group = [keys.setdefault(e.ids[: e.context_len - 1], len(keys)) for e in enc]
    shareable = [i for i, e in enumerate(enc) if e.context_len >= 2]
    plain = [i for i, e in enumerate(enc) if e.context_len < 2]
    order = sorted(shareable, key=lambda i: (-enc[i].context_len, group[i], -len(enc[i].ids)))
    base = None
    if len(set(group[i] for i in order)) > 1:
        pre = [enc[i].ids[: enc[i].context_len - 1] for i in order]
        blen = min(common_prefix_len(pre), min(len(p) for p in pre) - 1)
        if blen >= MIN_BASE_PREFIX:
            base = base_prefix(lm, pre[0][:blen])
    for idx in group_batches(order, group, 4 * batch_size):
        cache, pmask, gidx = prefix_cache(lm, [enc[i] for i in idx], [group[i] for i in idx], base, pad_id)
        sub_order = sorted(range(len(idx)), key=lambda r: -len(enc[idx[r]].ids))
        for s in range(0, len(idx), batch_size):
            sub = sub_order[s:s + batch_size]
            c = cache if s + batch_size >= len(idx) else copy_cache(cache)
            c.batch_select_indices(gidx[sub])
            hs = suffix_hidden(lm, [enc[idx[r]] for r in sub], pmask[gidx[sub]], c, layers, pad_id)
            for layer in layers:
                out[layer][[idx[r] for r in sub]] = hs[layer]
    for b in batches(sorted(plain, key=lambda i: -len(enc[i].ids)), batch_size):
        e = [EncodedPair(enc[i].ids, 0, 0) for i in b]
        width = max(len(x.ids) for x in e)
        ids = torch.full((len(b), width), int(pad_id), dtype=torch.long)
        mask = torch.zeros((len(b), width), dtype=torch.long)
        for r, x in enumerate(e):
            ids[r, width - len(x.ids):] = torch.tensor(x.ids)
            mask[r, width - len(x.ids):] = 1
        pos = position_ids(mask)
        last = torch.full((len(b),), width - 1, dtype=torch.long)
        hs = block_outputs(lm, layers, last, input_ids=ids.to(lm.device), attention_mask=mask.to(lm.device),
                            position_ids=pos.to(lm.device), use_cache=False)
        for layer in layers:
            out[layer][b] = hs[layer]
    return out


def prefix_cache(lm: LoadedModel, pairs: Sequence[EncodedPair], groups: Sequence[int], base: BasePrefix | None,
                  pad_id: int) -> tuple[Any, torch.Tensor, torch.Tensor]:
    """Run each distinct prefix ``ids[:context_len - 1]`` once (after ``base``); returns the cache (one row
    per distinct prefix), its attention mask and the row -> prefix index."""
    model, device = lm.model, lm.device
    first: dict[int, int] = {}
    for r, g in enumerate(groups):
        first.setdefault(g, r)
    uniq = list(first)
    gidx = torch.tensor([uniq.index(g) for g in groups], device=device)
    blen = 0 if base is None else base.length
    prefixes = [pairs[first[g]].ids[blen: pairs[first[g]].context_len - 1] for g in uniq]
    width = max(len(p) for p in prefixes)
    pids = torch.full((len(uniq), width), int(pad_id), dtype=torch.long)
    pmask = torch.zeros((len(uniq), width), dtype=torch.long)
    for i, p in enumerate(prefixes):
        pids[i, width - len(p):] = torch.tensor(p, dtype=torch.long)
        pmask[i, width - len(p):] = 1
    pids, pmask = pids.to(device), pmask.to(device)
    ppos = position_ids(pmask, offset=blen)
    if base is not None:
        pmask = torch.cat([torch.ones((len(uniq), blen), dtype=torch.long, device=device), pmask], dim=1)
    cache = base.expand(len(uniq)) if base is not None else DynamicCache(config=model.config)
    with torch.no_grad():
        try:
            model(input_ids=pids, attention_mask=pmask, position_ids=ppos, past_key_values=cache, use_cache=True,
                  logits_to_keep=1)
        except TypeError:  # a model without logits_to_keep
            cache = base.expand(len(uniq)) if base is not None else DynamicCache(config=model.config)
            model(input_ids=pids, attention_mask=pmask, position_ids=ppos, past_key_values=cache, use_cache=True)
    return cache, pmask, gidx


def suffix_hidden(lm: LoadedModel, pairs: Sequence[EncodedPair], pmask: torch.Tensor, cache: Any,
                   layers: Sequence[int], pad_id: int) -> dict[int, torch.Tensor]:
    device = lm.device
    sids, smask = suffix_batch(pairs, pad_id, device)
    sw = sids.shape[1]
    spos = pmask.sum(-1)[:, None] + torch.arange(sw, device=device)[None, :]
    last = smask.sum(-1) - 1  # right padded: each row's last real suffix position
    return block_outputs(lm, layers, last, input_ids=sids, attention_mask=torch.cat([pmask, smask], dim=1),
                          position_ids=spos, past_key_values=cache, use_cache=True)


def block_outputs(lm: LoadedModel, layers: Sequence[int], at: torch.Tensor, **kw: Any) -> dict[int, torch.Tensor]:
    """The residual stream after each block in ``layers`` (read by hooks on the block outputs, as
    :func:`steerlab.capture.capture` does) at position ``at[b]`` of row ``b``: ``{layer: (batch, hidden)
    float32 CPU}``. ``hidden_states`` is not used: its last entry is taken after the final norm. The pass
    stops after the deepest requested block."""
    rows = torch.arange(at.shape[0], device=lm.device)
    at = at.to(lm.device)
    deepest = max(layers)
    out: dict[int, torch.Tensor] = {}

    def read(x: torch.Tensor, site: Site, state: StepState) -> None:
        out[site.layer] = x[rows, at].float().cpu()
        if site.layer == deepest:
            raise StopForward
        return None

    hooks = HookManager(lm.model, lm.adapter).add_many((Site(SiteKind.RESIDUAL, layer), read) for layer in set(layers))
    forward(lm, hooks, **kw)
    return out
