"""The report in Bahasa Indonesia and in the course's shape ("Tugas Eksplorasi"), as Markdown
and PDF, from a tiny study of stored runs (the training itself is covered by test_study.py)."""

from __future__ import annotations

import gettext
import io
import re
import shutil
import subprocess
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po
from experiments_testlib import add_run
from PIL import Image
from typer.testing import CliRunner

from analysis.formatting import fmt_delta, fmt_params, fmt_percent
from analysis.i18n import LOCALE_DIR, use_language
from analysis.report import StudyData
from analysis.study import gather_study
from analysis.writer import ReportStyle, render, write_report
from cli.main import app
from cli.study_local import LocalBackend
from core.db import open_session
from core.errors import InvalidInput
from core.settings import get_settings
from core.tables import Dataset
from models import STAGES

runner = CliRunner()
TUGAS = "tugas-eksplorasi"

# The course's sections, in order, for a study with two modifications.
TUGAS_HEADINGS = [
    "# Tugas Eksplorasi: Plain-34, ResNet-34 dan modifikasinya — dishes",
    "## Tahap 1: Jaringan plain (plain34)",
    "### 1.1 Arsitektur",
    "### 1.2 Konfigurasi pelatihan",
    "### 1.3 Hasil",
    "### 1.4 Analisis",
    "## Tahap 2: resnet34",
    "### 2.1 Perubahan arsitektur",
    "### 2.2 Hasil",
    "### 2.3 Perbandingan plain34 dan resnet34",
    "### 2.4 Analisis kritis",
    "## Tahap 3: Modifikasi resnet34",
    "### 3.1 Modifikasi yang dipilih",
    "### 3.2 Alasan pemilihan modifikasi",
    "### 3.3 Modifikasi 1: se_resnet34",
    "#### 3.3.1 Deskripsi",
    "#### 3.3.2 Implementasi",
    "#### 3.3.3 Hasil",
    "#### 3.3.4 Analisis",
    "### 3.4 Modifikasi 2: eca_resnet34",
    "#### 3.4.1 Deskripsi",
    "#### 3.4.2 Implementasi",
    "#### 3.4.3 Hasil",
    "#### 3.4.4 Analisis",
    "### 3.5 Perbandingan semua model",
    "### 3.6 Analisis trade-off",
    "## Referensi",
]

# Words of English prose that never belong in an Indonesian sentence.
ENGLISH_WORDS = set(
    "the and of with is are was were to for from against than each every which this that these "
    "those not only in on by as its or an vs when would could more runs best final training "
    "validation accuracy noise between differ difference table figure results analysis "
    "comparison modification modifications references generated produced settings shared "
    "parameters lines within beyond guessing classes images image seconds latency time".split()
)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory, migrated_template: Path) -> Iterator[Path]:
    """One FOODLAB_HOME for the module: its studies are made once, rendered once per choice."""
    home = tmp_path_factory.mktemp("reports") / "home"
    home.mkdir()
    shutil.copy(migrated_template, home / "foodlab.db")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FOODLAB_HOME", str(home))
        get_settings.cache_clear()
        yield home
    get_settings.cache_clear()


@pytest.fixture(scope="module")
def full_study(home: Path) -> StudyData:
    return study_of(make_jobs(["plain34", "resnet34", "se_resnet34", "eca_resnet34"]))


@pytest.fixture(scope="module")
def reports(full_study: StudyData) -> dict[tuple[str, str], str]:
    """(language, template) -> the Markdown of the full study."""
    return {
        (lang, template): render(full_study, lang, template)[0]
        for lang in ("en", "id")
        for template in ("study", TUGAS)
    }


def make_jobs(architectures: list[str]) -> list[int]:
    """Stored runs of a three-class study: one per architecture, resnet34 twice (two seeds)."""
    session = open_session(get_settings().database)
    dataset = Dataset(
        name="dishes",
        path="/nowhere",
        source="folder",
        fingerprint="f",
        classes=["bakso", "rendang", "sate"],
        counts={
            name: {"total": 20, "train": 16, "val": 4} for name in ("bakso", "rendang", "sate")
        },
        num_images=60,
    )
    session.add(dataset)
    session.commit()
    accuracies = {
        "plain34": [0.30, 0.35, 0.33],
        "resnet34": [0.40, 0.55, 0.50],
        "se_resnet34": [0.45, 0.60, 0.58],
        "eca_resnet34": [0.42, 0.52, 0.57],
    }
    ids = []
    for name in architectures:
        ids.append(add_run(session, dataset, name, accuracies[name], num_parameters=21_290_000).id)
        if name == "resnet34":
            job = add_run(session, dataset, name, [0.38, 0.5, 0.49], hyperparameters={"seed": 1})
            ids.append(job.id)
    session.close()
    return ids


def study_of(job_ids: list[int]) -> StudyData:
    return gather_study(LocalBackend(None), job_ids, "foodlab study --local --jobs ...")


def headings(markdown: str) -> list[str]:
    return [line for line in without_code(markdown).splitlines() if line.startswith("#")]


def without_code(markdown: str) -> str:
    return re.sub(r"```.*?```", "", markdown, flags=re.S)


def numbers(markdown: str, decimal: str) -> list[str]:
    """Every number in reading order, written with a decimal point (code keeps its own)."""
    found = []
    spans = re.findall(r"(```.*?```|`[^`\n]*`|^#[^\n]*$)|([^`#]+|#)", markdown, flags=re.S | re.M)
    for code, prose in spans:  # code, and section numbers in headings, are the same everywhere
        if code:
            found += re.findall(r"\d+(?:\.\d+)?", code)
        else:
            found += [
                n.replace(decimal, ".")
                for n in re.findall(rf"\d+(?:{re.escape(decimal)}\d+)?", prose)
            ]
    return found


def prose_words(markdown: str) -> list[str]:
    """The words a reader reads as sentences: no code, file names, model names or references."""
    text = without_code(markdown).split("## Referensi")[0]
    text = re.sub(r"`[^`]*`", " ", text)
    text = re.sub(r"\]\([^)]*\)", "]", text)
    for name in ("plain34", "resnet34", "se_resnet34", "eca_resnet34", *STAGES):
        text = text.replace(name, " ")
    return re.findall(r"[A-Za-z][A-Za-z-]*", text)


@pytest.mark.slow
def test_the_indonesian_report_has_the_course_sections_in_order(
    full_study: StudyData, tmp_path: Path
) -> None:
    ids = full_study.comparison.job_ids
    out = tmp_path / "laporan"
    args = ["study", "--local", "--jobs", ",".join(map(str, ids)), "--out", str(out)]
    result = runner.invoke(app, [*args, "--lang", "id", "--template", TUGAS])
    assert result.exit_code == 0, result.output
    report = (out / "report.md").read_text()
    assert headings(report) == TUGAS_HEADINGS
    tables = re.findall(r"^\*\*Tabel (\d+)\.\*\*", report, re.M)
    figures = re.findall(r"^\*Gambar (\d+)\.", report, re.M)
    assert tables == [str(n) for n in range(1, len(tables) + 1)] and len(tables) == 8
    assert figures == [str(n) for n in range(1, len(figures) + 1)] and len(figures) == 7
    hyper = report.split("**Tabel 1.**")[1].split("**Tabel 2.**")[0]
    assert "| laju pembelajaran | `lr` | 0,001 |" in hyper
    assert "curves-plain34.png" in report.split("**Tabel 2.**")[0]  # Gambar 1 before Tabel 2
    for name in re.findall(r"\]\(([^)]+\.png)\)", report):
        with Image.open(out / name) as image:
            assert image.format == "PNG"
    # SE and ECA: their blocks' code as it is in models/layers.py, not retyped.
    layers = (Path(__file__).parents[2] / "models" / "layers.py").read_text()
    se_code = report.split("#### 3.3.2")[1].split("#### 3.3.3")[0]
    block = re.search(r"```python\n(class SEModule.*?)```", se_code, re.S).group(1)
    assert block.strip() in layers
    # References: the papers behind the networks used, none other.
    references = report.split("## Referensi")[1]
    assert [
        re.search(r"\((\d{4})\)", line).group(1)
        for line in references.splitlines()
        if line[:1].isdigit()
    ] == ["2015", "2018", "2020"]
    assert "Squeeze-and-Excitation" in references and "ECA-Net" in references
    assert "Identity Mappings" not in references and "Stochastic Depth" not in references
    # The AI-assistant section is the authors': one line says it is left out, nothing more.
    assert report.count("asisten AI") == 1


@pytest.mark.parametrize("template", ["study", TUGAS])
def test_every_number_is_the_english_reports_number(
    reports: dict[tuple[str, str], str], template: str
) -> None:
    english, indonesian = reports["en", template], reports["id", template]
    indonesian, references_id = (indonesian.split("\n## Referensi\n") + [""])[:2]
    english, references_en = (english.split("\n## References\n") + [""])[:2]
    assert numbers(indonesian, ",") == numbers(english, ".")
    assert references_id == references_en  # citations are names, in every language
    assert "21,29 jt" in indonesian and "21.29M" in english


def test_the_course_template_and_the_english_report_show_the_same_results(
    reports: dict[tuple[str, str], str],
) -> None:
    english, indonesian = reports["en", "study"], reports["id", TUGAS]
    for label in ("plain34", "resnet34"):
        ours = english.split(f"### {label}\n")[1]
        row = re.search(r"^\| best validation accuracy \| ([^|]+) \|", ours, re.M).group(1)
        assert f"| akurasi validasi terbaik | {row.strip().replace('.', ',')} |" in indonesian


@pytest.mark.parametrize("template", ["study", TUGAS])
def test_no_english_sentence_is_left(reports: dict[tuple[str, str], str], template: str) -> None:
    indonesian, english = reports["id", template], reports["en", template]
    english_words = [w for w in prose_words(indonesian) if w.lower() in ENGLISH_WORDS]
    assert english_words == []
    assert len([w for w in prose_words(english) if w.lower() in ENGLISH_WORDS]) > 50


@pytest.mark.slow
def test_a_study_without_modifications_says_what_to_run(home: Path) -> None:
    study = study_of(make_jobs(["plain34", "resnet34"]))
    report, figures = render(study, "id", TUGAS)
    found = headings(report)
    assert "## Tahap 3: Modifikasi resnet34" in found
    assert not [h for h in found if re.match(r"#+ 3\.\d", h)]
    stage_three = report.split("## Tahap 3")[1]
    assert "bagian 3.3 sampai 3.6 ditiadakan" in stage_three
    assert "`foodlab study --archs plain34,resnet34,se_resnet34,eca_resnet34 ...`" in stage_three
    assert "tradeoff.png" not in figures and "curves-all.png" not in figures


@pytest.mark.slow
def test_the_pdf_holds_the_tables_and_figures(full_study: StudyData, tmp_path: Path) -> None:
    out = tmp_path / "laporan"
    write_report(full_study, out, ReportStyle("id", TUGAS, ("md", "pdf")))
    pdf = out / "report.pdf"
    text = subprocess.run(
        ["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True
    ).stdout
    for caption in [*(f"Tabel {n}." for n in range(1, 9)), *(f"Gambar {n}." for n in range(1, 8))]:
        assert caption in text
    assert "laju pembelajaran" in text and "0,001" in text and "Referensi" in text
    images = subprocess.run(
        ["pdfimages", "-list", str(pdf)], capture_output=True, text=True, check=True
    ).stdout
    assert len(re.findall(r"^\s*\d+\s+\d+\s+image\s", images, re.M)) == 7  # the figures
    subprocess.run(["pdftoppm", "-r", "50", "-png", str(pdf), str(tmp_path / "page")], check=True)
    pages = [
        np.asarray(Image.open(path).convert("RGB"), dtype=int)
        for path in sorted(tmp_path.glob("page*.png"))
    ]
    assert len(pages) >= 4
    # On the pages themselves: figures are coloured plots, tables grids of long grey rules.
    assert sum(coloured_pixels(page) > 100 for page in pages) >= 4
    assert sum(long_rules(page) >= 10 for page in pages) >= 3


def coloured_pixels(page: np.ndarray) -> int:
    return int(((page.max(axis=2) - page.min(axis=2)) > 60).sum())


def long_rules(page: np.ndarray) -> int:
    """Pixel rows holding an unbroken line over at least 30% of the page width."""
    ink = page.sum(axis=2) < 700
    rules = 0
    for row in ink:
        edges = np.flatnonzero(np.diff(np.concatenate(([0], row.astype(int), [0]))))
        runs = edges[1::2] - edges[::2]
        rules += bool(runs.size and runs.max() > 0.3 * page.shape[1])
    return rules


def test_numbers_are_written_for_the_language() -> None:
    with use_language("id"):
        assert fmt_percent(0.4512, 0.071) == "45,1 ± 7,1%"
        assert fmt_params(21_290_000) == "21,29 jt"
    with use_language("en"):
        assert fmt_percent(0.4512) == "45.1%" and fmt_params(21_290_000) == "21.29M"
    with pytest.raises(InvalidInput, match="lang: unknown language 'fr'; allowed: en, id"):
        use_language("fr").__enter__()


def test_noise_and_deltas_are_translated_with_their_numbers() -> None:
    from analysis.compare import Delta

    delta = Delta(absolute=0.049, relative=0.12, noise=0.2, within_noise=True)
    with use_language("id"):
        assert fmt_delta(delta, percent_points=True) == "+4,9 poin, +12%, ≈ derau"
    assert fmt_delta(delta, percent_points=True) == "+4.9 pp, +12%, ≈ noise"


def test_every_message_in_the_code_is_translated_and_compiled() -> None:
    root = Path(__file__).parents[2]
    keywords = {"_": None, "N_": None, "ngettext": (1, 2)}
    in_code = {
        message if isinstance(message, str) else message[0]
        for _file, _line, message, _comments, _context in extract_from_dir(
            root / "analysis", keywords=keywords
        )
    }
    with open(LOCALE_DIR / "id" / "LC_MESSAGES" / "foodlab.po", "rb") as po:
        catalogue = read_po(po)
    translated = {
        (m.id if isinstance(m.id, str) else m.id[0]): m.string
        for m in catalogue
        if m.id and all(m.string if isinstance(m.string, tuple) else [m.string])
    }
    assert in_code - set(translated) == set()
    with open(LOCALE_DIR / "id" / "LC_MESSAGES" / "foodlab.mo", "rb") as mo:
        compiled = gettext.GNUTranslations(mo)
    for message, string in translated.items():
        expected = string if isinstance(string, str) else string[0]
        assert compiled.gettext(message) == expected, (
            f"stale foodlab.mo: run make messages ({message})"
        )


def test_bad_report_choices_fail_before_anything_trains(home: Path, synth_folder: Path) -> None:
    for flag, value, message in (
        ("--lang", "fr", "--lang: unknown language 'fr'; allowed: en, id"),
        ("--template", "essay", "--template: unknown template 'essay'"),
        ("--format", "docx", "--format: unknown format docx; allowed: md, pdf"),
    ):
        result = runner.invoke(
            app, ["study", "--local", "--data", str(synth_folder), flag, value, "--out", "x"]
        )
        assert result.exit_code == 2 and message in result.output, result.output
    assert not (home / "checkpoints").exists() and not Path("x").exists()


@pytest.mark.slow
def test_the_api_serves_the_report_in_the_chosen_language(
    db_url: str, session, dataset: Dataset, tmp_path: Path
) -> None:
    from fastapi.testclient import TestClient

    from core.settings import Settings
    from service.app import create_app
    from service.deps import current_settings

    app = create_app()
    settings = Settings(home=tmp_path / "home", database_url=db_url)
    app.dependency_overrides[current_settings] = lambda: settings
    client = TestClient(app)
    jobs = ",".join(
        str(add_run(session, dataset, name, [0.3, 0.5]).id) for name in ("plain34", "resnet34")
    )
    params = {"jobs": jobs, "lang": "id", "template": TUGAS}
    archive = client.get("/compare/report", params=params)
    assert archive.status_code == 200, archive.text
    with zipfile.ZipFile(io.BytesIO(archive.content)) as files:
        report = files.read("report.md").decode()
        assert {"curves-plain34.png", "curves-resnet34.png"} <= set(files.namelist())
    assert headings(report)[1] == "## Tahap 1: Jaringan plain (plain34)"
    pdf = client.get("/compare/report", params={**params, "format": "pdf"})
    assert pdf.headers["content-type"] == "application/pdf" and pdf.content[:5] == b"%PDF-"
    bad = client.get("/compare/report", params={**params, "lang": "fr"})
    assert bad.status_code == 422 and bad.json()["field"] == "lang"
    missing = client.get("/compare/report", params={"jobs": "999999"})
    assert missing.status_code == 404
