"""Concurrency on one working directory: store creation, runs, and a run's own lineage."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pipelines import cli, local_runner
from pipelines.local_runner import WorkdirBusyError, workdir_lock

REPO = Path(__file__).resolve().parents[2]


def test_first_use_store_creation_is_race_free(tmp_path):
    """Four processes open a brand-new embedded store at the same moment; all of them succeed."""
    workdir = tmp_path / "fresh"
    go = tmp_path / "go"
    script = textwrap.dedent(
        f"""
        import os, sys, time
        from pathlib import Path
        from pipelines.mlflow_store import TrackingConfig, client_for
        while not Path({str(go)!r}).exists():
            time.sleep(0.005)
        client = client_for(TrackingConfig(workdir={str(workdir)!r}).resolved())
        client.create_experiment(f"exp-{{os.getpid()}}")
        """
    )
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    children = [
        subprocess.Popen([sys.executable, "-c", script], cwd=REPO, env=env, stderr=subprocess.PIPE)
        for _ in range(4)
    ]
    time.sleep(3)  # let every child import MLflow and wait at the line
    go.touch()
    errors = [child.communicate(timeout=300)[1].decode() for child in children]
    assert [child.returncode for child in children] == [0, 0, 0, 0], "\n".join(e[-1500:] for e in errors)
    assert not any("duplicate column" in e for e in errors)


def test_a_second_run_on_one_workdir_is_refused_with_a_clear_message(tmp_path):
    with (
        workdir_lock(tmp_path),
        pytest.raises(
            WorkdirBusyError,
            match=rf"another dxpipe run is using the working directory .* \(pid {os.getpid()}, started ",
        ),
        workdir_lock(tmp_path),
    ):
        pass
    with workdir_lock(tmp_path):  # released: the next run goes ahead
        pass


def test_dxpipe_run_on_a_busy_workdir_exits_2_with_one_line(tmp_path, capsys):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\nfrom pathlib import Path\nfrom pipelines.local_runner import workdir_lock\n"
            f"with workdir_lock(Path({str(tmp_path)!r})):\n    print('held', flush=True)\n    time.sleep(120)\n",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout.readline().strip() == b"held"
        code = cli.main(["run", "--workdir", str(tmp_path)])
        err = capsys.readouterr().err
        assert code == 2
        assert err.startswith("dxpipe: error: another dxpipe run is using the working directory")
        assert f"(pid {holder.pid}, started" in err and err.count("\n") == 1
    finally:
        holder.kill()
        holder.wait()


def test_run_ids_are_unique():
    assert len({local_runner.new_run_id() for _ in range(1000)}) == 1000
