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
* ``steer_from="answer"``: the continuation tokens only (the first continuation token's own
  probability is then unsteered);
* ``steer_from="second_answer"``: from the second continuation token on, where ITI's / FASB's reference
  MC scoring starts (``start_edit_location = len(prompt) + 4`` with a 3-token "\nA:").

Other :class:`~steerlab.interventions.Intervention` objects (``interventions=[...]``) are
installed with ``prompt_lens`` = the context length of each row, so an intervention with
"generated" semantics acts on the answer exactly like ``steer_from="last_prompt"``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from ..hooks import HookManager
from ..artifacts import check_vector
from ..interventions.add import AddIntervention, Steer, SteerFrom, check_steer_from, steer_starts
from ..interventions.base import Intervention
from ..interventions.fasb import FASBSteering, MCTrigger
from ..models import LoadedModel
from ..progress import ProgressBar
from ..runtime import (MIN_BASE_PREFIX, BasePrefix, Batch, EncodedPair, base_prefix, batches, cache_shareable,
                       collate, common_prefix_len, copy_cache, encode_pair, forward, group_batches, last_token_hidden,
                       position_ids, prefix_cache, suffix_batch, token_logprobs)
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
    "adaptive_logprobs",
    "logsumexp",
]

# EncodedPair, Batch, encode_pair, collate, BasePrefix, base_prefix, common_prefix_len and last_token_hidden
# live in steerlab.runtime (the one forward engine) and are re-exported here for existing imports

@dataclass(frozen=True)
class LoglikResult:
    """Log-likelihood of one continuation: the sum over its tokens, the token count, the length
    in characters, and whether every token was the model's greedy choice."""

    sum: float
    n_tokens: int
    n_chars: int
    is_greedy: bool
    #: with ``loglikelihood(adaptive=...)``: the decision that steered this continuation (None: unsteered)
    trigger: MCTrigger | None = None

    @property
    def mean(self) -> float:
        """Mean log-probability per continuation token."""
        return self.sum / self.n_tokens

    @property
    def per_char(self) -> float:
        """Sum divided by the continuation's length in characters (lm-evaluation-harness ``acc_norm``)."""
        return self.sum / max(self.n_chars, 1)


def _steers_for(steer: Steer, context_lens: torch.Tensor, steer_from: SteerFrom) -> list[Steer | None]:
    return [Steer(steer.vector, steer.strength, int(s)) for s in steer_starts(steer_from, context_lens)]


def batch_token_logprobs(
    lm: LoadedModel,
    batch: Batch,
    steer: Steer | None = None,
    interventions: Sequence[Intervention] = (),
    steer_from: SteerFrom = "last_prompt",
) -> tuple[list[torch.Tensor], list[bool]]:
    """Per row: the log-probabilities (float32, CPU) of its continuation tokens, and whether all were greedy."""
    check_steer_from(steer_from)
    hooks = HookManager(lm.model, lm.adapter)
    if steer is not None:
        AddIntervention(_steers_for(steer, batch.context_lens, steer_from)).install(hooks, batch.context_lens)
    for iv in interventions:
        iv.install(hooks, batch.context_lens)
    return token_logprobs(lm, batch, hooks)


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


def shared_context_logprobs(
    lm: LoadedModel,
    pairs: Sequence[EncodedPair],
    groups: Sequence[int],
    steer: Steer | None = None,
    steer_from: SteerFrom = "last_prompt",
    pad_id: int = 0,
    base: "BasePrefix | None" = None,
    row_batch: int | None = None,
    adaptive: FASBSteering | None = None,
    triggers: list[MCTrigger | None] | None = None,
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
    one pass. ``adaptive`` scores FASB's way (:func:`adaptive_logprobs`) on the same prefix caches: the
    suffix pass reads the signal, flagged rows run their suffix again with the shift; their decisions are
    written into ``triggers`` (one entry per row) when given.
    """
    if base is not None:
        first: dict[int, int] = {}
        for r, g in enumerate(groups):
            first.setdefault(g, r)
        if any(pairs[r].context_len - 1 <= base.length or pairs[r].ids[:base.length] != base.ids
               for r in first.values()):
            raise ValueError("base prefix must be a strict prefix of every row's context prefix")
    cache, pmask, gidx = prefix_cache(lm, pairs, groups, base, pad_id)
    n_rows = len(pairs)
    step = n_rows if row_batch is None else max(1, int(row_batch))
    # rows sorted by suffix length: each forward pass pads its suffixes to similar lengths
    row_order = sorted(range(n_rows), key=lambda r: -(len(pairs[r].ids) - pairs[r].context_len))
    rows: list[torch.Tensor | None] = [None] * n_rows
    flags: list[bool] = [False] * n_rows
    for s in range(0, n_rows, step):
        sub = row_order[s:s + step]
        last = s + step >= n_rows
        sub_cache = cache if last and adaptive is None else copy_cache(cache)
        sub_cache.batch_select_indices(gidx[sub])
        sub_pairs = [pairs[r] for r in sub]
        steers = None if steer is None else _steers_for(steer, _context_lens(sub_pairs, lm.device), steer_from)
        if adaptive is None:
            sub_rows, sub_flags = _suffix_logprobs(lm, sub_pairs, pmask[gidx[sub]], sub_cache, steers, pad_id)
        else:
            keep = copy_cache(sub_cache)  # the prefix caches again, for the flagged rows' second pass
            reads: dict[str, torch.Tensor] = {}
            sub_rows, sub_flags = _suffix_logprobs(lm, sub_pairs, pmask[gidx[sub]], sub_cache, None, pad_id,
                                                   adaptive.sites, reads)
            p_all = adaptive.signal.p_true(reads).float().cpu()  # (rows, suffix): column 0 = last context token
            starts = steer_starts(steer_from, _context_lens(sub_pairs, "cpu"))
            trig = []
            for j, pair in enumerate(sub_pairs):
                first = pair.context_len - 1
                start = min(starts[j], len(pair.ids) - 1)
                trig.append(adaptive.mc_trigger(float(p_all[j, 0]), p_all[j, start - first:len(pair.ids) - first]
                                                .tolist(), start))
            flagged = [j for j, t in enumerate(trig) if t is not None and t.edit_start < len(sub_pairs[j].ids)]
            if flagged:
                keep.batch_select_indices(torch.tensor(flagged, device=gidx.device))
                st2 = [Steer(adaptive.shift, trig[j].strength, trig[j].edit_start)  # type: ignore[union-attr]
                       for j in flagged]
                rows2, flags2 = _suffix_logprobs(lm, [sub_pairs[j] for j in flagged], pmask[gidx[sub]][flagged],
                                                 keep, st2, pad_id)
                for j, lp, g in zip(flagged, rows2, flags2):
                    sub_rows[j], sub_flags[j] = lp, g
            if triggers is not None:
                for r, t in zip(sub, trig):
                    triggers[r] = t
        for r, lp, g in zip(sub, sub_rows, sub_flags):
            rows[r], flags[r] = lp, g
    return [r for r in rows if r is not None], flags


def _context_lens(pairs: Sequence[EncodedPair], device: Any) -> torch.Tensor:
    return torch.tensor([p.context_len for p in pairs], device=device)


def _suffix_logprobs(lm: LoadedModel, pairs: Sequence[EncodedPair], pmask: torch.Tensor, cache: Any,
                     steers: Sequence[Steer | None] | None, pad_id: int, read_sites: Sequence[Any] = (),
                     reads: dict[str, torch.Tensor] | None = None) -> tuple[list[torch.Tensor], list[bool]]:
    """Score each row's suffix (last context token + continuation, right padded) on top of its prefix cache
    (``pmask``: the cache's attention mask, one row per pair), steered per row by ``steers`` (``where``: an
    integer start position). ``read_sites`` are read into ``reads`` (``(rows, suffix, width)``)."""
    model, device = lm.model, lm.device
    sids, smask = suffix_batch(pairs, pad_id, device)
    sw = sids.shape[1]
    plen = pmask.sum(-1)  # real prefix tokens per row (base included)
    spos = plen[:, None] + torch.arange(sw, device=device)[None, :]
    positions = torch.where(smask.bool(), spos, torch.full_like(spos, -1))
    full_mask = torch.cat([pmask, smask], dim=1)
    context_lens = _context_lens(pairs, device)

    hooks = HookManager(model, lm.adapter)
    if steers is not None:
        AddIntervention(steers).install(hooks, context_lens)
    if reads is not None:
        for site in read_sites:
            hooks.add(site, _store(reads))
    hooks.set_state(positions=positions, prompt_lens=context_lens)
    logits = forward(lm, hooks, input_ids=sids, attention_mask=full_mask, position_ids=spos, past_key_values=cache,
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
    adaptive: FASBSteering | None = None,
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

    ``adaptive`` (a :class:`~steerlab.interventions.fasb.FASBSteering`) scores each pair FASB's way
    (:func:`adaptive_logprobs`): one unsteered pass, then, for pairs its probe flags, a second pass with the
    shift from the flagged position on; ``steer`` / ``interventions`` must then be unset, ``steer_from`` gives
    the first scanned answer position, and each result carries its ``trigger``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    check_steer_from(steer_from)
    st = _as_steer(steer, strength)
    if adaptive is not None:
        if st is not None or interventions:
            raise ValueError("adaptive= scoring steers by itself: drop steer= / interventions=")
        check_vector(adaptive.shift, lm)
    if st is not None:

        check_vector(st.vector, lm)
    if share_context and interventions:
        raise ValueError("share_context=True cannot be combined with interventions (they may act on the prompt)")
    tok = lm.tokenizer
    enc = [encode_pair(tok, c, x, add_special_tokens) for c, x in pairs]
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    share = (not interventions and cache_shareable(lm.model)) if share_context is None else share_context
    out: list[LoglikResult | None] = [None] * len(enc)

    def store(idx: Sequence[int], rows: Sequence[torch.Tensor], greedy: Sequence[bool],
              triggers: Sequence[MCTrigger | None] | None = None) -> None:
        for k, (i, lp, g) in enumerate(zip(idx, rows, greedy)):
            total = float(lp.double().sum())
            if math.isnan(total):  # never score with NaN: every comparison would pick the first option
                raise ValueError("the model's log-probabilities are NaN" + (" under this steering: lower the strength"
                                 if st is not None or interventions or adaptive else
                                 ": the model's weights or dtype overflow"))
            out[i] = LoglikResult(total, int(lp.numel()), enc[i].n_chars, g, None if triggers is None else triggers[k])

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
            for idx in group_batches(order, group, 4 * batch_size):
                trig: list[MCTrigger | None] | None = [None] * len(idx) if adaptive is not None else None
                rows, greedy = shared_context_logprobs(lm, [enc[i] for i in idx], [group[i] for i in idx], st,
                                                       steer_from, pad_id, base, row_batch=batch_size,
                                                       adaptive=adaptive, triggers=trig)
                store(idx, rows, greedy, trig)
                bar.advance(len(idx))
        else:
            plain = list(range(len(enc)))
        if adaptive is not None:
            order = sorted(plain, key=lambda i: -len(enc[i].ids))
            for idx in batches(order, batch_size):
                rows, greedy, trig = adaptive_logprobs(lm, [enc[i] for i in idx], adaptive, steer_from, pad_id)
                store(idx, rows, greedy, trig)
                bar.advance(len(idx))
            return [r for r in out if r is not None]
        # longest first: similar lengths share a batch (less padding), and an out-of-memory shows up at once
        order = sorted(plain, key=lambda i: -len(enc[i].ids))
        for idx in batches(order, batch_size):
            batch = collate([enc[i] for i in idx], pad_id, lm.device)
            rows, greedy = batch_token_logprobs(lm, batch, st, interventions, steer_from)
            store(idx, rows, greedy)
            bar.advance(len(idx))
    return [r for r in out if r is not None]


def _store(reads: dict[str, torch.Tensor]) -> Any:
    """A read-only hook function keeping the whole activation of its site in ``reads``."""

    def read(x: torch.Tensor, site: Any, state: Any) -> None:
        reads[site.key] = x.detach()
        return None

    return read


def adaptive_logprobs(lm: LoadedModel, pairs: Sequence[EncodedPair], adaptive: FASBSteering,
                      steer_from: SteerFrom = "second_answer", pad_id: int = 0
                      ) -> tuple[list[torch.Tensor], list[bool], list[MCTrigger | None]]:
    """FASB's multiple-choice scoring of one batch (``tqa_run_probs`` in the reference).

    One unsteered pass reads the signal's sites at every position; per row ``p_true`` at the context's last
    token and at every position from the ``steer_from`` start on goes to
    :meth:`~steerlab.interventions.fasb.FASBSteering.mc_trigger`. Rows it flags run again with
    ``shift * strength`` on every position from the decided start; the others keep the first pass's scores.
    """
    batch = collate(pairs, pad_id, lm.device)
    reads: dict[str, torch.Tensor] = {}
    hooks = HookManager(lm.model, lm.adapter)
    for site in adaptive.sites:
        hooks.add(site, _store(reads))
    rows, greedy = token_logprobs(lm, batch, hooks)
    p_all = adaptive.signal.p_true(reads).float().cpu()  # (batch, width)
    width = batch.input_ids.shape[1]
    starts = steer_starts(steer_from, batch.context_lens)
    triggers: list[MCTrigger | None] = []
    for r, pair in enumerate(pairs):
        n = len(pair.ids)
        pad = width - n
        start = min(starts[r], n - 1)
        p_q = float(p_all[r, pad + pair.context_len - 1])
        p_ans = p_all[r, pad + start:].tolist()
        triggers.append(adaptive.mc_trigger(p_q, p_ans, start))
    flagged = [r for r, t in enumerate(triggers) if t is not None and t.edit_start < len(pairs[r].ids)]
    if flagged:
        sub = collate([pairs[r] for r in flagged], pad_id, lm.device)
        hooks2 = HookManager(lm.model, lm.adapter)
        steers = [Steer(adaptive.shift, triggers[r].strength, triggers[r].edit_start)  # type: ignore[union-attr]
                  for r in flagged]
        AddIntervention(steers).install(hooks2, sub.context_lens)
        rows2, greedy2 = token_logprobs(lm, sub, hooks2)
        for r, lp, g in zip(flagged, rows2, greedy2):
            rows[r], greedy[r] = lp, g
    return rows, greedy, triggers


def logsumexp(xs: Sequence[float]) -> float:
    """``log(sum(exp(xs)))`` computed stably."""
    m = max(xs)
    if m == -math.inf:
        return -math.inf
    return m + math.log(sum(math.exp(x - m) for x in xs))
