"""A default `dxpipe run` seen as MLflow 3 users see it: Python API, `mlflow models serve`, the UI in a browser.

One real pipeline run (TFX LocalDagRunner, the embedded MLflow store) registers `wdbc` version 1; a second
person approves it. Then:

- `mlflow.pyfunc.load_model("models:/wdbc@candidate")` and `@champion` predict the probabilities
  `dxpipe serve` answers for the same test rows (within 1e-6);
- `mlflow models serve` (local environment, no network) answers a request with the same values;
- the run lists its datasets (one per split, sizes, no rows) and its logged model with the test metrics;
- the version page and the run page, opened in headless Chromium against `dxpipe ui`, show what a
  reviewer needs: the schema's input names, the test metrics, the gate report, the plots.

Set DXPIPE_SCREENSHOTS=<dir> to keep the pages' screenshots (the README's come from here).
"""

from __future__ import annotations

import contextlib
import getpass
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests
import tensorflow as tf

from components.serving_pusher.core import list_versions, saved_model_digest
from models.features import features_from_schema, load_schema, parse_examples
from pipelines.cli import main
from tests.helpers import write_config

pytestmark = pytest.mark.slow

MODEL = "wdbc"
ATOL = 1e-6
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SCHEMA = Path(__file__).resolve().parents[1] / "schemas" / "wdbc" / "schema.pbtxt"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_http(url: str, process: subprocess.Popen, log: Path, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{process.args[:5]} exited {process.returncode}: {log.read_text()[-3000:]}")
        with contextlib.suppress(requests.RequestException):
            if requests.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.5)
    pytest.fail(f"{url} did not answer within {timeout} s: {log.read_text()[-3000:]}")


@contextlib.contextmanager
def _process(argv: list[str], url: str, log: Path, env: dict[str, str]):
    with log.open("w") as out:
        process = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    try:
        _wait_http(url, process, log)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("native") / "work"


@pytest.fixture(scope="module")
def tracking_uri(workdir) -> str:
    return f"sqlite:///{workdir / 'mlflow.db'}"


@pytest.fixture(scope="module")
def client(tracking_uri):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri)


@pytest.fixture(scope="module")
def registered(workdir, tmp_path_factory) -> str:
    """`dxpipe run` on the default config; returns its stdout."""
    config = write_config(tmp_path_factory.mktemp("cfg") / "run.yaml", workdir)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["run", "--config", str(config)])
    assert code == 0, out.getvalue()
    assert f"'{MODEL}' version 1 passed the gate -> alias candidate" in out.getvalue()
    return out.getvalue()


@pytest.fixture(scope="module")
def global_uri(tracking_uri):
    """`models:/` URIs resolve through MLflow's global tracking URI, as in a data scientist's notebook."""
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    with _use_tracking_uri(tracking_uri):
        yield tracking_uri


@pytest.fixture(scope="module")
def run(registered, client):
    version = client.get_model_version(MODEL, "1")
    return client.get_run(version.run_id)


@pytest.fixture(scope="module")
def test_rows(run) -> pd.DataFrame:
    """The run's test split, read from its dataset input's source: the rows the gate's metrics came from."""
    (test,) = [d for d in run.inputs.dataset_inputs if [t.value for t in d.tags] == ["test"]]
    split_dir = Path(json.loads(test.dataset.source)["uri"])
    records = [
        r.numpy() for f in sorted(split_dir.glob("*")) for r in tf.data.TFRecordDataset(str(f), "GZIP")
    ]
    features = features_from_schema(load_schema(str(SCHEMA)))
    parsed = parse_examples(tf.constant(records), features)
    rows = pd.DataFrame({f.name: parsed[f.name].numpy().astype(np.float64) for f in features})
    assert len(rows) == json.loads(test.dataset.profile)["num_rows"] > 100
    return rows


def _serve_predict(base_path: Path, rows: pd.DataFrame) -> np.ndarray:
    from serving.config import single_model_config
    from serving.server import ServerOptions, ServerThread

    options = ServerOptions(
        models=(single_model_config(MODEL, str(base_path)),),
        port=0,
        file_system_poll_seconds=0,
        access_log="off",
    )
    server = ServerThread(options)
    try:
        body = json.dumps({"instances": rows.to_dict(orient="records")})
        response = requests.post(f"{server.url}/v1/models/{MODEL}:predict", data=body, timeout=60)
        assert response.status_code == 200, response.text
        return np.array([p["probability"] for p in response.json()["predictions"]])
    finally:
        server.stop()


def _staging(workdir: Path) -> Path:
    return workdir / "serving" / f"{MODEL}-staging"


# ------------------------------------------------------------------------------------ the Python API


def test_candidate_loads_as_pyfunc_and_predicts_what_dxpipe_serve_answers(
    registered, global_uri, workdir, test_rows
):
    import mlflow.pyfunc

    model = mlflow.pyfunc.load_model(f"models:/{MODEL}@candidate")
    mine = model.predict(test_rows)["probability"].to_numpy()
    served = _serve_predict(_staging(workdir), test_rows)
    assert len(mine) == len(test_rows) and np.ptp(served) > 0.5  # a real spread, not a constant model
    np.testing.assert_allclose(mine, served, atol=ATOL, rtol=0)


def test_version_is_the_served_bytes_with_the_schema_as_signature(registered, client, workdir):
    from mlflow.models import get_model_info

    version = client.get_model_version(MODEL, "1")
    assert version.source.startswith("models:/m-")
    location = Path(client.get_model_version_download_uri(MODEL, "1").removeprefix("file://"))
    (staged,) = list_versions(_staging(workdir))
    assert saved_model_digest(location / "data" / "Format-Serving") == version.tags["model.digest"]
    assert saved_model_digest(_staging(workdir) / str(staged)) == version.tags["model.digest"]
    info = get_model_info(str(location))
    schema = load_schema(str(SCHEMA))
    assert info.signature.inputs.input_names() == [f.name for f in schema.feature if f.name != "label"]
    assert info.signature.outputs.input_names() == ["probability", "predicted_label"]
    example = json.loads((location / "input_example.json").read_text())
    assert set(example) == set(info.signature.inputs.input_names())
    requirements = (location / "requirements.txt").read_text().split()
    assert all("==" in r for r in requirements) and any(r.startswith("tensorflow==") for r in requirements)


def test_run_lists_its_datasets_and_logged_model_with_test_metrics(run, client):
    inputs = {d.tags[0].value: d.dataset for d in run.inputs.dataset_inputs}
    assert set(inputs) == {"train", "eval", "test"}
    for split, dataset in inputs.items():
        assert dataset.name == MODEL and len(dataset.digest) == 32
        assert json.loads(dataset.profile)["split"] == split
        columns = [c["name"] for c in json.loads(dataset.schema)["mlflow_colspec"]]
        assert "mean_radius" in columns and "label" in columns
    count = json.loads(inputs["test"].profile)["num_rows"]
    assert run.data.tags["data.test_digest"] == f"{count}:{inputs['test'].digest}"
    (output,) = run.outputs.model_outputs
    model = client.get_logged_model(output.model_id)
    assert model.source_run_id == run.info.run_id and str(model.status) in (
        "READY",
        "LoggedModelStatus.READY",
    )
    metrics = {m.key: m for m in model.metrics}
    auc = metrics["test/Overall/auc"]
    assert auc.value == pytest.approx(run.data.metrics["test/Overall/auc"])
    assert auc.dataset_name == MODEL and auc.dataset_digest == inputs["test"].digest
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    plots = {a.path for a in client.list_logged_model_artifacts(output.model_id, "plots")}
    drawn = ("roc", "precision_recall", "calibration", "confusion_matrix", "reliability", "decision_curve")
    assert plots == {f"plots/{p}.png" for p in drawn}


def test_version_description_is_the_reviewers_report(registered, client):
    text = client.get_model_version(MODEL, "1").description
    assert text.startswith("Gate passed (")
    assert "| `minimum:auc` | pass |" in text and "re-derives the verdict from the recorded evidence" in text
    assert "Examples per split: eval" in text and "- [roc](ajax-api/2.0/mlflow/logged-models/m-" in text


# ------------------------------------------------------------------------------------------- the browser


def _driver():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1400,1800",
    ):
        options.add_argument(flag)
    # The driver path is given, so selenium-manager never tries to download one.
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)


def _wait_for_texts(driver, texts: list[str], timeout: float = 60.0) -> str:
    from selenium.webdriver.common.by import By

    deadline = time.monotonic() + timeout
    body = ""
    while time.monotonic() < deadline:
        body = driver.find_element(By.TAG_NAME, "body").text
        if all(t in body for t in texts):
            return body
        time.sleep(0.5)
    missing = [t for t in texts if t not in body]
    pytest.fail(f"{driver.current_url} never showed {missing}; it showed: {body[:3000]}")


@pytest.fixture(scope="module")
def ui(registered, workdir, tmp_path_factory):
    if not (Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file()):
        pytest.fail(f"{CHROMIUM} and {CHROMEDRIVER} are needed: apt-get install chromium chromium-driver")
    port = _free_port()
    dxpipe = shutil.which("dxpipe", path=str(Path(sys.executable).parent)) or "dxpipe"
    log = tmp_path_factory.mktemp("ui") / "ui.log"
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    with _process(
        [dxpipe, "ui", "--workdir", str(workdir), "--port", str(port)],
        f"http://127.0.0.1:{port}/health",
        log,
        env,
    ):
        yield f"http://127.0.0.1:{port}"


def _click(driver, element) -> None:
    # A JavaScript click: a transient overlay (a tooltip, the assistant panel opening) cannot intercept it.
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'}); arguments[0].click();", element)


def _screenshot(driver, name: str, tmp: Path) -> Path:
    folder = Path(os.environ.get("DXPIPE_SCREENSHOTS") or tmp)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    driver.save_screenshot(str(path))
    return path


def test_reviewer_sees_inputs_metrics_report_and_plots_in_a_browser(ui, run, client, tmp_path):
    from selenium.webdriver.common.by import By

    names = [f.name for f in load_schema(str(SCHEMA)).feature if f.name != "label"]
    driver = _driver()
    try:
        driver.get(f"{ui}/#/experiments/{run.info.experiment_id}")
        # MLflow 3.17's UI starts in its GenAI workspace whatever the experiment's kind; a reviewer switches
        # to "Model training" once (the browser keeps the choice). The screenshots show that view.
        _wait_for_texts(driver, ["Model training"])
        _click(driver, driver.find_element(By.XPATH, "//*[text()='Model training']"))
        # The switch is an asynchronous in-app navigation: let it land before opening another page, or it
        # lands afterwards and replaces that page (seen once in CI).
        from selenium.webdriver.support.ui import WebDriverWait

        WebDriverWait(driver, 60).until(lambda d: "workflowType=machine_learning" in d.current_url)
        driver.get(f"{ui}/#/models/{MODEL}/versions/1")
        body = _wait_for_texts(driver, ["reviewer's report", "Gate criteria", "minimum:auc", "Test metrics"])
        assert "re-derives the verdict" in body and "Examples per split" in body
        assert _screenshot(driver, "version-page", tmp_path).stat().st_size > 10_000
        # The schema's inputs are listed on the version page (a collapsed section: open it).
        _wait_for_texts(driver, [f"Inputs ({len(names)})"])
        _click(driver, driver.find_element(By.XPATH, f"//*[contains(text(), 'Inputs ({len(names)})')]"))
        _wait_for_texts(driver, [names[0], names[-1]])
        body = driver.find_element(By.TAG_NAME, "body").text
        assert all(name in body for name in names), [n for n in names if n not in body]
        plots = [a.get_attribute("href") for a in driver.find_elements(By.PARTIAL_LINK_TEXT, "roc")]
        assert plots, "no link to the ROC plot on the version page"
        png = requests.get(plots[0], timeout=30)
        assert png.status_code == 200 and png.content.startswith(b"\x89PNG")

        driver.get(f"{ui}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}")
        body = _wait_for_texts(driver, ["test/Overall/auc", "Datasets", MODEL])
        assert _screenshot(driver, "run-page", tmp_path).stat().st_size > 10_000
        assert "train" in body and "test" in body
    finally:
        driver.quit()


# --------------------------------------------------------------------------- approval, then mlflow serve


@pytest.fixture(scope="module")
def approved(registered, workdir):
    """A second person approves version 1 through the Python API (the CLI would take the OS account)."""
    from pipelines.identity import Identity
    from pipelines.mlflow_store import TrackingConfig
    from pipelines.promotion import approve

    reviewer = Identity(name="dr-second", authenticated=False, source="test")
    assert reviewer.name != getpass.getuser()
    record = approve(TrackingConfig(workdir=str(workdir)), MODEL, "1", reviewer, "AUC on the test split")
    assert list_versions(workdir / "serving" / MODEL) == [1]
    return record


def test_champion_loads_as_pyfunc_and_predicts_what_production_serves(
    approved, global_uri, workdir, test_rows
):
    import mlflow.pyfunc

    model = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")
    served = _serve_predict(workdir / "serving" / MODEL, test_rows)
    np.testing.assert_allclose(model.predict(test_rows)["probability"].to_numpy(), served, atol=ATOL, rtol=0)


def test_mlflow_models_serve_answers_a_request(approved, tracking_uri, workdir, test_rows, tmp_path):
    port = _free_port()
    # `mlflow models serve` execs `uvicorn` by name: the environment's scripts must be on PATH.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {
        **os.environ,
        "PATH": path,
        "MLFLOW_TRACKING_URI": tracking_uri,
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    argv = [
        sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/{MODEL}@champion",
        "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-w", "1",
    ]  # fmt: skip
    rows = test_rows.head(20)
    with _process(argv, f"http://127.0.0.1:{port}/ping", tmp_path / "serve.log", env):
        body = {"dataframe_split": {"columns": list(rows.columns), "data": rows.to_numpy().tolist()}}
        response = requests.post(f"http://127.0.0.1:{port}/invocations", json=body, timeout=60)
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    probability = np.array([p["probability"] for p in predictions])
    served = _serve_predict(workdir / "serving" / MODEL, rows)
    np.testing.assert_allclose(probability, served, atol=ATOL, rtol=0)
