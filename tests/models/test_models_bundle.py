import pickle

import pytest
import torch
from models_testlib import randomize_norms_
from PIL import Image

from models import Bundle, BundleError, build_model, load_bundle, save_bundle

CLASSES = ["dumpling", "pizza", "ramen"]
ARCH = {"name": "se_resnet34", "options": {"act": "silu"}}
PREPROCESSING = {"image_size": 32, "resize_size": 37, "mean": [0.5] * 3, "std": [0.25] * 3}


@pytest.fixture(scope="module")
def model():
    return randomize_norms_(build_model("se_resnet34", len(CLASSES), act="silu")).eval()


@pytest.fixture(scope="module")
def bundle_file(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("bundles") / "model.pt"
    save_bundle(
        path,
        model,
        architecture=ARCH,
        class_names=CLASSES,
        preprocessing=PREPROCESSING,
        metadata={"job_id": 7, "val_accuracy": 0.91, "tags": ("a", "b"), "note": None},
    )
    return path


def pictures() -> list[Image.Image]:
    return [
        Image.fromarray(torch.randint(0, 256, (50, 60, 3), dtype=torch.uint8).numpy()),
        Image.new("L", (40, 40), 200),
    ]


def _plain_types_only(value) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain_types_only(v) for k, v in value.items())
    if isinstance(value, list):
        return all(map(_plain_types_only, value))
    return isinstance(value, torch.Tensor | str | int | float | type(None))


@pytest.mark.slow
def test_file_is_plain_data(bundle_file):
    payload = torch.load(bundle_file, weights_only=True)
    assert _plain_types_only(payload)
    assert payload["metadata"]["tags"] == ["a", "b"]
    assert not [p for p in bundle_file.parent.iterdir() if p != bundle_file]  # no temp files


def test_round_trip(bundle_file, model):
    bundle = load_bundle(bundle_file)
    assert isinstance(bundle, Bundle) and not bundle.model.training
    assert bundle.class_names == CLASSES
    assert bundle.preprocessing == PREPROCESSING
    assert bundle.architecture == ARCH
    assert bundle.metadata == {"job_id": 7, "val_accuracy": 0.91, "tags": ["a", "b"], "note": None}
    for key, value in model.state_dict().items():
        assert torch.equal(bundle.model.state_dict()[key], value), key


def test_predict(bundle_file, model):
    bundle = load_bundle(bundle_file)
    images = pictures()
    x = bundle.preprocess(images)
    assert x.shape == (2, 3, 32, 32)
    with torch.no_grad():
        expected = model(x).softmax(dim=1)
    predictions = bundle.predict(images, top_k=2)
    assert len(predictions) == 2
    for row, probs in zip(predictions, expected, strict=True):
        assert len(row) == 2
        assert [p for _, p in row] == sorted((p for _, p in row), reverse=True)
        for name, p in row:
            assert p == pytest.approx(probs[CLASSES.index(name)].item(), abs=1e-6)
    assert len(bundle.predict(images, top_k=10)[0]) == len(CLASSES)
    assert bundle.predict([]) == []


def test_pretrained_path_is_not_stored(tmp_path, model):
    weights = tmp_path / "init.pth"
    torch.save(model.state_dict(), weights)
    path = tmp_path / "b.pt"
    arch = {"name": "se_resnet34", "options": {"act": "silu", "pretrained_weights": str(weights)}}
    save_bundle(
        path,
        model,
        architecture=arch,
        class_names=CLASSES,
        preprocessing=PREPROCESSING,
        metadata={},
    )
    weights.unlink()  # the serving machine does not have the training machine's files
    assert load_bundle(path).architecture == ARCH


class CreatesAFile:
    """Unpickling this calls open(target, "w"): code execution hidden in a pickle."""

    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return (open, (self.target, "w"))


def _torch_unsafe_load(f):
    return torch.load(f, weights_only=False)


# (how the file is written, how an unsafe reader would load it)
WRITERS = {"torch.save": (torch.save, _torch_unsafe_load), "pickle": (pickle.dump, pickle.load)}


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("writer", list(WRITERS))
def test_pickle_with_code_is_refused(tmp_path, writer):
    dump, unsafe_load = WRITERS[writer]
    target = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        dump({"format": "foodlab.bundle", "state_dict": CreatesAFile(target)}, f)
    with pytest.raises(BundleError) as info:
        load_bundle(path)
    assert str(path) in str(info.value)
    assert not target.exists()
    # The file really was dangerous: an unsafe load runs the code.
    with open(path, "rb") as f:
        unsafe_load(f)
    assert target.exists()


def test_not_a_bundle(tmp_path):
    path = tmp_path / "weights.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, path)
    with pytest.raises(BundleError, match="not a foodlab bundle"):
        load_bundle(path)
    path.write_bytes(b"garbage")
    with pytest.raises(BundleError, match="not a loadable bundle"):
        load_bundle(path)
    with pytest.raises(BundleError, match="no such file"):
        load_bundle(tmp_path / "missing.pt")


def test_missing_keys(bundle_file, tmp_path):
    payload = torch.load(bundle_file, weights_only=True)
    del payload["class_names"], payload["metadata"]
    path = tmp_path / "partial.pt"
    torch.save(payload, path)
    with pytest.raises(BundleError) as info:
        load_bundle(path)
    assert str(path) in str(info.value) and "class_names, metadata" in str(info.value)


def test_save_checks_inputs(tmp_path, model):
    path = tmp_path / "b.pt"
    good = dict(architecture=ARCH, class_names=CLASSES, preprocessing=PREPROCESSING, metadata={})
    with pytest.raises(BundleError, match="does not match"):
        save_bundle(path, model, **(good | {"class_names": ["a", "b"]}))
    with pytest.raises(BundleError, match="JSON"):
        save_bundle(path, model, **(good | {"metadata": {"x": object()}}))
    with pytest.raises(BundleError, match="preprocessing.mean"):
        save_bundle(path, model, **(good | {"preprocessing": PREPROCESSING | {"mean": [0.5]}}))
    with pytest.raises(BundleError, match="attn"):
        save_bundle(
            path, model, **(good | {"architecture": {"name": "resnet34", "options": {"attn": "x"}}})
        )
    assert not list(tmp_path.iterdir())
