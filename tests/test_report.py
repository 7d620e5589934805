"""The run summary's metrics table."""

from pipelines.report import format_metrics_table


def test_table_puts_overall_first_then_slices_in_order_and_marks_missing_metrics():
    table = format_metrics_table(
        {
            "sex:Male": {"auc": 0.91, "example_count": 30.0},
            "Overall": {"auc": 0.95, "binary_accuracy": 0.875, "example_count": 61.0},
            "sex:Female": {"auc": 0.93, "example_count": 31.0},
        }
    )
    lines = table.splitlines()
    assert lines[0].split() == ["metric", "Overall", "sex:Female", "sex:Male"]
    auc = next(line for line in lines if line.strip().startswith("AUC"))
    assert auc.split()[1:] == ["0.9500", "0.9300", "0.9100"]
    accuracy = next(line for line in lines if line.strip().startswith("accuracy"))
    assert accuracy.split()[1:] == ["0.8750", "-", "-"]
    count = next(line for line in lines if line.strip().startswith("test examples"))
    assert count.split()[2:] == ["61", "31", "30"]
