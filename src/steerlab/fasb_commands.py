"""The bodies of ``steerlab fit fasb`` and ``steerlab generate --method fasb`` (the CLI only parses and prints).

``fit``: from contrastive pairs (``positive``, ``negative``[, ``prompt``]: probes on ``prompt + answer``, sigma
over the records) or from a TruthfulQA dataset (ITI's recipe as the harness runs it: an 80/20 split by question,
probes trained on the 80 % and ranked on the 20 %, the reference sigma), saved as one ``"fasb"`` artifact.
``generate``: FASB generation with the artifact's settings (overridable), rendered with the backtrack marked: the
dropped tokens struck through, the regenerated ones highlighted, ``p_true`` and the strength used.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping, Sequence

from rich.text import Text

from .data.registry import load_dataset
from .evals.commands import parse_method_options
from .evals.truthfulqa import train_val_split
from .backtrack import FASBOutput, fasb_generate
from .interventions.fasb import FASBConfig, FASBFit, fit_fasb, load_fasb, save_fasb
from .interventions.iti import records_from_pairs
from .io import read_pairs
from .methods.base import _coerce, _field_types
from .methods.fasb import FASB, FASBMethodConfig
from .models import LoadedModel

__all__ = ["FIT_DATASETS", "fasb_config", "fit_fasb_command", "parse_overrides", "FASBRow", "generate_fasb_command",
           "render_row"]

#: datasets ``steerlab fit fasb --dataset`` fits on
FIT_DATASETS = ("truthfulqa_mc", "truthfulqa")
#: FASBConfig fields a command line may override at generation (the rest belong to the fit)
GENERATION_OPTIONS = ("alpha", "threshold", "s", "semantics", "adaptive", "backtrack", "detect", "max_backtracks",
                      "monitor_after", "reestimate", "k")


def fasb_config(k: int | None, alpha: float | None, threshold: float | None, s: int | None, direction: str,
                semantics: str, batch_size: int, chat: bool) -> FASBConfig:
    """The fit's config from the command-line options (None: the reference script's value); checked before any
    model loads."""
    d = FASBConfig()
    return FASBConfig(k=d.k if k is None else k, alpha=d.alpha if alpha is None else alpha,
                      threshold=d.threshold if threshold is None else threshold, s=d.s if s is None else s,
                      direction=direction, semantics=semantics, batch_size=batch_size, chat=chat)


def fit_fasb_command(lm: LoadedModel, config: FASBConfig, out: Path, pairs_file: Path | None = None,
                     dataset: str | None = None, limit: int | None = None, progress: bool = True) -> tuple[Path, str]:
    """Fit and save; returns the path and a one-line summary."""
    if (pairs_file is None) == (dataset is None):
        raise ValueError("give the contrastive pairs file or --dataset (truthfulqa_mc | truthfulqa), not both")
    total = lm.adapter.n_layers * lm.adapter.n_heads
    if config.k > total:
        raise ValueError(f"k={config.k} is larger than the number of heads "
                         f"({lm.adapter.n_layers} x {lm.adapter.n_heads} = {total})")
    if dataset is not None:
        if dataset not in FIT_DATASETS:
            raise ValueError(f"fit fasb --dataset takes {' or '.join(FIT_DATASETS)}, not '{dataset}'")
        items = load_dataset(dataset, limit=limit, seed=0)
        fit_idx, val_idx = train_val_split(range(len(items)), 0.2, 42)
        names = {f.name for f in fields(FASBMethodConfig)}
        method = FASB(FASBMethodConfig(**{k: v for k, v in vars(config).items() if k in names}))
        fit = method.fit_model(lm, [items[i] for i in fit_idx], [items[i] for i in val_idx])
        fit = FASBFit(fit.iti, config)
        data: dict[str, Any] = {"dataset": dataset, "n_items": len(items), "fit_items": len(fit_idx),
                                "val_items": len(val_idx)}
        source = f"{len(items)} {dataset} questions"
    else:
        assert pairs_file is not None
        pairs = read_pairs(pairs_file)
        fit = fit_fasb(lm, records_from_pairs(pairs), config, progress=progress)
        data = {"pairs": str(pairs_file), "n_pairs": len(pairs)}
        source = f"{len(pairs)} pairs"
    path = save_fasb(fit, out, data)
    heads = ", ".join(f"{layer}.{head}" for layer, head in fit.heads[:8])
    more = f" (+{len(fit.heads) - 8} more)" if len(fit.heads) > 8 else ""
    return path, (f"fitted fasb on {source}: {len(fit.heads)} heads (layer.head: {heads}{more}); alpha {config.alpha:g}, "
                  f"threshold {config.threshold:g}, s {config.s}, {config.semantics} semantics -> {path}")


def parse_overrides(options: Sequence[str] | None) -> dict[str, Any]:
    """``KEY=VALUE`` generation overrides of a fit's settings, typed like :class:`FASBConfig`'s fields."""
    types = _field_types(FASBConfig)
    out: dict[str, Any] = {}
    for key, value in parse_method_options(options).items():
        if key not in GENERATION_OPTIONS:
            raise ValueError(f"unknown fasb option '{key}' for generation: use one of {', '.join(GENERATION_OPTIONS)}")
        out[key] = _coerce(value, types[key], key)
    return out


@dataclass(frozen=True)
class FASBRow:
    """One prompt's FASB output, split for display: ``kept`` text, ``dropped`` text (struck), ``regenerated``
    text (after the backtrack), and the decisions."""

    prompt: str
    text: str
    kept: str
    dropped: str
    regenerated: str
    events: tuple[dict[str, Any], ...]
    lowest_p_true: float | None
    finish_reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"prompt": self.prompt, "text": self.text, "kept": self.kept, "dropped": self.dropped,
                "regenerated": self.regenerated, "events": list(self.events), "lowest_p_true": self.lowest_p_true,
                "finish_reason": self.finish_reason}


def _rows(lm: LoadedModel, prompts: Sequence[str], out: FASBOutput) -> list[FASBRow]:
    tok = lm.tokenizer
    rows = []
    for i, p in enumerate(prompts):
        toks, events = out.tokens[i], out.events[i]
        first = next((e for e in events if e.dropped or e.kind in ("steer", "question", "always")), None)
        if first is None:
            kept, dropped, regen = out.texts[i], "", ""
        else:
            kept = tok.decode(toks[:first.kept], skip_special_tokens=True)
            dropped = tok.decode(list(first.dropped), skip_special_tokens=True)
            regen = tok.decode(toks[first.kept:], skip_special_tokens=True)
            if out.texts[i] != kept + regen:  # a stop string cut the text: cut the display the same way
                regen = out.texts[i][len(kept):] if out.texts[i].startswith(kept) else regen
        trace = [p for _, p in out.p_trace[i]]
        rows.append(FASBRow(p, out.texts[i], kept, dropped, regen, tuple(e.to_dict() for e in events),
                            min(trace) if trace else None, out.finish_reasons[i]))
    return rows


def generate_fasb_command(lm: LoadedModel, artifact: Path, prompts: Sequence[str], overrides: Mapping[str, Any],
                          max_new_tokens: int, stop: Sequence[str] | None, chat: bool,
                          batch_size: int) -> tuple[list[FASBRow], FASBConfig]:
    """FASB generation with a saved fit (checked against ``lm``) and ``overrides`` of its settings."""
    fit = load_fasb(artifact, lm)
    steering = fit.steering(lm, **dict(overrides))
    rows: list[FASBRow] = []
    for s in range(0, len(prompts), batch_size):
        chunk = list(prompts[s:s + batch_size])
        out = fasb_generate(lm, chunk, steering, max_new_tokens=max_new_tokens, stop=stop, chat=chat, progress=True)
        rows.extend(_rows(lm, chunk, out))
    return rows, steering.config


def render_row(row: FASBRow, config: FASBConfig) -> tuple[Text, Text]:
    """The answer (kept text, dropped text struck through in red, regenerated text highlighted in green) and a line
    on the decisions (where it backed up, ``p_true`` and the strength)."""
    answer = Text(row.kept)
    if row.dropped:
        answer.append(row.dropped, style="strike red")
    answer.append(row.regenerated, style="bold green")
    notes = []
    for e in row.events:
        if e["kind"] == "backtrack":
            notes.append(f"backed up at token {e['length']}: p_true {e['p_true']:.3f} < {config.threshold:g}, "
                         f"dropped {len(e['dropped'])}, kept {e['kept']}, strength {e['strength']:.2f}")
        elif e["kind"] == "steer":
            notes.append(f"steering from token {e['length']}: p_true {e['p_true']:.3f}, strength {e['strength']:.2f}")
        elif e["kind"] == "reestimate":
            notes.append(f"strength {e['strength']:.2f} at token {e['length']} (p_true {e['p_true']:.3f})")
        else:
            notes.append(f"steered from the start ({e['kind']}): strength {e['strength']:.2f}")
    if not notes:
        low = "" if row.lowest_p_true is None else f" (lowest p_true {row.lowest_p_true:.3f})"
        notes.append(f"no backtrack: p_true stayed >= {config.threshold:g}{low}")
    return answer, Text("; ".join(notes), style="dim")
