"""Experiment analysis: compare jobs (JSON, CSV, Markdown) and draw their curves as PNG."""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response
from fastapi.responses import PlainTextResponse
from matplotlib.figure import Figure
from pydantic import TypeAdapter
from sqlalchemy.orm import Session

import models
from analysis.compare import (
    Comparison,
    JobRecord,
    build_comparison,
    existing_jobs,
    load_records,
)
from analysis.i18n import current
from analysis.plots import Curve, curves_figure, gradient_flow_figure, gradients_figure, to_png
from analysis.renderers import comparison_csv, comparison_markdown
from core import repository as repo
from core.errors import InvalidInput
from core.specs import EpochMetrics, RowId
from core.tables import Job
from service.deps import JobDep, SessionDep
from service.openapi import errors
from service.schemas import EpochMetricPublic, MetricsPublic

router = APIRouter(prefix="/compare", tags=["experiments"])
jobs_router = APIRouter(prefix="/jobs", tags=["experiments"])

MAX_JOBS = 50
PNG: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
        "description": "a PNG image",
    }
} | errors(404)
TABLES = {
    "content": {
        "text/csv": {"schema": {"type": "string"}},
        "text/markdown": {"schema": {"type": "string"}},
    }
}

# Ids of up to 18 digits stay below the largest row id (2**63 - 1), so the pattern alone
# says which values are valid; the count is checked after duplicates are dropped.
JOB_ID_LIST = rf"^ *[0-9]{{1,18}} *(, *[0-9]{{1,18}} *){{0,{MAX_JOBS - 1}}}$"
JobsQuery = Annotated[
    str,
    Query(
        description=f"comma-separated job ids, at most {MAX_JOBS}",
        examples=["1,2,3"],
        pattern=JOB_ID_LIST,
    ),
]


def parse_job_ids(jobs: str) -> list[int]:
    """'3, 1,2' -> [3, 1, 2]: order kept (the first is the default baseline), duplicates dropped.

    `jobs` has matched JOB_ID_LIST already."""
    return list(dict.fromkeys(int(part) for part in jobs.split(",")))


def _records(session: Session, jobs: str, *, grad_norms: bool = True) -> list[JobRecord]:
    ids = parse_job_ids(jobs)
    presets = {name: info.default_options for name, info in models.ARCHITECTURES.items()}
    return load_records(session=session, job_ids=ids, presets=presets, grad_norms=grad_norms)


class FigureCache:
    """The PNGs drawn last, by a digest of everything they are drawn from.

    Drawing 20 jobs' curves costs about a second of CPU, reading their rows milliseconds. So
    every request reads the rows again, and the picture is drawn only when the figure kind,
    the language, a label or any value of any epoch differs from a picture already drawn: a
    new epoch, a resumed job's rewritten epoch or a deleted job gives another digest, so
    nothing needs invalidating. Bounded; one per API process.
    """

    EPOCHS = TypeAdapter(list[EpochMetrics])

    def __init__(self, size: int = 32) -> None:
        self.size = size
        self._pictures: OrderedDict[bytes, bytes] = OrderedDict()
        self._lock = threading.Lock()  # endpoints run in a thread pool

    def digest(self, kind: str, curves: Sequence[Curve]) -> bytes:
        digest = hashlib.sha256(json.dumps([kind, current().code]).encode())
        for curve in curves:
            epochs = [
                epoch
                if isinstance(epoch, EpochMetrics)
                else EpochMetrics.model_validate(epoch, from_attributes=True)
                for epoch in curve.epochs
            ]
            digest.update(json.dumps(curve.label).encode() + b"\0" + self.EPOCHS.dump_json(epochs))
        return digest.digest()

    def png(self, kind: str, curves: Sequence[Curve], draw: Callable[[], Figure]) -> bytes:
        key = self.digest(kind, curves)
        with self._lock:
            picture = self._pictures.get(key)
            if picture is not None:
                self._pictures.move_to_end(key)
                return picture
        picture = to_png(draw())
        with self._lock:
            self._pictures[key] = picture
            while len(self._pictures) > self.size:
                self._pictures.popitem(last=False)
        return picture


FIGURES = FigureCache()


def _png(kind: str, curves: Sequence[Curve], draw: Callable[[], Figure]) -> Response:
    picture = FIGURES.png(kind, curves, draw)
    # Curves grow while a job runs: never let a client cache an old picture.
    return Response(picture, media_type="image/png", headers={"Cache-Control": "no-store"})


@router.get("", response_model=Comparison, responses={200: TABLES} | errors(404))
def compare_jobs(
    session: SessionDep,
    jobs: JobsQuery,
    baseline: Annotated[
        RowId | None, Query(description="job id the deltas refer to; default: the first job")
    ] = None,
    format: Literal["json", "csv", "md"] = "json",
) -> Comparison | PlainTextResponse:
    """One row per job, deltas to the baseline, mean ± std over repeats, fairness warnings."""
    records = _records(session, jobs, grad_norms=False)  # the table has no gradient norms
    if baseline is not None and baseline not in {r.id for r in records}:
        raise InvalidInput(f"baseline: job {baseline} is not in jobs={jobs}", "baseline")
    comparison = build_comparison(records, baseline)
    if format == "csv":
        return PlainTextResponse(comparison_csv(comparison), media_type="text/csv")
    if format == "md":
        return PlainTextResponse(comparison_markdown(comparison), media_type="text/markdown")
    return comparison


@router.get("/metrics", response_model=list[MetricsPublic], responses=errors(404))
def compare_metrics(session: SessionDep, jobs: JobsQuery) -> list[MetricsPublic]:
    """Every epoch of every job asked for, in one answer (what GET /jobs/{id}/metrics gives
    per job): the dashboard's compare page draws its curves from it."""
    ids = parse_job_ids(jobs)
    existing_jobs(session=session, job_ids=ids)  # 404 naming the missing ones
    # Validated once, from the rows, as what is sent (not records first, then copies).
    epochs = repo.epochs_of_jobs(session=session, job_ids=ids, model=EpochMetricPublic)
    return [MetricsPublic(job_id=i, data=epochs[i], count=len(epochs[i])) for i in ids]


@router.get("/curves.png", response_class=Response, responses=PNG)
def compare_curves(session: SessionDep, jobs: JobsQuery) -> Response:
    """Loss and accuracy of every job overlaid, one colour per job, labelled by what differs."""
    curves = _labelled_curves(session, jobs)
    return _png("curves", curves, lambda: curves_figure(curves))


@router.get("/gradients.png", response_class=Response, responses=PNG)
def compare_gradients(session: SessionDep, jobs: JobsQuery) -> Response:
    """Per-stage gradient norms in the first and last epoch, one line per job."""
    curves = _labelled_curves(session, jobs)
    return _png("gradient-flow", curves, lambda: gradient_flow_figure(curves))


def _labelled_curves(session: Session, jobs: str) -> list[Curve]:
    """Every job's epochs, labelled by what differs between the jobs (the comparison's rule)."""
    records = _records(session, jobs)
    labels = {row.job_id: row.label for row in build_comparison(records).rows}
    return [Curve(labels[r.id], r.epochs) for r in records]


def _job_curve(session: Session, job: Job) -> Curve:
    epochs = repo.job_metrics(session=session, job_id=job.id)
    return Curve(f"job {job.id}: {job.architecture}", epochs)


@jobs_router.get("/{job_id:int}/curves.png", response_class=Response, responses=PNG)
def job_curves(job: JobDep, session: SessionDep) -> Response:
    """Training and validation loss and accuracy per epoch, best epoch marked."""
    curve = _job_curve(session, job)
    return _png("job-curves", [curve], lambda: curves_figure([curve], title=curve.label))


@jobs_router.get("/{job_id:int}/gradients.png", response_class=Response, responses=PNG)
def job_gradients(job: JobDep, session: SessionDep) -> Response:
    """Mean gradient norm of each stage per epoch, and along the depth."""
    curve = _job_curve(session, job)
    return _png("job-gradients", [curve], lambda: gradients_figure(curve))
