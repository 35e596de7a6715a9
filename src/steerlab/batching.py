"""Continuous batching: rows join a running decode batch at the next step and leave when done.

:class:`BatchEngine` is the decode loop of ``steerlab serve``. Each row carries its own prompt, its own
steering (a :class:`~steerlab.interventions.add.Steer`: vector, strength, position window) and its own
sampling settings. One :meth:`BatchEngine.step`:

1. admits waiting rows: their prompts go through one prefill pass together (left padded, steered per row,
   exactly as :func:`steerlab.generate` runs a batch), and their keys/values are merged into the running
   batch's cache (left padded to a common length, masked);
2. runs one decode pass for every running row (one new token each);
3. hands each row's new token to its sink and retires rows that ended (EOS, a stop string, their token
   budget, cancelled, past their deadline); their cache rows are dropped.

Steering goes through the same :class:`~steerlab.interventions.add.AddIntervention` and hook manager as
:func:`steerlab.generate`, with per-token positions from the attention mask, so a row's tokens are those
of a ``generate`` call for that prompt alone (greedy; sampled rows too, with their own seed):
``tests/test_batching.py`` checks this token for token. The engine is single-threaded: one thread calls
:meth:`step` (the server's scheduler); :meth:`submit` and :meth:`cancel` may be called from any thread.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from transformers import DynamicCache

from .generate import GenerationConfig, eos_ids, select_next
from .hooks import HookManager, positions_from_mask
from .interventions.add import AddIntervention, Steer
from .models import LoadedModel
from .runtime import position_ids

__all__ = ["RowRequest", "RowEvent", "BatchEngine", "EngineStats", "FINISH_REASONS"]

#: why a row ended: EOS, a stop string, its token budget, cancelled by its client, past its deadline, the
#: engine shut down before it finished, or an error in the forward pass
FINISH_REASONS = ("eos", "stop", "length", "cancelled", "timeout", "shutdown", "error")


@dataclass
class RowRequest:
    """One generation: prompt token ids (chat template already applied), its budget and sampling settings
    (``config``: ``max_new_tokens``, ``do_sample``, ``temperature``, ``top_p``, ``top_k``, ``seed``, ``stop``),
    its steering, and the ``time.monotonic()`` after which it ends with ``"timeout"``."""

    prompt_ids: list[int]
    config: GenerationConfig = field(default_factory=GenerationConfig)
    steer: Steer | None = None
    deadline: float | None = None

    def __post_init__(self) -> None:
        if not self.prompt_ids:
            raise ValueError("the prompt has no tokens")
        if self.config.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.config.max_new_tokens}")


@dataclass(frozen=True)
class RowEvent:
    """What the engine tells a row's sink: a new token (``token`` set, ``finish`` None), or the end of the
    row (``finish`` one of :data:`FINISH_REASONS`; ``token`` set when the last step also produced one that
    belongs to the text, ``error`` the message for ``"error"`` / ``"shutdown"``)."""

    token: int | None
    finish: str | None = None
    error: str | None = None


Sink = Callable[[RowEvent], None]


@dataclass
class _Row:
    rid: int
    req: RowRequest
    sink: Sink
    gen: torch.Generator | None
    tokens: list[int] = field(default_factory=list)
    next_token: int | None = None  # chosen, not yet fed to the model
    cancelled: bool = False


@dataclass
class EngineStats:
    """Counters since the engine started (read them from any thread; they only grow)."""

    steps: int = 0
    prefills: int = 0
    tokens: int = 0
    rows_done: int = 0
    max_batch_seen: int = 0
    batch_sum: int = 0  # sum over decode steps of the batch size: mean batch = batch_sum / steps


class BatchEngine:
    """The continuous-batching decode loop (module doc).

    ``max_batch``: rows decoded together at most (more wait). ``max_join``: rows admitted per step (their
    prefill runs before the step's decode pass).
    """

    def __init__(self, lm: LoadedModel, max_batch: int = 16, max_join: int = 8) -> None:
        if max_batch < 1 or max_join < 1:
            raise ValueError("max_batch and max_join must be >= 1")
        self.lm = lm
        self.max_batch = max_batch
        self.max_join = max_join
        self.stats = EngineStats()
        self._eos = set(eos_ids(lm))
        tok = lm.tokenizer
        self._pad = tok.pad_token_id if tok.pad_token_id is not None else min(self._eos, default=0)
        self._lock = threading.Lock()
        self._waiting: deque[_Row] = deque()
        self._rows: list[_Row] = []
        self._next_id = 0
        self._cache: Any = None
        self._mask: torch.Tensor | None = None  # (rows, cached length)
        self._hooks: HookManager | None = None
        self._hooks_key: tuple[int, ...] | None = None
        self._prompt_lens: torch.Tensor | None = None

    # --- any thread ----------------------------------------------------------------------------------

    def submit(self, req: RowRequest, sink: Sink) -> int:
        """Queue a row; its events go to ``sink`` (called from the stepping thread). Returns its id."""
        gen = None
        if req.config.do_sample:
            gen = torch.Generator(device=self.lm.model.device)
            seed = req.config.seed
            gen.manual_seed(seed if seed is not None else int(torch.seed() % (2**63)))
        with self._lock:
            rid = self._next_id
            self._next_id += 1
            self._waiting.append(_Row(rid, req, sink, gen))
        return rid

    def cancel(self, rid: int) -> None:
        """End row ``rid`` at the next step (finish reason ``"cancelled"``); unknown ids are ignored."""
        with self._lock:
            for row in (*self._waiting, *self._rows):
                if row.rid == rid:
                    row.cancelled = True

    @property
    def running(self) -> int:
        return len(self._rows)

    @property
    def waiting(self) -> int:
        with self._lock:
            return len(self._waiting)

    @property
    def idle(self) -> bool:
        return not self._rows and self.waiting == 0

    # --- the stepping thread -------------------------------------------------------------------------

    def fail_all(self, reason: str, message: str) -> int:
        """End every waiting and running row with ``reason`` (``"shutdown"`` / ``"error"``); returns how many."""
        with self._lock:
            rows = [*self._waiting, *self._rows]
            self._waiting.clear()
        self._rows = []
        self._cache, self._mask, self._hooks, self._hooks_key = None, None, None, None
        for row in rows:
            self._end(row, reason, message)
        return len(rows)

    @torch.no_grad()
    def step(self) -> int:
        """Admit waiting rows, decode one token for every running row; returns the rows still running.
        A failing forward pass ends every row it touched with ``"error"`` (the engine stays usable)."""
        self._drop_cancelled_waiting()
        joiners = self._take_joiners()
        if joiners:
            try:
                self._prefill(joiners)
            except Exception as exc:  # noqa: BLE001 - the rows get the message; the engine goes on
                for row in joiners:
                    self._end(row, "error", f"{type(exc).__name__}: {exc}")
        self._retire()
        if self._rows:
            try:
                self._decode()
            except Exception as exc:  # noqa: BLE001
                self.fail_all("error", f"{type(exc).__name__}: {exc}")
            self._retire()
        return len(self._rows)

    def _drop_cancelled_waiting(self) -> None:
        with self._lock:
            gone = [r for r in self._waiting if r.cancelled or self._late(r)]
            for r in gone:
                self._waiting.remove(r)
        for r in gone:
            self._end(r, "cancelled" if r.cancelled else "timeout")

    def _take_joiners(self) -> list[_Row]:
        room = min(self.max_join, self.max_batch - len(self._rows))
        with self._lock:
            return [self._waiting.popleft() for _ in range(min(room, len(self._waiting)))]

    @staticmethod
    def _late(row: _Row) -> bool:
        return row.req.deadline is not None and time.monotonic() > row.req.deadline

    def _steering(self, rows: Sequence[_Row], prompt_lens: torch.Tensor) -> HookManager | None:
        """The hook manager steering ``rows`` (None when no row is steered)."""
        steers = [r.req.steer for r in rows]
        if all(s is None for s in steers):
            return None
        hooks = HookManager(self.lm.model, self.lm.adapter)
        AddIntervention(steers).install(hooks, prompt_lens)
        return hooks

    def _forward(self, hooks: HookManager | None, ids: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor,
                 positions: torch.Tensor, prompt_lens: torch.Tensor, cache: Any) -> torch.Tensor:
        kw = dict(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache, use_cache=True,
                  logits_to_keep=1)
        if hooks is None:
            return self.lm.model(**kw).logits[:, -1, :]
        hooks.set_state(positions=positions, prompt_lens=prompt_lens)
        with hooks:
            return self.lm.model(**kw).logits[:, -1, :]

    def _prefill(self, rows: list[_Row]) -> None:
        device = self.lm.model.device
        width = max(len(r.req.prompt_ids) for r in rows)
        ids = torch.full((len(rows), width), self._pad, dtype=torch.long, device=device)
        mask = torch.zeros((len(rows), width), dtype=torch.long, device=device)
        for i, r in enumerate(rows):
            n = len(r.req.prompt_ids)
            ids[i, width - n:] = torch.tensor(r.req.prompt_ids, dtype=torch.long)
            mask[i, width - n:] = 1
        prompt_lens = mask.sum(-1)
        cache = DynamicCache(config=self.lm.model.config)
        hooks = self._steering(rows, prompt_lens)
        logits = self._forward(hooks, ids, mask, position_ids(mask), positions_from_mask(mask), prompt_lens, cache)
        self.stats.prefills += 1
        odd = sorted({type(layer).__name__ for layer in cache.layers} - {"DynamicLayer"})
        if odd:
            raise ValueError(f"continuous batching needs a plain dynamic KV cache; {self.lm.name} uses "
                             f"{', '.join(odd)}")
        self._merge(rows, cache, mask)
        self._pick(rows, logits)

    def _merge(self, rows: list[_Row], cache: Any, mask: torch.Tensor) -> None:
        """Append ``rows`` (their prefilled ``cache`` and ``mask``) to the running batch."""
        if self._cache is None or not self._rows:
            self._cache, self._mask, self._rows = cache, mask, list(rows)
            self._hooks_key = None
            return
        old_len, new_len = self._mask.shape[1], mask.shape[1]
        width = max(old_len, new_len)

        def left_pad(t: torch.Tensor, n: int, dim: int) -> torch.Tensor:
            if n == 0:
                return t
            shape = list(t.shape)
            shape[dim] = n
            return torch.cat([t.new_zeros(shape), t], dim=dim)

        for old, new in zip(self._cache.layers, cache.layers):
            old.keys = torch.cat([left_pad(old.keys, width - old_len, 2), left_pad(new.keys, width - new_len, 2)])
            old.values = torch.cat([left_pad(old.values, width - old_len, 2),
                                    left_pad(new.values, width - new_len, 2)])
        self._mask = torch.cat([left_pad(self._mask, width - old_len, 1), left_pad(mask, width - new_len, 1)])
        self._rows = self._rows + list(rows)
        self._hooks_key = None

    def _decode(self) -> None:
        rows = self._rows
        device = self.lm.model.device
        ids = torch.tensor([[r.next_token] for r in rows], dtype=torch.long, device=device)
        self._mask = torch.cat([self._mask, self._mask.new_ones((len(rows), 1))], dim=1)
        pos = self._mask.sum(-1, keepdim=True) - 1
        key = tuple(r.rid for r in rows)
        if key != self._hooks_key:
            lens = torch.tensor([len(r.req.prompt_ids) for r in rows], dtype=torch.long, device=device)
            self._hooks, self._hooks_key, self._prompt_lens = self._steering(rows, lens), key, lens
        logits = self._forward(self._hooks, ids, self._mask, pos, pos, self._prompt_lens, self._cache)
        self.stats.steps += 1
        self.stats.batch_sum += len(rows)
        self.stats.max_batch_seen = max(self.stats.max_batch_seen, len(rows))
        self._pick(rows, logits)

    def _pick(self, rows: Sequence[_Row], logits: torch.Tensor) -> None:
        """Choose each row's next token, tell its sink, and mark rows that ended."""
        greedy = [i for i, r in enumerate(rows) if not r.req.config.do_sample]
        chosen: dict[int, int] = {}
        if greedy:
            picks = logits[greedy].argmax(-1).tolist()
            chosen.update(zip(greedy, picks))
        for i, r in enumerate(rows):
            if r.req.config.do_sample:
                chosen[i] = int(select_next(logits[i:i + 1], r.req.config, r.gen)[0])
        for i, r in enumerate(rows):
            t = chosen[i]
            self.stats.tokens += 1
            if t in self._eos:
                r.next_token = None
                r.sink(RowEvent(None, "eos"))
                continue
            r.tokens.append(t)
            r.next_token = t
            r.sink(RowEvent(t))
            if r.req.config.stop and self._stopped(r):
                r.next_token = None
                r.sink(RowEvent(None, "stop"))
            elif len(r.tokens) >= r.req.config.max_new_tokens:
                r.next_token = None
                r.sink(RowEvent(None, "length"))

    def _stopped(self, row: _Row) -> bool:
        text = self.lm.tokenizer.decode(row.tokens, skip_special_tokens=True)
        return any(s in text for s in row.req.config.stop)

    def _retire(self) -> None:
        """Drop rows that ended (or were cancelled / ran late) from the batch and its cache."""
        keep: list[int] = []
        for i, r in enumerate(self._rows):
            if r.next_token is None:
                self.stats.rows_done += 1
            elif r.cancelled or self._late(r):
                self._end(r, "cancelled" if r.cancelled else "timeout")
            else:
                keep.append(i)
        if len(keep) == len(self._rows):
            return
        if not keep:
            self._rows, self._cache, self._mask, self._hooks_key = [], None, None, None
            return
        idx = torch.tensor(keep, dtype=torch.long, device=self._mask.device)
        mask = self._mask.index_select(0, idx)
        first = int(mask.any(0).long().argmax())  # leading columns that are padding in every kept row
        self._mask = mask[:, first:]
        for layer in self._cache.layers:
            layer.keys = layer.keys.index_select(0, idx)[:, :, first:]
            layer.values = layer.values.index_select(0, idx)[:, :, first:]
        self._rows = [self._rows[i] for i in keep]
        self._hooks_key = None

    def _end(self, row: _Row, reason: str, message: str | None = None) -> None:
        row.next_token = None
        self.stats.rows_done += 1
        row.sink(RowEvent(None, reason, message))
