"""`python -m models`: print the architecture table of docs/architectures.md (markdown)."""

from __future__ import annotations

from . import ARCHITECTURES, architecture_summary

NUM_CLASSES = 5
IMAGE_SIZE = 224


def table() -> str:
    lines = [
        f"| Name | What changes | Parameters ({NUM_CLASSES} classes) "
        f"| GFLOPs ({IMAGE_SIZE}x{IMAGE_SIZE}) | timm equivalent |",
        "|---|---|---:|---:|---|",
    ]
    for name in ARCHITECTURES:
        s = architecture_summary(name, NUM_CLASSES, IMAGE_SIZE)
        timm = s["timm_equivalent"] or "-"
        lines.append(
            f"| `{name}` | {s['description']} | {s['parameters']:,} | {s['gflops']:.3f} | {timm} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    print(table())
