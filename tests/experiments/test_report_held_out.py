"""The report with a test part: the test number is the result; costs say which time they use."""

from __future__ import annotations

from analysis.compare import JobRecord, build_comparison
from analysis.renderers import comparison_csv
from analysis.report import StudyData, render_report
from core.specs import EpochMetrics


def record(
    job_id: int, architecture: str, val: float, test: float | None, wall: float, cpu: float | None
) -> JobRecord:
    epochs = [
        EpochMetrics(
            epoch=e,
            train_loss=1.0,
            train_accuracy=0.5,
            val_loss=1.0,
            val_accuracy=val if e == 2 else val - 0.1,
            lr=0.1,
            epoch_seconds=wall,
            epoch_cpu_seconds=cpu,
            load_average=3.0 if cpu else None,
            train_images_per_second=10.0,
            generalization_gap=0.0,
        )
        for e in (1, 2)
    ]
    test_metrics = None if test is None else {"accuracy": test, "num_images": 30, "loss": 1.0}
    return JobRecord(
        id=job_id,
        status="succeeded",
        dataset_id=1,
        architecture=architecture,
        hyperparameters={"seed": 0, "test_fraction": 0.15},
        epochs=epochs,
        run_info={"val_size": 40, "inference_ms": 5.0},
        test_metrics=test_metrics,
    )


def section(report: str, heading: str) -> str:
    return report.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]


def test_report_names_the_test_accuracy_as_the_result_and_shows_it_beside_validation():
    # plain34 looks better on validation, resnet34 is better on the held-out test images.
    comparison = build_comparison(
        [record(1, "plain34", 0.70, 0.50, 40.0, 9.0), record(2, "resnet34", 0.60, 0.65, 10.0, 10.0)]
    )
    markdown, _ = render_report(StudyData(comparison=comparison, epochs={}, baselines=[1, 2]))
    summary = section(markdown, "Summary")
    assert "Highest test accuracy: **resnet34** (65.0%)" in summary
    assert "The result is the test accuracy" in summary and "30 held-out images" in summary
    per_model = section(markdown, "Results per model")
    assert "| test accuracy (held out) | 50.0% |" in per_model
    assert " test acc |" in section(markdown, "Comparison of all models")
    tradeoffs = section(markdown, "Trade-offs")
    assert "Training time is **CPU seconds per epoch**" in tradeoffs
    assert "load average during the epochs was 3.0-3.0" in tradeoffs
    # The loaded plain run's wall time (40 s) is not what the trade-off compares: 9 CPU s is.
    assert "| plain34 | 50.0% |" in tradeoffs and "| 9.0 |" in tradeoffs
    csv = comparison_csv(comparison).splitlines()
    assert "test_accuracy" in csv[0] and "mean_epoch_cpu_seconds" in csv[0]


def test_without_a_test_part_the_report_keeps_best_validation_and_wall_time():
    comparison = build_comparison(
        [
            record(1, "plain34", 0.70, None, 40.0, None),
            record(2, "resnet34", 0.60, None, 10.0, None),
        ]
    )
    markdown, _ = render_report(StudyData(comparison=comparison, epochs={}, baselines=[1, 2]))
    assert "Highest best validation accuracy: **plain34**" in section(markdown, "Summary")
    assert "The result is the test accuracy" not in markdown
    assert "Training time is **wall seconds per epoch**" in section(markdown, "Trade-offs")
