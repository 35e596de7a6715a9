"""IFEval-format prompts (``steer_instruct/format/ifeval_single_instr_format.jsonl``).

163 IFEval prompts with a single format instruction each (from microsoft/llm-steer-instruct):
``key, prompt, instruction_id_list, kwargs, instruction_id_list_for_eval,
prompt_without_instruction``. ``instruction_id_list_for_eval`` differs from
``instruction_id_list`` where the checker needs a more specific id (e.g.
``language:response_language_kn``). Other IFEval-format files with the same fields load with
:func:`load_ifeval_file`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from . import DataNotFoundError, data_dir
from .multiple_choice import read_jsonl_rows
from .records import IFEvalPrompt, as_str, frozen_mapping, parse_rows

__all__ = ["IFEVAL_FORMAT_PATH", "IFEVAL_REQUESTS_PATH", "load_ifeval_format", "load_ifeval_file",
           "load_ifeval_requests"]

PathLike = str | os.PathLike[str] | None
IFEVAL_FORMAT_PATH = "steer_instruct/format/ifeval_single_instr_format.jsonl"
#: IFEval's 541 prompts with their instructions removed (``model_output`` holds the request alone)
IFEVAL_REQUESTS_PATH = "steer_instruct/ifeval_wo_instructions.jsonl"


def _ids(v: Any, name: str) -> tuple[str, ...]:
    if not isinstance(v, list):
        raise TypeError(f"'{name}' must be a list")
    return tuple(as_str(x, name) for x in v)


def _prompt(line: str) -> IFEvalPrompt:
    d = json.loads(line)
    if not isinstance(d, Mapping):
        raise TypeError("expected a JSON object")
    ids = _ids(d["instruction_id_list"], "instruction_id_list")
    kwargs = d.get("kwargs") or [{} for _ in ids]
    if not isinstance(kwargs, list) or not all(isinstance(k, Mapping) for k in kwargs):
        raise TypeError("'kwargs' must be a list of objects")
    # IFEval stores unused kwargs as nulls; drop them as its checker does
    clean = tuple(frozen_mapping({k: v for k, v in kw.items() if v is not None}) for kw in kwargs)
    pwi = d.get("prompt_without_instruction")
    return IFEvalPrompt(
        key=int(d["key"]),
        prompt=as_str(d["prompt"], "prompt"),
        instruction_ids=ids,
        kwargs=clean,
        prompt_without_instruction=None if pwi is None else as_str(pwi, "prompt_without_instruction"),
        instruction_ids_for_eval=_ids(d.get("instruction_id_list_for_eval", list(ids)), "instruction_id_list_for_eval"),
    )


def load_ifeval_file(path: str | os.PathLike[str]) -> list[IFEvalPrompt]:
    """Any IFEval-format JSON-lines file."""
    p = Path(path)
    if not p.is_file():
        raise DataNotFoundError(f"IFEval file not found: {p}")
    return parse_rows(p, read_jsonl_rows(p), _prompt)


def load_ifeval_format(split: str = "test", root: PathLike = None) -> list[IFEvalPrompt]:
    """The 163 single-instruction IFEval format prompts (single split ``test``)."""
    if split != "test":
        raise ValueError(f"ifeval_format has one split, 'test'; got '{split}'")
    return load_ifeval_file(data_dir(root) / IFEVAL_FORMAT_PATH)


def load_ifeval_requests(exclude_keys: Sequence[int] = (), root: PathLike = None) -> list[str]:
    """The requests (instructions removed; the file's ``model_output``) of IFEval's prompts whose ``key`` is
    not in ``exclude_keys``, in file order, blanks skipped."""
    p = data_dir(root) / IFEVAL_REQUESTS_PATH
    if not p.is_file():
        raise DataNotFoundError(f"IFEval requests file not found: {p}")
    skip = set(exclude_keys)

    def row(line: str) -> tuple[int, str]:
        d = json.loads(line)
        if not isinstance(d, Mapping):
            raise TypeError("expected a JSON object")
        return int(d["key"]), as_str(d.get("model_output") or "", "model_output").strip()

    return [text for key, text in parse_rows(p, read_jsonl_rows(p), row) if key not in skip and text]
