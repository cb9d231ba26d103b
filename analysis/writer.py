"""Writing a study report: the template, the language and the formats, into one folder.

`report.md` and its PNG figures always; `report.pdf` too with "pdf" among the formats (the
same Markdown as HTML, typeset by WeasyPrint, figures embedded).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from matplotlib.figure import Figure

from analysis import report, tugas_eksplorasi
from analysis.i18n import language, use_language
from analysis.plots import to_png
from analysis.report import StudyData
from core.errors import InvalidInput

Renderer = Callable[[StudyData], tuple[str, dict[str, Figure]]]

TEMPLATES: dict[str, Renderer] = {
    "study": report.render_report,
    tugas_eksplorasi.NAME: tugas_eksplorasi.render_report,
}
FORMATS = ("md", "pdf")


@dataclass(frozen=True)
class ReportStyle:
    """How to write the report: language, template and formats (Markdown always)."""

    lang: str = "en"
    template: str = "study"
    formats: tuple[str, ...] = ("md",)

    def check(self) -> ReportStyle:
        """Refuse an unknown choice before any work is done; returns self."""
        language(self.lang)
        check_choices(self.template, self.formats)
        if "pdf" in self.formats:
            from analysis.pdf import check_pdf_support

            check_pdf_support()
        return self


def check_choices(template: str, formats: Sequence[str]) -> None:
    """Refuse an unknown template or format before any work is done."""
    if template not in TEMPLATES:
        raise InvalidInput(
            f"template: unknown template {template!r}; allowed: {', '.join(TEMPLATES)}",
            "template",
        )
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise InvalidInput(
            f"format: unknown format {', '.join(unknown)}; allowed: {', '.join(FORMATS)}",
            "format",
        )


def render(
    study: StudyData, lang: str = "en", template: str = "study"
) -> tuple[str, dict[str, Figure]]:
    check_choices(template, ())
    with use_language(lang):
        return TEMPLATES[template](study)


def write_report(study: StudyData, out_dir: Path, style: ReportStyle | None = None) -> Path:
    """Write report.md (and report.pdf) with the PNG figures into `out_dir`; returns report.md."""
    style = (style or ReportStyle()).check()
    markdown, figures = render(study, style.lang, style.template)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, figure in figures.items():
        (out_dir / name).write_bytes(to_png(figure))
    path = out_dir / "report.md"
    path.write_text(markdown, encoding="utf-8")
    if "pdf" in style.formats:
        from analysis.pdf import write_pdf  # WeasyPrint is slow to import; only when asked

        write_pdf(markdown, out_dir, style.lang)
    return path
