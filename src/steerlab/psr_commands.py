"""The bodies of ``steerlab fit psr``, ``steerlab analyze prompt-steering`` and ``steerlab generate --method psr``.

``fit psr``: sample the trait's triplets (cached, resumable), score them with the cross-fitted trait proxy,
filter (:mod:`steerlab.psr_data`), split by question into train / dev, train S-PSR / A-PSR or a constant
baseline (:mod:`steerlab.psr_train`, checkpointed: a killed fit continues) and save one ``"psr"`` artifact.
``analyze prompt-steering``: accumulated and local deltas of the prompt on its own samples, their
concentration per layer, a JSON report and a layer x token heatmap. ``generate --method psr``: steered
generation with each token's gate value (``--show-gates``: tokens shaded by it).
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from matplotlib.figure import Figure
from rich.text import Text

from .data.persona_vectors import load_trait, load_trait_file
from .data.records import PersonaVectorTrait
from .files import atomic_write_text
from .generate import generate
from .interventions.psr import GATES, GatedSteering, GateTrace, save_psr, system_prompt_end
from .models import LoadedModel
from .prompt_steering import EncodedTriplet, PromptPair, concentration, encode_triplet, prompt_deltas
from .psr_data import Sample, build_triplets, cross_fitted_scores, sample_trait, triplet_questions
from .psr_train import PSRTrainConfig, train_psr

__all__ = ["POSITIONS", "trait_definition", "psr_where", "PSRFitSettings", "fit_psr_command", "analyze_command",
           "PSRRow", "generate_psr_command", "render_gates"]

#: the paper's steered positions: the last prompt token + the answer, or from the last system-prompt token on
POSITIONS: tuple[str, ...] = ("answer_only", "question_and_answer")


def trait_definition(source: str) -> PersonaVectorTrait:
    """A trait file's path (Persona Vectors format or a user's own), or a Persona Vectors trait name (its
    ``extract`` split)."""
    p = Path(source)
    if p.suffix == ".json" or p.exists():
        return load_trait_file(p)
    return load_trait(source, "extract")


def psr_where(lm: LoadedModel, positions: str) -> str | int:
    """``where`` for the plain prompt ``x``: ``"generated"`` (answer only), or the position of the last token of
    the template's default system prompt (question and answer; 0 when the template has none)."""
    if positions not in POSITIONS:
        raise ValueError(f"positions must be one of {', '.join(POSITIONS)}, got {positions!r}")
    if positions == "answer_only":
        return "generated"
    try:
        return system_prompt_end(lm, None)
    except ValueError:
        return 0


@dataclass(frozen=True)
class PSRFitSettings:
    """``steerlab fit psr``'s settings (checked before any model loads)."""

    layers: tuple[int, ...]
    gate: str = "relu"
    objective: str = "mse"
    positions: str = "answer_only"
    epochs: int | None = None
    lr: float = 1e-3
    reg_weight: float = 0.1
    batch_size: int = 1
    draws: int = 1
    max_new_tokens: int = 48
    temperature: float = 1.0
    dev_fraction: float = 0.2
    judge: str = "proxy"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.positions not in POSITIONS:
            raise ValueError(f"positions must be one of {', '.join(POSITIONS)}, got {self.positions!r}")
        if self.gate not in GATES:
            raise ValueError(f"gate must be one of {', '.join(repr(g) for g in GATES)}, got {self.gate!r}")
        if self.judge not in ("proxy", "none"):
            raise ValueError(f"judge must be 'proxy' or 'none', got {self.judge!r}")
        if not 0 <= self.dev_fraction < 1:
            raise ValueError(f"dev_fraction must be in [0, 1), got {self.dev_fraction!r}")
        self.train_config()  # the training settings' own checks

    def train_config(self) -> PSRTrainConfig:
        return PSRTrainConfig(objective=self.objective, epochs=self.epochs, lr=self.lr, reg_weight=self.reg_weight,
                              batch_size=self.batch_size)


def _split_by_question(pairs: Sequence[Any], questions: Sequence[int], dev_fraction: float, seed: int
                       ) -> tuple[list[Any], list[Any]]:
    qs = sorted(set(questions))
    random.Random(seed).shuffle(qs)
    n_dev = int(round(dev_fraction * len(qs)))
    dev_q = set(qs[:n_dev])
    train = [p for p, q in zip(pairs, questions) if q not in dev_q]
    dev = [p for p, q in zip(pairs, questions) if q in dev_q]
    return train, dev


def fit_psr_command(lm: LoadedModel, trait: PersonaVectorTrait, settings: PSRFitSettings, out: Path,
                    work_dir: Path, progress: bool = True) -> tuple[Path, str]:
    """Sample, filter, train and save (module doc). ``work_dir`` holds the sample cache and the training
    checkpoint (both resumable). Returns the artifact path and a summary line."""
    work_dir.mkdir(parents=True, exist_ok=True)
    samples = sample_trait(lm, trait, work_dir / f"samples_{trait.trait}.jsonl", draws=settings.draws,
                           max_new_tokens=settings.max_new_tokens, temperature=settings.temperature,
                           seed=settings.seed, progress=progress)
    scores = None
    fits: list[Any] = []
    if settings.judge == "proxy":
        scores, fits = cross_fitted_scores(trait, samples, seed=settings.seed)
    triplets, report, _ = build_triplets(lm, trait, samples, scores=scores, progress=progress)
    if not triplets:
        raise ValueError(f"no usable triplets after filtering {report.n_positive} samples "
                         f"({report.n_incoherent} incoherent, {report.n_degenerate} degenerate, "
                         f"{report.n_weak} weak, {report.n_empty} empty): sample more (--draws) or lower the bar")
    kept_q = triplet_questions(lm, samples, triplets)
    where = psr_where(lm, settings.positions)
    enc = [encode_triplet(lm, t, max_response_tokens=settings.max_new_tokens) for t in triplets]
    train, dev = _split_by_question(enc, kept_q, settings.dev_fraction, settings.seed)
    if not train:
        raise ValueError("every usable triplet fell into the dev split: lower --dev-fraction")
    module = GatedSteering(lm, settings.layers, gate=settings.gate, where=where, alpha=1.0, seed=settings.seed)
    cfg = settings.train_config()
    tag = f"{trait.trait}_{settings.objective}_{settings.gate}_{'-'.join(map(str, module.layers))}"
    result = train_psr(lm, module, train, dev, cfg, checkpoint=work_dir / f"train_{tag}.ckpt", progress=progress)
    data = {"trait": trait.trait, "n_samples": len(samples), "n_triplets": len(triplets), "n_train": len(train),
            "n_dev": len(dev), "filter": report.to_dict(),
            "proxy_fits": [asdict(f) for f in fits]}
    params = {"positions": settings.positions, **asdict(cfg), "sampling": {
        "draws": settings.draws, "max_new_tokens": settings.max_new_tokens, "temperature": settings.temperature,
        "seed": settings.seed}}
    path = save_psr(module, out, params=params, data=data, extra={"training": result.to_dict()})
    kind = ("S-PSR" if len(module.layers) == 1 else "A-PSR") if settings.gate == "relu" else "constant"
    summary = (f"fitted {kind} ({settings.objective}) for '{trait.trait}' at layer(s) "
               f"{', '.join(map(str, module.layers))} on {len(train)} triplets ({len(dev)} dev; {report.n_kept} of "
               f"{report.n_positive} samples kept): dev loss {result.dev_losses[0]:.3f} -> {result.dev_losses[-1]:.3f} "
               f"in {result.seconds:.0f} s -> {path}")
    return path, summary


def analyze_command(lm: LoadedModel, trait: PersonaVectorTrait, out_dir: Path, n_pairs: int = 8,
                    draws: int = 1, max_new_tokens: int = 48, seed: int = 0, progress: bool = True) -> dict[str, Any]:
    """Deltas of the trait's prompts on ``n_pairs`` of its own positive samples (cached in ``out_dir``), their
    concentration per layer in both modes, ``report.json`` and ``heatmap.png`` in ``out_dir``."""
    if n_pairs < 1:
        raise ValueError(f"n_pairs must be >= 1, got {n_pairs}")
    out_dir.mkdir(parents=True, exist_ok=True)
    samples = sample_trait(lm, trait, out_dir / f"samples_{trait.trait}.jsonl", draws=draws, kinds=("pos",),
                           max_new_tokens=max_new_tokens, seed=seed, limit=2 * n_pairs, progress=progress)
    usable = [s for s in samples if s.response][:n_pairs]
    if not usable:
        raise ValueError("every sampled response is empty: nothing to analyse")
    pairs = [encode_triplet(lm, _pair(lm, s)) for s in usable]
    layers = list(range(lm.adapter.n_layers))
    report: dict[str, Any] = {"trait": trait.trait, "model": lm.name, "n_pairs": len(pairs), "modes": {}}
    deltas: dict[str, list[torch.Tensor]] = {}
    for mode in ("accumulated", "local"):
        deltas[mode] = prompt_deltas(lm, pairs, layers, mode)
        report["modes"][mode] = concentration(deltas[mode], layers).to_dict()
    atomic_write_text(out_dir / "report.json", json.dumps(report, indent=2) + "\n")
    _heatmap(deltas, report["modes"], pairs, lm, out_dir / "heatmap.png", trait.trait)
    return report


def _pair(lm: LoadedModel, s: Sample) -> PromptPair:
    return PromptPair(lm.format_prompt(s.question, chat=True),
                      lm.format_prompt(s.question, chat=True, system=s.system), s.response)


def _heatmap(deltas: dict[str, list[torch.Tensor]], modes: dict[str, dict[str, Any]],
             pairs: Sequence[EncodedTriplet], lm: LoadedModel, path: Path, trait: str) -> None:
    """Per-token norm of Delta (layer x response token) of the first pair in both modes, and the share of the
    norm carried by the top 10 % of tokens per layer over all pairs."""
    fig = Figure(figsize=(13, 4.2), layout="constrained")
    axes = fig.subplots(1, 3, gridspec_kw={"width_ratios": [3, 3, 2]})
    first = pairs[0]
    labels = [lm.tokenizer.decode([t]) for t in first.response]
    for ax, mode in zip(axes[:2], ("accumulated", "local")):
        norms = deltas[mode][0].norm(dim=-1).numpy()  # (layers, tokens)
        im = ax.imshow(norms, aspect="auto", origin="lower", cmap="magma")
        ax.set_title(f"{mode} |Delta| per token ({trait}, pair 1)")
        ax.set_xlabel("response token")
        ax.set_ylabel("layer")
        step = max(1, len(labels) // 16)
        ax.set_xticks(range(0, len(labels), step), [repr(labels[i])[1:-1][:8] for i in range(0, len(labels), step)],
                      rotation=90, fontsize=6)
        fig.colorbar(im, ax=ax, shrink=0.8)
    for mode, style in (("accumulated", "-"), ("local", "--")):
        c = modes[mode]  # the report's concentration per layer
        axes[2].plot(c["layers"], c["top10_share"], style, label=f"{mode}: top-10% share")
        axes[2].plot(c["layers"], c["constant_r2"], style, label=f"{mode}: constant R^2", alpha=0.6)
    axes[2].axhline(0.1, color="grey", lw=0.8, label="constant coefficient (0.10)")
    axes[2].set_xlabel("layer")
    axes[2].set_ylim(0, 1)
    axes[2].legend(fontsize=6)
    axes[2].set_title(f"over {len(pairs)} pairs")
    fig.savefig(path, dpi=120)


@dataclass(frozen=True)
class PSRRow:
    """One generation: the text, its tokens and, per token, the mean gate over the steered layers at the
    position that predicted it (the last prompt token for the first one)."""

    prompt: str
    text: str
    tokens: tuple[str, ...]
    gates: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"prompt": self.prompt, "text": self.text, "tokens": list(self.tokens), "gates": list(self.gates)}


def generate_psr_command(lm: LoadedModel, module: GatedSteering, prompts: Sequence[str], max_new_tokens: int,
                         chat: bool, batch_size: int = 8, temperature: float = 0.0, seed: int | None = None,
                         stop: Sequence[str] | None = None) -> list[PSRRow]:
    """Generate with ``module`` (its own ``alpha``) and read each token's gate value."""
    rows: list[PSRRow] = []
    for start in range(0, len(prompts), batch_size):
        chunk = list(prompts[start:start + batch_size])
        traced = module.traced(GateTrace())
        out = generate(lm, chunk, max_new_tokens=max_new_tokens, chat=chat, interventions=[traced],
                       do_sample=temperature > 0, temperature=temperature if temperature > 0 else 1.0, seed=seed,
                       stop=stop)
        per_pass = [torch.stack([traced.trace.values[layer][i] for layer in module.layers]).mean(0)
                    for i in range(len(traced.trace.positions))]  # (batch, seq) per forward pass
        for r, (prompt, text, toks) in enumerate(zip(chunk, out.texts, out.tokens)):
            gates = [float(per_pass[i][r, -1]) for i in range(min(len(toks), len(per_pass)))]
            rows.append(PSRRow(prompt, text, tuple(lm.tokenizer.decode([t]) for t in toks), tuple(gates)))
    return rows


def render_gates(row: PSRRow, scale: float | None = None) -> Text:
    """The generated tokens, each on a background whose strength is its gate value (``scale``: the value shown
    at full strength; default the row's largest gate)."""
    top = scale if scale is not None else max(row.gates, default=0.0)
    text = Text()
    for tok, g in zip(row.tokens, row.gates):
        level = 0.0 if top <= 0 or not math.isfinite(g) else min(1.0, g / top)
        shade = int(255 - 180 * level)
        text.append(tok, style=f"black on rgb(255,{shade},{shade})" if level > 0 else "")
    return text
