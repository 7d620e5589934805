"""The built wheel carries every file dxpipe reads at run time, and works from outside the repository."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    # Built from a copy of the files git would commit: setuptools reuses a checkout's build/ directory,
    # where an earlier build's files would hide a file missing from package_data.
    source = tmp_path_factory.mktemp("source")
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.splitlines()
    for name in listed:
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(out),
            str(source),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (found,) = out.glob("dxpipe-*.whl")
    return found


def test_wheel_contains_the_run_time_files(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for dataset in ("wdbc", "heart", "pima"):
        assert f"schemas/{dataset}/schema.pbtxt" in names
    assert "pipelines/configs/default.yaml" in names
    manifests = {p.name for p in (ROOT / "serving" / "k8s").glob("*.yaml")}
    assert manifests and {f"serving/k8s/{m}" for m in manifests} <= names
    assert "components/baseline/strategy.py" in names and "models/trainer.py" in names
    assert not any(n.startswith(("tests/", "bench/")) for n in names)


def test_installed_layout_resolves_config_and_schemas(wheel, tmp_path):
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    probe = (
        "import pipelines.config as c, pathlib;"
        "cfg = c.load_config(dataset='heart');"
        "print(pathlib.Path(c.__file__).parent.parent);"
        "print(pathlib.Path(cfg.data.schema_dir, 'schema.pbtxt').is_file())"
    )
    # Run from an unrelated directory with the unpacked wheel first on the path, ahead of this checkout.
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    root, schema_found = done.stdout.split()
    assert Path(root) == site and schema_found == "True"
