"""The compiled WDBC pipeline, executed task by task in the pipeline image (marker `kfp_image`).

Run with `make test-kfp-image` (builds the image first, see the README's Kubeflow section), or, with the
image already built, `.venv/bin/python -m pytest -m kfp_image tests/test_kfp_image.py`. Not part of
`make test` (pytest.ini deselects the marker): it needs podman and the image, about 10 minutes to build
here. The image is `$DXPIPE_KFP_IMAGE` (default: the tag `make image` gives); a missing image fails the
test, naming the command that builds it.

Real parts: the image built from the Dockerfile, the spec `dxpipe compile` writes (open-source KFP form),
each task's own image/command/args run by podman, the executor input built as KFP's launcher builds it
(tests/kfp_driver.py), the serving volume mounted, and the shared MLflow server reached over HTTP from the
containers as a cluster reaches it: `pipelines.registry_server.deploy` (PostgreSQL, basic auth, the
`dxpipe` app that vouches for who is acting), with an MLflow user for the pipeline's service account
whose credentials the driver passes to every pod as environment (never in the spec). What only a
cluster verifies: see tests/kfp_driver.py.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import pytest
import yaml

from components.registry_gate.component import VERDICT_FILE
from pipelines.data import materialize
from pipelines.kubeflow_runner import DEFAULT_IMAGE, IMAGE_PROJECT_ROOT, KubeflowTarget, compile_pipeline
from pipelines.kubeflow_spec import IMPORTER_TASK, dags
from pipelines.registry_executor import RUN_ID_TAG
from pipelines.registry_server.deploy import Deployment
from tests.helpers import config_with_out_of_range_row
from tests.kfp_driver import Driver, PipelineFailed, TaskResult

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


# The MLflow account of the pipeline's Kubernetes service account (a cluster mounts its password as a
# Secret into the pods' environment; the driver passes it as environment the same way).
SERVICE_ACCOUNT = "kfp-pipeline-runner"
# A reviewer (granted by the server's admin) who approves run 1's version between the runs, as a person
# would with `dxpipe approve`: a different account, so the four-eyes rule lets the approval through.
REVIEWER = "kfp-reviewer"


@dataclasses.dataclass
class SharedServer:
    """The running shared server and the pipeline service account's credentials."""

    deployment: Deployment
    password: str
    reviewer_password: str

    @property
    def url(self) -> str:
        """The tracking URI the pods get."""
        return self.deployment.url

    def pod_env(self, user: str = SERVICE_ACCOUNT) -> dict[str, str]:
        """What a cluster gives every pod: the tracking URI and `user`'s credentials (the service account)."""
        return {
            "MLFLOW_TRACKING_URI": self.url,
            "MLFLOW_TRACKING_USERNAME": user,
            "MLFLOW_TRACKING_PASSWORD": self.password if user == SERVICE_ACCOUNT else self.reviewer_password,
        }

    @contextlib.contextmanager
    def client(self) -> Iterator:
        """An `MlflowClient` of the server, reading as its admin (MLflow reads credentials from env)."""
        from mlflow import MlflowClient

        user, password = self.deployment.admin_auth()
        env = {"MLFLOW_TRACKING_USERNAME": user, "MLFLOW_TRACKING_PASSWORD": password}
        with mock.patch.dict(os.environ, env):
            yield MlflowClient(tracking_uri=self.url, registry_uri=self.url)


@pytest.fixture(scope="module")
def mlflow_server() -> Iterator[SharedServer]:
    """The shared server as `dxpipe` deploys it, on loopback (the pods share the host's network)."""
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        pytest.fail("runuser (util-linux) is required to start PostgreSQL as root")
    # Under /tmp, not pytest's 0700 tmp_path: PostgreSQL runs as `postgres` (see tests/registry/auth_server).
    root = Path(tempfile.mkdtemp(prefix="dxpipe-kfp-server-"))
    deployment = Deployment(root)
    deployment.start()
    try:
        password, reviewer_password = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        deployment.add_user(SERVICE_ACCOUNT, password)
        deployment.add_user(REVIEWER, reviewer_password, reviewer=True)
        yield SharedServer(deployment, password, reviewer_password)
    finally:
        deployment.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def volumes(tmp_path_factory):
    root = tmp_path_factory.mktemp("kfp-volumes")
    return {name: root / name for name in ("pipelines", "data", "serving", "bad-data")}


def _compile(cfg, out: Path, baseline: str | None = None) -> dict:
    target = dataclasses.replace(INSIDE, baseline_model_uri=baseline)
    return yaml.safe_load(compile_pipeline(cfg, out, target).read_text())


def _driver(spec: dict, volumes: dict, server: SharedServer, data: str = "data") -> Driver:
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
        env=server.pod_env(),
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


def _mlflow_runs(server: SharedServer, run_id: str) -> list:
    """The MLflow runs tagged with pipeline run `run_id` (read through MLflow's client)."""
    with server.client() as client:
        ids = [e.experiment_id for e in client.search_experiments()]
        return client.search_runs(ids, filter_string=f"tags.`{RUN_ID_TAG}` = '{run_id}'")


def _versions(server: SharedServer, model: str) -> dict[str, object]:
    """The registered versions of `model` by number, and its aliases under the key "aliases"."""
    with server.client() as client:
        versions = {v.version: v for v in client.search_model_versions(f"name = '{model}'")}
        versions["aliases"] = client.get_registered_model(model).aliases if versions else {}
        return versions


def _verdict(results: dict[str, TaskResult], volumes: dict) -> tuple[dict, dict]:
    """The RegistryGate's output artifact (custom properties) and its verdict.json, read from the volume."""
    (artifact,) = _task(results, "RegistryGate").outputs["verdict"]
    inside = artifact["uri"]
    host = volumes["pipelines"] / Path(inside).relative_to(INSIDE.pipeline_root)
    return artifact["metadata"], json.loads((host / VERDICT_FILE).read_text())


def _in_image(server: SharedServer, volumes: dict, user: str, *command: str) -> subprocess.CompletedProcess:
    """Runs `command` in the image as `user` of the server, with the pods' volumes mounted."""
    env = server.pod_env(user)
    flags = [arg for name in env for arg in ("-e", name)]
    mounts = [("pipelines", INSIDE.pipeline_root), ("serving", INSIDE.serving_root)]
    flags += [arg for key, inside in mounts for arg in ("-v", f"{volumes[key]}:{inside}")]
    return subprocess.run(
        ["podman", "run", "--rm", "--network", "host", *flags, IMAGE, *command],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **env},
        check=False,
    )


def _assert_no_credential(server: SharedServer, results: dict[str, TaskResult], *places: Path) -> None:
    """No password is in an executor input (what KFP's ML Metadata records of each execution), nor in any
    file the pipeline wrote (outputs, container logs) or the server's artifact store."""
    found = [server.password, server.reviewer_password]
    inputs = json.dumps([r.executor_input for r in results.values()])
    assert not any(secret in inputs for secret in found)
    files = [f for place in places for f in Path(place).rglob("*") if f.is_file()]
    assert files
    leaked = [str(f) for f in files if any(secret.encode() in f.read_bytes() for secret in found)]
    assert leaked == []


@pytest.fixture(scope="module")
def first_run(image, default_cfg, volumes, mlflow_server, tmp_path_factory):
    materialize(default_cfg.data, volumes["data"] / "wdbc")
    spec = _compile(default_cfg, tmp_path_factory.mktemp("spec-1") / "wdbc.yaml")
    # The compiled spec names no credential: the pods get them from their environment only.
    assert mlflow_server.password not in json.dumps(spec) and "MLFLOW_TRACKING_PASSWORD" not in json.dumps(
        spec
    )
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


def test_the_image_reaches_the_mlflow_server_as_the_service_account(image, mlflow_server):
    # The server vouches for the pod's identity (what the RegistryGate records as the author).
    probe = (
        "import mlflow; from pipelines.identity import current_identity; "
        "print(len(mlflow.search_experiments()), current_identity(mlflow.get_tracking_uri()).name)"
    )
    env = mlflow_server.pod_env()
    flags = [arg for name in env for arg in ("-e", name)]
    done = subprocess.run(
        ["podman", "run", "--rm", "--network", "host", *flags, image, "python", "-c", probe],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **env},
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    count, name = done.stdout.strip().splitlines()[-1].split()
    assert int(count) >= 1 and name == SERVICE_ACCOUNT  # the server's Default experiment; who is acting


def test_first_run_registers_gates_and_pushes_to_staging(first_run, volumes, mlflow_server):
    spec, results = first_run
    assert {name.rsplit("/", 1)[-1] for name in results} >= CORE_TASKS | {"RegistryGate"}
    assert {name: r.state for name, r in results.items()} == dict.fromkeys(results, "SUCCEEDED")
    evaluator = _task(results, "Evaluator")
    assert "baseline_model" not in evaluator.executor_input["inputs"]["artifacts"]  # first run: no champion
    # Parameters travel only in the modern form, as open-source KFP's launcher passes them.
    assert set(_task(results, "CsvExampleGen").executor_input["inputs"]) == {"parameterValues", "artifacts"}
    assert evaluator.outputs["blessing"][0]["metadata"]["blessed"] == 1
    # The gate's verdict: the artifact the push is conditioned on, and verdict.json with every reason.
    properties, verdict = _verdict(results, volumes)
    assert properties["passed"] == 1 and verdict["passed"] is True and verdict["failures"] == []
    assert verdict["version"] == "1" and verdict["reused"] is False
    assert verdict["compared_with"] == "none (no champion yet)"
    pushed = _task(results, "ServingPusher").outputs["pushed_model"][0]
    assert pushed["metadata"]["pushed"] == 1
    versions = sorted((volumes["serving"] / "wdbc-staging").iterdir())
    assert len(versions) == 1 and (versions[0] / "saved_model.pb").is_file()
    # On the server, through MLflow's client: one FINISHED run of this pipeline run, the version it
    # registered (gate passed, alias candidate, the service account as its author, the model's lineage).
    (run,) = _mlflow_runs(mlflow_server, "run-1")
    assert run.info.status == "FINISHED" and run.info.run_id == verdict["mlflow_run_id"]
    registered = _versions(mlflow_server, verdict["model_name"])
    assert set(registered) == {"1", "aliases"}
    tags = registered["1"].tags
    assert tags["gate"] == "passed" and tags["dxpipe.author"] == SERVICE_ACCOUNT
    assert tags["tfx.run_id"] == "run-1" and tags["model.digest"] == verdict["model_digest"]
    assert tags["tfx.model_uri"] == _task(results, "Trainer").outputs["model"][0]["uri"]
    assert registered["1"].run_id == run.info.run_id
    assert registered["aliases"] == {"candidate": "1"}  # no champion: approval is a reviewer's act
    # Nor is the password in what the run and the version recorded in the server's database.
    recorded = json.dumps([run.data.params, run.data.tags, tags])
    assert mlflow_server.password not in recorded and "MLFLOW_TRACKING_PASSWORD" not in recorded
    _assert_no_credential(
        mlflow_server, results, volumes["pipelines"], mlflow_server.deployment.root / "artifacts"
    )


def test_second_run_compares_against_the_first_as_its_baseline(
    first_run, default_cfg, volumes, mlflow_server, tmp_path
):
    _, first = first_run
    champion = _task(first, "Trainer").outputs["model"][0]["uri"]
    _, first_verdict = _verdict(first, volumes)
    model = first_verdict["model_name"]
    # A reviewer approves run 1's version in the image, seeing the volumes the pods see (the promotion log
    # and evidence live under the serving root); it becomes the champion and is published to production.
    approve = ["dxpipe", "approve", model, first_verdict["version"], "--note", "executed-spec test"]
    done = _in_image(mlflow_server, volumes, REVIEWER, *approve, "--serving-root", INSIDE.serving_root)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert _versions(mlflow_server, model)["aliases"] == {"candidate": "1", "champion": "1"}
    # Another seed: a different SavedModel (the seeded Trainer reproduces run 1's bytes with the same one,
    # which the gate would recognise as the champion re-run and not register again).
    data = dataclasses.replace(
        default_cfg.data, training=dataclasses.replace(default_cfg.data.training, seed=43)
    )
    retrained = dataclasses.replace(default_cfg, datasets={**default_cfg.datasets, "wdbc": data})
    spec = _compile(retrained, tmp_path / "wdbc.yaml", baseline=champion)
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
    assert blessing["blessed"] == 1  # same data, another seed: within TFMA's allowed drop from the champion
    # The gate got the baseline too, and the server's champion is version 1: as the gate defines, the
    # candidate is compared with the approved champion (its evidence verified under the serving volume),
    # here re-scored by the Evaluator on this test split since the baseline's digest is the champion's.
    gate_inputs = _task(results, "RegistryGate").executor_input["inputs"]["artifacts"]
    assert [a["uri"] for a in gate_inputs["baseline_model"]["artifacts"]] == [champion]
    _, verdict = _verdict(results, volumes)
    (run,) = _mlflow_runs(mlflow_server, "run-2")
    assert run.info.status == "FINISHED" and run.info.run_id == verdict["mlflow_run_id"]
    registered = _versions(mlflow_server, model)
    assert verdict["model_digest"] != first_verdict["model_digest"]
    assert verdict["passed"] is True and verdict["reused"] is False and verdict["version"] == "2"
    assert verdict["compared_with"].startswith("champion version 1, re-scored by the Evaluator")
    compared = {r["criterion"]: r for r in verdict["verdict"]["results"]}
    assert {"non_inferiority:auc", "non_inferiority:recall"} <= set(compared)
    assert all(compared[c]["passed"] for c in ("non_inferiority:auc", "non_inferiority:recall"))
    assert set(registered) == {"1", "2", "aliases"}
    tags = registered["2"].tags
    assert tags["gate"] == "passed" and tags["tfx.run_id"] == "run-2"
    assert tags["gate.compared_with"] == verdict["compared_with"]
    assert tags["dxpipe.author"] == SERVICE_ACCOUNT
    # The pipeline never promotes: version 2 is the candidate, version 1 stays the champion.
    assert registered["aliases"] == {"candidate": "2", "champion": "1"}
    assert _task(results, "ServingPusher").state == "SUCCEEDED"
    _assert_no_credential(
        mlflow_server, results, volumes["pipelines"], mlflow_server.deployment.root / "artifacts"
    )


def test_bad_csv_ends_with_a_failed_mlflow_run_and_nothing_pushed(
    image, default_cfg, volumes, mlflow_server, tmp_path
):
    cfg = config_with_out_of_range_row(default_cfg, tmp_path)
    materialize(cfg.data, volumes["bad-data"] / "wdbc")
    spec = _compile(cfg, tmp_path / "wdbc.yaml")
    staging = volumes["serving"] / "wdbc-staging"
    before = sorted(p.name for p in staging.iterdir()) if staging.exists() else []
    with mlflow_server.client() as client:
        models_before = {
            m.name: len(client.search_model_versions(f"name = '{m.name}'"))
            for m in client.search_registered_models()
        }
    report = r"(?s)task (\S+/)?DataGate exited.*mean_radius.*expected float, between 0"
    with pytest.raises(PipelineFailed, match=report) as failed:
        _driver(spec, volumes, mlflow_server, data="bad-data").run("run-bad", {"dxpipe_run_id": "run-bad"})
    states = {name.rsplit("/", 1)[-1]: r.state for name, r in failed.value.results.items()}
    assert states["DataGate"] == "FAILED"
    assert states["Trainer"] == states["Evaluator"] == states["RegistryGate"] == "NOT_RUN"
    assert states["ServingPusher"] == "NOT_RUN"
    assert not list((volumes["pipelines"] / "dxpipe-wdbc" / "run-bad").glob("**/Trainer"))  # nothing trained
    assert (sorted(p.name for p in staging.iterdir()) if staging.exists() else []) == before
    # The exit handler ran after the failed DAG and ended a FAILED MLflow run with KFP's final status.
    (run,) = _mlflow_runs(mlflow_server, "run-bad")
    assert run.info.status == "FAILED"
    assert run.data.tags["dxpipe.failure"].startswith("Kubeflow pipeline run failed")
    assert run.data.tags["kfp.pipeline_job"] == "run-bad"
    with mlflow_server.client() as client:
        models_after = {
            m.name: len(client.search_model_versions(f"name = '{m.name}'"))
            for m in client.search_registered_models()
        }
    assert models_after == models_before  # nothing registered
    _assert_no_credential(
        mlflow_server, failed.value.results, volumes["pipelines"], mlflow_server.deployment.root / "artifacts"
    )
