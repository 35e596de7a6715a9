"""KV-cache aware decode loop with steering.

Every forward call gets per-token positions (index among the row's real tokens): for the
prompt pass they come from the attention mask, for each decode step (a chunk of length 1) from
the cache length minus the row's left padding. Interventions read them from the hook manager's
:class:`~steerlab.hooks.StepState`, so "prompt only", "generated only" and "from position k on"
are resolved correctly at every step, with or without the KV cache.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Sequence, Union

import torch

from .artifacts import check_vector, load_vector
from .hooks import EditFn, HookManager, StepState, positions_from_mask
from .interventions.add import AddIntervention, AddState, Steer, Where
from .interventions.base import Intervention
from .models import LoadedModel
from .monitors import Action, Continue, Monitor, Rewind, RowAnswer, SetSteer, StepReading, Stop
from .progress import ProgressBar, progress_for
from .runtime import position_ids
from .sites import Site
from .vectors import SteeringVector

__all__ = ["GenerationConfig", "GenerationOutput", "GenerationInterrupted", "generate", "normalize_steer",
           "check_prompts", "KVCache", "KV_CACHES", "eos_ids", "select_next"]

PathArg = Union[str, os.PathLike[str]]
#: what the keys/values of processed tokens hold under steering (see :func:`generate`)
KVCache = Literal["steered", "unsteered"]
KV_CACHES: tuple[str, ...] = ("steered", "unsteered")
SteerArg = Union[None, SteeringVector, Steer, PathArg, Sequence[Union[None, SteeringVector, Steer, PathArg]]]


@dataclass(frozen=True)
class GenerationConfig:
    max_new_tokens: int = 64
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    use_cache: bool = True

    def __post_init__(self) -> None:
        if self.max_new_tokens < 0:
            raise ValueError("max_new_tokens must be >= 0")
        if self.do_sample and self.temperature <= 0:
            raise ValueError("temperature must be > 0 when sampling")
        if not 0 < self.top_p <= 1:
            raise ValueError("top_p must be in (0, 1]")


@dataclass
class GenerationOutput:
    """Generated texts (prompt excluded), their token ids, and why each row stopped."""

    texts: list[str]
    tokens: list[list[int]]
    prompts: list[str]
    finish_reasons: list[str] = field(default_factory=list)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.texts)

    def __len__(self) -> int:
        return len(self.texts)

    def __getitem__(self, i: int) -> str:
        return self.texts[i]


class GenerationInterrupted(KeyboardInterrupt):
    """Ctrl-C during decoding; ``output`` holds what was generated until then
    (``finish_reasons`` ``"interrupted"`` for rows that were still running)."""

    def __init__(self, output: GenerationOutput) -> None:
        super().__init__(f"interrupted after {max((len(t) for t in output.tokens), default=0)} new token(s)")
        self.output = output


def check_prompts(prompts: str | Sequence[str]) -> list[str]:
    """``prompts`` as a non-empty list of non-blank strings; a ValueError naming the first bad one."""
    if isinstance(prompts, str):
        prompts = [prompts]
    items = list(prompts)
    if not items:
        raise ValueError("no prompts given")
    for i, p in enumerate(items):
        if not isinstance(p, str):
            raise TypeError(f"prompt {i + 1} is a {type(p).__name__}, not a string")
        if not p.strip():
            raise ValueError(f"prompt {i + 1} is empty: give some text to continue")
    return items


def _load_paths(steer: SteerArg, lm: LoadedModel) -> SteerArg:
    """Vector file paths in ``steer`` (alone or as list entries) loaded and checked against ``lm``."""
    if isinstance(steer, (str, os.PathLike)):
        return load_vector(steer, lm)
    if steer is None or isinstance(steer, (SteeringVector, Steer)):
        return steer
    return [load_vector(s, lm) if isinstance(s, (str, os.PathLike)) else s for s in steer]


def normalize_steer(
    steer: SteerArg, batch: int, strength: float | Sequence[float] | None = None, where: Where | Sequence[Where] | None = None
) -> list[Steer | None] | None:
    """Turn the ``steer`` argument forms into one :class:`Steer` (or None) per row."""
    if steer is None:
        return None
    if isinstance(steer, (str, os.PathLike)):
        raise TypeError(f"steer={str(steer)!r} is a path: load it first with steerlab.load_vector(path)")
    if isinstance(steer, (SteeringVector, Steer)):
        items: list[Any] = [steer] * batch
    else:
        items = list(steer)
        if len(items) != batch:
            raise ValueError(f"{len(items)} steering entries for {batch} prompts")

    def per_row(value: Any, name: str) -> list[Any]:
        if value is None or isinstance(value, (int, float, str)):
            return [value] * batch
        vals = list(value)
        if len(vals) != batch:
            raise ValueError(f"{len(vals)} {name} values for {batch} prompts")
        return vals

    strengths, wheres = per_row(strength, "strength"), per_row(where, "where")
    out: list[Steer | None] = []
    cache: dict[tuple[int, Any, Any], Steer] = {}
    for item, s, w in zip(items, strengths, wheres):
        if item is None:
            out.append(None)
            continue
        if isinstance(item, SteeringVector):
            item = Steer(item)
        if not isinstance(item, Steer):
            hint = ": load vector files first with steerlab.load_vector(path)" if isinstance(item, (str, os.PathLike)) else ""
            raise TypeError(f"steer entries must be SteeringVector, Steer or None, not {type(item).__name__}{hint}")
        key = (id(item), s, w)
        if key not in cache:  # identical rows share one object, so the batch shares one delta
            cache[key] = Steer(item.vector, item.strength if s is None else s, item.where if w is None else w)
        out.append(cache[key])
    return out


def eos_ids(lm: LoadedModel) -> list[int]:
    """The token ids that end a generation (the model's generation config and the tokenizer's EOS)."""
    ids: set[int] = set()
    gc = getattr(lm.model, "generation_config", None)
    for src in (getattr(gc, "eos_token_id", None), lm.tokenizer.eos_token_id):
        if isinstance(src, int):
            ids.add(src)
        elif src:
            ids.update(int(i) for i in src)
    return sorted(ids)


def select_next(logits: torch.Tensor, cfg: GenerationConfig, gen: torch.Generator | None) -> torch.Tensor:
    """The next token per row from last-position ``logits``: argmax, or a draw with ``cfg``'s sampling settings."""
    if not cfg.do_sample:
        return logits.argmax(-1)
    logits = logits.float() / cfg.temperature
    if cfg.top_k > 0:
        kth = torch.topk(logits, min(cfg.top_k, logits.shape[-1]), dim=-1).values[..., -1, None]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if cfg.top_p < 1.0:
        sorted_logits, idx = torch.sort(logits, descending=True, dim=-1)
        probs = sorted_logits.softmax(-1)
        cum = probs.cumsum(-1)
        remove = cum - probs > cfg.top_p  # keep the smallest set whose mass reaches top_p
        sorted_logits = sorted_logits.masked_fill(remove, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, idx, sorted_logits)
    probs = logits.softmax(-1)
    return torch.multinomial(probs, 1, generator=gen).squeeze(-1)


def _validate(lm: LoadedModel, steers: list[Steer | None] | None) -> None:
    if not steers:
        return
    seen: set[int] = set()
    for s in steers:
        if s is not None and id(s.vector) not in seen:
            seen.add(id(s.vector))
            check_vector(s.vector, lm)


@torch.no_grad()
def generate(
    lm: LoadedModel,
    prompts: str | Sequence[str],
    steer: SteerArg = None,
    *,
    strength: float | Sequence[float] | None = None,
    where: Where | Sequence[Where] | None = None,
    max_new_tokens: int = 64,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    seed: int | None = None,
    stop: str | Sequence[str] | None = None,
    chat: bool = False,
    system: str | None = None,
    use_cache: bool = True,
    interventions: Sequence[Intervention] = (),
    progress: bool | ProgressBar = False,
    monitors: Sequence[Monitor] = (),
    max_steps: int | None = None,
    kv_cache: KVCache = "steered",
    on_step: Callable[[list[list[int]]], None] | None = None,
) -> GenerationOutput:
    """Generate from ``prompts`` while steering.

    ``steer`` is a :class:`SteeringVector` or :class:`Steer` for every row, or a list with one
    entry (or None) per row, so rows of one batch can carry different vectors and strengths.
    ``strength`` and ``where`` override the entries' own (a scalar, or one value per row).
    ``where``: ``"all"``, ``"prompt"``, ``"generated"`` or an integer start position.
    ``steer`` may also be the path of a vector file (or a list of them): it is loaded with
    :func:`steerlab.load_vector` and checked against ``lm``.

    New tokens are capped at what the model's context leaves after the longest prompt (with a
    warning). Ctrl-C while decoding raises :class:`GenerationInterrupted`, a
    ``KeyboardInterrupt`` whose ``output`` holds the text generated so far.

    ``progress``: True shows a bar over the decode steps (tokens) on stderr; a
    :class:`~steerlab.progress.ProgressBar` (e.g. the CLI's, across batches) is reset to this call's
    steps and advanced per token instead.

    ``monitors`` (:mod:`steerlab.monitors`) read activations at their sites after every decode step
    and may rewind, re-steer or stop single rows; a rewound row continues exactly as a fresh run
    from its kept tokens would. With monitors, rows decode until each has ``max_new_tokens`` kept
    tokens (or ends), at most ``max_steps`` decode steps in all (default ``4 * max_new_tokens``;
    rows still running then end with finish reason ``"max_steps"``). Without monitors the loop is
    the plain one (no reads, no per-row work).

    ``kv_cache`` says what the keys/values of already processed tokens hold. ``"steered"`` (default,
    what ``model.generate`` with a steering hook does): each position is steered once, when it is
    processed, and its steered keys/values are kept. ``"unsteered"``: only the *last* position of every
    forward pass is steered and every earlier one is seen unsteered, as by a loop that recomputes the
    whole sequence at each step and edits only its last position (FASB's and ITI's reference code);
    without recomputing: while any row is steered, each step re-feeds the previous token unsteered
    together with the new one (a two-token step), so the cache only ever keeps unsteered keys/values.
    ``interventions=`` see ``state.last_only`` and must honour it themselves.

    ``on_step``: called after every decode step with each row's generated token ids so far (the kept ones,
    after any rewind; ended rows included), e.g. to stream text; an exception it raises ends the call.
    """
    prompts = check_prompts(prompts)
    if kv_cache not in KV_CACHES:
        raise ValueError(f"kv_cache must be one of {', '.join(repr(k) for k in KV_CACHES)}, got {kv_cache!r}")
    last_only = kv_cache == "unsteered"
    cfg = GenerationConfig(max_new_tokens, do_sample, temperature, top_p, top_k, seed,
                           (stop,) if isinstance(stop, str) else tuple(stop or ()), use_cache)
    if steer is None and (strength is not None or where is not None):
        warnings.warn("strength=/where= have no effect without steer=: pass the vector to steer with",
                      UserWarning, stacklevel=3)  # the caller (under torch.no_grad's wrapper)
    steers = normalize_steer(_load_paths(steer, lm), len(prompts), strength, where)
    _validate(lm, steers)
    model, tok = lm.model, lm.tokenizer
    enc = lm.encode(prompts, chat=chat, system=system)
    ids, mask = enc["input_ids"], enc["attention_mask"]
    b, plen = ids.shape
    prompt_lens = mask.sum(-1)
    n_new = _cap_new_tokens(lm, cfg.max_new_tokens, int(prompt_lens.max()))
    pads = plen - prompt_lens
    max_pad = int(pads.max())
    device = ids.device

    monitor_list = _check_monitors(monitors, max_steps)
    hooks = HookManager(model, lm.adapter)
    steer_state: AddState | None = None
    if monitor_list:  # per-row steering that SetSteer can change, on the call's sites and the monitors' steer_sites
        extra = [Site.parse(site).normalized(lm.adapter) if isinstance(site, str) else site.normalized(lm.adapter)
                 for m in monitor_list for site in getattr(m, "steer_sites", ())]
        if extra or (steers is not None and any(s is not None for s in steers)):
            steer_state = AddIntervention(steers or [None] * b).install(hooks, prompt_lens, per_row=True,
                                                                        extra_sites=extra)
    elif steers is not None and any(s is not None for s in steers):
        AddIntervention(steers).install(hooks, prompt_lens)
    for iv in interventions:
        iv.install(hooks, prompt_lens)
    reads: dict[str, torch.Tensor] = {}
    if monitor_list:  # read-only hooks, added last: they see every edit made at their site
        read = _reader(reads)
        seen: set[Site] = set()
        for m in monitor_list:
            for site in m.sites:
                site = Site.parse(site) if isinstance(site, str) else site
                if site.normalized(lm.adapter) not in seen:
                    seen.add(site.normalized(lm.adapter))
                    hooks.add(site, read)

    eos = torch.tensor(eos_ids(lm) or [-1], device=device)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else int(eos[0])
    gen = None
    if cfg.do_sample:
        gen = torch.Generator(device=device)
        gen.manual_seed(cfg.seed if cfg.seed is not None else int(torch.seed() % (2**63)))

    out_tokens = torch.empty(b, 0, dtype=torch.long, device=device)
    unfinished = torch.ones(b, dtype=torch.bool, device=device)
    stopped_by_string = [False] * b
    rows = _Monitored(lm, monitor_list, prompt_lens.tolist(), n_new, cfg, steer_state) if monitor_list else None
    limit = n_new if rows is None else (max_steps if max_steps is not None else 4 * n_new)
    cache = None
    if cfg.use_cache:
        from transformers import DynamicCache

        cache = DynamicCache(config=model.config)
    full_ids, full_mask = ids, mask
    # host-side: does any row carry steering now? (kv_cache="unsteered" re-feeds the previous token after
    # a steered step; other interventions are taken to steer every step)
    always_steered = bool(interventions) or (steers is not None and any(s is not None for s in steers))
    prev_steered = False

    interrupted = False
    with hooks, progress_for(progress, n_new, "generating", "tok", transient=True, reset=True) as bar:
        try:
            for step in range(limit):
                steering = always_steered or (rows is not None and rows.any_steered())
                if cache is not None and step > 0 and last_only and prev_steered:
                    # two-token step: drop the previous token's steered keys/values and feed it again, unsteered,
                    # with the new token (the only position edited)
                    cache.crop(-1)
                    inp = full_ids[:, -2:]
                    all_pos = positions_from_mask(full_mask)
                    positions = all_pos[:, -2:]
                    pos_ids = (full_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -2:]
                    min_position = None
                elif cache is not None and step > 0:
                    inp = full_ids[:, -1:]
                    cache_len = cache.get_seq_length()
                    pos_ids = full_mask.long().sum(-1, keepdim=True) - 1
                    if rows is None:
                        positions = (cache_len - pads)[:, None]  # position of the new token in its row
                        min_position = cache_len - max_pad  # known on the host: no device sync needed
                    else:  # rows may have been rewound: count the kept (unmasked) tokens
                        positions, min_position = pos_ids, None
                else:
                    inp = full_ids
                    positions = positions_from_mask(full_mask)
                    pos_ids = position_ids(full_mask)
                    min_position = None
                hooks.set_state(positions=positions, prompt_lens=prompt_lens, min_position=min_position,
                                last_only=last_only)
                prev_steered = steering
                out = model(
                    input_ids=inp,
                    attention_mask=full_mask,
                    position_ids=pos_ids,
                    past_key_values=cache,
                    use_cache=cache is not None,
                    logits_to_keep=1,
                )
                nxt = select_next(out.logits[:, -1, :], cfg, gen)
                nxt = torch.where(unfinished, nxt, torch.full_like(nxt, pad_id))
                if rows is not None:  # an ended row's pad tokens are not part of its text: masked out
                    full_ids = torch.cat([full_ids, nxt[:, None]], dim=1)
                    full_mask = torch.cat([full_mask, unfinished.long()[:, None]], dim=1)
                    bar.advance(1)
                    rows.after_step(step, nxt, unfinished, eos, full_ids, full_mask, stopped_by_string, reads)
                    if on_step is not None:
                        on_step([list(g) for g in rows.gen])
                    if not rows.any_running():
                        break
                    continue
                out_tokens = torch.cat([out_tokens, nxt[:, None]], dim=1)
                full_ids = torch.cat([full_ids, nxt[:, None]], dim=1)
                full_mask = torch.cat([full_mask, torch.ones_like(nxt)[:, None]], dim=1)
                unfinished &= ~torch.isin(nxt, eos)
                bar.advance(1)
                if cfg.stop:
                    for r in range(b):
                        if unfinished[r] and any(s in tok.decode(out_tokens[r].tolist(), skip_special_tokens=True) for s in cfg.stop):
                            unfinished[r] = False
                            stopped_by_string[r] = True
                if on_step is not None:
                    on_step(out_tokens.tolist())
                if not bool(unfinished.any()):
                    break
        except KeyboardInterrupt:
            interrupted = True
    if rows is not None:
        token_lists, reasons = rows.gen, rows.final_reasons(interrupted)
    else:
        token_lists, reasons = out_tokens.tolist(), [None] * b
    output = _finish(lm, prompts, token_lists, eos, stopped_by_string, cfg, chat, system,
                     unfinished if interrupted else None, reasons)
    if interrupted:
        raise GenerationInterrupted(output) from None
    return output


def _check_monitors(monitors: Sequence[Monitor] | Monitor | None, max_steps: int | None) -> list[Monitor]:
    """``monitors`` as a list (one monitor alone, or None, accepted); a TypeError naming a bad entry."""
    items = [] if monitors is None else [monitors] if isinstance(monitors, Monitor) else list(monitors)
    for i, m in enumerate(items):
        if not isinstance(m, Monitor):
            raise TypeError(f"monitor {i + 1} ({type(m).__name__}) needs a 'sites' list and a step(reading) method")
    if max_steps is not None:
        if not items:
            raise ValueError("max_steps only applies with monitors=: drop it or pass a monitor")
        if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
            raise ValueError(f"max_steps must be a positive integer, got {max_steps!r}")
    return items


def _reader(reads: dict[str, torch.Tensor]) -> EditFn:
    """A read-only hook function storing the last processed position of every row (float32) in ``reads``."""

    def read(x: torch.Tensor, site: Site, state: StepState) -> None:
        reads[site.key] = x[:, -1].detach().to(torch.float32, copy=True)
        return None

    return read


def _as_actions(answer: RowAnswer) -> Sequence[Action]:
    if answer is None:
        return ()
    if isinstance(answer, (Continue, Rewind, SetSteer, Stop)):
        return (answer,)
    if isinstance(answer, (list, tuple)):
        return answer
    raise TypeError(f"a monitor answered {answer!r} for a row: use None, Continue(), Rewind(k), SetSteer(...), "
                    f"Stop() or a list of them")


class _Monitored:
    """Host-side per-row state of a call with monitors: kept tokens, how rows ended, and the actions.

    The batch decodes in lockstep, one new cache slot per step for every row. A row's real tokens
    are the slots whose attention-mask entry is 1, in order (its prompt, then its kept generated
    tokens; the last one is the token fed at the next step). :meth:`_rewind` masks out the dropped
    slots and writes the last kept token into the newest slot, to be fed again: its position id
    (the count of real tokens before it) is what it had, so the continuation is that of a fresh run.
    """

    def __init__(self, lm: LoadedModel, monitors: list[Monitor], prompt_lens: list[int], n_new: int,
                 cfg: GenerationConfig, steer_state: AddState | None) -> None:
        self.lm, self.monitors, self.prompt_lens, self.n_new, self.cfg = lm, monitors, prompt_lens, n_new, cfg
        self.steer_state = steer_state
        b = len(prompt_lens)
        self.gen: list[list[int]] = [[] for _ in range(b)]
        self.running = [True] * b
        self.stopped = [False] * b
        self.steered = [False] * b  # host-side: rows a SetSteer turned steering on for
        self._checked: set[int] = set()

    def any_running(self) -> bool:
        return any(self.running)

    def any_steered(self) -> bool:
        return any(s and run for s, run in zip(self.steered, self.running))

    def final_reasons(self, interrupted: bool) -> list[str | None]:
        """Finish reasons that :func:`_finish` cannot see from the tokens (None: let it decide)."""
        return ["stopped" if st else ("max_steps" if run and not interrupted else None)
                for st, run in zip(self.stopped, self.running)]

    def after_step(self, step: int, nxt: torch.Tensor, unfinished: torch.Tensor, eos: torch.Tensor,
                   full_ids: torch.Tensor, full_mask: torch.Tensor, stopped_by_string: list[bool],
                   reads: dict[str, torch.Tensor]) -> None:
        """Record the step's tokens, ask the monitors, apply their actions (``unfinished``, ``full_ids``
        and ``full_mask`` are updated in place)."""
        toks = nxt.tolist()
        active = unfinished.tolist()
        eos_set = set(eos.tolist())
        tok = self.lm.tokenizer
        for r, on in enumerate(active):
            if not on:
                continue
            self.gen[r].append(toks[r])
            if toks[r] in eos_set or len(self.gen[r]) >= self.n_new:
                self.running[r] = False
            elif self.cfg.stop and any(s in tok.decode(self.gen[r], skip_special_tokens=True) for s in self.cfg.stop):
                self.running[r] = False
                stopped_by_string[r] = True
        reading = StepReading(step, [t if on else None for t, on in zip(toks, active)], active, dict(reads),
                              [len(g) for g in self.gen], [not run for run in self.running])
        b = len(active)
        for m in self.monitors:
            answers = list(m.step(reading))
            if len(answers) != b:
                raise ValueError(f"monitor {type(m).__name__} answered {len(answers)} entries for a batch of {b} rows")
            for r, answer in enumerate(answers):
                for action in _as_actions(answer):
                    self._apply(r, action, full_ids, full_mask, stopped_by_string)
        unfinished.copy_(torch.tensor(self.running, device=unfinished.device))

    def _apply(self, r: int, action: Action, full_ids: torch.Tensor, full_mask: torch.Tensor,
               stopped_by_string: list[bool]) -> None:
        if isinstance(action, Continue):
            return
        if isinstance(action, Rewind):
            self._rewind(r, action.k, full_ids, full_mask)
            self.running[r], self.stopped[r], stopped_by_string[r] = True, False, False
        elif isinstance(action, Stop):
            self.running[r], self.stopped[r] = False, True
        elif isinstance(action, SetSteer):
            if self.steer_state is None:
                raise ValueError("SetSteer needs steering hooks: pass steer= to generate or list the sites in the "
                                 "monitor's steer_sites")
            steer = action.resolved()
            if steer is not None and id(steer.vector) not in self._checked:
                check_vector(steer.vector, self.lm)
                self._checked.add(id(steer.vector))
            # from the row's next processed position on: the token it feeds at the next step
            self.steer_state.set_row(r, steer, self.prompt_lens[r] + len(self.gen[r]) - 1)
            self.steered[r] = steer is not None
        else:
            raise TypeError(f"unknown monitor action {action!r}: use Continue(), Rewind(k), SetSteer(...) or Stop()")

    def _rewind(self, r: int, k: int, full_ids: torch.Tensor, full_mask: torch.Tensor) -> None:
        n = len(self.gen[r])
        if k > n:
            raise ValueError(f"Rewind({k}) for row {r}: it has generated only {n} token(s)")
        keep = n - k
        q = self.prompt_lens[r] + keep - 1  # index of the last kept token among the row's real tokens
        cols = full_mask[r].nonzero().flatten()  # slots of the row's real tokens, in order
        last = full_ids[r, cols[q]].clone()
        full_mask[r, cols[q:]] = 0
        full_ids[r, -1] = last  # fed again at the next step, at its old position
        full_mask[r, -1] = 1
        del self.gen[r][keep:]


def _cap_new_tokens(lm: LoadedModel, max_new_tokens: int, longest_prompt: int) -> int:
    """``max_new_tokens``, capped (with a warning) at what the model's context leaves after the prompt."""
    ctx = lm.context_length
    if ctx is None or max_new_tokens <= ctx - longest_prompt:
        return max_new_tokens
    room = ctx - longest_prompt
    if room <= 0:
        raise ValueError(f"the prompt is {longest_prompt} tokens and fills the model's context of {ctx}: shorten it")
    warnings.warn(f"max_new_tokens={max_new_tokens} does not fit in the model's context ({ctx} tokens, "
                  f"{longest_prompt} taken by the prompt): generating at most {room} new tokens",
                  UserWarning, stacklevel=4)  # the caller of generate (under torch.no_grad's wrapper)
    return room


def _finish(lm: LoadedModel, prompts: list[str], out_tokens: list[list[int]], eos: torch.Tensor,
            stopped_by_string: list[bool], cfg: GenerationConfig, chat: bool, system: str | None,
            interrupted: torch.Tensor | None, reasons_set: list[str | None] | None = None) -> GenerationOutput:
    """Decode the generated ids into a :class:`GenerationOutput` (``interrupted``: rows still running at
    Ctrl-C; ``reasons_set``: a row's finish reason when its tokens end without EOS, e.g. ``"stopped"``)."""
    tok = lm.tokenizer
    texts, token_lists, reasons = [], [], []
    eos_set = set(eos.tolist())
    for r, toks in enumerate(out_tokens):
        reason = "length"
        for i, t in enumerate(toks):
            if t in eos_set:
                toks, reason = toks[:i], "eos"
                break
        text = tok.decode(toks, skip_special_tokens=True)
        if stopped_by_string[r]:
            reason = "stop"
            cut = min((text.find(s) for s in cfg.stop if s in text), default=-1)
            if cut >= 0:
                text = text[:cut]
        if reasons_set is not None and reasons_set[r] is not None and reason == "length":
            reason = reasons_set[r]
        if interrupted is not None and bool(interrupted[r]) and reason == "length":
            reason = "interrupted"
        texts.append(text)
        token_lists.append(toks)
        reasons.append(reason)
    formatted = [lm.format_prompt(p, chat=chat, system=system) for p in prompts]
    return GenerationOutput(texts=texts, tokens=token_lists, prompts=formatted, finish_reasons=reasons)
