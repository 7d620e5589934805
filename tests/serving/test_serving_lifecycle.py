"""Versions coming and going: hot swap under load, failed loads, removed directories, config reloads."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import pytest
import requests

from components.serving_pusher.core import publish_version
from serving.config import ModelConfig, VersionPolicy
from serving.httpserver import HttpLimits
from serving.server import ServerOptions, ServerThread


def start(models, **kwargs) -> ServerThread:
    options = ServerOptions(
        models=tuple(models),
        port=0,
        file_system_poll_seconds=kwargs.pop("poll", 0.05),
        limits=HttpLimits(idle_timeout=30.0),
        **kwargs,
    )
    return ServerThread(options)


def wait_for(predicate, timeout: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def predict(url: str, session=requests) -> float:
    response = session.post(url + "/v1/models/m:predict", json={"instances": [2.0]}, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()["predictions"][0]


def states(url: str) -> dict[str, str]:
    response = requests.get(url + "/v1/models/m", timeout=10)
    return {s["version"]: s["state"] for s in response.json().get("model_version_status", [])}


def test_hot_swap_under_load_loses_no_request(model_store, tmp_path):
    base = tmp_path / "m"
    publish_version(model_store.source("hp_a"), base, version=1)  # y = 0.5 x + 10 -> 11
    with start([ModelConfig("m", str(base))]) as server:
        assert predict(server.url) == 11.0
        stop = threading.Event()
        seen: list[list[float]] = [[] for _ in range(4)]
        failures: list[str] = []

        def client(out: list[float]) -> None:
            session = requests.Session()
            while not stop.is_set():
                try:
                    response = session.post(
                        server.url + "/v1/models/m:predict", json={"instances": [2.0]}, timeout=30
                    )
                    if response.status_code != 200:
                        failures.append(f"{response.status_code} {response.text}")
                    else:
                        out.append(response.json()["predictions"][0])
                except requests.RequestException as exc:
                    failures.append(repr(exc))

        threads = [threading.Thread(target=client, args=(out,)) for out in seen]
        for thread in threads:
            thread.start()
        time.sleep(0.5)
        publish_version(model_store.source("hp_b"), base, version=2)  # -> 21
        wait_for(lambda: any(21.0 in out[-5:] for out in seen), what="version 2 to serve")
        time.sleep(1.0)
        publish_version(model_store.source("hp_c"), base, version=3)  # -> 31
        wait_for(lambda: all(out and out[-1] == 31.0 for out in seen), what="version 3 to serve")
        time.sleep(0.5)
        stop.set()
        for thread in threads:
            thread.join(30)

        assert failures == []
        total = sum(len(out) for out in seen)
        assert total > 100
        for out in seen:
            assert set(out) <= {11.0, 21.0, 31.0}
            assert out == sorted(out)  # once a client sees a newer version it never sees an older one
            assert out[-1] == 31.0
        assert wait_for(
            lambda: states(server.url) == {"3": "AVAILABLE", "2": "END", "1": "END"}, what="unloads"
        )


def test_failed_version_is_reported_and_the_previous_one_keeps_serving(api):
    status = api.get("/v1/models/broken").json()["model_version_status"]
    assert [s["version"] for s in status] == ["2", "1"]
    failed, good = status
    assert failed["state"] == "END"
    assert failed["status"]["error_code"] != "OK"
    assert failed["status"]["error_message"]
    assert good == {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
    assert api.post("/v1/models/broken:predict", {"instances": [2.0]}).json() == {"predictions": [3.0]}
    assert api.get("/v1/models/broken/metadata").json()["model_spec"]["version"] == "1"


def test_staging_and_non_numeric_directories_are_ignored(api):
    status = api.get("/v1/models/wdbc").json()["model_version_status"]
    assert [s["version"] for s in status] == ["7"]


def test_removed_version_is_unloaded_and_the_older_one_returns(model_store, tmp_path):
    base = tmp_path / "m"
    publish_version(model_store.source("hp_a"), base, version=1)
    publish_version(model_store.source("hp_b"), base, version=2)
    with start([ModelConfig("m", str(base))]) as server:
        assert predict(server.url) == 21.0
        assert states(server.url) == {"2": "AVAILABLE"}
        shutil.rmtree(base / "2")
        wait_for(lambda: states(server.url).get("1") == "AVAILABLE", what="version 1 to load")
        assert predict(server.url) == 11.0
        wait_for(lambda: states(server.url).get("2") == "END", what="version 2 to unload")
        # With every version gone the model has nothing to serve.
        shutil.rmtree(base / "1")
        wait_for(lambda: states(server.url).get("1") == "END", what="version 1 to unload")
        response = requests.post(server.url + "/v1/models/m:predict", json={"instances": [2.0]}, timeout=10)
        assert response.status_code == 404
        assert response.json() == {"error": "Servable not found for request: Latest(m)"}


def test_incomplete_version_directory_waits_for_its_graph(model_store, tmp_path):
    base = tmp_path / "m"
    publish_version(model_store.source("hp_a"), base, version=1)
    with start([ModelConfig("m", str(base))]) as server:
        partial = base / "2"
        shutil.copytree(model_store.source("hp_b"), partial, ignore=shutil.ignore_patterns("saved_model.pb"))
        time.sleep(0.3)
        assert states(server.url) == {"1": "AVAILABLE"}  # not loaded, not failed
        shutil.copy(model_store.source("hp_b") / "saved_model.pb", partial / "saved_model.pb")
        wait_for(lambda: states(server.url) == {"2": "AVAILABLE", "1": "END"}, what="version 2")
        assert predict(server.url) == 21.0


def test_broken_version_is_retried_once_replaced(model_store, tmp_path):
    base = tmp_path / "m"
    publish_version(model_store.source("hp_a"), base, version=1)
    bad = base / "2"
    shutil.copytree(model_store.source("hp_b"), bad)
    (bad / "saved_model.pb").write_bytes(b"garbage")
    with start([ModelConfig("m", str(base))]) as server:
        assert states(server.url) == {"2": "END", "1": "AVAILABLE"}
        time.sleep(0.3)  # several polls: not retried while unchanged
        assert states(server.url) == {"2": "END", "1": "AVAILABLE"}
        shutil.copy(model_store.source("hp_b") / "saved_model.pb", bad / "saved_model.pb.tmp")
        (bad / "saved_model.pb.tmp").replace(bad / "saved_model.pb")
        wait_for(lambda: states(server.url).get("2") == "AVAILABLE", what="the repaired version")
        assert predict(server.url) == 21.0


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (VersionPolicy("latest", num_versions=2), {"3": "AVAILABLE", "2": "AVAILABLE"}),
        (VersionPolicy("all"), {"3": "AVAILABLE", "2": "AVAILABLE", "1": "AVAILABLE"}),
        (VersionPolicy("specific", versions=(1, 3)), {"3": "AVAILABLE", "1": "AVAILABLE"}),
    ],
)
def test_version_policies(model_store, tmp_path, policy, expected):
    base = tmp_path / "m"
    for version, source in ((1, "hp_a"), (2, "hp_b"), (3, "hp_c")):
        publish_version(model_store.source(source), base, version=version)
    with start([ModelConfig("m", str(base), policy=policy)], poll=0) as server:
        assert states(server.url) == expected
        assert predict(server.url) == 31.0


def test_model_config_file_reload(model_store, tmp_path):
    base = tmp_path / "m"
    publish_version(model_store.source("hp_a"), base, version=1)
    other = tmp_path / "other"
    publish_version(model_store.source("hp_c"), other, version=5)
    config = tmp_path / "models.config"
    one = f'model_config_list {{ config {{ name: "m" base_path: "{base}" model_platform: "tensorflow" }} }}'
    config.write_text(one)
    from serving.config import load_model_config_file

    with start(
        load_model_config_file(config), model_config_file=str(config), config_poll_seconds=0.05
    ) as server:
        assert predict(server.url) == 11.0
        two = one[:-2] + f' config {{ name: "other" base_path: "{Path(other)}" }} }}'
        config.write_text(two)
        wait_for(
            lambda: '"AVAILABLE"' in requests.get(server.url + "/v1/models/other", timeout=5).text,
            what="other",
        )
        response = requests.post(
            server.url + "/v1/models/other:predict", json={"instances": [2.0]}, timeout=10
        )
        assert response.json() == {"predictions": [31.0]}
        config.write_text("this is { not a config")  # a broken edit keeps the current models
        time.sleep(0.3)
        assert predict(server.url) == 11.0
        config.write_text(f'model_config_list {{ config {{ name: "other" base_path: "{other}" }} }}')
        wait_for(
            lambda: requests.get(server.url + "/v1/models/m", timeout=5).status_code == 404, what="m removed"
        )
        assert requests.get(server.url + "/v1/models/other", timeout=5).status_code == 200


def test_graceful_stop_finishes_requests_in_progress(model_store, tmp_path):
    base = tmp_path / "m"
    publish_version(model_store.source("hp_a"), base, version=1)
    server = start([ModelConfig("m", str(base))])
    results: list[int] = []

    def burst():
        session = requests.Session()
        for _ in range(20):
            try:
                results.append(
                    session.post(
                        server.url + "/v1/models/m:predict", json={"instances": [2.0]}, timeout=10
                    ).status_code
                )
            except requests.ConnectionError:
                results.append(-1)  # refused after the stop: never an error status

    thread = threading.Thread(target=burst)
    thread.start()
    time.sleep(0.02)
    server.stop()
    thread.join(30)
    assert results and set(results) <= {200, -1}
