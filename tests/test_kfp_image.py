"""The compiled WDBC pipeline, executed task by task in the pipeline image (marker `kfp_image`).

Run with `make test-kfp-image` (builds the image first, see the README's Kubeflow section), or, with the
image already built, `.venv/bin/python -m pytest -m kfp_image tests/test_kfp_image.py`. Not part of
`make test` (pytest.ini deselects the marker): it needs podman and the image, about 10 minutes to build
here. The image is `$DXPIPE_KFP_IMAGE` (default: the tag `make image` gives); a missing image fails the
test, naming the command that builds it.

Real parts: the image built from the Dockerfile, the spec `dxpipe compile` writes (open-source KFP form),
each task's own image/command/args run by podman, the executor input built as KFP's launcher builds it
(tests/kfp_driver.py), the serving volume mounted, and a real `mlflow server` on the host reached over
HTTP from the containers. What only a cluster verifies: see tests/kfp_driver.py.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import requests
import yaml

from pipelines.config import SourceConfig
from pipelines.data import canonical_csv, materialize
from pipelines.kubeflow_runner import DEFAULT_IMAGE, IMAGE_PROJECT_ROOT, KubeflowTarget, compile_pipeline
from pipelines.kubeflow_spec import IMPORTER_TASK, dags
from tests.kfp_driver import Driver, PipelineFailed, TaskResult
from tests.registry.test_mlflow_server import Server, _free_port

# Also `slow`, so `-m "not slow"` leaves it out as well.
pytestmark = [pytest.mark.kfp_image, pytest.mark.slow]

IMAGE = os.environ.get("DXPIPE_KFP_IMAGE", DEFAULT_IMAGE)
# Paths as the pods see them; each is a host directory mounted into every task's container.
INSIDE = KubeflowTarget(
    image=IMAGE,
    pipeline_root="/mnt/dxpipe/pipelines",
    data_root="/mnt/dxpipe/data",
    serving_root="/mnt/dxpipe/serving",
)
# The tasks today's DAG has; tracking/registration/gate tasks join them when they move into the DAG.
CORE_TASKS = {
    "CsvExampleGen",
    "StatisticsGen",
    "ImportSchemaGen",
    "ExampleValidator",
    "DataGate",
    "Trainer",
    "Evaluator",
    "ServingPusher",
}
TIMINGS: dict[str, float] = {}


def _podman(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def image():
    if shutil.which("podman") is None:
        pytest.fail("podman is not installed: apt-get install podman runc (see README, Kubeflow Pipelines)")
    if _podman("image", "exists", IMAGE).returncode != 0:
        pytest.fail(f"image {IMAGE} is not built: run `make image-local` (or `make image`) first")
    return IMAGE


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    server = Server(tmp_path_factory.mktemp("mlflow-server"), _free_port())
    server.start()
    yield server
    server.kill()


@pytest.fixture(scope="module")
def volumes(tmp_path_factory):
    root = tmp_path_factory.mktemp("kfp-volumes")
    return {name: root / name for name in ("pipelines", "data", "serving", "bad-data")}


def _compile(cfg, out: Path, baseline: str | None = None) -> dict:
    target = dataclasses.replace(INSIDE, baseline_model_uri=baseline)
    return yaml.safe_load(compile_pipeline(cfg, out, target).read_text())


def _driver(spec: dict, volumes: dict, server: Server, data: str = "data") -> Driver:
    for path in volumes.values():
        path.mkdir(parents=True, exist_ok=True)
    return Driver(
        spec=spec,
        mounts={
            str(volumes["pipelines"]): INSIDE.pipeline_root,
            str(volumes[data]): INSIDE.data_root,
            str(volumes["serving"]): INSIDE.serving_root,
        },
        pipeline_root=f"{INSIDE.pipeline_root}/dxpipe-wdbc",
        env={"MLFLOW_TRACKING_URI": server.url},
    )


def _tracking_tasks(spec: dict) -> set[str]:
    """Tasks beyond today's core: the tracking, registration and gate components once they are in the DAG."""
    names = {
        name
        for dag in dags(spec)
        for name, task in dag["tasks"].items()
        if "dag" not in spec["components"][task["componentRef"]["name"]]
    }
    return names - CORE_TASKS - {IMPORTER_TASK}


def _task(results: dict[str, TaskResult], name: str) -> TaskResult:
    """A task's result, at the root or in a nested DAG (TFX nests every task when there is an exit handler)."""
    (key,) = [k for k in results if k == name or k.endswith("/" + name)]
    return results[key]


def _mlflow_runs(server: Server) -> list[dict]:
    experiments = requests.get(
        f"{server.url}/api/2.0/mlflow/experiments/search", params={"max_results": 1000}, timeout=10
    ).json()
    ids = [e["experiment_id"] for e in experiments.get("experiments", [])]
    response = requests.post(
        f"{server.url}/api/2.0/mlflow/runs/search",
        json={"experiment_ids": ids, "max_results": 1000},
        timeout=10,
    )
    response.raise_for_status()
    return response.json().get("runs", [])


@pytest.fixture(scope="module")
def first_run(image, default_cfg, volumes, mlflow_server, tmp_path_factory):
    materialize(default_cfg.data, volumes["data"] / "wdbc")
    spec = _compile(default_cfg, tmp_path_factory.mktemp("spec-1") / "wdbc.yaml")
    started = time.monotonic()
    results = _driver(spec, volumes, mlflow_server).run("run-1", {"dxpipe_run_id": "run-1"})
    TIMINGS["first run"] = time.monotonic() - started
    yield spec, results
    # The figures BENCHMARKS.md records: whole-DAG wall times and each task's.
    timings = {"seconds": TIMINGS, "tasks": {name: round(r.seconds, 1) for name, r in results.items()}}
    out = Path(os.environ.get("DXPIPE_KFP_TIMINGS", tmp_path_factory.getbasetemp() / "kfp-timings.json"))
    out.write_text(json.dumps(timings, indent=2))
    print(f"\nkfp_image timings ({out}): {json.dumps(timings)}")


def test_every_command_and_module_in_the_spec_exists_in_the_image(image, default_cfg, tmp_path):
    spec = _compile(default_cfg, tmp_path / "wdbc.yaml")
    checks: set[tuple[str, str]] = set()
    for executor in spec["deploymentSpec"]["executors"].values():
        container = executor.get("container")
        if not container:
            continue
        for hook in (container, container.get("lifecycle", {}).get("preCacheCheck", {})):
            command = hook.get("command", [])
            if command:
                checks.add(("executable", command[0]))
            if command[1:2] == ["-m"]:
                checks.add(("module", command[2]))
        args = container["args"]
        checks.add(("class", args[args.index("--executor_class_path") + 1]))
    for task in (task for dag in dags(spec) for task in dag["tasks"].values()):
        for key, value in task.get("inputs", {}).get("parameters", {}).items():
            if "runtimeValue" not in value:
                continue  # a DAG input (`dxpipe_run_id`) or a task's final status: no path in it
            constant = value["runtimeValue"]["constant"]
            if key.endswith("_fn"):
                checks.add(("class", constant))  # a function by dotted path (the Trainer's run_fn)
            elif isinstance(constant, str) and constant.startswith(IMAGE_PROJECT_ROOT + "/"):
                checks.add(("path", constant))
    # The serving Deployment (serving/k8s/dxpipe-serve) runs the same image as `python -m serving.server`.
    checks.add(("module", "serving.server"))
    assert {kind for kind, _ in checks} == {"executable", "module", "class", "path"}, checks
    probe = (
        "import importlib, importlib.util, json, os, shutil, sys\n"
        "def ok(kind, value):\n"
        "    if kind == 'executable': return shutil.which(value) is not None\n"
        "    if kind == 'module': return importlib.util.find_spec(value) is not None\n"
        "    if kind == 'path': return os.path.exists(value)\n"
        "    module, _, name = value.rpartition('.')\n"
        "    return hasattr(importlib.import_module(module), name)\n"
        "print(json.dumps([c for c in json.loads(sys.argv[1]) if not ok(*c)]))\n"
    )
    done = _podman("run", "--rm", image, "python", "-c", probe, json.dumps(sorted(checks)))
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [], f"missing in {image}"


def test_the_image_reaches_the_mlflow_server_over_http(image, mlflow_server):
    probe = "import mlflow; print(len(mlflow.search_experiments()))"
    done = _podman(
        "run",
        "--rm",
        "--network",
        "host",
        "-e",
        f"MLFLOW_TRACKING_URI={mlflow_server.url}",
        image,
        "python",
        "-c",
        probe,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert int(done.stdout.strip().splitlines()[-1]) >= 1  # the server's Default experiment


def test_first_run_trains_blesses_and_pushes_to_staging(first_run, volumes, mlflow_server):
    spec, results = first_run
    assert {name.rsplit("/", 1)[-1] for name in results} >= CORE_TASKS
    assert {name: r.state for name, r in results.items()} == dict.fromkeys(results, "SUCCEEDED")
    evaluator = _task(results, "Evaluator")
    assert "baseline_model" not in evaluator.executor_input["inputs"]["artifacts"]  # first run: no champion
    # Parameters travel only in the modern form, as open-source KFP's launcher passes them.
    assert set(_task(results, "CsvExampleGen").executor_input["inputs"]) == {"parameterValues", "artifacts"}
    assert evaluator.outputs["blessing"][0]["metadata"]["blessed"] == 1
    pushed = _task(results, "ServingPusher").outputs["pushed_model"][0]
    assert pushed["metadata"]["pushed"] == 1
    versions = sorted((volumes["serving"] / "wdbc-staging").iterdir())
    assert len(versions) == 1 and (versions[0] / "saved_model.pb").is_file()
    # MLflow: one run per pipeline run once tracking is a DAG task (the version and the gate verdict are
    # asserted there); until then the DAG records nothing in MLflow.
    tracked = _tracking_tasks(spec)
    assert len(_mlflow_runs(mlflow_server)) == (1 if tracked else 0), tracked


def test_second_run_compares_against_the_first_as_its_baseline(
    first_run, default_cfg, volumes, mlflow_server, tmp_path
):
    _, first = first_run
    champion = _task(first, "Trainer").outputs["model"][0]["uri"]
    spec = _compile(default_cfg, tmp_path / "wdbc.yaml", baseline=champion)
    started = time.monotonic()
    results = _driver(spec, volumes, mlflow_server).run("run-2", {"dxpipe_run_id": "run-2"})
    TIMINGS["second run"] = time.monotonic() - started
    assert _task(results, IMPORTER_TASK).outputs["artifact"][0]["uri"] == champion
    evaluator = _task(results, "Evaluator")
    baseline = evaluator.executor_input["inputs"]["artifacts"]["baseline_model"]["artifacts"]
    assert [a["uri"] for a in baseline] == [champion]
    blessing = evaluator.outputs["blessing"][0]["metadata"]
    # TFMA compared the candidate with the champion (the blessing names both models).
    assert blessing["baseline_model"] == champion
    assert blessing["current_model"] == _task(results, "Trainer").outputs["model"][0]["uri"] != champion
    assert blessing["blessed"] == 1  # same data, same seed: no worse than the champion
    assert _task(results, "ServingPusher").state == "SUCCEEDED"


def test_bad_csv_stops_at_the_data_gate(image, default_cfg, volumes, mlflow_server, tmp_path):
    text = canonical_csv(default_cfg.data).splitlines()
    header = text[0].split(",")
    row = text[5].split(",")
    row[header.index("mean_radius")] = "-3"
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join([text[0], *text[1:5], ",".join(row), *text[6:]]) + "\n")
    data = dataclasses.replace(
        default_cfg.data, source=SourceConfig(kind="csv", path=str(bad)), label_column="label", label_map={}
    )
    cfg = dataclasses.replace(default_cfg, datasets={**default_cfg.datasets, "wdbc": data})
    materialize(cfg.data, volumes["bad-data"] / "wdbc")
    spec = _compile(cfg, tmp_path / "wdbc.yaml")
    before = sorted(p.name for p in (volumes["serving"] / "wdbc-staging").iterdir())
    report = r"(?s)task (\S+/)?DataGate exited.*mean_radius.*expected float, between 0"
    with pytest.raises(PipelineFailed, match=report) as failed:
        _driver(spec, volumes, mlflow_server, data="bad-data").run("run-bad", {"dxpipe_run_id": "run-bad"})
    states = {name.rsplit("/", 1)[-1]: r.state for name, r in failed.value.results.items()}
    assert states["DataGate"] == "FAILED"
    assert states["Trainer"] == states["Evaluator"] == states["ServingPusher"] == "NOT_RUN"
    assert not list((volumes["pipelines"] / "dxpipe-wdbc" / "run-bad").glob("**/Trainer"))  # nothing trained
    assert sorted(p.name for p in (volumes["serving"] / "wdbc-staging").iterdir()) == before
    # The FAILED MLflow run is the exit handler's, once tracking is a DAG task.
    if _tracking_tasks(spec):
        assert _mlflow_runs(mlflow_server)[0]["info"]["status"] == "FAILED"  # newest first
