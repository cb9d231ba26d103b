"""resnet34 is torchvision's ResNet-34; presets said to be timm designs are timm's models."""

import re

import pytest
import torch
from models_testlib import fresh, randomize_norms_

from models import ARCHITECTURES, count_parameters
from tests.support import per_architecture


def test_resnet34_is_torchvision(images):
    import torchvision  # here, not at collection: torchvision costs every test process 3 s

    reference = randomize_norms_(torchvision.models.resnet34(num_classes=5)).eval()
    ours = fresh("resnet34").eval()
    assert count_parameters(ours) == count_parameters(reference) == 21_287_237
    ours.load_state_dict(reference.state_dict(), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(ours(images), reference(images), atol=1e-5, rtol=0)


def _resnetv2_key(key: str) -> str:
    """timm ResNetV2 names -> ours (torchvision-style)."""
    key = re.sub(r"^stages\.(\d)\.blocks\.", lambda m: f"layer{int(m[1]) + 1}.", key)
    for theirs, ours in (
        ("stem.conv.", "conv1."),
        ("norm1.", "bn1."),
        ("norm2.", "bn2."),
        ("downsample.conv.", "downsample.0."),
        ("head.fc.", "fc."),
    ):
        key = key.replace(theirs, ours)
    return re.sub(r"^norm\.", "final_norm.", key)


def _same(key: str) -> str:
    return key


# (ours, timm model, extra timm arguments, timm key -> our key, timm-equivalent in registry)
# Every parameter count is equal: there is no difference to explain.
TIMM_CASES = [
    ("resnet34", "resnet34", {}, _same, "resnet34"),
    ("se_resnet34", "seresnet34", {}, _same, "seresnet34"),
    ("resnet34d", "resnet34d", {}, _same, "resnet34d"),
    ("preact_resnet34", "resnetv2_34", {}, _resnetv2_key, "resnetv2_34"),
    # timm registers no ECA-ResNet-34 (ecaresnet26t/50d/... are other depths and stems), so
    # the registry names none; timm's ResNet with ECA blocks is still the same network.
    ("eca_resnet34", "resnet34", {"block_args": {"attn_layer": "eca"}}, _same, None),
]


@pytest.mark.parametrize(
    ("ours_name", "timm_name", "kwargs", "our_key", "equivalent"), per_architecture(TIMM_CASES)
)
def test_same_design_as_timm(ours_name, timm_name, kwargs, our_key, equivalent, images):
    import timm  # here, not at collection: timm and torchvision cost every test process 4 s

    assert ARCHITECTURES[ours_name].timm_equivalent == equivalent
    ours = randomize_norms_(fresh(ours_name)).eval()
    # timm's model on the meta device (skips its random init); it gets our tensors below.
    with torch.device("meta"):
        reference = timm.create_model(timm_name, pretrained=False, num_classes=5, **kwargs)
    assert count_parameters(ours) - count_parameters(reference) == 0

    # Same parameter count is not enough: the same tensors must give the same logits.
    # Every timm tensor is one of ours (resnetv2's classifier is a 1x1 conv: reshape it).
    mine, theirs = ours.state_dict(), reference.state_dict()
    assert sorted(map(our_key, theirs)) == sorted(mine)
    converted = {k: mine[our_key(k)].reshape(v.shape) for k, v in theirs.items()}
    reference.load_state_dict(converted, strict=True, assign=True)
    reference.eval()
    with torch.no_grad():
        torch.testing.assert_close(ours(images), reference(images), atol=1e-5, rtol=0)
