"""Training-free sentence embeddings from a causal LM: prompt, read the last token.

``Encoder(model, prompt=..., layer=..., cp=..., tp=...)`` follows the sentence-transformers
``encode()`` contract and accepts MTEB's keyword arguments.

Read-out layer ``layer`` = index into Hugging Face ``output_hidden_states``: ``k`` is the output
after ``k`` decoder layers (``1 <= k <= n_layers``). For ``k < n_layers`` that is the raw
residual stream (no final norm); for ``k = n_layers`` it is the final-norm output, exactly
what ``output_hidden_states[-1]`` returns, which is what the original PromptEOL code read as
"the last layer". The forward pass stops right after the read-out layer (later layers and the
LM head never run). Accepted forms: an int ``k`` (negative counts from the end like a Python
index into the ``n_layers + 1`` hidden states: ``-1`` = last, ``-2`` = penultimate), a float
in ``(0, 1]`` (fraction of depth, rounded), ``"last"`` / ``"penultimate"``, or ``None`` for the
prompt's default: ``27/32`` of depth for PromptEOL / PretCoT / MetaEOL / custom templates
(the TP and CP papers read layer 27 of Llama-2-7B's 32) and the penultimate layer for KE.

Inputs are left padded (the read-out token is the last column) and get position ids counted
over each row's real tokens, so an embedding does not depend on the batch it was computed in.
"""

from __future__ import annotations

import dataclasses
import os
from contextlib import ExitStack
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..arch import ArchitectureError
from ..hooks import HookManager, StepState, StopForward
from ..models import LoadedModel, load_model
from ..progress import ProgressBar, progress_for
from ..runtime import base_prefix, forward, position_ids
from ..sites import Site, SiteKind
from .cp import CPConfig, apply_cp, cp_default_alpha, cp_default_layer, record_aux
from .prompts import AUX_PROMPT, fill, get_prompt, preprocess_sentence, with_placeholder
from .tp import Placeholder, TPConfig, add_tp_hooks, tp_default_exit

__all__ = ["Encoder", "resolve_layer", "default_layer"]

_PAPER_READ = 27  # TP / CP papers read hidden_states[27] of Llama-2-7B (32 layers)
_PAPER_DEPTH = 32
_MIN_PREFIX = 2  # shorter shared prefixes are not worth a separate forward call


def _drop_prefix(ids: torch.Tensor, mask: torch.Tensor, n: int, pad_id: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Remove the first ``n`` real tokens of every (left-padded) row and left-pad the rest again."""
    lens = mask.sum(-1) - n
    width = int(lens.max())
    pad = 0 if pad_id is None else int(pad_id)
    new_ids = torch.full((ids.shape[0], width), pad, dtype=ids.dtype, device=ids.device)
    new_mask = torch.zeros((ids.shape[0], width), dtype=mask.dtype, device=mask.device)
    for b, m in enumerate(lens.tolist()):
        new_ids[b, width - m:] = ids[b, ids.shape[1] - m:]
        new_mask[b, width - m:] = 1
    return new_ids, new_mask


def check_strings(texts: Sequence[Any]) -> None:
    """Raise a clear error naming the first item of ``texts`` that is not a string."""
    bad = [i for i, s in enumerate(texts) if not isinstance(s, str)]
    if bad:
        raise ValueError(f"sentences must be strings; item {bad[0]} is {type(texts[bad[0]]).__name__}")


def default_layer(prompt_name: str, n_layers: int) -> int:
    """Default read-out index for a prompt, relative to depth (see the module doc)."""
    if prompt_name == "ke":
        return max(n_layers - 1, 1)
    return min(max(round(_PAPER_READ / _PAPER_DEPTH * n_layers), 1), n_layers)


def resolve_layer(layer: Any, n_layers: int, prompt_name: str = "prompteol") -> int:
    """A read-out spec -> hidden-states index ``k`` in ``1..n_layers``."""
    if layer is None:
        return default_layer(prompt_name, n_layers)
    if isinstance(layer, str):
        key = layer.strip().lower()
        if key == "last":
            return n_layers
        if key == "penultimate":
            return max(n_layers - 1, 1)
        try:
            layer = float(key) if "." in key else int(key)
        except ValueError:
            raise ValueError(f"bad read-out layer '{layer}': use an int, a fraction, 'last' or 'penultimate'") from None
    if isinstance(layer, bool):
        raise ValueError(f"bad read-out layer {layer!r}")
    if isinstance(layer, float):
        if not 0.0 < layer <= 1.0:
            raise ValueError(f"a fractional read-out layer must be in (0, 1], got {layer}")
        return min(max(round(layer * n_layers), 1), n_layers)
    if isinstance(layer, (int, np.integer)):
        k = int(layer)
        if k < 0:
            k += n_layers + 1
        if k == 0:
            raise ValueError("read-out layer 0 is the token embedding of the last prompt token; use 1..n_layers")
        if not 1 <= k <= n_layers:
            raise ValueError(f"read-out layer {layer} out of range: this model has hidden states 1..{n_layers}")
        return k
    raise ValueError(f"bad read-out layer {layer!r}")


class Encoder:
    """Sentence embeddings from a causal LM with a PromptEOL-style prompt, optional CP and TP.

    >>> enc = Encoder("embedded", prompt="prompteol", cp="ns", tp=True)
    >>> emb = enc.encode(["A man is playing a guitar.", "A person plays music."], normalize_embeddings=True)

    ``model``: a :class:`~steerlab.models.LoadedModel` or anything :func:`~steerlab.load_model`
    accepts. ``prompt``: ``prompteol``, ``pretcot``, ``ke``, ``metaeol`` or a template with
    ``{s}`` (or a list of templates, averaged). ``cp``: ``None``, ``True``/``"ns"``, ``"nr"``, a
    dict or :class:`CPConfig`. ``tp``: ``None``, ``True``, an exit layer, a dict or
    :class:`TPConfig`. ``preprocess``: apply PromptEOL's sentence clean-up (final period, double
    quotes to single) as the reference code does. ``max_sentence_tokens``: cut longer sentences
    (the prompt around them is kept whole, so the read-out token never changes).
    ``share_prefix``: run the token prefix common to a batch's prompts once (exact; faster).
    """

    def __init__(
        self,
        model: LoadedModel | str | os.PathLike[str] = "embedded",
        prompt: str | Sequence[str] = "prompteol",
        layer: int | float | str | None = None,
        cp: Any = None,
        tp: Any = None,
        *,
        batch_size: int = 32,
        preprocess: bool = True,
        max_sentence_tokens: int | None = None,
        share_prefix: bool = True,
    ) -> None:
        self.lm = model if isinstance(model, LoadedModel) else load_model(model)
        self.model = self.lm.model
        self.adapter = self.lm.adapter
        self.n_layers = self.adapter.n_layers
        self.prompt = get_prompt(prompt)
        self.layer = resolve_layer(layer, self.n_layers, self.prompt.name)
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.batch_size = batch_size
        self.preprocess = bool(preprocess)
        if max_sentence_tokens is not None and max_sentence_tokens < 1:
            raise ValueError("max_sentence_tokens must be >= 1")
        self.max_sentence_tokens = max_sentence_tokens
        self.share_prefix = bool(share_prefix)

        cfg = CPConfig.coerce(cp)
        if cfg is not None:
            l = cp_default_layer(self.prompt.name, self.n_layers) if cfg.layer is None else int(cfg.layer)
            if l < 0:
                l += self.n_layers
            if not 0 <= l < self.layer:
                raise ValueError(
                    f"CP layer {cfg.layer} must be a 0-based layer before the read-out (0..{self.layer - 1})"
                )
            alpha = cp_default_alpha(self.prompt.name) if cfg.alpha is None else float(cfg.alpha)
            aux = AUX_PROMPT if cfg.aux_prompt is None else get_prompt(cfg.aux_prompt).templates[0]
            cfg = CPConfig(cfg.variant, l, alpha, aux)
        self.cp: CPConfig | None = cfg

        tcfg = TPConfig.coerce(tp)
        self._pst: Placeholder | None = None
        if tcfg is not None:
            exit_ = tp_default_exit(self.n_layers, tcfg.start) if tcfg.exit is None else tcfg.exit
            if exit_ > self.n_layers or tcfg.start >= self.n_layers:
                raise ValueError(f"TP layers [{tcfg.start}, {exit_}) out of range for {self.n_layers} layers")
            tcfg = dataclasses.replace(tcfg, exit=exit_)
            self._pst = Placeholder(self.lm.tokenizer, self.model.get_input_embeddings(), tcfg.placeholder, tcfg.seed,
                                    tcfg.init)
        self.tp: TPConfig | None = tcfg

        self.templates = tuple(
            with_placeholder(t, tcfg.placeholder) if tcfg else t for t in self.prompt.templates
        )
        self.aux_template = None
        if self.cp is not None:
            self.aux_template = with_placeholder(self.cp.aux_prompt, tcfg.placeholder) if tcfg else self.cp.aux_prompt
        self.tokenizer = self._pst.tokenizer if self._pst else self.lm.tokenizer
        if getattr(self.tokenizer, "padding_side", "left") != "left":
            raise ValueError("the tokenizer must pad on the left (load the model with steerlab.load_model)")
        try:
            self._final_norm = self.adapter.final_norm(self.model)
        except ArchitectureError:
            self._final_norm = None  # read the raw last-layer residual instead

    # ------------------------------------------------------------------ info
    @property
    def embedding_dim(self) -> int:
        return self.adapter.hidden_size

    def get_sentence_embedding_dimension(self) -> int:
        """sentence-transformers name of :attr:`embedding_dim`."""
        return self.embedding_dim

    def describe(self) -> dict[str, Any]:
        """Everything that determines the embeddings (used to key caches and results)."""
        return {
            "model": self.lm.name,
            "source": self.lm.source,
            "dtype": str(self.lm.dtype).replace("torch.", ""),
            "n_layers": self.n_layers,
            "prompt": self.prompt.name,
            "templates": list(self.templates),
            "layer": self.layer,
            "cp": None if self.cp is None else {
                "variant": self.cp.variant, "layer": self.cp.layer, "alpha": self.cp.alpha, "aux_prompt": self.aux_template
            },
            "tp": None if self.tp is None else {
                "start": self.tp.start, "exit": self.tp.exit, "placeholder": self.tp.placeholder, "seed": self.tp.seed,
                # written only when not the default, so stores made before the option existed still resume
                **({"init": self.tp.init} if self.tp.init != "embedding_stats" else {}),
            },
            "preprocess": self.preprocess,
            "max_sentence_tokens": self.max_sentence_tokens,
        }

    def __repr__(self) -> str:
        d = self.describe()
        return f"Encoder(model={d['model']!r}, prompt={d['prompt']!r}, layer={d['layer']}, cp={d['cp']}, tp={d['tp']})"

    # ------------------------------------------------------------------ public API
    def encode(
        self,
        sentences: str | Sequence[str],
        batch_size: int | None = None,
        show_progress_bar: bool | ProgressBar | None = None,
        output_value: str | None = "sentence_embedding",
        convert_to_numpy: bool = True,
        convert_to_tensor: bool = False,
        device: Any = None,
        normalize_embeddings: bool = False,
        *,
        task_name: str | None = None,
        prompt_type: Any = None,
        **kwargs: Any,
    ) -> np.ndarray | torch.Tensor:
        """Embed sentences (sentence-transformers contract; MTEB's ``task_name``/``prompt_type``
        and other keywords are accepted and ignored: the encoder is symmetric).

        Returns ``(n, dim)`` float32 (one vector for a single string): a numpy array, or a
        tensor when ``convert_to_tensor`` (or ``convert_to_numpy=False``).
        """
        if output_value not in (None, "sentence_embedding"):
            raise ValueError(f"output_value '{output_value}' is not supported (only 'sentence_embedding')")
        single = isinstance(sentences, str)
        texts = [sentences] if single else list(sentences)
        check_strings(texts)
        out = self._encode(texts, (self.layer,), batch_size, show_progress_bar)[self.layer]
        if normalize_embeddings:
            out = F.normalize(out, dim=-1)
        if single:
            out = out[0]
        if convert_to_tensor or not convert_to_numpy:
            return out
        return out.numpy()

    def encode_layers(
        self,
        sentences: Sequence[str],
        layers: Iterable[int | float | str],
        batch_size: int | None = None,
        show_progress_bar: bool | ProgressBar | None = None,
    ) -> dict[int, np.ndarray]:
        """Embeddings read at several layers in one pass (for read-out sweeps): ``{k: (n, dim)}``.

        CP and TP settings apply as configured; a CP layer must lie before every read-out.
        """
        ks = tuple(sorted({resolve_layer(l, self.n_layers, self.prompt.name) for l in layers}))
        if not ks:
            raise ValueError("no layers given")
        if self.cp is not None and self.cp.layer >= ks[0]:
            raise ValueError(f"CP layer {self.cp.layer} must come before every read-out layer (min {ks[0]})")
        res = self._encode(list(sentences), ks, batch_size, show_progress_bar)
        return {k: v.numpy() for k, v in res.items()}

    # ------------------------------------------------------------------ internals
    def _encode(
        self, texts: list[str], ks: tuple[int, ...], batch_size: int | None,
        show_progress_bar: bool | ProgressBar | None
    ) -> dict[int, torch.Tensor]:
        outs = self.batched(texts, len(ks), lambda batch: [f for f in self.embed_batch(batch, ks).values()],
                            batch_size, show_progress_bar)
        return dict(zip(ks, outs))

    def batched(
        self,
        texts: list[str],
        n_out: int,
        fn: Callable[[list[str]], Sequence[torch.Tensor]],
        batch_size: int | None = None,
        show_progress_bar: bool | ProgressBar | None = None,
        desc: str = "encode",
    ) -> list[torch.Tensor]:
        """Run ``fn`` over batches of the *prepared* ``texts`` (sorted by length so that similar lengths
        share a batch) and put its ``n_out`` results per batch back in input order: ``n_out`` float32
        tensors of shape ``(len(texts), dim)``. ``show_progress_bar``: True shows a bar over these
        sentences; a :class:`~steerlab.progress.ProgressBar` is advanced per batch instead (a caller's
        bar over a larger job, e.g. every chunk of ``steerlab embed``)."""
        bs = self.batch_size if batch_size is None else int(batch_size)
        if bs < 1:
            raise ValueError(f"batch_size must be >= 1, got {bs}")
        out = [torch.empty(len(texts), self.embedding_dim, dtype=torch.float32) for _ in range(n_out)]
        if not texts:
            return out
        sents = [self._prepare(s) for s in texts]
        order = sorted(range(len(sents)), key=lambda i: -len(sents[i]))
        with progress_for(show_progress_bar, len(sents), desc, "sent") as bar:
            for start in range(0, len(order), bs):
                idx = order[start:start + bs]
                feats = fn([sents[i] for i in idx])
                index = torch.tensor(idx)
                for o, f in zip(out, feats):
                    o[index] = f.float().cpu()
                bar.advance(len(idx))
        return out

    def _prepare(self, s: str) -> str:
        if self.max_sentence_tokens is not None:
            tok = self.lm.tokenizer
            ids = tok(s, add_special_tokens=False)["input_ids"]
            if len(ids) > self.max_sentence_tokens:
                s = tok.decode(ids[: self.max_sentence_tokens])
        return preprocess_sentence(s) if self.preprocess else s

    def _inputs(self, texts: list[str], last_layer: int) -> tuple[dict[str, Any], torch.Tensor | None]:
        """Model inputs for one batch of prompts and each row's placeholder column (TP).

        With ``share_prefix``, the token prefix common to every row (e.g. ``This sentence :``)
        runs once as a single row; its key/value cache is repeated over the batch and only the
        rest of each prompt runs per row. Causal attention makes this exact (the prefix does not
        see the sentence); the prefix stops before the placeholder, which TP edits. The prefix
        pass, like the pass that follows, runs decoder layers ``0 .. last_layer`` only.
        """
        enc = self.tokenizer(texts, return_tensors="pt", padding=True)
        device = self.lm.device
        ids = enc["input_ids"].to(device)
        mask = enc["attention_mask"].to(device)
        cache = None
        n_prefix = self._common_prefix(ids, mask) if self.share_prefix else 0
        if n_prefix >= _MIN_PREFIX:
            cache = self._prefix_cache(ids, mask, n_prefix, last_layer)
            ids, mask = _drop_prefix(ids, mask, n_prefix, self.tokenizer.pad_token_id)
            pos = position_ids(mask, offset=n_prefix)
            mask = torch.cat([torch.ones(mask.shape[0], n_prefix, dtype=mask.dtype, device=device), mask], dim=1)
        else:
            pos = position_ids(mask)
        kw: dict[str, Any] = {"attention_mask": mask, "position_ids": pos}
        if cache is not None:
            kw["past_key_values"] = cache
        pst_pos = None
        if self._pst is not None:
            kw["inputs_embeds"], pst_pos = self._pst.inputs_embeds(ids)
        else:
            kw["input_ids"] = ids
        return kw, pst_pos

    def _common_prefix(self, ids: torch.Tensor, mask: torch.Tensor) -> int:
        """Length of the token prefix shared by every row (left padding skipped), keeping at least
        one token per row after it and stopping before the TP placeholder."""
        lens = mask.sum(-1)
        starts = (ids.shape[1] - lens).tolist()
        n_max = int(lens.min()) - 1
        if ids.shape[0] < 2 or n_max < _MIN_PREFIX:
            return 0
        first = ids[0, starts[0]: starts[0] + n_max]
        n = n_max
        for b in range(1, ids.shape[0]):
            row = ids[b, starts[b]: starts[b] + n]
            diff = (row != first[:n]).nonzero()
            if diff.numel():
                n = int(diff[0, 0])
                if n < _MIN_PREFIX:
                    return 0
        if self._pst is not None:
            hit = (first[:n] == self._pst.token_id).nonzero()
            if hit.numel():
                n = int(hit[0, 0])
        return n

    def _prefix_cache(self, ids: torch.Tensor, mask: torch.Tensor, n: int, last_layer: int) -> Any:
        """The shared prefix's KV cache (layers ``0..last_layer``), run once and repeated over the batch."""
        start = int(ids.shape[1] - mask[0].sum())
        prefix = ids[0, start:start + n].tolist()
        return base_prefix(self.lm, prefix, stop_after=last_layer).expand(ids.shape[0])

    def _run(self, kw: dict[str, torch.Tensor], pst_pos: torch.Tensor | None, hm: HookManager,
             final_norm_store: dict[int, torch.Tensor] | None = None) -> None:
        if pst_pos is not None and self.tp is not None:
            add_tp_hooks(hm, range(self.tp.start, self.tp.exit), pst_pos)
        with ExitStack() as stack:
            if final_norm_store is not None:
                assert self._final_norm is not None
                store = final_norm_store

                def norm_hook(module: Any, args: Any, out: Any) -> None:
                    t = out[0] if isinstance(out, tuple) else out
                    store[self.n_layers] = t[:, -1, :].detach().clone()
                    raise StopForward

                handle = self._final_norm.register_forward_hook(norm_hook)
                stack.callback(handle.remove)
            try:  # the final-norm read above ends the pass outside the hook manager
                forward(self.lm, hm, **kw, use_cache="past_key_values" in kw)
            except StopForward:
                pass

    @torch.inference_mode()
    def aux_pass(self, sentences: list[str]) -> torch.Tensor:
        """CP's auxiliary pass for prepared sentences: the last token's ``o_proj`` input at the CP
        layer, ``(n, heads_width)``. Runs decoder layers ``0 .. cp.layer`` only (one batch)."""
        if self.cp is None or self.aux_template is None:
            raise RuntimeError("this encoder has no CP configured")
        kw, pst_pos = self._inputs([fill(self.aux_template, s) for s in sentences], self.cp.layer)
        hm = HookManager(self.model, self.adapter)
        store: dict[str, torch.Tensor] = {}
        record_aux(hm, self.cp.layer, store)
        self._run(kw, pst_pos, hm)
        if "b" not in store:
            raise RuntimeError("CP auxiliary pass did not reach the intervention layer")
        return store["b"]

    @torch.inference_mode()
    def embed_batch(self, sentences: list[str], ks: tuple[int, ...] | None = None) -> dict[int, torch.Tensor]:
        """One batch of *prepared* sentences -> ``{k: (n, dim)}`` in the model's dtype.

        The CP auxiliary pass (if any) runs first as one batched forward that stops at the CP
        layer; then one main pass per template (MetaEOL has 8, averaged) runs up to the last
        requested read-out layer.
        """
        ks = (self.layer,) if ks is None else ks
        b = self.aux_pass(sentences) if self.cp is not None else None
        total: dict[int, torch.Tensor] = {}
        for tpl in self.templates:
            feats = self._main_pass([fill(tpl, s) for s in sentences], ks, b)
            for k in ks:
                total[k] = feats[k].float() if k not in total else total[k] + feats[k].float()
        t = len(self.templates)
        return {k: v / t for k, v in total.items()} if t > 1 else total

    def _main_pass(self, prompts: list[str], ks: tuple[int, ...], b: torch.Tensor | None) -> dict[int, torch.Tensor]:
        kw, pst_pos = self._inputs(prompts, max(ks) - 1)
        hm = HookManager(self.model, self.adapter)
        if self.cp is not None:
            assert b is not None
            apply_cp(hm, self.cp.layer, b, self.cp.variant, self.cp.alpha)  # type: ignore[arg-type]
        feats: dict[int, torch.Tensor] = {}
        k_max = max(ks)
        use_norm = k_max == self.n_layers and self._final_norm is not None
        for k in ks:
            if k == self.n_layers and use_norm:
                continue

            def read(x: torch.Tensor, site: Site, state: StepState, k: int = k) -> None:
                feats[k] = x[:, -1, :].detach().clone()
                if k == k_max:
                    raise StopForward

            hm.add(Site(SiteKind.RESIDUAL, k - 1), read)
        self._run(kw, pst_pos, hm, feats if use_norm else None)
        missing = [k for k in ks if k not in feats]
        if missing:
            raise RuntimeError(f"read-out layer(s) {missing} were not reached")
        return feats
