"""Tiny random-weight models built in-process, for fast tests and examples.

``tiny_model("llama")`` builds a 4-layer model of the given family from its config class, with
a byte-level tokenizer (every string tokenizes, no files needed). Nothing is downloaded.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from .models import LoadedModel, wrap_model

__all__ = ["TINY_FAMILIES", "tiny_tokenizer", "tiny_model"]

_CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def tiny_tokenizer() -> Any:
    """A byte-level BPE tokenizer with no merges: 256 byte tokens + ``<s>``, ``</s>``, ``<pad>``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    for special in ("<s>", "</s>", "<pad>"):
        vocab[special] = len(vocab)
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    tok.chat_template = _CHAT_TEMPLATE
    tok.padding_side = "left"
    return tok


def _cfg_llama(**kw: Any) -> Any:
    from transformers import LlamaConfig
    return LlamaConfig(**kw)


def _cfg_mistral(**kw: Any) -> Any:
    from transformers import MistralConfig
    return MistralConfig(**kw)


def _cfg_qwen2(**kw: Any) -> Any:
    from transformers import Qwen2Config
    return Qwen2Config(**kw)


def _cfg_qwen3(**kw: Any) -> Any:
    from transformers import Qwen3Config
    return Qwen3Config(**kw)


def _cfg_gemma(**kw: Any) -> Any:
    from transformers import GemmaConfig
    return GemmaConfig(**kw)


def _cfg_gemma2(**kw: Any) -> Any:
    from transformers import Gemma2Config
    return Gemma2Config(**kw)


def _cfg_gemma3(**kw: Any) -> Any:
    from transformers import Gemma3TextConfig
    return Gemma3TextConfig(**kw)


def _cfg_phi3(**kw: Any) -> Any:
    from transformers import Phi3Config
    return Phi3Config(**kw)


def _cfg_gpt2(**kw: Any) -> Any:
    from transformers import GPT2Config
    return GPT2Config(n_embd=kw["hidden_size"], n_layer=kw["num_hidden_layers"], n_head=kw["num_attention_heads"],
                      n_positions=kw["max_position_embeddings"], vocab_size=kw["vocab_size"],
                      bos_token_id=kw["bos_token_id"], eos_token_id=kw["eos_token_id"])


def _cfg_neox(**kw: Any) -> Any:
    from transformers import GPTNeoXConfig
    kw.pop("num_key_value_heads", None)
    kw.pop("head_dim", None)
    return GPTNeoXConfig(**kw)


TINY_FAMILIES: dict[str, Callable[..., Any]] = {
    "llama": _cfg_llama,
    "mistral": _cfg_mistral,
    "qwen2": _cfg_qwen2,
    "qwen3": _cfg_qwen3,
    "gemma": _cfg_gemma,
    "gemma2": _cfg_gemma2,
    "gemma3": _cfg_gemma3,
    "phi3": _cfg_phi3,
    "gpt2": _cfg_gpt2,
    "gpt_neox": _cfg_neox,
}


def tiny_model(family: str = "llama", n_layers: int = 4, hidden: int = 64, n_heads: int = 4,
               n_kv_heads: int = 2, seed: int = 0, dtype: torch.dtype = torch.float32) -> LoadedModel:
    """A randomly initialised model of ``family`` with a byte-level tokenizer, as a LoadedModel."""
    from transformers import AutoModelForCausalLM

    if family not in TINY_FAMILIES:
        raise ValueError(f"unknown tiny family '{family}': choose from {', '.join(TINY_FAMILIES)}")
    tok = tiny_tokenizer()
    kw: dict[str, Any] = dict(
        hidden_size=hidden, num_hidden_layers=n_layers, num_attention_heads=n_heads, num_key_value_heads=n_kv_heads,
        intermediate_size=hidden * 2, vocab_size=len(tok), max_position_embeddings=2048,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        head_dim=hidden // n_heads,
    )
    config = TINY_FAMILIES[family](**kw)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return wrap_model(model, tok, name=f"tiny-{family}", source=f"tiny:{family}")
