"""steerlab: steer causal LMs at inference time by reading and editing their activations."""

__version__ = "0.1.0"

from .arch import ArchAdapter, ArchitectureError, get_adapter
from .artifacts import VectorError, export_gguf, load_vector, save_vector
from .capture import capture, capture_stats
from .embed import Encoder
from .fit import ContrastPair, fit_vector
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
    "ContrastPair",
    "Encoder",
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
    "VectorError",
    "VectorMeta",
    "capture",
    "capture_stats",
    "export_gguf",
    "fit_vector",
    "generate",
    "get_adapter",
    "load_model",
    "load_vector",
    "save_vector",
    "wrap_model",
]
