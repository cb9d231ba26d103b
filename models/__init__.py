"""Networks of foodlab: a registry of ResNet-34 variants, their costs, the inference bundle.

Imports only torch, torchvision, PIL and pydantic, never the service, worker or core code.
"""

from .bundle import Bundle, BundleError, load_bundle, save_bundle
from .errors import ModelConfigError
from .pretrained import PretrainedReport, load_pretrained
from .registry import ARCHITECTURES, ArchitectureInfo, ModelOptions, build_model, validate_options
from .summary import (
    STAGES,
    architecture_summary,
    count_flops,
    count_parameters,
    measure_latency_ms,
    stage_grad_norms,
    stage_parameters,
)

__all__ = [
    "ARCHITECTURES",
    "STAGES",
    "ArchitectureInfo",
    "Bundle",
    "BundleError",
    "ModelConfigError",
    "ModelOptions",
    "PretrainedReport",
    "architecture_summary",
    "build_model",
    "count_flops",
    "count_parameters",
    "load_bundle",
    "load_pretrained",
    "measure_latency_ms",
    "save_bundle",
    "stage_grad_norms",
    "stage_parameters",
    "validate_options",
]
