"""The artifacts a server may steer with: every steerlab artifact in one directory, loaded and checked
against the served model at start-up, addressed by name (the file name without ``.safetensors``).

A request names an artifact; it never gives a path: names are looked up in this table only, so a request
cannot make the server read any other file."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..artifacts import VectorError, artifact_vector, load_intervention
from ..interventions.fasb import FASB_KIND, FASBFit, load_fasb
from ..interventions.psr import PSR_KIND, GatedSteering
from ..models import LoadedModel
from ..vectors import SteeringVector

__all__ = ["ServedArtifact", "Registry", "load_registry", "NAME_PATTERN"]

#: what an artifact name may look like (a file stem: letters, digits, ``._-``; no path separators)
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass(frozen=True)
class ServedArtifact:
    """One loaded artifact: ``kind`` ``"vector"`` (any artifact holding a steering vector: CAA, ITI, imported
    GGUF ...), ``"fasb"`` or ``"psr"``; ``obj`` the :class:`SteeringVector`, :class:`FASBFit` or
    :class:`GatedSteering`."""

    name: str
    kind: str
    obj: Any
    method: str = ""
    sites: tuple[str, ...] = ()
    params: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "method": self.method, "sites": list(self.sites),
                "params": self.params}


@dataclass
class Registry:
    artifacts: dict[str, ServedArtifact] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # file name -> why it was not loaded

    def get(self, name: Any) -> ServedArtifact:
        """The artifact called ``name``; a ValueError (the server's 400 / 404 message) otherwise."""
        if not isinstance(name, str) or not name:
            raise ValueError("steering.artifact must be the name of a served artifact (see GET /v1/steering)")
        if "/" in name or "\\" in name or name.startswith(".") or not NAME_PATTERN.match(name):
            raise ValueError(f"steering.artifact must be an artifact name from GET /v1/steering, not a path: "
                             f"{name[:80]!r}")
        if name not in self.artifacts:
            known = ", ".join(sorted(self.artifacts)) or "none are served"
            raise LookupError(f"unknown artifact {name!r}: served are {known}")
        return self.artifacts[name]


def _load_one(path: Path, lm: LoadedModel) -> ServedArtifact:
    art = load_intervention(path, lm)
    name = path.name[: -len(".safetensors")]
    if art.kind == FASB_KIND:
        fit: FASBFit = load_fasb(path, lm)
        return ServedArtifact(name, "fasb", fit, "fasb", tuple(sorted(s.key for s in fit.shift(lm).sites)),
                              {"alpha": fit.config.alpha, "threshold": fit.config.threshold, "s": fit.config.s,
                               "k": fit.config.k})
    if art.kind == PSR_KIND:
        module = GatedSteering.from_artifact(art, lm)
        return ServedArtifact(name, "psr", module, art.method or "psr",
                              tuple(f"residual.{layer}" for layer in module.layers), {"alpha": module.alpha})
    vec: SteeringVector = artifact_vector(art)
    return ServedArtifact(name, "vector", vec, art.method or art.kind, tuple(sorted(vec.vectors)), {})


def load_registry(directory: str | Path | None, lm: LoadedModel) -> Registry:
    """Every ``*.safetensors`` artifact directly in ``directory`` that fits ``lm`` (others are listed in
    ``skipped`` with the reason). None: an empty registry (unsteered serving)."""
    reg = Registry()
    if directory is None:
        return reg
    root = Path(directory).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"artifact directory not found: {root}")
    for path in sorted(root.glob("*.safetensors")):
        name = path.name[: -len(".safetensors")]
        if not NAME_PATTERN.match(name):
            reg.skipped[path.name] = "its name is not a plain artifact name (letters, digits, '._-')"
            continue
        try:
            reg.artifacts[name] = _load_one(path, lm)
        except (VectorError, ValueError, TypeError, KeyError) as e:
            reg.skipped[path.name] = str(e).splitlines()[0]
    return reg
