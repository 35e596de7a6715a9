"""Several Contrastive-Prompting settings from one main pass (sweeps and results tables).

CP edits only the **last** token's ``o_proj`` input at its layer ``l``. Under causal attention
no other position attends to the last token, so every other position's states — and their
key/value cache — are the same with or without CP, for every CP setting. One main pass with a
key/value cache therefore serves them all: the plain embedding is read from it, then the last
token is re-run alone (one decode step, ``1 / row length`` of the work) once per CP setting,
with that setting's edit, against the cache of the other positions. Each CP setting's
auxiliary values come from one auxiliary pass per auxiliary prompt that records every needed
layer and stops at the deepest.

This is exact, not an approximation (tests compare it with :meth:`Encoder.encode` of each
setting). It is used only where it is exact; otherwise a setting falls back to its own
:class:`~steerlab.embed.Encoder` pass:

* with Token Prepending, the placeholder copies the last token's state before layers
  ``start .. exit-1``; a CP edit at layer ``l`` changes those copies unless ``l >= exit - 1``;
* the read-out must be a raw residual layer (``k < n_layers``), not the final-norm output;
* the cache must be plain per-token (no sliding-window or other cropping layers).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from ..hooks import HookManager, StepState, StopForward
from ..sites import Site, SiteKind
from .cp import CPConfig, apply_cp
from .encoder import Encoder, check_strings
from .prompts import fill

__all__ = ["encode_cp_variants", "joint_ok", "with_cp"]


def with_cp(enc: Encoder, cp: Any) -> Encoder:
    """An encoder with ``enc``'s settings (model, prompt, read-out, TP, batching) and CP ``cp``
    (``None``: no CP); CP defaults are resolved and validated as by :class:`Encoder`."""
    tp = enc.tp
    prompt: Any = list(enc.prompt.templates) if enc.prompt.name == "custom" else enc.prompt.name
    return Encoder(enc.lm, prompt=prompt, layer=enc.layer, cp=cp, tp=tp, batch_size=enc.batch_size,
                   preprocess=enc.preprocess, max_sentence_tokens=enc.max_sentence_tokens,
                   share_prefix=enc.share_prefix)


def _plain_cache(model: Any) -> bool:
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    try:
        cache = DynamicCache(config=model.config)
    except Exception:  # pragma: no cover - configs without cache support
        return False
    return all(type(layer) is DynamicLayer for layer in cache.layers) if cache.layers else True


def _shareable(enc: Encoder) -> bool:
    """Whether ``enc``'s main pass can serve other CP settings at all: raw residual read-out, plain cache."""
    return enc.layer < enc.n_layers and _plain_cache(enc.model)


def _tp_allows(enc: Encoder, cp: CPConfig) -> bool:
    """Whether ``cp``'s edit leaves what TP's placeholder copies unchanged (``l >= exit - 1``)."""
    return cp.layer is not None and (enc.tp is None or cp.layer >= enc.tp.exit - 1)  # type: ignore[operator]


def joint_ok(enc: Encoder, cp: CPConfig) -> bool:
    """Whether ``cp`` can be computed from ``enc``'s cached main pass exactly (see module doc)."""
    return _tp_allows(enc, cp) and _shareable(enc)


def _aux_values(venc: Encoder, sentences: list[str], layers: list[int]) -> dict[int, torch.Tensor]:
    """Last-token ``o_proj`` inputs of the auxiliary prompt at each of ``layers`` (one pass)."""
    assert venc.aux_template is not None
    kw, pst_pos = venc._inputs([fill(venc.aux_template, s) for s in sentences], max(layers))
    hm = HookManager(venc.model, venc.adapter)
    out: dict[int, torch.Tensor] = {}
    top = max(layers)
    for l in sorted(set(layers)):

        def rec(x: torch.Tensor, site: Site, state: StepState, l: int = l) -> None:
            out[l] = x[:, -1, :].detach().clone()
            if l == top:
                raise StopForward

        hm.add(Site(SiteKind.HEADS, l), rec)
    venc._run(kw, pst_pos, hm)
    return out


def _read_hook(hm: HookManager, k: int, store: dict[str, torch.Tensor]) -> None:
    def read(x: torch.Tensor, site: Site, state: StepState) -> None:
        store["h"] = x[:, -1, :].detach().clone()
        raise StopForward

    hm.add(Site(SiteKind.RESIDUAL, k - 1), read)


@torch.inference_mode()
def _joint_batch(enc: Encoder, sentences: list[str], cps: list[CPConfig | None],
                 aux: dict[tuple[str, int], torch.Tensor]) -> list[torch.Tensor]:
    """One batch: the plain read-out and each CP setting's, summed over the prompt's templates."""
    from transformers import DynamicCache

    k = enc.layer
    total: list[torch.Tensor | None] = [None] * len(cps)
    for tpl in enc.templates:
        kw, pst_pos = enc._inputs([fill(tpl, s) for s in sentences], k - 1)
        cache = kw.get("past_key_values")
        if cache is None:
            cache = DynamicCache(config=enc.model.config)
            kw["past_key_values"] = cache
        store: dict[str, torch.Tensor] = {}
        hm = HookManager(enc.model, enc.adapter)
        _read_hook(hm, k, store)
        enc._run(kw, pst_pos, hm)
        plain = store.pop("h")
        cache.crop(-1)  # forget the last token; the other positions are shared by every setting
        step: dict[str, Any] = {"attention_mask": kw["attention_mask"], "position_ids": kw["position_ids"][:, -1:],
                                "past_key_values": cache}
        if "inputs_embeds" in kw:
            step["inputs_embeds"] = kw["inputs_embeds"][:, -1:]
        else:
            step["input_ids"] = kw["input_ids"][:, -1:]
        for i, cp in enumerate(cps):
            if cp is None:
                h = plain
            else:
                hm = HookManager(enc.model, enc.adapter)
                b = aux[(str(cp.aux_prompt), int(cp.layer))]  # type: ignore[arg-type]
                apply_cp(hm, int(cp.layer), b, cp.variant, float(cp.alpha))  # type: ignore[arg-type]
                _read_hook(hm, k, store)
                enc._run(step, None, hm)  # no TP hooks: the placeholder is not in this step
                h = store.pop("h")
                cache.crop(-1)
            total[i] = h.float() if total[i] is None else total[i] + h.float()  # type: ignore[operator]
    t = len(enc.templates)
    return [v / t for v in total]  # type: ignore[operator]


def encode_cp_variants(
    enc: Encoder,
    sentences: Sequence[str],
    cps: Sequence[Any],
    batch_size: int | None = None,
    show_progress_bar: bool = False,
) -> list[np.ndarray]:
    """Embeddings of ``sentences`` under each CP setting in ``cps`` (``None`` = no CP), sharing
    one main pass; ``enc`` gives every other setting (prompt, read-out layer, TP) and must have
    no CP of its own. Returns one ``(n, dim)`` float32 array per entry of ``cps``, equal to
    ``Encoder(..., cp=cps[i]).encode(sentences)``.
    """
    if enc.cp is not None:
        raise ValueError("encode_cp_variants: give an encoder without CP; the CP settings go in `cps`")
    texts = list(sentences)
    check_strings(texts)
    vencs = [with_cp(enc, cp) if CPConfig.coerce(cp) is not None else None for cp in cps]
    configs: list[CPConfig | None] = [None if v is None else v.cp for v in vencs]
    shareable = _shareable(enc)
    joint = [shareable and (c is None or _tp_allows(enc, c)) for c in configs]
    results: dict[int, np.ndarray] = {}
    for i, ok in enumerate(joint):  # settings that cannot share the pass get their own
        if not ok:
            results[i] = (vencs[i] or enc).encode(texts, batch_size=batch_size)
    idx_joint = [i for i, ok in enumerate(joint) if ok]
    # auxiliary prompts: one pass per distinct prompt, recording every layer it is needed at
    aux_layers: dict[str, list[int]] = {}
    aux_enc: dict[str, Encoder] = {}
    for i in idx_joint:
        c, v = configs[i], vencs[i]
        if c is not None and v is not None:
            aux_layers.setdefault(str(c.aux_prompt), []).append(int(c.layer))  # type: ignore[arg-type]
            aux_enc.setdefault(str(c.aux_prompt), v)

    def batch_fn(batch: list[str]) -> list[torch.Tensor]:
        aux: dict[tuple[str, int], torch.Tensor] = {}
        with torch.inference_mode():
            for prompt, layers in aux_layers.items():
                for l, b in _aux_values(aux_enc[prompt], batch, layers).items():
                    aux[(prompt, l)] = b
        return _joint_batch(enc, batch, [configs[i] for i in idx_joint], aux)

    if idx_joint:
        feats = enc.batched(texts, len(idx_joint), batch_fn, batch_size, show_progress_bar,
                            desc=f"encode x{len(idx_joint)}")
        for j, i in enumerate(idx_joint):
            results[i] = feats[j].numpy()
    return [results[i] for i in range(len(cps))]
