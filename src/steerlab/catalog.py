"""What can be run: evaluation tasks, behaviour sets, STS tasks and steering methods with their options.

:func:`catalog` collects it from the registries that own each part (the eval runner's task list,
the data registry, the STS loader, the method registry), so ``steerlab list`` never goes stale.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, fields
from typing import Any

from .data.sts import STS_TASKS
from .evals.runner import task_names
from .methods import METHODS

__all__ = ["MethodInfo", "Catalog", "catalog"]


@dataclass(frozen=True)
class MethodInfo:
    """A steering method: its name, one line of description and its options with their defaults."""

    name: str
    summary: str
    options: dict[str, Any]


@dataclass(frozen=True)
class Catalog:
    """Everything ``steerlab eval`` / ``steerlab eval sts`` accept, grouped for display."""

    tasks: tuple[str, ...]             # truthfulqa_mc, truthfulqa_gen and the six MC tasks
    persona: tuple[str, ...]           # persona/<trait> (Anthropic persona statements)
    caa: tuple[str, ...]               # caa/<behavior> (CAA A/B sets)
    ai_risk: tuple[str, ...]           # ai_risk/<set> (Anthropic advanced-AI-risk A/B sets)
    sts: tuple[str, ...]               # STS tasks for `steerlab eval sts --tasks`
    methods: tuple[MethodInfo, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"tasks": list(self.tasks), "persona": list(self.persona), "caa": list(self.caa),
                "ai_risk": list(self.ai_risk), "sts": list(self.sts),
                "methods": {m.name: {"summary": m.summary, "options": m.options} for m in self.methods}}


def _default(f: Any) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return None


def _summary(name: str, cls: Any) -> str:
    """The first line of the method class's docstring, without its leading ````name``:```` tag."""
    doc = (getattr(cls, "__doc__", None) or "").strip()
    first = doc.splitlines()[0].strip() if doc else ""
    return first.removeprefix(f"``{name}``:").replace("``", "").strip()


def catalog() -> Catalog:
    """The current tasks, behaviour sets, STS tasks and methods (with option defaults)."""
    names = task_names()
    behaviour = ("persona/", "caa/", "ai_risk/")
    methods = tuple(
        MethodInfo(name, _summary(name, factory), {f.name: _default(f) for f in fields(cfg)})
        for name, (factory, cfg) in sorted(METHODS.items())
    )
    return Catalog(
        tasks=tuple(n for n in names if not n.startswith(behaviour)),
        persona=tuple(n for n in names if n.startswith("persona/")),
        caa=tuple(n for n in names if n.startswith("caa/")),
        ai_risk=tuple(n for n in names if n.startswith("ai_risk/")),
        sts=STS_TASKS,
        methods=methods,
    )

