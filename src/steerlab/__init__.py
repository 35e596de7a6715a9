"""steerlab: steer causal LMs at inference time by reading and editing their activations."""

import sys
from importlib import import_module
from types import ModuleType
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: public name -> the submodule that defines it; imported on first use (PEP 562), so that
#: ``import steerlab`` and ``steerlab --help`` do not load torch
_LAZY: dict[str, str] = {
    "ArchAdapter": "arch",
    "ArchitectureError": "arch",
    "ContrastPair": "fit",
    "Encoder": "embed",
    "GenerationOutput": "generate",
    "HookManager": "hooks",
    "LoadedModel": "models",
    "ModelLoadError": "models",
    "Site": "sites",
    "SiteKind": "sites",
    "TrainableAdd": "interventions.trainable",
    "Steer": "interventions",
    "SteeringVector": "vectors",
    "StepState": "hooks",
    "StopForward": "hooks",
    "VectorError": "artifacts",
    "VectorMeta": "vectors",
    "capture": "capture",
    "capture_stats": "capture",
    "export_gguf": "artifacts",
    "import_gguf": "artifacts",
    "fit_intervention": "train",
    "fit_vector": "fit",
    "generate": "generate",
    "get_adapter": "arch",
    "load_intervention": "artifacts",
    "load_model": "models",
    "load_vector": "artifacts",
    "save_intervention": "artifacts",
    "save_vector": "artifacts",
    "wrap_model": "models",
}

__all__ = [
    "__version__",
    "ArchAdapter",
    "ArchitectureError",
    "ContrastPair",
    "Encoder",
    "GenerationOutput",
    "HookManager",
    "LoadedModel",
    "ModelLoadError",
    "Site",
    "SiteKind",
    "TrainableAdd",
    "Steer",
    "StepState",
    "SteeringVector",
    "StopForward",
    "VectorError",
    "VectorMeta",
    "capture",
    "capture_stats",
    "export_gguf",
    "fit_intervention",
    "fit_vector",
    "generate",
    "get_adapter",
    "import_gguf",
    "load_intervention",
    "load_model",
    "load_vector",
    "save_intervention",
    "save_vector",
    "wrap_model",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'steerlab' has no attribute '{name}'")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


class _Package(ModuleType):
    """``steerlab.generate`` and ``steerlab.capture`` are functions named like their submodules: importing
    the submodule must not replace the function on the package (the eager imports used to overwrite it)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, ModuleType) and _LAZY.get(name) == name:
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


if TYPE_CHECKING:  # static type checkers and IDEs see the eager imports
    from .arch import ArchAdapter, ArchitectureError, get_adapter
    from .artifacts import (VectorError, export_gguf, import_gguf, load_intervention, load_vector, save_intervention,
                            save_vector)
    from .interventions.trainable import TrainableAdd
    from .train import fit_intervention
    from .capture import capture, capture_stats
    from .embed import Encoder
    from .fit import ContrastPair, fit_vector
    from .generate import GenerationOutput, generate
    from .hooks import HookManager, StepState, StopForward
    from .interventions import Steer
    from .models import LoadedModel, ModelLoadError, load_model, wrap_model
    from .sites import Site, SiteKind
    from .vectors import SteeringVector, VectorMeta
