"""The installed `dxpipe` script, as a user runs it: output complete and exit codes kept.

`console_main` skips CPython's slow finalisation once TensorFlow is loaded; these run the real script in
a subprocess to show that nothing printed is lost and the exit status still says what happened.
"""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers import write_config

DXPIPE = str(Path(sys.executable).parent / "dxpipe")

pytestmark = pytest.mark.slow


def _dxpipe(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([DXPIPE, *argv], capture_output=True, text=True, cwd=cwd, timeout=600, check=False)


def test_compile_prints_its_result_and_exits_zero(tmp_path):
    out = tmp_path / "kfp" / "wdbc.yaml"
    done = _dxpipe("compile", "--output", str(out), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == f"wrote {out} (KFP SDK / UI) and {out.with_suffix('.json')} (PipelineJob)"
    assert yaml.safe_load(out.read_text())["pipelineInfo"]["name"] == "dxpipe-wdbc"


def test_a_run_stopped_by_the_data_gate_exits_two_with_its_report(tmp_path, default_cfg):
    from pipelines.data import canonical_csv

    lines = canonical_csv(default_cfg.data).splitlines()
    header = lines[0].split(",")
    row = lines[3].split(",")
    row[header.index("mean_area")] = "lots"
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join([lines[0], *lines[1:3], ",".join(row), *lines[4:]]) + "\n")
    config = write_config(
        tmp_path / "bad.yaml",
        tmp_path / "work",
        source={"kind": "csv", "path": str(bad)},
        label_column="label",
        label_map={},
    )
    done = _dxpipe("run", "--config", str(config), cwd=tmp_path)
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    # Progress printed before the failure is all there, and the report names the file and the column.
    assert "StatisticsGen" in done.stdout and "ExampleValidator" in done.stdout, done.stdout
    assert done.stderr.startswith("dxpipe: error:") and str(bad) in done.stderr, done.stderr
    assert "mean_area" in done.stderr and "Traceback" not in done.stderr
