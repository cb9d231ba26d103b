"""Networks of foodlab: a registry of ResNet-34 variants, their costs, the inference bundle.

Imports only torch, torchvision, PIL and pydantic, never the service, worker or core code.
"""

from .bundle import Bundle, BundleError, load_bundle, save_bundle
from .errors import ModelConfigError
from .inference import (
    Precision,
    inference_dtype,
    precision_of,
    prepare_for_inference,
    probabilities,
    top_k,
)
from .pretrained import PretrainedReport, load_pretrained
from .registry import (
    ARCHITECTURES,
    ArchitectureInfo,
    ModelOptions,
    build_model,
    canonical_options,
    validate_options,
)
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
    "Precision",
    "PretrainedReport",
    "architecture_summary",
    "build_model",
    "canonical_options",
    "count_flops",
    "count_parameters",
    "load_bundle",
    "inference_dtype",
    "load_pretrained",
    "measure_latency_ms",
    "precision_of",
    "prepare_for_inference",
    "probabilities",
    "save_bundle",
    "stage_grad_norms",
    "stage_parameters",
    "top_k",
    "validate_options",
]
