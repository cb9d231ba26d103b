"""How numbers, differences and tables are written in reports and comparison exports."""

from __future__ import annotations

import re
from collections.abc import Sequence

from analysis.compare import Delta, Stat

MISSING = "–"


# --- number formatting -----------------------------------------------------------------------


def fmt_percent(value: float | None, std: float | None = None) -> str:
    if value is None:
        return MISSING
    return f"{100 * value:.1f} ± {100 * std:.1f}%" if std is not None else f"{100 * value:.1f}%"


def fmt_number(value: float | None, digits: int = 3, std: float | None = None) -> str:
    if value is None:
        return MISSING
    return f"{value:.{digits}f} ± {std:.{digits}f}" if std is not None else f"{value:.{digits}f}"


def fmt_params(value: float | None) -> str:
    return MISSING if value is None else f"{value / 1e6:.2f}M"


def fmt_delta(delta: Delta | None, percent_points: bool = False, digits: int = 3) -> str:
    """'+17.6 pp, +65%' for accuracies, '+0.012, +1%' otherwise; flags noise-level gaps."""
    if delta is None or delta.absolute is None:
        return MISSING
    if percent_points:
        text = f"{100 * delta.absolute:+.1f} pp"
    else:
        text = f"{delta.absolute:+.{digits}f}"
    if delta.relative is not None:
        text += f", {100 * delta.relative:+.0f}%"
    if delta.within_noise:
        text += ", ≈ noise"
    return text


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "model"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += [
        "| " + " | ".join(str(cell).replace("|", "\\|") for cell in row) + " |" for row in rows
    ]
    return "\n".join(lines)


def stat_percent(stat: Stat) -> str:
    return fmt_percent(stat.mean, stat.std)


def stat_number(stat: Stat, digits: int = 3) -> str:
    return fmt_number(stat.mean, digits, stat.std)


def fmt_relative(delta: Delta | None) -> str:
    if delta is None or delta.relative is None:
        return MISSING
    return f"{100 * delta.relative:+.0f}%"
