"""How numbers, differences and tables are written in reports and comparison exports."""

from __future__ import annotations

import re
from collections.abc import Sequence

from analysis.compare import Delta, Stat
from analysis.i18n import _, number

MISSING = "–"


# --- number formatting (in the report's language: see analysis.i18n) ------------------------


def fmt_percent(value: float | None, std: float | None = None) -> str:
    if value is None:
        return MISSING
    if std is None:
        return f"{number(100 * value, '.1f')}%"
    return f"{number(100 * value, '.1f')} ± {number(100 * std, '.1f')}%"


def fmt_number(value: float | None, digits: int = 3, std: float | None = None) -> str:
    if value is None:
        return MISSING
    spec = f".{digits}f"
    if std is None:
        return number(value, spec)
    return f"{number(value, spec)} ± {number(std, spec)}"


def fmt_params(value: float | None) -> str:
    """Millions of parameters: '21.11M' ('21,11 jt' in Indonesian, where M means miliar)."""
    return MISSING if value is None else _("{value}M").format(value=number(value / 1e6, ".2f"))


def fmt_points(value: float) -> str:
    """An accuracy difference in percentage points, signed: '+17.6 pp'."""
    return _("{value} pp").format(value=number(100 * value, "+.1f"))


def fmt_delta(
    delta: Delta | None, percent_points: bool = False, digits: int = 3, mark_noise: bool = True
) -> str:
    """'+17.6 pp, +65%' for accuracies, '+0.012, +1%' otherwise; flags noise-level gaps."""
    if delta is None or delta.absolute is None:
        return MISSING
    text = fmt_points(delta.absolute) if percent_points else number(delta.absolute, f"+.{digits}f")
    if delta.relative is not None:
        text += f", {fmt_relative(delta)}"
    if mark_noise and delta.within_noise:
        text += ", " + noise_mark()
    return text


def noise_mark() -> str:
    return _("≈ noise")


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
    return f"{number(100 * delta.relative, '+.0f')}%"
