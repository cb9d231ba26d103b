import logging

import pytest
import torch
from models_testlib import fresh, skeleton

from models import ModelConfigError, build_model, load_pretrained


@pytest.fixture(scope="module")
def imagenet_model():
    import torchvision  # here, not at collection: torchvision costs every test process 3 s

    return torchvision.models.resnet34(num_classes=1000)


@pytest.fixture(scope="module")
def imagenet_file(imagenet_model, tmp_path_factory):
    """A torchvision ResNet-34 checkpoint with the 1000-class ImageNet classifier."""
    path = tmp_path_factory.mktemp("weights") / "resnet34-imagenet.pth"
    torch.save(imagenet_model.state_dict(), path)
    return path


@pytest.mark.slow
def test_fc_of_other_class_count_is_skipped(imagenet_file, caplog):
    reference = torch.load(imagenet_file, weights_only=True)
    with caplog.at_level(logging.INFO, logger="models"):
        model = build_model("resnet34", 5, pretrained_weights=str(imagenet_file))
    assert "skipped fc.weight, fc.bias" in caplog.text
    state = model.state_dict()
    assert state["fc.weight"].shape == (5, 512)
    for key, value in reference.items():
        if not key.startswith("fc."):
            assert torch.equal(state[key], value), key


def test_report(imagenet_file, imagenet_model):
    report = load_pretrained(fresh("resnet34"), imagenet_file)
    assert report.skipped == ("fc.weight", "fc.bias")
    assert report.loaded == len(imagenet_model.state_dict()) - 2
    # Same class count: nothing skipped (any model with torchvision's names will do).
    assert load_pretrained(imagenet_model, imagenet_file).skipped == ()


def test_missing_file(tmp_path):
    path = tmp_path / "nope.pth"
    with pytest.raises(ModelConfigError) as info:
        build_model("resnet34", 5, pretrained_weights=str(path))
    assert info.value.field == "pretrained_weights"
    assert str(path) in info.value.message


def test_incompatible_architecture_names_the_keys(imagenet_file):
    with pytest.raises(ModelConfigError) as info:  # checked before any tensor is copied
        load_pretrained(skeleton("resnet34d"), imagenet_file)
    assert str(imagenet_file) in info.value.message
    assert "conv1.0.weight" in info.value.message  # the deep stem the file lacks


def test_not_a_state_dict(tmp_path):
    path = tmp_path / "junk.pth"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelConfigError, match="not a weights-only state_dict"):
        build_model("resnet34", 5, pretrained_weights=str(path))
    torch.save({"model": {"conv1.weight": torch.zeros(1)}}, path)
    with pytest.raises(ModelConfigError, match="torchvision-format"):
        build_model("resnet34", 5, pretrained_weights=str(path))
