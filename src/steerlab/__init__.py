"""steerlab: steer causal LMs at inference time by reading and editing their activations."""

__version__ = "0.1.0"

from .arch import ArchAdapter, ArchitectureError, get_adapter
from .generate import GenerationOutput, generate
from .hooks import HookManager, StepState, StopForward
from .interventions import Steer
from .models import LoadedModel, ModelLoadError, load_model, wrap_model
from .sites import Site, SiteKind
from .vectors import SteeringVector, VectorMeta

__all__ = [
    "__version__",
    "ArchAdapter",
    "ArchitectureError",
    "GenerationOutput",
    "HookManager",
    "LoadedModel",
    "ModelLoadError",
    "Site",
    "SiteKind",
    "Steer",
    "StepState",
    "SteeringVector",
    "StopForward",
    "VectorMeta",
    "generate",
    "get_adapter",
    "load_model",
    "wrap_model",
]
