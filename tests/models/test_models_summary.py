import pytest
import torch
from models_testlib import ALL_NAMES, EXPECTED_PARAMS, fresh, skeleton

from models import ARCHITECTURES, ModelConfigError, architecture_summary, build_model, count_flops
from models.summary import _summary
from tests.support import per_architecture


def test_flops_counts_multiply_add_as_two():
    import torchvision  # here, not at collection: torchvision costs every test process 3 s

    # FLOPs need shapes only: meta-device models count without computing anything.
    with torch.device("meta"):
        model = build_model("resnet34", 5).train()
        reference = torchvision.models.resnet34(num_classes=5)
    # torchvision documents ResNet-34 as 3.66 "GFLOPS", which are multiply-adds (MACs);
    # FlopCounterMode counts 2 per multiply-add, so our 224x224 figure is twice that.
    flops = count_flops(model, 224)
    assert flops == pytest.approx(2 * 3.66e9, rel=0.005)
    assert flops == count_flops(reference, 224)
    assert model.training  # count_flops runs in eval mode and restores the mode
    # Convolutions scale with the area (32 and 64 halve evenly down to 1x1); fc does not.
    fc_flops = 2 * 512 * 5
    assert count_flops(model, 64) - fc_flops == 4 * (count_flops(model, 32) - fc_flops)


def test_count_flops_on_real_weights(images):
    model = fresh("resnet34")
    assert count_flops(model, 64) == count_flops(skeleton("resnet34"), 64)


@pytest.mark.parametrize("name", per_architecture(ALL_NAMES))
def test_architecture_summary(name):
    summary = architecture_summary(name)  # 5 classes, 224x224: the docs table
    assert set(summary) == {
        "name",
        "description",
        "parameters",
        "gflops",
        "default_options",
        "timm_equivalent",
    }
    assert summary["name"] == name
    assert summary["parameters"] == EXPECTED_PARAMS[name]
    assert 7.2 < summary["gflops"] < 7.9  # all are ResNet-34-sized; see docs/architectures.md
    assert summary["default_options"] == ARCHITECTURES[name].default_options


def test_architecture_summary_is_cached_and_safe_to_edit():
    first = architecture_summary("se_resnet34", image_size=32, act="silu")
    first["default_options"]["act"] = "edited"
    hits = _summary.cache_info().hits
    second = architecture_summary("se_resnet34", image_size=32, act="silu")
    assert _summary.cache_info().hits == hits + 1
    assert second["default_options"]["act"] == "silu" and second["default_options"]["attn"] == "se"


def test_architecture_summary_errors():
    with pytest.raises(ModelConfigError) as info:
        architecture_summary("resnet34", image_size=0)
    assert info.value.field == "image_size"
    with pytest.raises(ModelConfigError) as info:
        architecture_summary("resnet34", image_size=32, attn="cbam")
    assert info.value.field == "attn"


def test_stage_grad_norms_separate_stages(images):
    from models import stage_grad_norms

    model = fresh("resnet34")
    model.fc.weight.register_hook(lambda g: g * 0)  # no gradient reaches fc.weight...
    model(images).sum().backward()
    norms = stage_grad_norms(model)
    # ...but fc.bias still has one, and a zero gradient elsewhere stays within its stage.
    assert norms["classifier"] == pytest.approx(model.fc.bias.grad.norm().item())
    assert all(norms[s] > 0 for s in ("stem", "stage1", "stage2", "stage3", "stage4"))
    with pytest.raises(ValueError, match="no stage"):
        stage_grad_norms(torch.nn.Sequential(torch.nn.Linear(2, 2)))


def test_measure_latency_ms_times_a_forward_pass_and_keeps_the_mode() -> None:
    from models import build_model, measure_latency_ms

    model = build_model("resnet34", 3).train()
    milliseconds = measure_latency_ms(model, image_size=32, repeats=3)
    assert milliseconds > 0 and model.training
