"""Architecture adapters: every supported family, on tiny random models built from config classes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from steerlab.arch import ARCH_TABLE, ArchitectureError, get_adapter
from steerlab.testing import TINY_FAMILIES, tiny_model

EXPECTED = {
    "llama": ("model.layers", "self_attn.o_proj", "model.norm"),
    "mistral": ("model.layers", "self_attn.o_proj", "model.norm"),
    "qwen2": ("model.layers", "self_attn.o_proj", "model.norm"),
    "qwen3": ("model.layers", "self_attn.o_proj", "model.norm"),
    "gemma": ("model.layers", "self_attn.o_proj", "model.norm"),
    "gemma2": ("model.layers", "self_attn.o_proj", "model.norm"),
    "gemma3": ("model.layers", "self_attn.o_proj", "model.norm"),
    "phi3": ("model.layers", "self_attn.o_proj", "model.norm"),
    "gpt2": ("transformer.h", "attn.c_proj", "transformer.ln_f"),
    "gpt_neox": ("gpt_neox.layers", "attention.dense", "gpt_neox.final_layer_norm"),
}


@pytest.mark.parametrize("family", sorted(TINY_FAMILIES))
def test_adapter_finds_modules_and_dims(family: str) -> None:
    lm = tiny_model(family)
    a = lm.adapter
    layers_path, o_proj_path, norm_path = EXPECTED[family]
    assert (a.layers_path, a.o_proj_path, a.final_norm_path) == (layers_path, o_proj_path, norm_path)
    assert not a.discovered
    assert (a.n_layers, a.n_heads, a.head_dim, a.hidden_size) == (4, 4, 16, 64)
    assert a.n_kv_heads == (4 if family in ("gpt2", "gpt_neox") else 2)
    # o_proj's input really is the concatenation of heads: capture its width in a forward pass
    seen: dict[str, tuple[int, ...]] = {}
    def record(module: nn.Module, args: tuple) -> None:
        seen["w"] = tuple(args[0].shape)

    h = a.o_proj(lm.model, 1).register_forward_pre_hook(record)
    try:
        lm.model(**lm.encode(["hi there"]))
    finally:
        h.remove()
    assert seen["w"][-1] == a.heads_width == 64
    # the final norm and MLP are real modules
    assert isinstance(a.final_norm(lm.model), nn.Module)
    assert isinstance(a.mlp(lm.model, 3), nn.Module)


def test_gemma3_heads_width_differs_from_hidden() -> None:
    lm = tiny_model("gemma3", hidden=64, n_heads=2)
    from transformers import AutoModelForCausalLM, Gemma3TextConfig

    cfg = Gemma3TextConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1,
                           head_dim=32, intermediate_size=128, vocab_size=300)
    a = get_adapter(AutoModelForCausalLM.from_config(cfg))
    assert a.heads_width == 128 and a.hidden_size == 64
    assert lm.adapter.family == "gemma3_text"


def test_layer_out_of_range_message(tiny) -> None:
    with pytest.raises(ValueError, match=r"layer 9 out of range: this model has layers 0..3"):
        tiny.adapter.layer(tiny.model, 9)
    assert tiny.adapter.check_layer(-1) == 3


class _OddBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attention = nn.Module()
        self.attention.out_proj = nn.Linear(8, 8)
        self.ffn = nn.Linear(8, 8)


class _OddModel(nn.Module):
    def __init__(self, with_attn: bool = True) -> None:
        super().__init__()
        from types import SimpleNamespace

        self.config = SimpleNamespace(model_type="oddnet", num_hidden_layers=3, hidden_size=8, num_attention_heads=2)
        self.blocks = nn.ModuleList([_OddBlock() for _ in range(3)])
        if not with_attn:
            for b in self.blocks:
                del b.attention
        self.norm = nn.LayerNorm(8)


def test_unknown_family_structural_discovery() -> None:
    a = get_adapter(_OddModel())
    assert a.discovered and a.layers_path == "blocks"
    assert a.o_proj_path == "attention.out_proj" and a.mlp_path == "ffn" and a.final_norm_path == "norm"
    assert a.head_dim == 4


def test_unknown_family_clear_error() -> None:
    with pytest.raises(ArchitectureError, match="no attention block"):
        get_adapter(_OddModel(with_attn=False))
    with pytest.raises(ArchitectureError, match="no .config"):
        get_adapter(nn.Linear(2, 2))


def test_table_is_read_only() -> None:
    with pytest.raises(TypeError, match="'mappingproxy' object does not support item assignment"):
        ARCH_TABLE["x"] = ARCH_TABLE["llama"]  # type: ignore[index]


def test_embedded_adapter(embedded) -> None:
    a = embedded.adapter
    assert (a.family, a.n_layers, a.n_heads, a.n_kv_heads, a.head_dim, a.hidden_size) == ("llama", 30, 9, 3, 64, 576)
    assert torch.equal(torch.tensor(a.heads_width), torch.tensor(576))
