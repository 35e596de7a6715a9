"""Request bodies of the OpenAI-compatible routes and their checks (pydantic); unknown OpenAI fields are
accepted and ignored, unsupported values of known ones are refused with a one-line message."""

from __future__ import annotations

import math
from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["SteeringSpec", "CompletionRequest", "ChatMessage", "ChatRequest", "EmbeddingRequest", "error_body"]


def error_body(message: str, kind: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    """OpenAI's error object."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


class SteeringSpec(BaseModel):
    """``steering`` of a request: an artifact served by this server (by name, never a path), its strength,
    where it applies (vectors: ``all`` / ``prompt`` / ``generated`` / a start position), and for FASB its
    generation options (``alpha``, ``threshold``, ``s``, ... as ``steerlab generate --method fasb --param``)."""

    model_config = ConfigDict(extra="forbid")

    artifact: str
    strength: float | None = Field(default=None, allow_inf_nan=False)
    positions: Union[Literal["all", "prompt", "generated"], int] = "all"
    method: Literal["vector", "fasb", "psr"] | None = None
    params: dict[str, Union[float, int, bool, str]] = Field(default_factory=dict)

    @field_validator("positions")
    @classmethod
    def _start(cls, v: Any) -> Any:
        if isinstance(v, int) and v < 0:
            raise ValueError(f"a steering start position must be >= 0, got {v}")
        return v

    @field_validator("params")
    @classmethod
    def _finite(cls, v: dict[str, Any]) -> dict[str, Any]:
        for key, value in v.items():
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"params.{key} must be a finite number, got {value}")
        return v


class _Generation(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float = Field(default=0.0, allow_inf_nan=False)
    top_p: float = Field(default=1.0, allow_inf_nan=False)
    seed: int | None = None
    stop: Union[str, list[str], None] = None
    stream: bool = False
    n: int = 1
    steering: SteeringSpec | None = None

    @model_validator(mode="after")
    def _checks(self) -> "_Generation":
        budget = self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens
        if budget is not None and budget < 1:
            raise ValueError(f"max_tokens must be >= 1, got {budget}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.n != 1:
            raise ValueError(f"n must be 1 (one choice per request), got {self.n}")
        stops = self.stops
        if len(stops) > 4 or any(not s for s in stops):
            raise ValueError("stop takes at most 4 non-empty strings")
        extra = self.model_extra or {}
        unsupported = [k for k in ("logprobs", "top_logprobs", "echo", "suffix", "tools", "functions", "logit_bias")
                       if extra.get(k)]
        if extra.get("best_of") not in (None, 1):
            unsupported.append("best_of")
        if unsupported:
            raise ValueError(f"'{unsupported[0]}' is not supported by steerlab serve")
        return self

    @property
    def stops(self) -> tuple[str, ...]:
        return () if self.stop is None else (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    def budget(self, default: int) -> int:
        b = self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens
        return default if b is None else b


class CompletionRequest(_Generation):
    prompt: Union[str, list[str]]

    @field_validator("prompt")
    @classmethod
    def _one(cls, v: Any) -> Any:
        if isinstance(v, list):
            if len(v) != 1:
                raise ValueError(f"one prompt per request (got a list of {len(v)})")
            v = v[0]
        if not isinstance(v, str) or not v.strip():
            raise ValueError("prompt is empty: give some text to continue")
        return v


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "user", "assistant", "developer"]
    content: str


class ChatRequest(_Generation):
    messages: list[ChatMessage]

    @field_validator("messages")
    @classmethod
    def _some(cls, v: list[ChatMessage]) -> list[ChatMessage]:
        if not v:
            raise ValueError("messages is empty")
        if v[-1].role == "assistant":
            raise ValueError("the last message must not be the assistant's: it is what will be generated")
        return v


class EmbeddingRequest(BaseModel):
    """``input`` text(s); steerlab's read-out options: ``prompt`` (``prompteol``, ``pretcot``, ``ke``,
    ``metaeol``), ``layer``, Contrastive Prompting (``cp``: ``ns`` / ``nr``, ``cp_layer``, ``alpha``) and Token
    Prepending (``tp``, ``tp_start``, ``tp_exit``)."""

    model_config = ConfigDict(extra="allow")

    input: Union[str, list[str]]
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"
    prompt: str = "prompteol"
    layer: int | None = None
    cp: Literal["ns", "nr", "none"] | None = None
    cp_layer: int | None = None
    alpha: float | None = Field(default=None, allow_inf_nan=False)
    tp: bool = False
    tp_start: int = 1
    tp_exit: int | None = None

    @field_validator("input")
    @classmethod
    def _texts(cls, v: Any) -> Any:
        items = [v] if isinstance(v, str) else v
        if not items:
            raise ValueError("input is empty")
        for i, s in enumerate(items):
            if not s.strip():
                raise ValueError(f"input {i} is an empty string")
        return v

    @property
    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)
