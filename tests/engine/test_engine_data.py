"""Datasets: scanning, the split manifest, zip input, the image cache and its pixels."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core.archives import resolve_dataset
from core.datasets import DatasetError, load_or_create_split, scan_dataset
from core.specs import resolve_hyperparameters
from demo.dishes import render_dataset, write_dataset_zip
from models.preprocess import default_resize_size, resize_shorter_and_center_crop
from workers.engine.augment import BatchTransform, center_crop
from workers.engine.data import cached_square_size, prepare_data
from workers.engine.image_cache import open_image_cache


def test_synth_is_deterministic_given_the_seed():
    first = list(render_dataset(2, 32, seed=3))
    assert first == list(render_dataset(2, 32, seed=3))
    assert first != list(render_dataset(2, 32, seed=4))
    assert len(first) == 10 and first[0][0] == "bakso/bakso-0000.jpg"


def test_scan_refuses_one_class_and_empty_classes(tmp_path: Path):
    (tmp_path / "only" / "a").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "only" / "a" / "x.png")
    with pytest.raises(DatasetError, match="at least 2 class folders"):
        scan_dataset(tmp_path / "only")
    (tmp_path / "only" / "b").mkdir()
    (tmp_path / "only" / "b" / "notes.txt").write_text("no images here")
    with pytest.raises(DatasetError, match="has no images") as error:
        scan_dataset(tmp_path / "only")
    assert error.value.path.endswith("only/b")
    with pytest.raises(DatasetError, match="no such file"):
        resolve_dataset(tmp_path / "missing", tmp_path / "cache")


def test_split_is_stratified_deterministic_and_kept_out_of_the_dataset(
    synth_data: Path, tmp_path: Path
):
    scan = scan_dataset(synth_data)
    before = sorted(p.relative_to(synth_data) for p in synth_data.rglob("*"))
    split = load_or_create_split(scan, 0.25, 7, tmp_path / "cache")
    assert split.manifest.is_relative_to(tmp_path / "cache" / "splits")
    assert sorted(p.relative_to(synth_data) for p in synth_data.rglob("*")) == before
    for label in range(3):  # 12 per class -> 3 to validation each
        assert sum(scan.labels[i] == label for i in split.val) == 3
    assert set(split.train).isdisjoint(split.val) and split.test == ()
    assert len(split.train) + len(split.val) == len(scan.files)
    written = split.manifest.stat().st_mtime_ns
    assert load_or_create_split(scan_dataset(synth_data), 0.25, 7, tmp_path / "cache") == split
    assert split.manifest.stat().st_mtime_ns == written  # read back, not rewritten
    elsewhere = load_or_create_split(scan, 0.25, 7, tmp_path / "other-cache")
    assert elsewhere.split_id == split.split_id  # computed again: the same images
    assert load_or_create_split(scan, 0.25, 8, tmp_path / "cache").split_id != split.split_id
    manifest = json.loads(split.manifest.read_text())
    assert manifest["val_fraction"] == 0.25 and manifest["split_seed"] == 7


def test_test_part_is_stratified_disjoint_and_written_once(synth_data: Path, tmp_path: Path):
    scan = scan_dataset(synth_data)
    split = load_or_create_split(scan, 0.25, 7, tmp_path / "cache", test_fraction=0.25)
    manifest = json.loads(split.manifest.read_text())
    train, val, test = (set(manifest[side]) for side in ("train", "val", "test"))
    assert not train & val and not train & test and not val & test  # on the manifest itself
    assert train | val | test == set(scan.files)
    for label in range(3):  # 12 per class -> 3 test, 3 validation, 6 training
        assert sum(scan.labels[i] == label for i in split.test) == 3
        assert sum(scan.labels[i] == label for i in split.val) == 3
    assert manifest["test_fraction"] == 0.25
    without = load_or_create_split(scan, 0.25, 7, tmp_path / "cache")
    assert without.manifest != split.manifest and without.split_id != split.split_id
    written = split.manifest.stat().st_mtime_ns
    again = load_or_create_split(
        scan_dataset(synth_data), 0.25, 7, tmp_path / "cache", test_fraction=0.25
    )
    assert again == split and split.manifest.stat().st_mtime_ns == written
    # The test images do not move when another job picks a different validation share.
    other_val = load_or_create_split(scan, 0.15, 7, tmp_path / "cache", test_fraction=0.25)
    assert other_val.test == split.test


def test_manifest_in_the_old_place_is_read_and_moved_to_the_new(synth_data: Path, tmp_path: Path):
    scan = scan_dataset(synth_data)
    computed = load_or_create_split(scan, 0.2, 0, tmp_path / "fresh-cache")
    old = json.loads(computed.manifest.read_text())
    old["train"], old["val"] = old["train"][2:], old["val"] + old["train"][:2]  # a different split
    (synth_data / ".foodlab").mkdir()
    (synth_data / ".foodlab" / computed.manifest.name).write_text(json.dumps(old))
    split = load_or_create_split(scan, 0.2, 0, tmp_path / "cache")
    assert split.manifest.is_relative_to(tmp_path / "cache")
    assert json.loads(split.manifest.read_text())["val"] == old["val"]  # the old split, kept
    assert len(split.val) == len(computed.val) + 2


def test_split_of_a_read_only_dataset_works_the_same(synth_data: Path, tmp_path: Path):
    os.chmod(synth_data, 0o555)
    try:
        split = load_or_create_split(scan_dataset(synth_data), 0.2, 0, tmp_path / "cache")
    finally:
        os.chmod(synth_data, 0o755)
    assert split.manifest.is_relative_to(tmp_path / "cache")
    assert not (synth_data / ".foodlab").exists()


def test_zip_input_unpacks_once_into_the_cache(tmp_path: Path):
    archive = write_dataset_zip(tmp_path / "dishes.zip", 3, 32, dishes=("bakso", "sate"))
    root = resolve_dataset(archive, tmp_path / "cache")
    assert root.is_relative_to(tmp_path / "cache")
    assert scan_dataset(root).class_names == ("bakso", "sate")
    assert resolve_dataset(archive, tmp_path / "cache") == root


def test_zip_with_path_traversal_is_refused(tmp_path: Path):
    with zipfile.ZipFile(tmp_path / "evil.zip", "w") as archive:
        archive.writestr("../escape/a.jpg", b"x")
    with pytest.raises(DatasetError, match="unsafe path"):
        resolve_dataset(tmp_path / "evil.zip", tmp_path / "cache")


def test_cache_is_reused_and_rebuilt_when_a_file_changes(synth_data: Path, tmp_path: Path):
    hp = resolve_hyperparameters("reference", {"image_size": 32})
    first = prepare_data(synth_data, hp, tmp_path / "cache")
    built = first.cache_file.stat().st_mtime_ns
    second = prepare_data(synth_data, hp, tmp_path / "cache")
    assert second.cache_file == first.cache_file
    assert second.cache_file.stat().st_mtime_ns == built  # reused, not rebuilt
    assert second.split_id == first.split_id

    target = synth_data / "sate" / "sate-0003.jpg"
    Image.new("RGB", (40, 40), (255, 0, 0)).save(target)
    changed = prepare_data(synth_data, hp, tmp_path / "cache")
    assert changed.cache_file != first.cache_file
    row = scan_dataset(synth_data).files.index("sate/sate-0003.jpg")
    red, green, blue = changed.images[row].reshape(-1, 3).mean(axis=0)
    assert red > 240 and green < 15 and blue < 15


def test_concurrent_builders_share_one_cache(synth_data: Path, tmp_path: Path):
    scan = scan_dataset(synth_data)
    results = []

    def build() -> None:
        results.append(open_image_cache(scan, 37, 36, tmp_path / "cache"))

    threads = [threading.Thread(target=build) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({r.folder for r in results}) == 1
    assert all(np.array_equal(r.images, results[0].images) for r in results)
    leftovers = [p.name for p in (tmp_path / "cache" / "images").iterdir()]
    assert not any(name.startswith(".build-") for name in leftovers)


@pytest.mark.parametrize("image_size", [32, 48, 64, 224])
def test_validation_sees_the_serving_pixels(tmp_path: Path, image_size: int):
    """Cached square, then centre crop == serving's one resize + centre crop, to the pixel."""
    rng = np.random.default_rng(image_size)
    resize = default_resize_size(image_size)
    for width, height in [(301, 250), (250, 301), (333, 333), (257, 400)]:
        image = Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))
        side = cached_square_size(image_size)
        cached = np.array(resize_shorter_and_center_crop(image, resize, side))
        crop = center_crop(torch.from_numpy(cached).permute(2, 0, 1), image_size)
        served = np.asarray(resize_shorter_and_center_crop(image, resize, image_size))
        assert np.array_equal(crop.permute(1, 2, 0).numpy(), served), (width, height)


def test_augmentation_is_batched_deterministic_and_shaped():
    batch = torch.randint(0, 256, (6, 36, 36, 3), dtype=torch.uint8)
    for kind in ("none", "standard", "strong", "trivial"):
        transform = BatchTransform(
            image_size=32,
            augmentation=kind,
            mean=(0.5,) * 3,
            std=(0.25,) * 3,
            device=torch.device("cpu"),
            channels_last=False,
        )
        one = transform(batch, torch.Generator().manual_seed(1))
        two = transform(batch, torch.Generator().manual_seed(1))
        assert one.shape == (6, 3, 32, 32) and torch.equal(one, two)
        assert one.min() >= -2.0 - 1e-6 and one.max() <= 2.0 + 1e-6
    plain = transform(batch)  # no generator: evaluation, centre crop only
    expected = (center_crop(batch.permute(0, 3, 1, 2).float() / 255, 32) - 0.5) / 0.25
    assert torch.allclose(plain, expected, atol=1e-6)


def test_core_data_modules_do_not_import_torch():
    code = "import sys, core.datasets, core.archives, demo.dishes; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
