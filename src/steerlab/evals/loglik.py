"""Log-likelihood of continuations given contexts, batched, optionally under steering.

``loglikelihood(lm, [(context, continuation), ...])`` returns, per pair, the sum of the
log-probabilities of the continuation's tokens given the context (and their count, so the
mean per token is available), as lm-evaluation-harness and TruthfulQA compute it:

* tokenization: the pair is split the way lm-evaluation-harness does it: trailing spaces
  of the context move to the continuation, ``context + continuation`` is tokenized as one
  string and the tokens after ``len(tokenize(context))`` are the continuation's. With
  ``add_special_tokens=True`` a BOS token (if the tokenizer adds one) belongs to the context; an
  empty context is replaced by the BOS (or EOS) token;
* batching: rows are sorted by length and left padded; position ids count real tokens only,
  so a row's scores do not depend on the batch it is in (tested against one-by-one scoring and
  against a manual ``log_softmax`` of ``model(...).logits``). Only the logits of the continuation
  positions are computed (``logits_to_keep``).

Steering: ``steer`` (a :class:`~steerlab.vectors.SteeringVector` or
:class:`~steerlab.interventions.Steer`) is added through steerlab's
:class:`~steerlab.hooks.HookManager` + :class:`~steerlab.interventions.AddIntervention` with a
per-row integer start position, so it touches the answer only:

* ``steer_from="last_prompt"`` (default): the last context token and every continuation token,
  i.e. every position whose output predicts a continuation token; nothing before is changed;
* ``steer_from="answer"``: the continuation tokens only, as ITI/FASB do for MC scoring (the
  first continuation token's own probability is then unsteered).

Other :class:`~steerlab.interventions.Intervention` objects (``interventions=[...]``) are
installed with ``prompt_lens`` = the context length of each row, so an intervention with
"generated" semantics acts on the answer exactly like ``steer_from="last_prompt"``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterator, Literal, Sequence

import torch

from ..hooks import HookManager, StepState, StopForward, positions_from_mask
from ..interventions.add import AddIntervention, Steer
from ..interventions.base import Intervention
from ..models import LoadedModel
from ..progress import ProgressBar
from ..sites import Site, SiteKind
from ..vectors import SteeringVector

__all__ = [
    "LoglikResult",
    "EncodedPair",
    "Batch",
    "SteerFrom",
    "encode_pair",
    "collate",
    "batch_token_logprobs",
    "shared_context_logprobs",
    "BasePrefix",
    "base_prefix",
    "common_prefix_len",
    "last_token_hidden",
    "loglikelihood",
    "logsumexp",
]

SteerFrom = Literal["last_prompt", "answer"]


@dataclass(frozen=True)
class LoglikResult:
    """Log-likelihood of one continuation: the sum over its tokens, the token count, the length
    in characters, and whether every token was the model's greedy choice."""

    sum: float
    n_tokens: int
    n_chars: int
    is_greedy: bool

    @property
    def mean(self) -> float:
        """Mean log-probability per continuation token."""
        return self.sum / self.n_tokens

    @property
    def per_char(self) -> float:
        """Sum divided by the continuation's length in characters (lm-evaluation-harness ``acc_norm``)."""
        return self.sum / max(self.n_chars, 1)


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
    pos = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)
    return Batch(ids.to(device), mask.to(device), pos.to(device),
                 torch.tensor([p.context_len for p in pairs], device=device),
                 torch.tensor([p.cont_len for p in pairs], device=device))


def _forward_logits(model: Any, batch: Batch, keep: int) -> torch.Tensor:
    """Logits of the last ``keep`` positions (every model accepting ``logits_to_keep``, else sliced)."""
    kw = dict(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids,
              use_cache=False)
    try:
        return model(**kw, logits_to_keep=keep).logits[:, -keep:]
    except TypeError:
        return model(**kw).logits[:, -keep:]


def _steers_for(steer: Steer, batch: Batch, steer_from: SteerFrom) -> list[Steer | None]:
    offset = 1 if steer_from == "last_prompt" else 0
    starts = (batch.context_lens - offset).clamp(min=0).tolist()
    return [Steer(steer.vector, steer.strength, int(s)) for s in starts]


def batch_token_logprobs(
    lm: LoadedModel,
    batch: Batch,
    steer: Steer | None = None,
    interventions: Sequence[Intervention] = (),
    steer_from: SteerFrom = "last_prompt",
) -> tuple[list[torch.Tensor], list[bool]]:
    """Per row: the log-probabilities (float32, CPU) of its continuation tokens, and whether all were greedy."""
    if steer_from not in ("last_prompt", "answer"):
        raise ValueError(f"steer_from must be 'last_prompt' or 'answer', got {steer_from!r}")
    keep = int(batch.cont_lens.max()) + 1
    hooks = HookManager(lm.model, lm.adapter)
    if steer is not None:
        AddIntervention(_steers_for(steer, batch, steer_from)).install(hooks, batch.context_lens)
    for iv in interventions:
        iv.install(hooks, batch.context_lens)
    hooks.set_state(positions=positions_from_mask(batch.attention_mask), prompt_lens=batch.context_lens)
    with torch.no_grad(), hooks:
        logits = _forward_logits(lm.model, batch, keep)
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)  # predicts the last keep-1 tokens
    targets = batch.input_ids[:, -(keep - 1):]
    tok_lp = logp.gather(-1, targets[..., None]).squeeze(-1)
    greedy = logp.argmax(-1) == targets
    rows, flags = [], []
    for r, n in enumerate(batch.cont_lens.tolist()):
        rows.append(tok_lp[r, -n:].detach().cpu())
        flags.append(bool(greedy[r, -n:].all()))
    return rows, flags


def _as_steer(steer: SteeringVector | Steer | None, strength: float | None) -> Steer | None:
    if steer is None:
        return None
    if isinstance(steer, SteeringVector):
        steer = Steer(steer)
    if not isinstance(steer, Steer):
        raise TypeError(f"steer must be a SteeringVector or Steer, not {type(steer).__name__}")
    if strength is not None:
        steer = Steer(steer.vector, float(strength), steer.where)
    return steer


def _batches(order: Sequence[int], size: int) -> Iterator[list[int]]:
    for s in range(0, len(order), size):
        yield list(order[s:s + size])


def _group_batches(order: Sequence[int], group: Sequence[int], size: int) -> Iterator[list[int]]:
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


def _cache_shareable(model: Any) -> bool:
    """Whether the model's KV cache can be split into a shared prefix and per-row suffixes."""
    from transformers import DynamicCache

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
        import copy

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


def base_prefix(lm: LoadedModel, ids: Sequence[int]) -> BasePrefix:
    """Run ``ids`` once (no hooks, no padding) and keep its KV cache as a :class:`BasePrefix`."""
    from transformers import DynamicCache

    model = lm.model
    x = torch.tensor([list(ids)], dtype=torch.long, device=lm.device)
    cache = DynamicCache(config=model.config)
    with torch.no_grad():
        try:
            model(input_ids=x, past_key_values=cache, use_cache=True, logits_to_keep=1)
        except TypeError:
            cache = DynamicCache(config=model.config)
            model(input_ids=x, past_key_values=cache, use_cache=True)
    return BasePrefix(tuple(int(t) for t in ids), cache)


#: a shared base prefix is only worth its own forward pass from this many tokens on
MIN_BASE_PREFIX = 8


def shared_context_logprobs(
    lm: LoadedModel,
    pairs: Sequence[EncodedPair],
    groups: Sequence[int],
    steer: Steer | None = None,
    steer_from: SteerFrom = "last_prompt",
    pad_id: int = 0,
    base: "BasePrefix | None" = None,
    row_batch: int | None = None,
) -> tuple[list[torch.Tensor], list[bool]]:
    """Like :func:`batch_token_logprobs`, but each distinct context prefix runs once.

    ``groups[r]`` numbers the distinct prefixes (``ids[:context_len - 1]``) of the rows. The
    prefixes run once (left padded, KV cache kept, no hooks: no position before the last context
    token is ever steered), the cache rows are repeated per row, and each row's suffix (last
    context token + continuation, right padded) runs on top, with steering as in the plain path.

    ``base`` (:func:`base_prefix`): a token prefix shared by every row (e.g. an instruction and a
    few-shot primer) whose KV cache was computed once; the group prefixes then run only from its
    end on top of a copy of it. It must be shorter than every row's prefix. ``row_batch``: the
    suffixes run in passes of at most this many rows, sorted by length (less padding); ``None``:
    one pass.
    """
    if base is not None:
        first: dict[int, int] = {}
        for r, g in enumerate(groups):
            first.setdefault(g, r)
        if any(pairs[r].context_len - 1 <= base.length or pairs[r].ids[:base.length] != base.ids
               for r in first.values()):
            raise ValueError("base prefix must be a strict prefix of every row's context prefix")
    cache, pmask, gidx = _prefix_cache(lm, pairs, groups, base, pad_id)
    n_rows = len(pairs)
    step = n_rows if row_batch is None else max(1, int(row_batch))
    # rows sorted by suffix length: each forward pass pads its suffixes to similar lengths
    row_order = sorted(range(n_rows), key=lambda r: -(len(pairs[r].ids) - pairs[r].context_len))
    rows: list[torch.Tensor | None] = [None] * n_rows
    flags: list[bool] = [False] * n_rows
    for s in range(0, n_rows, step):
        sub = row_order[s:s + step]
        last = s + step >= n_rows
        sub_cache = cache if last else _copy_cache(cache)
        sub_cache.batch_select_indices(gidx[sub])
        sub_rows, sub_flags = _suffix_logprobs(lm, [pairs[r] for r in sub], pmask[gidx[sub]], sub_cache, steer,
                                               steer_from, pad_id)
        for r, lp, g in zip(sub, sub_rows, sub_flags):
            rows[r], flags[r] = lp, g
    return [r for r in rows if r is not None], flags


def _copy_cache(cache: Any) -> Any:
    import copy

    return copy.deepcopy(cache)


def _suffix_batch(pairs: Sequence[EncodedPair], pad_id: int, device: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids and mask of each pair's suffix: its last context token + continuation."""
    suffixes = [p.ids[p.context_len - 1:] for p in pairs]
    sw = max(len(x) for x in suffixes)
    sids = torch.full((len(pairs), sw), int(pad_id), dtype=torch.long)
    smask = torch.zeros((len(pairs), sw), dtype=torch.long)
    for r, x in enumerate(suffixes):
        sids[r, : len(x)] = torch.tensor(x, dtype=torch.long)
        smask[r, : len(x)] = 1
    return sids.to(device), smask.to(device)


def _suffix_logprobs(lm: LoadedModel, pairs: Sequence[EncodedPair], pmask: torch.Tensor, cache: Any,
                     steer: Steer | None, steer_from: SteerFrom, pad_id: int) -> tuple[list[torch.Tensor], list[bool]]:
    """Score each row's suffix (last context token + continuation, right padded) on top of its prefix cache
    (``pmask``: the cache's attention mask, one row per pair)."""
    model, device = lm.model, lm.device
    sids, smask = _suffix_batch(pairs, pad_id, device)
    sw = sids.shape[1]
    plen = pmask.sum(-1)  # real prefix tokens per row (base included)
    spos = plen[:, None] + torch.arange(sw, device=device)[None, :]
    positions = torch.where(smask.bool(), spos, torch.full_like(spos, -1))
    full_mask = torch.cat([pmask, smask], dim=1)
    context_lens = torch.tensor([p.context_len for p in pairs], device=device)

    hooks = HookManager(model, lm.adapter)
    if steer is not None:
        offset = 1 if steer_from == "last_prompt" else 0
        starts = (context_lens - offset).clamp(min=0).tolist()
        AddIntervention([Steer(steer.vector, steer.strength, int(s)) for s in starts]).install(hooks, context_lens)
    hooks.set_state(positions=positions, prompt_lens=context_lens)
    with torch.no_grad(), hooks:
        logits = model(input_ids=sids, attention_mask=full_mask, position_ids=spos, past_key_values=cache,
                       use_cache=True).logits
    # log-softmax only where a continuation token is predicted (no work on padding)
    need = smask[:, 1:].bool()
    sel = logits[:, :-1][need].float()
    logp = torch.log_softmax(sel, dim=-1)
    targets = sids[:, 1:][need]
    tok_lp = logp.gather(-1, targets[:, None]).squeeze(-1)
    greedy = logp.argmax(-1) == targets
    rows, flags = [], []
    k = 0
    for p in pairs:
        n = p.cont_len
        rows.append(tok_lp[k:k + n].detach().cpu())
        flags.append(bool(greedy[k:k + n].all()))
        k += n
    return rows, flags


def loglikelihood(
    lm: LoadedModel,
    pairs: Sequence[tuple[str, str]],
    steer: SteeringVector | Steer | None = None,
    *,
    strength: float | None = None,
    interventions: Sequence[Intervention] = (),
    steer_from: SteerFrom = "last_prompt",
    add_special_tokens: bool = True,
    share_context: bool | None = None,
    share_base: bool = True,
    batch_size: int = 8,
    progress: bool = False,
    label: str = "loglik",
) -> list[LoglikResult]:
    """Score ``(context, continuation)`` pairs; results come back in the input order.

    ``steer``/``strength`` steer the answer positions (see the module doc for ``steer_from``);
    ``interventions`` are installed per batch with ``prompt_lens`` = context lengths.
    ``share_context`` runs each distinct context once and scores its continuations on top of
    its KV cache (:func:`shared_context_logprobs`; same numbers up to float rounding, several
    times faster when options share a long prompt). ``None`` (default) shares when no
    ``interventions`` are given and the model's cache allows it (no sliding-window or recurrent
    layers); with ``interventions`` every pair runs as one full sequence, so an intervention
    sees every position. When sharing, the token prefix common to *all* contexts (e.g. an
    instruction + few-shot primer) also runs only once per call (``share_base``; at least
    :data:`MIN_BASE_PREFIX` tokens, never reaching a steered position), and each group runs only
    its own remainder on top of a copy of that cache. ``batch_size`` counts sequences per forward pass.
    ``progress=True`` shows a rich bar counting pairs (items/s).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if steer_from not in ("last_prompt", "answer"):
        raise ValueError(f"steer_from must be 'last_prompt' or 'answer', got {steer_from!r}")
    st = _as_steer(steer, strength)
    if st is not None:
        from ..artifacts import check_vector  # late import: artifacts builds on vectors

        check_vector(st.vector, lm)
    if share_context and interventions:
        raise ValueError("share_context=True cannot be combined with interventions (they may act on the prompt)")
    tok = lm.tokenizer
    enc = [encode_pair(tok, c, x, add_special_tokens) for c, x in pairs]
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    share = (not interventions and _cache_shareable(lm.model)) if share_context is None else share_context
    out: list[LoglikResult | None] = [None] * len(enc)

    def store(idx: Sequence[int], rows: Sequence[torch.Tensor], greedy: Sequence[bool]) -> None:
        for i, lp, g in zip(idx, rows, greedy):
            total = float(lp.double().sum())
            if math.isnan(total):  # never score with NaN: every comparison would pick the first option
                raise ValueError("the model's log-probabilities are NaN" + (" under this steering: lower the strength"
                                 if st is not None or interventions else ": the model's weights or dtype overflow"))
            out[i] = LoglikResult(total, int(lp.numel()), enc[i].n_chars, g)

    with ProgressBar(len(enc), progress, label) as bar:
        if share:
            keys: dict[tuple[int, ...], int] = {}
            group = [keys.setdefault(e.ids[: e.context_len - 1], len(keys)) for e in enc]
            plain = [i for i, e in enumerate(enc) if e.context_len < 2]
            # longest prefix first; a group's rows always share one batch (a group larger than
            # batch_size is a batch of its own), so every prefix runs exactly once
            order = sorted((i for i, e in enumerate(enc) if e.context_len >= 2),
                           key=lambda i: (-enc[i].context_len, group[i], -len(enc[i].ids)))
            base = None
            if share_base and len(set(group[i] for i in order)) > 1:
                # the prefix every row shares (instruction, few-shot primer) runs once for all batches;
                # it stops at least one token before every group prefix ends
                pre = [enc[i].ids[: enc[i].context_len - 1] for i in order]
                blen = min(common_prefix_len(pre), min(len(p) for p in pre) - 1)
                if blen >= MIN_BASE_PREFIX:
                    base = base_prefix(lm, pre[0][:blen])
            # prefixes run for up to 4 x batch_size rows at a time; their suffixes in passes of
            # batch_size rows sorted by length
            for idx in _group_batches(order, group, 4 * batch_size):
                rows, greedy = shared_context_logprobs(lm, [enc[i] for i in idx], [group[i] for i in idx], st,
                                                       steer_from, pad_id, base, row_batch=batch_size)
                store(idx, rows, greedy)
                bar.advance(len(idx))
        else:
            plain = list(range(len(enc)))
        # longest first: similar lengths share a batch (less padding), and an out-of-memory shows up at once
        order = sorted(plain, key=lambda i: -len(enc[i].ids))
        for idx in _batches(order, batch_size):
            batch = collate([enc[i] for i in idx], pad_id, lm.device)
            rows, greedy = batch_token_logprobs(lm, batch, st, interventions, steer_from)
            store(idx, rows, greedy)
            bar.advance(len(idx))
    return [r for r in out if r is not None]


def logsumexp(xs: Sequence[float]) -> float:
    """``log(sum(exp(xs)))`` computed stably."""
    m = max(xs)
    if m == -math.inf:
        return -math.inf
    return m + math.log(sum(math.exp(x - m) for x in xs))



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
    for idx in _group_batches(order, group, 4 * batch_size):
        cache, pmask, gidx = _prefix_cache(lm, [enc[i] for i in idx], [group[i] for i in idx], base, pad_id)
        sub_order = sorted(range(len(idx)), key=lambda r: -len(enc[idx[r]].ids))
        for s in range(0, len(idx), batch_size):
            sub = sub_order[s:s + batch_size]
            c = cache if s + batch_size >= len(idx) else _copy_cache(cache)
            c.batch_select_indices(gidx[sub])
            hs = _suffix_hidden(lm, [enc[idx[r]] for r in sub], pmask[gidx[sub]], c, layers, pad_id)
            for layer in layers:
                out[layer][[idx[r] for r in sub]] = hs[layer]
    for b in _batches(sorted(plain, key=lambda i: -len(enc[i].ids)), batch_size):
        e = [EncodedPair(enc[i].ids, 0, 0) for i in b]
        width = max(len(x.ids) for x in e)
        ids = torch.full((len(b), width), int(pad_id), dtype=torch.long)
        mask = torch.zeros((len(b), width), dtype=torch.long)
        for r, x in enumerate(e):
            ids[r, width - len(x.ids):] = torch.tensor(x.ids)
            mask[r, width - len(x.ids):] = 1
        pos = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)
        last = torch.full((len(b),), width - 1, dtype=torch.long)
        hs = _block_outputs(lm, layers, last, input_ids=ids.to(lm.device), attention_mask=mask.to(lm.device),
                            position_ids=pos.to(lm.device), use_cache=False)
        for layer in layers:
            out[layer][b] = hs[layer]
    return out


def _prefix_cache(lm: LoadedModel, pairs: Sequence[EncodedPair], groups: Sequence[int], base: BasePrefix | None,
                  pad_id: int) -> tuple[Any, torch.Tensor, torch.Tensor]:
    """Run each distinct prefix ``ids[:context_len - 1]`` once (after ``base``); returns the cache (one row
    per distinct prefix), its attention mask and the row -> prefix index."""
    from transformers import DynamicCache

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
    ppos = blen + (pmask.cumsum(-1) - 1).masked_fill(pmask == 0, 1)
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


def _suffix_hidden(lm: LoadedModel, pairs: Sequence[EncodedPair], pmask: torch.Tensor, cache: Any,
                   layers: Sequence[int], pad_id: int) -> dict[int, torch.Tensor]:
    device = lm.device
    sids, smask = _suffix_batch(pairs, pad_id, device)
    sw = sids.shape[1]
    spos = pmask.sum(-1)[:, None] + torch.arange(sw, device=device)[None, :]
    last = smask.sum(-1) - 1  # right padded: each row's last real suffix position
    return _block_outputs(lm, layers, last, input_ids=sids, attention_mask=torch.cat([pmask, smask], dim=1),
                          position_ids=spos, past_key_values=cache, use_cache=True)


def _block_outputs(lm: LoadedModel, layers: Sequence[int], at: torch.Tensor, **kw: Any) -> dict[int, torch.Tensor]:
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
    with torch.no_grad(), hooks:
        lm.model(**kw)
    return out
