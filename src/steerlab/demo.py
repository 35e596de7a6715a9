"""`steerlab demo`: fit a small 'joyful vs gloomy' vector on the embedded model and compare generations.

The contrastive set is written by the project itself (below) so the demo needs no data download.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .checks import check_output_path, check_strength
from .fit import ContrastPair

__all__ = ["DEMO_PAIRS", "DEMO_PROMPTS", "DemoConfig", "run_demo"]

DEMO_PAIRS: tuple[ContrastPair, ...] = tuple(
    ContrastPair(p, n)
    for p, n in [
        ("I feel so happy and grateful today, everything is wonderful!", "I feel so sad and hopeless today, everything is terrible."),
        ("What a fantastic, joyful day! I love it.", "What an awful, miserable day. I hate it."),
        ("This is the best news ever, I'm thrilled!", "This is the worst news ever, I'm devastated."),
        ("Life is beautiful and I am full of joy.", "Life is bleak and I am full of despair."),
        ("I'm delighted, this makes me smile so much.", "I'm heartbroken, this makes me want to cry."),
        ("Everything went great, I'm overjoyed!", "Everything went wrong, I'm miserable."),
        ("The sun is shining and my heart is light.", "The sky is grey and my heart is heavy."),
        ("I can't wait for tomorrow, it will be amazing.", "I dread tomorrow, it will be awful."),
        ("My friends surprised me and I laughed all evening.", "My friends forgot me and I cried all evening."),
        ("Such a lovely gift, thank you so much!", "Such a pointless gift, I'm so disappointed."),
        ("We won the game and everyone cheered with joy.", "We lost the game and everyone left in silence."),
        ("I love my new job, the people are wonderful.", "I hate my new job, the people are dreadful."),
    ]
)

DEMO_PROMPTS: tuple[str, ...] = (
    "Tell me about your weekend.",
    "How do you feel about Mondays?",
    "Describe the city you live in.",
    "Write one sentence about the ocean.",
)


@dataclass(frozen=True)
class DemoConfig:
    """Defaults chosen by a small sweep on the embedded model (see docs/demo.md)."""

    layer_fraction: float = 0.4
    strength: float = 2.0
    where: str = "generated"


def run_demo(
    model: str,
    out_dir: Path,
    layer: int | None,
    strength: float | None,
    max_new_tokens: int,
    console: Any,
    load: Callable[[str], Any],
    show: Callable[[list[str], dict[str, list[str]], str], None],
    config: DemoConfig = DemoConfig(),
) -> dict[str, list[str]]:
    """Fit the demo vector, save it, and print unsteered / +joyful / -joyful generations."""
    from .artifacts import save_vector
    from .fit import fit_vector
    from .generate import generate
    from .files import atomic_write_text

    strength = check_strength(config.strength if strength is None else strength, "--strength")
    check_output_path(out_dir, folder=True)
    lm = load(model)
    layer = int(round(config.layer_fraction * (lm.adapter.n_layers - 1))) if layer is None else lm.adapter.check_layer(layer)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "pairs.jsonl",
                      "".join(json.dumps({"positive": p.positive, "negative": p.negative}) + "\n" for p in DEMO_PAIRS))
    console.print(f"[bold]steerlab demo[/] on {lm.name}: fitting a mean-difference (CAA) vector from "
                  f"{len(DEMO_PAIRS)} joyful/gloomy pairs at layer {layer}...")
    vec = fit_vector(lm, list(DEMO_PAIRS), [layer], method="mean_diff", progress=True)
    path = save_vector(vec, out_dir / "joyful.safetensors")
    console.print(f"saved {path} (norm {vec.norms()[f'residual.{layer}']:.2f}); generating...")
    prompts = list(DEMO_PROMPTS)
    chat = lm.has_chat_template
    results: dict[str, list[str]] = {}
    for name, s in (("unsteered", None), (f"joyful x{strength:g}", strength), (f"gloomy x{-strength:g}", -strength)):
        steered = s is not None
        out = generate(lm, prompts, steer=vec if steered else None, strength=s, where=config.where if steered else None,
                       max_new_tokens=max_new_tokens, chat=chat)
        results[name] = [t.strip() for t in out.texts]
    show(prompts, results, f"{lm.name}: residual.{layer}, steering the generated tokens")
    console.print(f"Try it yourself: steerlab generate \"How was your day?\" --vector {path} --strength {strength:g} --compare")
    return results
