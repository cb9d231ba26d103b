"""Serving precision: which dtype 'auto' picks, and that bf16 answers match float32 ones."""

from __future__ import annotations

import pytest
import torch

import models
from models import inference
from tests.support import per_architecture


@pytest.mark.parametrize(("native", "expected"), [(True, torch.bfloat16), (False, torch.float32)])
def test_auto_is_bfloat16_only_on_cpus_that_compute_it_natively(
    monkeypatch: pytest.MonkeyPatch, native: bool, expected: torch.dtype
) -> None:
    monkeypatch.setattr(inference, "cpu_has_native_bf16", lambda: native)
    assert models.inference_dtype("auto") == expected
    assert models.inference_dtype("float32") == torch.float32
    assert models.inference_dtype("bfloat16") == torch.bfloat16


def test_unknown_precision_names_the_choices() -> None:
    with pytest.raises(ValueError, match="auto, float32, bfloat16.*'half'"):
        models.inference_dtype("half")  # type: ignore[arg-type]


def test_bfloat16_model_gives_float32_probabilities_close_to_float32_ones() -> None:
    torch.manual_seed(0)
    reference = models.build_model("resnet34", 5).eval()
    bf16 = models.prepare_for_inference(reference, torch.bfloat16)
    pixels = torch.randn(6, 3, 32, 32)

    expected = models.probabilities(reference, pixels)
    got = models.probabilities(bf16, pixels)
    assert models.precision_of(bf16) == "bfloat16" and models.precision_of(reference) == "float32"
    assert got.dtype == torch.float32 and got.shape == (6, 5)
    assert got.sum(dim=1) == pytest.approx(torch.ones(6), abs=1e-5)
    assert (got - expected).abs().max() < 0.05
    assert bf16.conv1.weight.is_contiguous(memory_format=torch.channels_last)


def _with_trained_looking_batch_norms(model: torch.nn.Module) -> torch.nn.Module:
    """Running statistics and affine terms away from their initial 0/1, as after training."""
    generator = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            size = module.num_features
            module.running_mean.copy_(torch.randn(size, generator=generator) * 0.2)
            module.running_var.copy_(torch.rand(size, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(size, generator=generator) + 0.5)
            module.bias.data.copy_(torch.randn(size, generator=generator) * 0.1)
    return model.eval()


@pytest.mark.parametrize("architecture", per_architecture(sorted(models.ARCHITECTURES)))
def test_folding_batch_norms_keeps_the_answers(architecture: str) -> None:
    torch.manual_seed(0)
    model = _with_trained_looking_batch_norms(models.build_model(architecture, 4))
    folded = inference.fold_batch_norms(model)
    pixels = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        torch.testing.assert_close(folded(pixels), model(pixels), rtol=1e-4, atol=1e-4)
    norms = [m for m in folded.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    # Pre-activation blocks normalise before their convolution: those norms stay.
    assert len(norms) < sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    if architecture == "resnet34":
        assert norms == []


class DataDependent(torch.nn.Module):
    """A branch on tensor values: torch.fx cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 2, 1)
        self.norm = torch.nn.BatchNorm2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.norm(self.conv(x))
        return out if out.sum() > 0 else -out


def test_an_untraceable_model_is_served_unfolded_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    model = DataDependent().eval()
    with caplog.at_level("WARNING", logger="models.inference"):
        served = models.prepare_for_inference(model, torch.float32)
    assert "without folded batch norms" in caplog.text
    assert served is not model and isinstance(served.norm, torch.nn.BatchNorm2d)
    pixels = torch.randn(1, 3, 4, 4)
    with torch.inference_mode():
        torch.testing.assert_close(served(pixels), model(pixels))
