"""A report as PDF: its Markdown rendered to HTML (markdown-it-py), typeset by WeasyPrint.

The figures are the PNG files next to report.md, found through the HTML's base URL, so the
PDF holds exactly what the Markdown shows. WeasyPrint needs Pango from the system
(`.ci/run` installs it on Debian); without it the error says what to install.
"""

from __future__ import annotations

import re
from pathlib import Path

from jinja2 import Environment, PackageLoader, select_autoescape
from markdown_it import MarkdownIt

from core.errors import InvalidInput

_pages = Environment(loader=PackageLoader("analysis"), autoescape=select_autoescape())


# A paragraph that is all emphasis is a figure caption; one right before a table, its caption.
_FIGURE_CAPTION = re.compile(r"<p><em>([^<]*)</em></p>")
_TABLE_CAPTION = re.compile(r"<p>((?:(?!</p>).)*)</p>\n<table>", re.S)


def markdown_to_html(markdown: str, lang: str) -> str:
    body = MarkdownIt("commonmark", {"typographer": False}).enable("table").render(markdown)
    body = _FIGURE_CAPTION.sub(r'<p class="figure-caption">\1</p>', body)
    body = _TABLE_CAPTION.sub(r'<p class="table-caption">\1</p>\n<table>', body)
    title = next((line[2:] for line in markdown.splitlines() if line.startswith("# ")), "")
    return _pages.get_template("report.html").render(lang=lang, title=title, body=body)


def check_pdf_support() -> None:
    """Raise InvalidInput naming what to install when WeasyPrint or Pango is missing."""
    try:
        import weasyprint  # noqa: F401
    except (ImportError, OSError) as exc:  # OSError: the package is there, Pango is not
        raise InvalidInput(
            "format: pdf needs WeasyPrint (make install) and Pango (Debian: apt-get install "
            f"libpango-1.0-0 libpangoft2-1.0-0): {exc}",
            "format",
        ) from None


def write_pdf(markdown: str, out_dir: Path, lang: str) -> Path:
    check_pdf_support()
    from weasyprint import HTML

    path = out_dir / "report.pdf"
    html = markdown_to_html(markdown, lang)
    HTML(string=html, base_url=str(out_dir.resolve()) + "/").write_pdf(path)
    return path
