"""Architecture adapters: where the decoder layers, attention, ``o_proj``, MLP and final norm live.

One declarative table maps a Hugging Face ``model_type`` to module paths; an unknown family
falls back to structural discovery, and a clear :class:`ArchitectureError` names what was not
found. Adapters are immutable and hold no reference to a model, so one adapter can serve many
model instances and threads.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Mapping

from torch import nn

__all__ = ["ArchSpec", "ArchAdapter", "ArchitectureError", "ARCH_TABLE", "get_adapter", "resolve"]


class ArchitectureError(ValueError):
    """The model's architecture is not supported or a module could not be found."""


@dataclass(frozen=True)
class ArchSpec:
    """Module paths of one model family.

    ``layers`` are candidate dotted paths from the top-level model (the first that exists wins,
    so ``*ForCausalLM`` and multimodal wrappers both work); the other paths are relative to one
    decoder layer, except ``final_norm`` and ``embed`` which are candidates from the top level.
    """

    layers: tuple[str, ...]
    attn: str
    o_proj: str
    mlp: str
    final_norm: tuple[str, ...]
    embed: tuple[str, ...]


_LLAMA_LIKE = ArchSpec(
    layers=("model.layers", "model.language_model.layers", "language_model.model.layers"),
    attn="self_attn",
    o_proj="self_attn.o_proj",
    mlp="mlp",
    final_norm=("model.norm", "model.language_model.norm", "language_model.model.norm"),
    embed=("model.embed_tokens", "model.language_model.embed_tokens"),
)

ARCH_TABLE: Mapping[str, ArchSpec] = MappingProxyType(
    {
        "llama": _LLAMA_LIKE,
        "mistral": _LLAMA_LIKE,
        "qwen2": _LLAMA_LIKE,
        "qwen3": _LLAMA_LIKE,
        "gemma": _LLAMA_LIKE,
        "gemma2": _LLAMA_LIKE,
        "gemma3": _LLAMA_LIKE,
        "gemma3_text": _LLAMA_LIKE,
        "phi3": _LLAMA_LIKE,
        "olmo2": _LLAMA_LIKE,
        "granite": _LLAMA_LIKE,
        "gpt2": ArchSpec(
            layers=("transformer.h",),
            attn="attn",
            o_proj="attn.c_proj",
            mlp="mlp",
            final_norm=("transformer.ln_f",),
            embed=("transformer.wte",),
        ),
        "gpt_neox": ArchSpec(
            layers=("gpt_neox.layers",),
            attn="attention",
            o_proj="attention.dense",
            mlp="mlp",
            final_norm=("gpt_neox.final_layer_norm",),
            embed=("gpt_neox.embed_in",),
        ),
    }
)

_ATTN_NAMES = ("self_attn", "attn", "attention", "self_attention")
_OPROJ_NAMES = ("o_proj", "out_proj", "dense", "c_proj", "wo", "o")
_MLP_NAMES = ("mlp", "feed_forward", "ffn", "block_sparse_moe")
_NORM_NAMES = ("norm", "ln_f", "final_layer_norm", "final_layernorm", "final_norm")


def resolve(root: nn.Module, path: str) -> nn.Module | None:
    """Follow a dotted path (``"model.layers"``, ``"self_attn.o_proj"``); None when absent."""
    obj: Any = root
    for part in path.split("."):
        if part.isdigit() and isinstance(obj, (nn.ModuleList, nn.Sequential)):
            idx = int(part)
            if idx >= len(obj):
                return None
            obj = obj[idx]
        else:
            obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj if isinstance(obj, nn.Module) else None


def _first(root: nn.Module, paths: tuple[str, ...]) -> tuple[str, nn.Module] | None:
    for p in paths:
        mod = resolve(root, p)
        if mod is not None:
            return p, mod
    return None


def _cfg(config: Any, *names: str, default: Any = None) -> Any:
    for n in names:
        v = getattr(config, n, None)
        if v is not None:
            return v
    return default


@dataclass(frozen=True)
class ArchAdapter:
    """Where things live in one model family, plus its dimensions.

    ``o_proj`` takes the concatenation of per-head outputs, ``n_heads * head_dim`` wide
    (which may differ from ``hidden_size``, e.g. Gemma-3).
    """

    family: str
    layers_path: str
    attn_path: str
    o_proj_path: str
    mlp_path: str
    final_norm_path: str | None
    embed_path: str | None
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    hidden_size: int
    discovered: bool = False

    @property
    def heads_width(self) -> int:
        return self.n_heads * self.head_dim

    def layers(self, model: nn.Module) -> nn.ModuleList:
        mod = resolve(model, self.layers_path)
        if not isinstance(mod, (nn.ModuleList, nn.Sequential)):
            raise ArchitectureError(f"decoder layers not found at '{self.layers_path}'")
        return mod  # type: ignore[return-value]

    def check_layer(self, layer: int) -> int:
        if not isinstance(layer, int) or isinstance(layer, bool):
            raise ValueError(f"layer must be an integer, got {layer!r}")
        if layer < 0:
            layer += self.n_layers
        if not 0 <= layer < self.n_layers:
            raise ValueError(f"layer {layer} out of range: this model has layers 0..{self.n_layers - 1}")
        return layer

    def layer(self, model: nn.Module, layer: int) -> nn.Module:
        return self.layers(model)[self.check_layer(layer)]

    def _sub(self, model: nn.Module, layer: int, path: str, what: str) -> nn.Module:
        mod = resolve(self.layer(model, layer), path)
        if mod is None:
            raise ArchitectureError(f"{what} not found at '{path}' in layer {layer} of {self.family}")
        return mod

    def attn(self, model: nn.Module, layer: int) -> nn.Module:
        return self._sub(model, layer, self.attn_path, "attention block")

    def o_proj(self, model: nn.Module, layer: int) -> nn.Module:
        return self._sub(model, layer, self.o_proj_path, "attention output projection")

    def mlp(self, model: nn.Module, layer: int) -> nn.Module:
        return self._sub(model, layer, self.mlp_path, "MLP")

    def final_norm(self, model: nn.Module) -> nn.Module:
        mod = resolve(model, self.final_norm_path) if self.final_norm_path else None
        if mod is None:
            raise ArchitectureError(f"final norm not found for {self.family}")
        return mod

    def describe(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "layers": self.n_layers,
            "heads": self.n_heads,
            "kv_heads": self.n_kv_heads,
            "head_dim": self.head_dim,
            "hidden_size": self.hidden_size,
            "layers_path": self.layers_path,
            "o_proj": self.o_proj_path,
            "discovered": self.discovered,
        }


def _dims(config: Any) -> tuple[int, int, int, int, int]:
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    n_layers = _cfg(text, "num_hidden_layers", "n_layer", "num_layers")
    hidden = _cfg(text, "hidden_size", "n_embd", "d_model")
    n_heads = _cfg(text, "num_attention_heads", "n_head", "num_heads")
    missing = [n for n, v in (("num_hidden_layers", n_layers), ("hidden_size", hidden), ("num_attention_heads", n_heads)) if v is None]
    if missing:
        raise ArchitectureError(f"model config lacks {', '.join(missing)}")
    n_kv = _cfg(text, "num_key_value_heads", default=n_heads)
    head_dim = _cfg(text, "head_dim", default=None) or hidden // n_heads
    return int(n_layers), int(n_heads), int(n_kv), int(head_dim), int(hidden)


def _discover(model: nn.Module, n_layers: int) -> ArchSpec:
    """Find layers/attn/o_proj/mlp/norm by structure; raise naming the first part not found."""
    layer_path = None
    for name, mod in model.named_modules():
        if isinstance(mod, nn.ModuleList) and len(mod) == n_layers and n_layers > 0:
            layer_path = name
            break
    if layer_path is None:
        raise ArchitectureError(f"unsupported architecture: no list of {n_layers} decoder layers found")
    first = resolve(model, layer_path)[0]  # type: ignore[index]
    attn = next((n for n in _ATTN_NAMES if isinstance(getattr(first, n, None), nn.Module)), None)
    if attn is None:
        raise ArchitectureError(f"unsupported architecture: no attention block (tried {', '.join(_ATTN_NAMES)}) in the decoder layer")
    attn_mod = getattr(first, attn)
    o_proj = next((n for n in _OPROJ_NAMES if isinstance(getattr(attn_mod, n, None), nn.Module)), None)
    if o_proj is None:
        raise ArchitectureError(f"unsupported architecture: no output projection (tried {', '.join(_OPROJ_NAMES)}) in '{attn}'")
    mlp = next((n for n in _MLP_NAMES if isinstance(getattr(first, n, None), nn.Module)), None)
    if mlp is None:
        raise ArchitectureError(f"unsupported architecture: no MLP (tried {', '.join(_MLP_NAMES)}) in the decoder layer")
    parent = layer_path.rsplit(".", 1)[0] if "." in layer_path else ""
    norms = tuple(f"{parent}.{n}" if parent else n for n in _NORM_NAMES)
    return ArchSpec(layers=(layer_path,), attn=attn, o_proj=f"{attn}.{o_proj}", mlp=mlp, final_norm=norms, embed=())


def get_adapter(model: nn.Module) -> ArchAdapter:
    """The adapter for ``model``: table lookup by ``config.model_type``, else structural discovery."""
    config = getattr(model, "config", None)
    if config is None:
        raise ArchitectureError("not a Hugging Face model: it has no .config")
    n_layers, n_heads, n_kv, head_dim, hidden = _dims(config)
    model_type = getattr(config, "model_type", "unknown")
    text_type = getattr(config.get_text_config(), "model_type", model_type) if hasattr(config, "get_text_config") else model_type
    spec = ARCH_TABLE.get(model_type) or ARCH_TABLE.get(text_type)
    discovered = False
    found = _first(model, spec.layers) if spec else None
    if spec is None or found is None:
        spec = _discover(model, n_layers)
        discovered = True
        found = _first(model, spec.layers)
        assert found is not None
    layers_path, layers = found
    first = layers[0]  # type: ignore[index]
    for what, path in (("attention block", spec.attn), ("attention output projection", spec.o_proj), ("MLP", spec.mlp)):
        if resolve(first, path) is None:
            raise ArchitectureError(f"unsupported architecture {model_type}: {what} not found at '{path}'")
    norm = _first(model, spec.final_norm)
    embed = _first(model, spec.embed) if spec.embed else None
    return ArchAdapter(
        family=model_type,
        layers_path=layers_path,
        attn_path=spec.attn,
        o_proj_path=spec.o_proj,
        mlp_path=spec.mlp,
        final_norm_path=norm[0] if norm else None,
        embed_path=embed[0] if embed else None,
        n_layers=n_layers,
        n_heads=n_heads,
        n_kv_heads=n_kv,
        head_dim=head_dim,
        hidden_size=hidden,
        discovered=discovered,
    )
