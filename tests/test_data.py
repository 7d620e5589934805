import csv
import io

import pytest

from pipelines.config import SourceConfig
from pipelines.data import canonical_csv, feature_name, materialize
from pipelines.errors import DataError


def _rows(text):
    return list(csv.DictReader(io.StringIO(text)))


@pytest.mark.parametrize(
    ("dataset", "rows", "positives"),
    # Published class counts: WDBC 212 malignant of 569; Cleveland 139 with disease of 303 (+1 duplicate
    # id in this copy); Pima 268 diabetic of 768.
    [("wdbc", 569, 212), ("heart", 304, 139), ("pima", 768, 268)],
)
def test_packaged_datasets_become_canonical_csv(default_cfg, dataset, rows, positives):
    data = default_cfg.datasets[dataset]
    table = _rows(canonical_csv(data))
    assert len(table) == rows
    labels = [r["label"] for r in table]
    assert set(labels) == {"0", "1"}
    assert labels.count("1") == positives
    assert all(name == feature_name(name) for name in table[0])


def test_pima_zero_means_not_measured(default_cfg):
    table = _rows(canonical_csv(default_cfg.datasets["pima"]))
    assert not any(r["glucose"] == "0" for r in table)
    assert sum(r["insulin"] == "" for r in table) == 374  # the file's zero insulin readings


def test_values_are_copied_as_text(tmp_path, default_cfg):
    path = tmp_path / "mine.csv"
    path.write_text("Mean Radius,target\n1,0\nabc,1\n")
    data = default_cfg.data.__class__(
        source=SourceConfig(kind="csv", path=str(path)), label_column="target", schema_dir=str(tmp_path)
    )
    table = _rows(canonical_csv(data))
    # A bad cell is kept for the data gate to report, not silently coerced here.
    assert [r["mean_radius"] for r in table] == ["1", "abc"]


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("", "is empty"),
        ("a,target\n", "has a header but no data rows"),
        ("a,b\n1,2\n", "has no column 'target'"),
    ],
    ids=["empty", "header-only", "no-label-column"],
)
def test_unreadable_csv_fails_before_any_component(tmp_path, default_cfg, content, match):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    data = default_cfg.data.__class__(
        source=SourceConfig(kind="csv", path=str(path)), label_column="target", schema_dir=str(tmp_path)
    )
    with pytest.raises(DataError, match=match):
        canonical_csv(data)


def test_missing_file_names_the_path(tmp_path, default_cfg):
    data = default_cfg.data.__class__(
        source=SourceConfig(kind="csv", path=str(tmp_path / "nope.csv")), label_column="t", schema_dir="."
    )
    with pytest.raises(DataError, match="nope.csv does not exist"):
        canonical_csv(data)


def test_materialize_rewrites_only_on_change(tmp_path, default_cfg):
    target, digest = materialize(default_cfg.data, tmp_path)
    mtime = target.stat().st_mtime_ns
    again, digest_again = materialize(default_cfg.data, tmp_path)
    # ExampleGen's cache key includes the file's mtime: an unchanged dataset must not be rewritten.
    assert (again, digest_again) == (target, digest)
    assert target.stat().st_mtime_ns == mtime
