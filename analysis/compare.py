"""Comparing training runs: one row per job, deltas to a baseline, fairness, repeats.

Everything here is computed from stored rows (jobs and their epoch metrics), never typed in,
and is torch-free, so the API, the CLI and the report all show the same numbers.
Accuracies are fractions in [0, 1], as the engine stores them.
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel, Field, PrivateAttr
from sqlalchemy.orm import Session

from core import repository as repo
from core.errors import SpecError
from core.specs import EpochMetrics, JobRunInfo, best_epoch
from core.tables import EpochMetric

# Fields of a row that get a mean ± std over repeats and a delta to the baseline.
METRIC_FIELDS = (
    "best_val_accuracy",
    "final_val_accuracy",
    "final_train_accuracy",
    "final_val_loss",
    "final_train_loss",
    "num_parameters",
    "gflops",
    "mean_epoch_seconds",
    "mean_epoch_cpu_seconds",
    "train_images_per_second",
    "inference_ms",
    "test_accuracy",
)
ACCURACY_FIELDS = (
    "best_val_accuracy",
    "final_val_accuracy",
    "final_train_accuracy",
    "test_accuracy",
)

# Hyperparameters whose difference is reported on its own (or not at all), not as a
# generic "hyperparameters differ": the seed varies across repeats by design, the split and
# training length have their own warnings, and these two change speed, never accuracy.
SPLIT_KEYS = ("val_fraction", "split_seed")
# `precision` is compared as trained (run_info), not as asked: auto means different things on
# different machines.
OWN_WARNING_KEYS = ("seed", "image_size", "epochs", "precision", *SPLIT_KEYS)
SPEED_ONLY_KEYS = ("num_workers", "device")


class CompareError(SpecError):
    """A comparison that cannot be made; `field` names the request parameter to fix."""


class UnknownJobsError(CompareError):
    """Some of the jobs asked for do not exist."""

    status_code = 404


# The job columns a record is built from: not the best epoch's details or a traceback.
COMPARED_COLUMNS = (
    "id",
    "status",
    "dataset_id",
    "architecture",
    "architecture_options",
    "hyperparameters",
    "group_id",
    "repeat_index",
    "num_parameters",
    "gflops",
    "device",
    "run_info",
    "test_metrics",
)


class JobRecord(BaseModel):
    """What a comparison needs to know about one job: its configuration and its epochs."""

    id: int
    status: str
    dataset_id: int
    architecture: str
    options: dict[str, Any] = Field(default_factory=dict)
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    group_id: str | None = None
    repeat_index: int = 0
    num_parameters: int | None = None
    gflops: float | None = None
    device: str | None = None
    run_info: JobRunInfo = Field(default_factory=JobRunInfo)
    epochs: list[EpochMetrics] = Field(default_factory=list)
    test_metrics: dict[str, Any] | None = Field(None, description="the held-out test score")
    preset_options: dict[str, Any] = Field(
        default_factory=dict,
        description="the architecture's default options: implied by its name, so left out of "
        "labels (se_resnet34 is not relabelled 'attn=se')",
    )
    # Labels, groups and warnings look at every setting of every job several times: each
    # record encodes its settings once (records are not changed after they are built).
    _settings_cache: tuple[dict[str, Any], dict[str, Any]] | None = PrivateAttr(None)
    _group_key: str | None = PrivateAttr(None)

    @classmethod
    def from_row(
        cls,
        job: Mapping[str, Any],
        metrics: Iterable[EpochMetric | EpochMetrics],
        preset_options: dict[str, Any] | None = None,
    ) -> JobRecord:
        """From a job's COMPARED_COLUMNS (repo.job_fields_by_id) and its epochs."""
        return cls(
            id=job["id"],
            status=job["status"].value,
            dataset_id=job["dataset_id"],
            architecture=job["architecture"],
            options=job["architecture_options"],
            hyperparameters=job["hyperparameters"],
            group_id=job["group_id"],
            repeat_index=job["repeat_index"],
            num_parameters=job["num_parameters"],
            gflops=job["gflops"],
            device=job["device"],
            run_info=JobRunInfo.model_validate(job["run_info"] or {}),
            epochs=[
                row
                if isinstance(row, EpochMetrics)
                else EpochMetrics.model_validate(row, from_attributes=True)
                for row in metrics
            ],
            test_metrics=job["test_metrics"],
            preset_options=preset_options or {},
        )


def existing_jobs(
    *, session: Session, job_ids: Sequence[int], columns: Sequence[str] = ("id",)
) -> dict[int, dict[str, Any]]:
    """`columns` of every job asked for, in one query; UnknownJobsError names the missing."""
    jobs = repo.job_fields_by_id(session=session, job_ids=job_ids, columns=columns)
    missing = [str(job_id) for job_id in job_ids if job_id not in jobs]
    if missing:
        raise UnknownJobsError("jobs", f"no such job: {', '.join(missing)}")
    return jobs


def load_records(
    *,
    session: Session,
    job_ids: Sequence[int],
    presets: Mapping[str, dict[str, Any]] | None = None,
    grad_norms: bool = True,
) -> list[JobRecord]:
    """The jobs in the order asked; raises CompareError naming every id that does not exist.

    `presets` maps architecture names to their default options (models.ARCHITECTURES), which
    core cannot import; without it labels show every stored option. `grad_norms=False` leaves
    the epochs' gradient norms empty: a comparison table does not use them, figures do.
    """
    # Two queries however many jobs: a round trip per job adds up on a remote database.
    ordered = list(dict.fromkeys(job_ids))
    jobs = existing_jobs(session=session, job_ids=ordered, columns=COMPARED_COLUMNS)
    metrics: dict[int, list[EpochMetrics]] = repo.epochs_of_jobs(
        session=session, job_ids=ordered, grad_norms=grad_norms
    )
    return [
        JobRecord.from_row(
            jobs[job_id], metrics[job_id], (presets or {}).get(jobs[job_id]["architecture"])
        )
        for job_id in ordered
    ]


class Delta(BaseModel):
    """Difference to the baseline: value - baseline, and that as a fraction of the baseline."""

    absolute: float | None
    relative: float | None
    noise: float | None = Field(
        None, description="two standard errors of the difference (accuracies only)"
    )
    within_noise: bool | None = Field(
        None, description="|absolute| <= noise: not distinguishable from chance"
    )


class ComparisonRow(BaseModel):
    """One job's results; accuracies are fractions, latency is per image on the CPU."""

    job_id: int
    label: str = Field(description="architecture plus what sets this job apart from the others")
    status: str
    architecture: str
    options: dict[str, Any]
    explicit_options: dict[str, Any] = Field(
        description="options beyond what the architecture's name implies"
    )
    group: str = Field(description="equal for jobs that differ only by seed (repeats)")
    group_id: str | None
    seed: int | None
    dataset_id: int
    device: str | None
    hyperparameters: dict[str, Any]
    epochs_run: int
    best_epoch: int | None
    best_val_accuracy: float | None
    final_train_accuracy: float | None
    final_val_accuracy: float | None
    final_train_loss: float | None
    final_val_loss: float | None
    num_parameters: int | None
    gflops: float | None
    mean_epoch_seconds: float | None = Field(description="wall-clock: grows with the load")
    mean_epoch_cpu_seconds: float | None = Field(
        None, description="CPU seconds of the training process per epoch (robust to load)"
    )
    mean_load_average: float | None = Field(None, description="1-minute load, mean over epochs")
    train_images_per_second: float | None
    inference_ms: float | None
    val_size: int | None
    test_accuracy: float | None = Field(None, description="best checkpoint on the test part")
    test_size: int | None = None
    delta: dict[str, Delta] = Field(default_factory=dict)


class Stat(BaseModel):
    mean: float | None
    std: float | None = Field(description="sample standard deviation; None with one run")
    n: int


class GroupSummary(BaseModel):
    """Repeats of one configuration (same architecture, options and hyperparameters but seed)."""

    group: str
    label: str
    architecture: str
    options: dict[str, Any]
    explicit_options: dict[str, Any]
    job_ids: list[int]
    seeds: list[int | None]
    stats: dict[str, Stat]
    val_size: int | None
    test_size: int | None = None
    delta: dict[str, Delta] = Field(default_factory=dict)


class FairnessWarning(BaseModel):
    field: str = Field(description="what differs, e.g. hyperparameters.image_size")
    message: str
    values: dict[int, Any] = Field(description="job id -> its value")


class Comparison(BaseModel):
    job_ids: list[int]
    baseline_job_id: int | None
    baseline_group: str | None
    rows: list[ComparisonRow]
    groups: list[GroupSummary]
    warnings: list[FairnessWarning]
    shared_hyperparameters: dict[str, Any] = Field(description="equal for every job")
    differing: list[str] = Field(description="settings that vary between the jobs")


# --- one row per job -----------------------------------------------------------------------


def group_key(record: JobRecord) -> str:
    """Equal for jobs that differ only by seed: they are repeats of one configuration."""
    if record._group_key is None:
        hyper = {k: v for k, v in record.hyperparameters.items() if k != "seed"}
        identity = [record.dataset_id, record.architecture, record.options, hyper]
        encoded = json.dumps(identity, sort_keys=True, default=str).encode()
        record._group_key = hashlib.sha256(encoded).hexdigest()[:12]
    return record._group_key


def _mean(values: Iterable[float]) -> float | None:
    values = list(values)
    return statistics.fmean(values) if values else None


def _mean_or_none(values: Iterable[float | None]) -> float | None:
    """The mean, unless some epoch has no value (stored before the figure was recorded)."""
    values = list(values)
    return None if any(v is None for v in values) else _mean(values)  # type: ignore[arg-type]


def make_row(record: JobRecord, label: str) -> ComparisonRow:
    epochs = sorted(record.epochs, key=lambda m: m.epoch)
    best = best_epoch(epochs)
    last = epochs[-1] if epochs else None
    return ComparisonRow(
        job_id=record.id,
        label=label,
        status=record.status,
        architecture=record.architecture,
        options=record.options,
        explicit_options=explicit_options(record),
        group=group_key(record),
        group_id=record.group_id,
        seed=record.hyperparameters.get("seed"),
        dataset_id=record.dataset_id,
        device=record.device,
        hyperparameters=record.hyperparameters,
        epochs_run=len(epochs),
        best_epoch=best.epoch if best else None,
        best_val_accuracy=best.val_accuracy if best else None,
        final_train_accuracy=last.train_accuracy if last else None,
        final_val_accuracy=last.val_accuracy if last else None,
        final_train_loss=last.train_loss if last else None,
        final_val_loss=last.val_loss if last else None,
        num_parameters=record.num_parameters,
        gflops=record.gflops,
        mean_epoch_seconds=_mean(m.epoch_seconds for m in epochs),
        mean_epoch_cpu_seconds=_mean_or_none(m.epoch_cpu_seconds for m in epochs),
        mean_load_average=_mean_or_none(m.load_average for m in epochs),
        train_images_per_second=_mean(m.train_images_per_second for m in epochs),
        inference_ms=record.run_info.inference_ms,
        val_size=record.run_info.val_size,
        test_accuracy=(record.test_metrics or {}).get("accuracy"),
        test_size=(record.test_metrics or {}).get("num_images"),
    )


# --- labels: what differs between the jobs ---------------------------------------------------


def explicit_options(record: JobRecord) -> dict[str, Any]:
    """The options that change the named architecture (not those its name already implies)."""
    presets = record.preset_options
    return {k: v for k, v in record.options.items() if k not in presets or presets[k] != v}


def _settings(record: JobRecord) -> dict[str, Any]:
    """Explicit options and hyperparameters as one flat mapping (options first)."""
    return _encoded_settings(record)[0]


def _encoded_settings(record: JobRecord) -> tuple[dict[str, Any], dict[str, Any]]:
    """The settings and each one's _json key, computed once per record."""
    if record._settings_cache is None:
        settings = {**explicit_options(record), **record.hyperparameters}
        record._settings_cache = (settings, {k: _json(v) for k, v in settings.items()})
    return record._settings_cache


def differing_settings(records: Sequence[JobRecord]) -> list[str]:
    """Options and hyperparameters whose value is not the same for every job, in a stable order."""
    encoded = [_encoded_settings(r)[1] for r in records]
    keys = sorted({k for e in encoded for k in e})
    absent = _json(None)
    return [k for k in keys if len({e.get(k, absent) for e in encoded}) > 1]


_PLAIN = (str, int, bool)


def _json(value: Any) -> Any:
    """A key equal for two values exactly when their JSON texts are equal.

    Plain scalars (the usual hyperparameter) skip json.dumps: a comparison of 20 jobs asks for
    thousands of these. Their keys are tuples, never equal to the JSON text of another value.
    """
    kind = type(value)
    if value is None or kind in _PLAIN:
        return (kind, value)
    if kind is float:
        return (kind, repr(value))  # as JSON writes it: -0.0 differs from 0.0, nan equals nan
    return json.dumps(value, sort_keys=True, default=str)


def _short(value: Any) -> Any:
    """Floats in labels to 3 significant digits: a tuned lr of 0.017283822 reads 0.0173."""
    return f"{value:.3g}" if isinstance(value, float) else value


def job_labels(records: Sequence[JobRecord], include_seed: bool = True) -> dict[int, str]:
    """Legend text: the architecture and each setting that differs, e.g. 'resnet34 lr=0.01'."""
    keys = [k for k in differing_settings(records) if include_seed or k != "seed"]
    labels = {}
    for record in records:
        settings = _settings(record)
        parts = [
            record.architecture,
            *(f"{k}={_short(settings.get(k))}" for k in keys if k in settings),
        ]
        labels[record.id] = " ".join(parts)
    # Identical labels would make a legend useless: tell such jobs apart by id.
    counts = Counter(labels.values())
    return {i: f"{lab} #{i}" if counts[lab] > 1 else lab for i, lab in labels.items()}


# --- repeats: mean ± std per configuration ---------------------------------------------------


def _stat(values: Sequence[float | None]) -> Stat:
    present = [v for v in values if v is not None]
    if not present:
        return Stat(mean=None, std=None, n=0)
    std = sample_stdev(present) if len(present) > 1 else None
    return Stat(mean=statistics.fmean(present), std=std, n=len(present))


def sample_stdev(values: Sequence[float]) -> float:
    """statistics.stdev to the last bit, in integers instead of Fractions (a comparison takes
    dozens, and Fractions made them a fifth of its time).

    Every finite float is an integer over a power of two, so on the largest denominator all
    values are integers X; the sum of squared deviations over n - 1 is then exactly
    (n sum(X^2) - sum(X)^2) / (n (n - 1) scale^2), whose correctly rounded square root is
    statistics.stdev's answer.
    """
    try:
        ratios = [value.as_integer_ratio() for value in values]
    except (OverflowError, ValueError):  # inf or nan: statistics says what they give
        return statistics.stdev(values)
    scale = max(denominator for _, denominator in ratios)
    scaled = [numerator * (scale // denominator) for numerator, denominator in ratios]
    n = len(scaled)
    total = sum(scaled)
    return _sqrt_of_fraction(
        n * sum(x * x for x in scaled) - total * total, n * (n - 1) * scale * scale
    )


def _sqrt_of_fraction(numerator: int, denominator: int) -> float:
    """sqrt(numerator / denominator) as a float, correctly rounded: Python 3.11's
    statistics._float_sqrt_of_frac: an integer root of about 55 bits rounded to odd, then one
    rounding to the float's 53."""
    shift = (numerator.bit_length() - denominator.bit_length() - 109) // 2
    if shift >= 0:
        root = _isqrt_round_to_odd(numerator, denominator << 2 * shift) << shift
        return root / 1
    return _isqrt_round_to_odd(numerator << -2 * shift, denominator) / (1 << -shift)


def _isqrt_round_to_odd(numerator: int, denominator: int) -> int:
    root = math.isqrt(numerator // denominator)
    return root | (root * root * denominator != numerator)


def summarise_groups(rows: Sequence[ComparisonRow], labels: dict[str, str]) -> list[GroupSummary]:
    """One summary per configuration, in the order its first job appears."""
    by_group: dict[str, list[ComparisonRow]] = {}
    for row in rows:
        by_group.setdefault(row.group, []).append(row)
    return [
        GroupSummary(
            group=key,
            label=labels[key],
            architecture=members[0].architecture,
            options=members[0].options,
            explicit_options=members[0].explicit_options,
            job_ids=[r.job_id for r in members],
            seeds=[r.seed for r in members],
            stats={f: _stat([getattr(r, f) for r in members]) for f in METRIC_FIELDS},
            val_size=members[0].val_size,
            test_size=members[0].test_size,
        )
        for key, members in by_group.items()
    ]


# --- deltas to a baseline ------------------------------------------------------------------


def accuracy_standard_error(accuracy: float | None, val_size: int | None) -> float | None:
    """Binomial standard error of an accuracy measured on `val_size` images."""
    if accuracy is None or not val_size:
        return None
    return math.sqrt(max(accuracy * (1 - accuracy), 0.0) / val_size)


def delta(
    value: float | None,
    base: float | None,
    value_se: float | None = None,
    base_se: float | None = None,
) -> Delta:
    if value is None or base is None:
        return Delta(absolute=None, relative=None)
    absolute = value - base
    relative = absolute / abs(base) if base else None
    if value_se is None or base_se is None:
        return Delta(absolute=absolute, relative=relative)
    noise = 2 * math.hypot(value_se, base_se)
    return Delta(
        absolute=absolute, relative=relative, noise=noise, within_noise=abs(absolute) <= noise
    )


def _row_deltas(row: ComparisonRow, base: ComparisonRow) -> dict[str, Delta]:
    deltas = {}
    for field in METRIC_FIELDS:
        value, base_value = getattr(row, field), getattr(base, field)
        if field in ACCURACY_FIELDS:
            deltas[field] = delta(
                value,
                base_value,
                accuracy_standard_error(value, _sample_size(row, field)),
                accuracy_standard_error(base_value, _sample_size(base, field)),
            )
        else:
            deltas[field] = delta(value, base_value)
    return deltas


def _sample_size(of: ComparisonRow | GroupSummary, field: str) -> int | None:
    """Images an accuracy was measured on: the test part for the test score, else validation."""
    return of.test_size if field == "test_accuracy" else of.val_size


def _standard_error_of_mean(stat: Stat, val_size: int | None) -> float | None:
    """Spread over seeds when there are repeats, else the binomial error of the one run."""
    if stat.std is not None and stat.n > 1:
        return stat.std / math.sqrt(stat.n)
    return accuracy_standard_error(stat.mean, val_size)


def _group_deltas(group: GroupSummary, base: GroupSummary) -> dict[str, Delta]:
    deltas = {}
    for field in METRIC_FIELDS:
        stat, base_stat = group.stats[field], base.stats[field]
        if field in ACCURACY_FIELDS:
            deltas[field] = delta(
                stat.mean,
                base_stat.mean,
                _standard_error_of_mean(stat, _sample_size(group, field)),
                _standard_error_of_mean(base_stat, _sample_size(base, field)),
            )
        else:
            deltas[field] = delta(stat.mean, base_stat.mean)
    return deltas


def rebase(comparison: Comparison, baseline_job_id: int) -> Comparison:
    """The same comparison with deltas against another job (and that job's repeat group)."""
    base_row = next((r for r in comparison.rows if r.job_id == baseline_job_id), None)
    if base_row is None:
        raise CompareError("baseline", f"job {baseline_job_id} is not among the compared jobs")
    base_group = next(g for g in comparison.groups if g.group == base_row.group)
    rows = [r.model_copy(update={"delta": _row_deltas(r, base_row)}) for r in comparison.rows]
    groups = [
        g.model_copy(update={"delta": _group_deltas(g, base_group)}) for g in comparison.groups
    ]
    return comparison.model_copy(
        update={
            "baseline_job_id": baseline_job_id,
            "baseline_group": base_group.group,
            "rows": rows,
            "groups": groups,
        }
    )


# --- fairness: is this comparison controlled? ---------------------------------------------------


def _differs(values: dict[int, Any]) -> bool:
    return len({_json(v) for v in values.values()}) > 1


def _listing(values: dict[int, Any]) -> str:
    return ", ".join(f"job {job_id}: {value}" for job_id, value in values.items())


def _hyper(records: Sequence[JobRecord], key: str) -> dict[int, Any]:
    return {r.id: r.hyperparameters.get(key) for r in records}


def fairness_warnings(records: Sequence[JobRecord]) -> list[FairnessWarning]:
    """Everything besides the architecture that differs between the jobs and biases the result."""
    checks: list[tuple[str, dict[int, Any], str]] = [
        (
            "dataset_id",
            {r.id: r.dataset_id for r in records},
            "jobs were trained on different datasets",
        ),
        *(
            (
                f"hyperparameters.{key}",
                _hyper(records, key),
                f"jobs use different train/validation splits ({key} differs)",
            )
            for key in SPLIT_KEYS
        ),
        (
            "hyperparameters.image_size",
            _hyper(records, "image_size"),
            "jobs use different image sizes: accuracy and cost depend on the input resolution",
        ),
        (
            "hyperparameters.epochs",
            _hyper(records, "epochs"),
            "jobs were given different numbers of epochs",
        ),
        *(
            (
                f"hyperparameters.{key}",
                _hyper(records, key),
                f"hyperparameter {key} differs, not only the architecture",
            )
            for key in _other_hyperparameters(records)
        ),
        (
            "precision",
            _trained_precisions(records),
            "jobs trained in different numeric precisions: accuracy and speed may differ",
        ),
        (
            "device",
            {r.id: r.device for r in records},
            "jobs ran on different devices: seconds per epoch and images/second are not comparable",
        ),
    ]
    warnings = [
        FairnessWarning(field=field, message=f"{why} ({_listing(values)})", values=values)
        for field, values, why in checks
        if _differs(values)
    ]
    return warnings + _seed_warnings(records) + _completeness_warnings(records)


def _trained_precisions(records: Sequence[JobRecord]) -> dict[int, Any]:
    """What each job computed in, where recorded (jobs from before precision was recorded have
    none and are left out)."""
    return {r.id: r.run_info.precision for r in records if r.run_info.precision}


def _other_hyperparameters(records: Sequence[JobRecord]) -> list[str]:
    keys = {k for r in records for k in r.hyperparameters}
    return sorted(keys - set(OWN_WARNING_KEYS) - set(SPEED_ONLY_KEYS))


def _seed_warnings(records: Sequence[JobRecord]) -> list[FairnessWarning]:
    """Seeds may differ within a repeat group; across configurations the seed sets should match."""
    seeds: dict[str, list[Any]] = {}
    for record in records:
        seeds.setdefault(group_key(record), []).append(record.hyperparameters.get("seed"))
    if len({_json(sorted(s, key=str)) for s in seeds.values()}) <= 1:
        return []
    values = _hyper(records, "seed")
    return [
        FairnessWarning(
            field="hyperparameters.seed",
            message="configurations were run with different seeds, so their differences include "
            f"initialisation and shuffling noise ({_listing(values)})",
            values=values,
        )
    ]


def _completeness_warnings(records: Sequence[JobRecord]) -> list[FairnessWarning]:
    warnings = []
    unfinished = {r.id: r.status for r in records if r.status != "succeeded"}
    if unfinished:
        warnings.append(
            FairnessWarning(
                field="status",
                message="not every job succeeded; their numbers are partial "
                f"({_listing(unfinished)})",
                values=unfinished,
            )
        )
    epochs_run = {r.id: len(r.epochs) for r in records}
    planned = {r.id: r.hyperparameters.get("epochs") for r in records}
    if _differs(epochs_run) and not _differs(planned):
        warnings.append(
            FairnessWarning(
                field="epochs_run",
                message="jobs trained for different numbers of epochs (early stopping, a "
                f"cancellation or a job still running) ({_listing(epochs_run)})",
                values=epochs_run,
            )
        )
    return warnings


# --- the whole comparison --------------------------------------------------------------------


def shared_hyperparameters(records: Sequence[JobRecord]) -> dict[str, Any]:
    if not records:
        return {}
    first = records[0].hyperparameters
    return {k: v for k, v in first.items() if not _differs(_hyper(records, k))}


def build_comparison(
    records: Sequence[JobRecord], baseline_job_id: int | None = None
) -> Comparison:
    """Rows, repeat groups, warnings and deltas against `baseline_job_id` (default: the first)."""
    if not records:
        raise CompareError("jobs", "give at least one job id")
    labels = job_labels(records)
    rows = [make_row(record, labels[record.id]) for record in records]
    group_labels = _group_labels(records)
    comparison = Comparison(
        job_ids=[r.id for r in records],
        baseline_job_id=None,
        baseline_group=None,
        rows=rows,
        groups=summarise_groups(rows, group_labels),
        warnings=fairness_warnings(records),
        shared_hyperparameters=shared_hyperparameters(records),
        differing=differing_settings(records),
    )
    return rebase(comparison, records[0].id if baseline_job_id is None else baseline_job_id)


def _group_labels(records: Sequence[JobRecord]) -> dict[str, str]:
    """Labels that tell the configurations apart; the seed is left out (it varies inside)."""
    first_of_group: dict[str, JobRecord] = {}
    for record in records:
        first_of_group.setdefault(group_key(record), record)
    labels = job_labels(list(first_of_group.values()), include_seed=False)
    return {key: labels[record.id] for key, record in first_of_group.items()}
