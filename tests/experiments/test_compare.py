"""Comparison rows, baseline deltas, fairness warnings and repeat statistics from stored rows."""

from __future__ import annotations

import random
import statistics

import pytest
from experiments_testlib import add_run
from sqlalchemy.orm import Session

from analysis.compare import CompareError, build_comparison, load_records, rebase, sample_stdev
from analysis.renderers import comparison_csv, comparison_markdown
from core.tables import Dataset, JobStatus


def compare(session: Session, *jobs, baseline=None, presets=None):
    records = load_records(session=session, job_ids=[j.id for j in jobs], presets=presets)
    return build_comparison(records, baseline)


def test_rows_match_the_stored_metrics(session: Session, dataset: Dataset) -> None:
    job = add_run(session, dataset, "resnet34", [0.30, 0.45, 0.40], inference_ms=7.5)
    row = compare(session, job).rows[0]
    metrics = sorted(job.metrics, key=lambda m: m.epoch)
    assert (row.best_val_accuracy, row.best_epoch) == (0.45, 2)
    assert row.final_val_accuracy == metrics[-1].val_accuracy == 0.40
    assert row.final_train_accuracy == metrics[-1].train_accuracy
    assert (row.final_train_loss, row.final_val_loss) == (
        metrics[-1].train_loss,
        metrics[-1].val_loss,
    )
    assert row.mean_epoch_seconds == pytest.approx(
        statistics.fmean(m.epoch_seconds for m in metrics)
    )
    assert row.train_images_per_second == pytest.approx(16.0)
    assert (row.num_parameters, row.gflops, row.inference_ms) == (21_000_000, 1.5, 7.5)
    assert row.epochs_run == 3 and row.val_size == 40


def test_best_epoch_ties_follow_the_engine_rule(session: Session, dataset: Dataset) -> None:
    # Equal accuracy in epochs 1 and 3: the lower validation loss (epoch 3) wins.
    job = add_run(session, dataset, "plain34", [0.5, 0.2, 0.5])
    assert compare(session, job).rows[0].best_epoch == 3


def test_deltas_against_the_baseline(session: Session, dataset: Dataset) -> None:
    plain = add_run(session, dataset, "plain34", [0.20, 0.25], num_parameters=20_000_000)
    resnet = add_run(session, dataset, "resnet34", [0.30, 0.50], num_parameters=21_000_000)
    comparison = compare(session, plain, resnet)
    assert comparison.baseline_job_id == plain.id  # the first job by default
    delta = comparison.rows[1].delta
    assert delta["best_val_accuracy"].absolute == pytest.approx(0.25)
    assert delta["best_val_accuracy"].relative == pytest.approx(1.0)
    assert delta["num_parameters"].relative == pytest.approx(0.05)
    assert comparison.rows[0].delta["best_val_accuracy"].absolute == 0
    against_resnet = rebase(comparison, resnet.id)
    assert against_resnet.rows[0].delta["best_val_accuracy"].absolute == pytest.approx(-0.25)
    with pytest.raises(CompareError):
        rebase(comparison, 999)


def test_noise_flag_uses_the_validation_set_size(session: Session, dataset: Dataset) -> None:
    base = add_run(session, dataset, "plain34", [0.40], val_size=40)
    close = add_run(session, dataset, "resnet34", [0.45], val_size=40)
    far = add_run(session, dataset, "se_resnet34", [0.90], val_size=40)
    rows = compare(session, base, close, far).rows
    assert rows[1].delta["best_val_accuracy"].within_noise is True  # 2 images of 40
    assert rows[2].delta["best_val_accuracy"].within_noise is False


def test_identical_settings_give_no_warning(session: Session, dataset: Dataset) -> None:
    a = add_run(session, dataset, "plain34", [0.2, 0.3])
    b = add_run(session, dataset, "resnet34", [0.3, 0.4])
    comparison = compare(session, a, b)
    assert comparison.warnings == []
    assert "Fair comparison:** every job" in comparison_markdown(comparison)


def test_different_image_sizes_are_flagged(session: Session, dataset: Dataset) -> None:
    a = add_run(session, dataset, "plain34", [0.2], hyperparameters={"image_size": 64})
    b = add_run(session, dataset, "resnet34", [0.3], hyperparameters={"image_size": 32})
    warnings = {w.field: w for w in compare(session, a, b).warnings}
    assert set(warnings) == {"hyperparameters.image_size"}
    assert warnings["hyperparameters.image_size"].values == {a.id: 64, b.id: 32}
    assert "image size" in warnings["hyperparameters.image_size"].message


def test_split_lr_epochs_dataset_and_status_are_flagged(session: Session, dataset: Dataset) -> None:
    other = Dataset(name="other", path="/x", source="folder", fingerprint="0" * 64)
    session.add(other)
    session.commit()
    a = add_run(session, dataset, "plain34", [0.2, 0.3])
    b = add_run(
        session,
        other,
        "resnet34",
        [0.3],
        status=JobStatus.running,
        hyperparameters={"split_seed": 3, "lr": 0.1, "epochs": 2},
    )
    fields = {w.field for w in compare(session, a, b).warnings}
    assert fields == {
        "dataset_id",
        "hyperparameters.split_seed",
        "hyperparameters.lr",
        "status",
        "epochs_run",
    }


def test_seeds_within_a_repeat_group_are_expected(session: Session, dataset: Dataset) -> None:
    plain = [
        add_run(session, dataset, "plain34", [0.2], group_id="g1", hyperparameters={"seed": s})
        for s in (0, 1)
    ]
    resnet = [
        add_run(session, dataset, "resnet34", [0.3], group_id="g2", hyperparameters={"seed": s})
        for s in (0, 1)
    ]
    assert compare(session, *plain, *resnet).warnings == []
    # A single plain run with seed 5 against ResNet-34 with seed 0 is not controlled.
    odd = add_run(session, dataset, "plain34", [0.2], hyperparameters={"seed": 5})
    fields = {w.field for w in compare(session, odd, resnet[0]).warnings}
    assert fields == {"hyperparameters.seed"}


def test_mean_and_std_over_repeats(session: Session, dataset: Dataset) -> None:
    accuracies = [0.40, 0.50, 0.45]
    group = [
        add_run(session, dataset, "resnet34", [acc], group_id="g", hyperparameters={"seed": seed})
        for seed, acc in enumerate(accuracies)
    ]
    # Same configuration but submitted separately (no group id): still repeats of it.
    loose = [
        add_run(session, dataset, "plain34", [acc], hyperparameters={"seed": seed})
        for seed, acc in enumerate((0.2, 0.3))
    ]
    comparison = compare(session, *loose, *group)
    plain_group, resnet_group = comparison.groups
    stat = resnet_group.stats["best_val_accuracy"]
    assert stat.n == 3
    assert stat.mean == pytest.approx(statistics.fmean(accuracies))
    assert stat.std == pytest.approx(statistics.stdev(accuracies))
    assert resnet_group.job_ids == [j.id for j in group] and resnet_group.seeds == [0, 1, 2]
    assert plain_group.stats["best_val_accuracy"].mean == pytest.approx(0.25)
    assert resnet_group.delta["best_val_accuracy"].absolute == pytest.approx(0.2)
    assert (plain_group.label, resnet_group.label) == ("plain34", "resnet34")
    assert "45.0 ± 5.0%" in comparison_markdown(comparison)


def test_the_spread_over_repeats_is_statistics_stdev_to_the_last_bit() -> None:
    """The comparison computes it in integers (fast); it must equal the exact Fractions way."""
    rng = random.Random(0)
    for _ in range(3000):
        count = rng.randint(2, 10)
        values = [rng.random() * 10 ** rng.randint(-9, 9) for _ in range(count)]
        assert sample_stdev(values) == statistics.stdev(values), values
    for values in ([21_287_237, 21_113_413, 21_287_237], [0.45, 0.45], [0.1, 0.2, 0.3]):
        assert sample_stdev(values) == statistics.stdev(values)


def test_single_run_has_no_std(session: Session, dataset: Dataset) -> None:
    job = add_run(session, dataset, "plain34", [0.2])
    stat = compare(session, job).groups[0].stats["best_val_accuracy"]
    assert (stat.mean, stat.std, stat.n) == (0.2, None, 1)


def test_labels_name_what_differs(session: Session, dataset: Dataset) -> None:
    presets = {"se_resnet34": {"attn": "se"}, "resnet34": {"attn": None}}
    a = add_run(session, dataset, "resnet34", [0.2], hyperparameters={"lr": 0.01})
    b = add_run(session, dataset, "resnet34", [0.2], hyperparameters={"lr": 0.1})
    c = add_run(
        session, dataset, "se_resnet34", [0.2], options={"attn": "se"}, hyperparameters={"lr": 0.1}
    )
    d = add_run(
        session, dataset, "resnet34", [0.2], options={"attn": "eca"}, hyperparameters={"lr": 0.1}
    )
    labels = [r.label for r in compare(session, a, b, c, d, presets=presets).rows]
    # attn=se is what se_resnet34 means; on resnet34 it is a change worth naming.
    assert labels == [
        "resnet34 lr=0.01",
        "resnet34 lr=0.1",
        "se_resnet34 lr=0.1",
        "resnet34 attn=eca lr=0.1",
    ]


def test_unknown_job_is_an_error(session: Session, dataset: Dataset) -> None:
    job = add_run(session, dataset, "plain34", [0.2])
    with pytest.raises(CompareError, match="no such job: 404"):
        load_records(session=session, job_ids=[job.id, 404])


def test_csv_has_one_line_per_job_with_deltas(session: Session, dataset: Dataset) -> None:
    a = add_run(session, dataset, "plain34", [0.2])
    b = add_run(session, dataset, "resnet34", [0.5])
    lines = comparison_csv(compare(session, a, b)).splitlines()
    header = lines[0].split(",")
    assert len(lines) == 3
    second = dict(zip(header, lines[2].split(","), strict=True))
    assert float(second["best_val_accuracy"]) == 0.5
    assert float(second["delta_best_val_accuracy"]) == pytest.approx(0.3)
    assert float(second["rel_delta_best_val_accuracy"]) == pytest.approx(1.5)


def test_mixed_precisions_are_flagged(session: Session, dataset: Dataset) -> None:
    """Precision as trained (run_info) counts, not as asked: auto and bfloat16 may agree."""
    fp32 = add_run(session, dataset, "plain34", [0.2], hyperparameters={"precision": "auto"})
    bf16 = add_run(session, dataset, "resnet34", [0.3], hyperparameters={"precision": "auto"})
    same = add_run(session, dataset, "resnet34", [0.3], hyperparameters={"precision": "bfloat16"})
    for job, precision in ((fp32, "float32"), (bf16, "bfloat16"), (same, "bfloat16")):
        job.run_info = job.run_info | {"precision": precision}
    session.commit()
    warnings = {w.field: w for w in compare(session, fp32, bf16).warnings}
    assert set(warnings) == {"precision"}
    assert warnings["precision"].values == {fp32.id: "float32", bf16.id: "bfloat16"}
    assert "precision" in warnings["precision"].message
    assert compare(session, bf16, same).warnings == []
