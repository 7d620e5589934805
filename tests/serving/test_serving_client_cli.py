"""serving.client against the running server; `dxpipe predict`/`serve` through serving.cli; the real
`python -m serving.server` entry point in a subprocess."""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import serving_models

from serving import cli
from serving.client import ServingClient
from serving.errors import ServingClientError

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def client(server) -> ServingClient:
    return ServingClient(server.url)


def wdbc_row(**overrides) -> dict:
    row = {name: 0.1 * (i + 1) for i, name in enumerate(serving_models.WDBC_NUMERIC)}
    row["site"] = "left"
    row.update(overrides)
    return row


def test_client_status_metadata(client):
    assert client.status("half_plus_two")[0]["version"] == "2"
    assert client.status("half_plus_two", version=1)[0]["state"] == "AVAILABLE"
    assert client.metadata("half_plus_two", label="stable")["model_spec"]["version"] == "1"
    assert "serving_default" in client.signature_defs("wdbc")
    assert client.wait_until_available("wdbc", timeout=5) == 7


def test_client_predict_classify_regress(client):
    assert client.predict("half_plus_two", [1.0, 2.0], version=1) == [2.5, 3.0]
    assert client.predict("half_plus_two", inputs=np.array([1.0, 2.0]), label="stable") == [2.5, 3.0]
    rows = client.predict("wdbc", [wdbc_row(), wdbc_row(site="right")])
    assert [set(r) for r in rows] == [{"probability", "predicted_label"}] * 2
    results = client.classify("wdbc", [wdbc_row()], signature_name="classification")
    assert [label for label, _ in results[0]] == ["benign", "malignant"]
    assert client.regress("examples", [{"x": 2.0}], signature_name="regress_x_to_y") == [3.0]
    assert client.regress("examples", [{}], context={"x": 4.0}, signature_name="regress_x_to_y") == [4.0]
    # bytes become {"b64": ...}; NaN is sent as the NaN token.
    (echoed,) = client.predict("dtypes", [b"\x00\xff"], signature_name="string")
    assert echoed.encode("utf-8", "surrogateescape") == b"\x00\xff"  # raw bytes survive the round trip
    assert np.isnan(client.predict("half_plus_two", [float("nan")], version=1)[0])


def test_client_errors(client, server):
    with pytest.raises(
        ServingClientError, match="HTTP 404: Could not find any versions of model nope"
    ) as info:
        client.status("nope")
    assert info.value.status == 404
    with pytest.raises(ServingClientError, match="HTTP 400: Unrecognized servable version label: x"):
        client.predict("half_plus_two", [1.0], label="x")
    with pytest.raises(ValueError, match="exactly one"):
        client.predict("half_plus_two")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        free_port = sock.getsockname()[1]
    with pytest.raises(ServingClientError, match="cannot reach TF Serving") as info:
        ServingClient(f"http://127.0.0.1:{free_port}", timeout=2).status("x")
    assert info.value.status is None
    with pytest.raises(ServingClientError, match="not available"):
        client.wait_until_available("empty", timeout=0.3, poll=0.1)


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_predict_command_with_csv(server, tmp_path, capsys):
    csv_path = tmp_path / "rows.csv"
    header = ["id", *serving_models.WDBC_NUMERIC, "site", "diagnosis"]
    lines = [",".join(header)]
    for i in range(5):
        lines.append(
            ",".join(
                [str(i), *[str(0.1 * (i + j)) for j in range(len(serving_models.WDBC_NUMERIC))], "left", "M"]
            )
        )
    csv_path.write_text("\n".join(lines) + "\n")
    code, out, err = run_cli(
        capsys, "predict", "wdbc", "--csv", str(csv_path), "--server", server.url, "--batch_size", "2"
    )
    assert (code, err) == (0, "")
    predictions = [json.loads(line) for line in out.splitlines()]
    assert len(predictions) == 5
    assert all(set(p) == {"probability", "predicted_label"} for p in predictions)
    direct = ServingClient(server.url).predict(
        "wdbc",
        [
            {
                **{
                    n: float(v)
                    for n, v in zip(serving_models.WDBC_NUMERIC, line.split(",")[1:6], strict=True)
                },
                "site": "left",
            }
            for line in lines[1:]
        ],
    )
    assert predictions == direct


def test_predict_command_with_json(server, tmp_path, capsys):
    body = tmp_path / "body.json"
    body.write_text(json.dumps({"instances": [1.0, 2.0]}))
    code, out, _ = run_cli(capsys, "predict", "half_plus_two", "--json", str(body), "--server", server.url)
    assert code == 0
    assert out.splitlines() == ["3.5", "4.0"]
    body.write_text(json.dumps([[[1, 2, 3], [4, 5, 6]]]))
    code, out, _ = run_cli(
        capsys, "predict", "dtypes", "--json", str(body), "--server", server.url, "--signature_name", "matrix"
    )
    assert json.loads(out) == [[2.0, 4.0, 6.0], [8.0, 10.0, 12.0]]
    body.write_text(json.dumps({"inputs": {"x": [1.0]}}))
    code, out, _ = run_cli(capsys, "predict", "half_plus_two", "--json", str(body), "--server", server.url)
    assert json.loads(out) == [3.5]


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda p: p.write_text("id,radius_mean\n1,2\n"), "lacks columns for the model's inputs"),
        (
            lambda p: p.write_text(
                "radius_mean,texture_mean,perimeter_mean,area_mean,smoothness_mean,site\nx,1,1,1,1,a\n"
            ),
            "line 2: column radius_mean is 'x', not a DT_FLOAT value",
        ),
        (lambda p: None, "cannot read --csv"),
    ],
)
def test_predict_command_errors_are_one_line(server, tmp_path, capsys, setup, message):
    path = tmp_path / "rows.csv"
    setup(path)
    code, out, err = run_cli(capsys, "predict", "wdbc", "--csv", str(path), "--server", server.url)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert message in err


def test_predict_command_server_errors(server, tmp_path, capsys):
    body = tmp_path / "b.json"
    body.write_text(json.dumps({"instances": ["a"]}))
    code, _, err = run_cli(capsys, "predict", "half_plus_two", "--json", str(body), "--server", server.url)
    assert code == 2
    assert "HTTP 400" in err and "is not of expected type: float" in err
    code, _, err = run_cli(capsys, "predict", "m", "--json", str(body), "--server", "http://127.0.0.1:9")
    assert code == 2
    assert err.startswith("error: cannot reach TF Serving at http://127.0.0.1:9")


def test_register_adds_both_subcommands():
    parser = argparse.ArgumentParser(prog="dxpipe")
    cli.register(parser.add_subparsers(dest="command"))
    serve = parser.parse_args(
        ["serve", "--model_base_path=/m", "--rest_api_port=9000", "--enable_batching=false"]
    )
    assert serve.func is cli.run_serve
    assert (serve.model_base_path, serve.rest_api_port, serve.enable_batching) == ("/m", 9000, False)
    assert serve.rest_api_host == "127.0.0.1"
    predict = parser.parse_args(["predict", "wdbc", "--json", "x.json"])
    assert predict.func is cli.run_predict
    assert predict.server == "http://127.0.0.1:8501"


def test_serve_flag_errors_are_one_line(capsys, tmp_path):
    code, _, err = run_cli(capsys, "serve")
    assert code == 2
    assert (
        err
        == "error: Either --model_config_file or --model_base_path must be set (with --model_name) to serve a model.\n"
    )
    code, _, err = run_cli(capsys, "serve", "--model_base_path", str(tmp_path / "nope"))
    assert code == 2 and "is not a directory" in err
    bad = tmp_path / "models.config"
    bad.write_text('model_config_list { config { nme: "x" } }')
    code, _, err = run_cli(capsys, "serve", "--model_config_file", str(bad))
    assert code == 2 and 'Did you mean "name"?' in err and err.count("\n") == 1


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_server_entry_point_in_a_subprocess(model_store, tmp_path):
    """The real `python -m serving.server`: starts, serves, logs JSON access lines, stops cleanly on SIGTERM."""
    port = free_port()
    access_log = tmp_path / "access.log"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "serving.server",
            f"--rest_api_port={port}",
            "--model_name=hp",
            f"--model_base_path={model_store.root / 'half_plus_two'}",
            f"--access_log={access_log}",
            "--enable_batching=true",
            "--file_system_poll_wait_seconds=0",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        client = ServingClient(f"http://127.0.0.1:{port}", timeout=5)
        deadline = time.monotonic() + 120
        while True:
            try:
                assert client.wait_until_available("hp", timeout=1) == 3  # latest on disk
                break
            except ServingClientError:
                assert process.poll() is None, process.stderr.read().decode()
                assert time.monotonic() < deadline
        assert client.predict("hp", [2.0]) == [5.0]
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
    lines = [json.loads(line) for line in access_log.read_text().splitlines()]
    assert {"method": "POST", "path": "/v1/models/hp:predict", "status": 200}.items() <= lines[-1].items()
    stderr = process.stderr.read().decode()
    assert "serving hp on http://127.0.0.1" in stderr
    assert "Traceback" not in stderr


@pytest.mark.parametrize("model", ["wdbc", "clinic"])
def test_blank_csv_cells_are_missing_values_with_or_without_a_contract(server, tmp_path, capsys, model):
    # clinic carries its schema: blanks go as null. wdbc does not (served as TF Serving serves it): blanks
    # go as NaN and "", which its model imputes. Either way the reference model scores a missing number
    # as 0 and a missing category as none.
    header = [*serving_models.WDBC_NUMERIC, "site"]
    blank = ["", *["1.5"] * (len(serving_models.WDBC_NUMERIC) - 1), " "]
    path = tmp_path / "gaps.csv"
    path.write_text(",".join(header) + "\n" + ",".join(blank) + "\n")
    code, out, err = run_cli(capsys, "predict", model, "--csv", str(path), "--server", server.url)
    assert (code, err) == (0, "")
    (prediction,) = [json.loads(line) for line in out.splitlines()]
    explicit = {"radius_mean": 0.0, **dict.fromkeys(serving_models.WDBC_NUMERIC[1:], 1.5), "site": ""}
    assert prediction == ServingClient(server.url).predict(model, [explicit])[0]
    client = ServingClient(server.url)
    assert client.carries_input_contract(model) is (model == "clinic")


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--auth_token_file=/nope.json"], "Cannot read --auth_token_file /nope.json"),
        (["--auth_public=status"], "--auth_public needs --auth_token_file"),
        (["--ssl_certfile=/nope.pem"], "--ssl_certfile and --ssl_keyfile go together"),
        (
            ["--ssl_certfile=/nope.pem", "--ssl_keyfile=/nope.key"],
            "Cannot read --ssl_certfile /nope.pem: no such file",
        ),
    ],
)
def test_serve_security_flag_errors_are_one_line(capsys, tmp_path, flags, message):
    code, out, err = run_cli(capsys, "serve", f"--model_base_path={tmp_path}", *flags)
    assert code == 2
    assert err.startswith("error: ") and message in err and err.count("\n") == 1  # `dxpipe` adds its prefix
