"""Errors that name what the user got wrong, so the API can turn them into 422 responses."""

from __future__ import annotations


class ModelConfigError(ValueError):
    """A bad architecture name, option or option file; `field` is the option's name."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def describe_load_failure(exc: Exception) -> str:
    """Why torch.load(weights_only=True) failed, without torch's advice to retry unsafely."""
    text = str(exc).strip()
    _, marker, detail = text.partition("WeightsUnpickler error:")
    if marker and detail.strip():
        detail = detail.strip().splitlines()[0].split(". ")[0]
        return f"refused by the weights-only loader (only tensors and plain data): {detail}"
    first = text.splitlines()[0] if text else type(exc).__name__
    # torch's advice to load with weights_only=False would run the file's code: never relay it.
    if "weights_only" in first or "Weights only load failed" in first:
        return "refused by the weights-only loader (only tensors and plain data)"
    return first
