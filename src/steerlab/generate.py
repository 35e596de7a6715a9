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
from contextlib import ExitStack
from typing import Any, Sequence, Union

import torch

from .artifacts import check_vector, load_vector
from .hooks import HookManager
from .interventions.add import AddIntervention, Steer, Where
from .interventions.base import Intervention
from .models import LoadedModel
from .progress import ProgressBar
from .vectors import SteeringVector

__all__ = ["GenerationConfig", "GenerationOutput", "GenerationInterrupted", "generate", "normalize_steer",
           "check_prompts"]

PathArg = Union[str, os.PathLike[str]]
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


def _eos_ids(lm: LoadedModel) -> list[int]:
    ids: set[int] = set()
    gc = getattr(lm.model, "generation_config", None)
    for src in (getattr(gc, "eos_token_id", None), lm.tokenizer.eos_token_id):
        if isinstance(src, int):
            ids.add(src)
        elif src:
            ids.update(int(i) for i in src)
    return sorted(ids)


def _select(logits: torch.Tensor, cfg: GenerationConfig, gen: torch.Generator | None) -> torch.Tensor:
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
    """
    prompts = check_prompts(prompts)
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

    hooks = HookManager(model, lm.adapter)
    if steers is not None and any(s is not None for s in steers):
        AddIntervention(steers).install(hooks, prompt_lens)
    for iv in interventions:
        iv.install(hooks, prompt_lens)

    eos = torch.tensor(_eos_ids(lm) or [-1], device=device)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else int(eos[0])
    gen = None
    if cfg.do_sample:
        gen = torch.Generator(device=device)
        gen.manual_seed(cfg.seed if cfg.seed is not None else int(torch.seed() % (2**63)))

    out_tokens = torch.empty(b, 0, dtype=torch.long, device=device)
    unfinished = torch.ones(b, dtype=torch.bool, device=device)
    stopped_by_string = [False] * b
    cache = None
    if cfg.use_cache:
        from transformers import DynamicCache

        cache = DynamicCache(config=model.config)
    full_ids, full_mask = ids, mask

    interrupted = False
    own_bar = not isinstance(progress, ProgressBar)
    bar = ProgressBar(n_new, bool(progress), "generating", "tok", transient=True) if own_bar else progress
    if not own_bar:
        bar.reset(n_new)
    with hooks, ExitStack() as stack:
        if own_bar:
            stack.enter_context(bar)
        try:
            for step in range(n_new):
                if cache is not None and step > 0:
                    inp = out_tokens[:, -1:]
                    cache_len = cache.get_seq_length()
                    positions = (cache_len - pads)[:, None]  # position of the new token in its row
                    pos_ids = full_mask.long().sum(-1, keepdim=True) - 1
                    min_position = cache_len - max_pad  # known on the host: no device sync needed
                else:
                    inp = full_ids
                    positions = torch.where(full_mask.bool(), full_mask.long().cumsum(-1) - 1, -1)
                    pos_ids = (full_mask.long().cumsum(-1) - 1).masked_fill(full_mask == 0, 1)
                    min_position = None
                hooks.set_state(positions=positions, prompt_lens=prompt_lens, min_position=min_position)
                out = model(
                    input_ids=inp,
                    attention_mask=full_mask,
                    position_ids=pos_ids,
                    past_key_values=cache,
                    use_cache=cache is not None,
                    logits_to_keep=1,
                )
                nxt = _select(out.logits[:, -1, :], cfg, gen)
                nxt = torch.where(unfinished, nxt, torch.full_like(nxt, pad_id))
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
                if not bool(unfinished.any()):
                    break
        except KeyboardInterrupt:
            interrupted = True
    output = _finish(lm, prompts, out_tokens, eos, stopped_by_string, cfg, chat, system,
                     unfinished if interrupted else None)
    if interrupted:
        raise GenerationInterrupted(output) from None
    return output


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


def _finish(lm: LoadedModel, prompts: list[str], out_tokens: torch.Tensor, eos: torch.Tensor,
            stopped_by_string: list[bool], cfg: GenerationConfig, chat: bool, system: str | None,
            interrupted: torch.Tensor | None) -> GenerationOutput:
    """Decode the generated ids into a :class:`GenerationOutput` (``interrupted``: rows still running at Ctrl-C)."""
    tok = lm.tokenizer
    texts, token_lists, reasons = [], [], []
    eos_set = set(eos.tolist())
    for r in range(out_tokens.shape[0]):
        toks = out_tokens[r].tolist()
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
        if interrupted is not None and bool(interrupted[r]) and reason == "length":
            reason = "interrupted"
        texts.append(text)
        token_lists.append(toks)
        reasons.append(reason)
    formatted = [lm.format_prompt(p, chat=chat, system=system) for p in prompts]
    return GenerationOutput(texts=texts, tokens=token_lists, prompts=formatted, finish_reasons=reasons)
