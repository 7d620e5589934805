"""`dxpipe prepare-data`: the data step of a Kubeflow run, as a command that writes what the pods read."""

from __future__ import annotations

import csv
import json

from pipelines.cli import main
from pipelines.data import DATA_FILE, ROWS_FILE, SPLITS, canonical_csv
from pipelines.kubeflow_runner import KubeflowTarget, bind


def test_writes_the_splits_the_compiled_pipeline_reads(tmp_path, capsys, default_cfg):
    root = tmp_path / "mnt" / "data"
    assert main(["prepare-data", "--data-root", str(root), "--workdir", str(tmp_path / "work")]) == 0
    out = capsys.readouterr().out
    assert "split by" in out and f"--data-root {root}" in out
    target = root / "wdbc"
    rows = {s: list(csv.reader((target / s / DATA_FILE).read_text().splitlines())) for s in SPLITS}
    headers = {tuple(r[0]) for r in rows.values()}
    assert len(headers) == 1
    # Every source row lands in exactly one split, once.
    source = canonical_csv(default_cfg.data).splitlines()
    assert sum(len(r) - 1 for r in rows.values()) == len(source) - 1
    assert set(json.loads((target / ROWS_FILE).read_text())["splits"]) == set(SPLITS)
    # The compiled pipeline's CsvExampleGen reads exactly this directory under the same data root.
    assert (
        f"{root}/wdbc"
        == f"{KubeflowTarget(data_root=str(root)).data_root}/{bind(default_cfg, KubeflowTarget()).dataset}"
    )
    assert not (tmp_path / "work").exists()  # nothing else is written


def test_a_missing_source_is_one_error_line(tmp_path, capsys, default_cfg):
    config = tmp_path / "c.yaml"
    config.write_text(
        "dataset: wdbc\ndatasets:\n  wdbc:\n    source: {kind: csv, path: nowhere.csv}\n    label_column: diagnosis\n"
        f"    label_map: {{M: 1, B: 0}}\n    schema_dir: {default_cfg.data.schema_dir}\n"
    )
    code = main(["prepare-data", "--config", str(config), "--data-root", str(tmp_path / "d")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("dxpipe: error:") and "nowhere.csv" in err and "Traceback" not in err
    assert not (tmp_path / "d" / "wdbc").exists()
