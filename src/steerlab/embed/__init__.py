"""Training-free sentence embeddings: PromptEOL-family prompts, Contrastive Prompting, Token Prepending."""

from .cp import CPConfig
from .encoder import Encoder, default_layer, resolve_layer
from .prompts import AUX_PROMPT, PROMPTS, PST, get_prompt, preprocess_sentence, with_placeholder
from .tp import TPConfig

__all__ = [
    "AUX_PROMPT",
    "CPConfig",
    "Encoder",
    "PROMPTS",
    "PST",
    "TPConfig",
    "default_layer",
    "get_prompt",
    "preprocess_sentence",
    "resolve_layer",
    "with_placeholder",
]
