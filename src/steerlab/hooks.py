"""Scoped hook manager.

:class:`HookManager` registers forward (pre-)hooks for a set of sites inside a ``with`` block
and always removes them, also when the block raises. It never replaces or mutates the user's
modules, and all state lives on the manager instance: two models, or two threads steering the
same model, do not interfere (a hook only acts in the thread that entered the block).

An edit function has the signature ``fn(x, site, state) -> Tensor | None``: ``x`` is the
activation at the site (``(batch, seq, width)``), ``state`` the per-forward :class:`StepState`
set by the caller (token positions, prompt lengths). Returning a tensor replaces the
activation; returning None leaves it as it is (read-only hooks). Raising :class:`StopForward`
ends the forward pass early; the ``with`` block swallows it.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from .arch import ArchAdapter, get_adapter
from .sites import Site, site_module

__all__ = ["StepState", "HookManager", "StopForward", "EditFn", "positions_from_mask"]


@dataclass
class StepState:
    """What a hook may need to know about the current forward call.

    ``positions[b, t]`` is the index of token ``t`` of row ``b`` among that row's real tokens
    (left padding excluded; -1 on pads). ``prompt_lens[b]`` is the length of row ``b``'s prompt.
    ``scratch`` caches per-step values (e.g. position masks) so that every layer reuses them.
    ``last_only``: only the last position of each row in this forward may be edited (steering whose
    earlier positions must stay unsteered, e.g. :func:`steerlab.generate`'s ``kv_cache="unsteered"``).
    """

    positions: torch.Tensor | None = None
    prompt_lens: torch.Tensor | None = None
    scratch: dict[Any, Any] = field(default_factory=dict)
    min_position: int | None = None  # host-side lower bound of ``positions`` over real tokens, if known
    last_only: bool = False


def positions_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Per-row token index from a (left-padded) attention mask; -1 on pads."""
    mask = attention_mask.long()
    return torch.where(mask.bool(), mask.cumsum(-1) - 1, torch.full_like(mask, -1))


class StopForward(Exception):
    """Raised by an edit function to end a forward pass early (e.g. an auxiliary pass)."""


EditFn = Callable[[torch.Tensor, Site, StepState], "torch.Tensor | None"]


def _first_tensor(out: Any) -> tuple[torch.Tensor, Callable[[torch.Tensor], Any]]:
    """Split a module output into its main tensor and a function that rebuilds the output."""
    if isinstance(out, torch.Tensor):
        return out, lambda t: t
    if isinstance(out, tuple) and out and isinstance(out[0], torch.Tensor):
        return out[0], lambda t: (t, *out[1:])
    if hasattr(out, "last_hidden_state"):
        def rebuild(t: torch.Tensor) -> Any:
            out.last_hidden_state = t
            return out
        return out.last_hidden_state, rebuild
    raise TypeError(f"cannot find the activation tensor in a module output of type {type(out).__name__}")


class HookManager:
    """Register edit/read functions at sites for the duration of a ``with`` block.

    >>> hm = HookManager(model)
    >>> hm.add(Site.residual(5), lambda x, site, state: x + v)
    >>> with hm:
    ...     model(**batch)
    """

    def __init__(self, model: nn.Module, adapter: ArchAdapter | None = None) -> None:
        self.model = model
        self.adapter = adapter or get_adapter(model)
        self.state = StepState()
        self._fns: dict[Site, list[EditFn]] = defaultdict(list)
        self._handles: list[RemovableHandle] = []
        self._thread: int | None = None

    def add(self, site: Site, fn: EditFn) -> "HookManager":
        self._fns[site.normalized(self.adapter)].append(fn)
        return self

    def add_many(self, items: Iterable[tuple[Site, EditFn]]) -> "HookManager":
        for site, fn in items:
            self.add(site, fn)
        return self

    @property
    def sites(self) -> list[Site]:
        return sorted(self._fns)

    def set_state(self, positions: torch.Tensor | None = None, prompt_lens: torch.Tensor | None = None,
                  min_position: int | None = None, last_only: bool = False) -> StepState:
        self.state = StepState(positions=positions, prompt_lens=prompt_lens, min_position=min_position,
                               last_only=last_only)
        return self.state

    def _make_hook(self, site: Site, fns: list[EditFn], pre: bool) -> Callable[..., Any]:
        def run(x: torch.Tensor) -> torch.Tensor | None:
            changed = None
            for fn in fns:
                y = fn(x if changed is None else changed, site, self.state)
                if y is not None:
                    changed = y
            return changed

        if pre:  # the module's input: its first positional tensor, or the ``hidden_states`` keyword (decoder blocks)
            def pre_hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
                if threading.get_ident() != self._thread:
                    return None
                if args and isinstance(args[0], torch.Tensor):
                    y = run(args[0])
                    return None if y is None else ((y, *args[1:]), kwargs)
                x = kwargs.get("hidden_states")
                if isinstance(x, torch.Tensor):
                    y = run(x)
                    return None if y is None else (args, {**kwargs, "hidden_states": y})
                raise RuntimeError(f"cannot find the input activation of {type(module).__name__} at {site.key}")
            return pre_hook

        if len(fns) == 1:  # the common case: one edit at this site, skip the loop and closures
            fn = fns[0]

            def fwd_hook_one(module: nn.Module, args: tuple[Any, ...], out: Any) -> Any:
                if threading.get_ident() != self._thread:
                    return None
                if type(out) is torch.Tensor:
                    return fn(out, site, self.state)
                x, rebuild = _first_tensor(out)
                y = fn(x, site, self.state)
                return None if y is None else rebuild(y)
            return fwd_hook_one

        def fwd_hook(module: nn.Module, args: tuple[Any, ...], out: Any) -> Any:
            if threading.get_ident() != self._thread:
                return None
            x, rebuild = _first_tensor(out)
            y = run(x)
            return None if y is None else rebuild(y)
        return fwd_hook

    def __enter__(self) -> "HookManager":
        if self._handles:
            raise RuntimeError("this HookManager is already active")
        self._thread = threading.get_ident()
        try:
            for site, fns in self._fns.items():
                module, pre = site_module(self.adapter, self.model, site)
                hook = self._make_hook(site, list(fns), pre)
                handle = (module.register_forward_pre_hook(hook, with_kwargs=True) if pre
                          else module.register_forward_hook(hook))
                self._handles.append(handle)
        except BaseException:
            self._remove()
            raise
        return self

    def _remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._thread = None

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        self._remove()
        return exc_type is not None and issubclass(exc_type, StopForward)
