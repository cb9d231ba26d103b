"""Does serving in bfloat16 change the answers? float32 against bfloat16 on real photos.

Loads a trained bundle twice, prepares one copy per precision exactly as the API does
(folded batch norms, channels-last), classifies every photo of the folder with both, and
reports how often the top-1 class agrees and how far the probabilities move.
Results go to bench/results/predict_precision.{json,md}.

    .venv/bin/foodlab train --data ../shared/datasets/indonesian-snacks --out /tmp/snacks \\
        --preset recommended --epochs 12 --image-size 96
    .venv/bin/python -m bench.predict_precision --bundle /tmp/snacks/bundle.pt
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from PIL import Image

import models
from models.preprocess import decode_for_size

REPO = Path(__file__).resolve().parent.parent
PHOTOS = REPO.parent / "shared" / "datasets" / "indonesian-snacks"
RESULTS = REPO / "bench" / "results"


def classify(bundle_path: Path, dtype: torch.dtype, photos: list[Path]) -> torch.Tensor:
    """Probabilities of every photo, the bundle served in `dtype`."""
    bundle = models.load_bundle(bundle_path)
    model = models.prepare_for_inference(bundle.model, dtype)
    chunks = [photos[i : i + 32] for i in range(0, len(photos), 32)]

    def decode(image: Image.Image) -> Image.Image:  # as the API decodes uploads
        return decode_for_size(image, bundle.preprocessing["resize_size"])

    return torch.cat(
        [
            models.probabilities(model, bundle.preprocess([decode(Image.open(p)) for p in c]))
            for c in chunks
        ]
    )


def run(bundle_path: Path, folder: Path) -> dict[str, Any]:
    photos = sorted(folder.glob("*/*.jpg"))
    if not photos:
        raise SystemExit(f"no JPEG photos under {folder}")
    reference = classify(bundle_path, torch.float32, photos)
    bf16 = classify(bundle_path, torch.bfloat16, photos)
    moved = (bf16 - reference).abs()
    return {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "bundle": str(bundle_path),
        "photos": len(photos),
        "top1_agreement": (bf16.argmax(1) == reference.argmax(1)).float().mean().item(),
        "probability_change": {"max": moved.max().item(), "mean": moved.mean().item()},
    }


def markdown(results: dict[str, Any]) -> str:
    change = results["probability_change"]
    return (
        "# bfloat16 against float32 serving\n\n"
        f"Measured {results['measured_at']}: {results['photos']} photos, bundle "
        f"`{results['bundle']}`.\n\n"
        f"Top-1 class agrees on {results['top1_agreement']:.1%} of the photos; probabilities "
        f"move by {change['mean']:.4f} on average and {change['max']:.4f} at most.\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True, help="a trained bundle.pt")
    parser.add_argument("--photos", type=Path, default=PHOTOS, help="ImageFolder of photos")
    args = parser.parse_args()
    try:
        results = run(args.bundle, args.photos)
    except models.BundleError as exc:
        raise SystemExit(f"error: {exc}") from None
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "predict_precision.json").write_text(json.dumps(results, indent=2) + "\n")
    (RESULTS / "predict_precision.md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
