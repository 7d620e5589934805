"""What dxpipe's server app costs per request: `--app-name dxpipe` vs. MLflow's own `--app-name basic-auth`.

Both servers run at once on the same PostgreSQL cluster, the same databases and the same users, one
worker each; requests alternate between them so both see the same machine load. Per request kind, the
median and 90th percentile latency of each and their ratio (dxpipe / basic-auth):

- read: `GET model-versions/get` (not guarded: the guard only looks up the endpoint);
- free tag: `set-tag note` (guarded route, nothing protected: parsed and decided, not audited);
- approval tag: `set-tag approval.note` by a reviewer (four-eyes checked: authors and role looked up,
  an audit row written before the handler and its status after).

Run: `python -m bench.auth_server_bench [--requests 200]` (needs Debian's postgresql package).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import requests

from pipelines.registry_server.deploy import Deployment, free_port


def _start_basic_auth(deployment: Deployment) -> tuple[subprocess.Popen, str]:
    cmd, env = deployment.server_command()
    port = free_port()
    cmd[cmd.index("--app-name") + 1] = "basic-auth"
    cmd[cmd.index("--port") + 1] = str(port)
    log = (deployment.root / "basic-auth.log").open("ab")
    process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{url}/health", timeout=2).ok:
                return process, url
        except requests.RequestException:
            time.sleep(0.5)
    raise RuntimeError("the basic-auth server did not start")


def _timed(session: requests.Session, method: str, url: str, **kwargs) -> float:
    started = time.perf_counter()
    response = session.request(method, url, timeout=60, **kwargs)
    elapsed = time.perf_counter() - started
    response.raise_for_status()
    return elapsed


def main() -> None:
    """Prints one Markdown table row per request kind."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=200, help="requests per kind and server")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="dxpipe-auth-bench-"))
    deployment = Deployment(root)
    deployment.start()
    plain = None
    try:
        deployment.add_user("alice", "alice-bench-password")
        deployment.add_user("rita", "rita-bench-password", reviewer=True)
        plain, plain_url = _start_basic_auth(deployment)
        alice, rita = requests.Session(), requests.Session()
        alice.auth, rita.auth = ("alice", "alice-bench-password"), ("rita", "rita-bench-password")
        api = f"{deployment.url}/api/2.0/mlflow"
        exp = alice.post(f"{api}/experiments/create", json={"name": "bench"}, timeout=60).json()[
            "experiment_id"
        ]
        run_id = alice.post(f"{api}/runs/create", json={"experiment_id": exp}, timeout=60).json()["run"][
            "info"
        ]["run_id"]
        alice.post(f"{api}/registered-models/create", json={"name": "bench"}, timeout=60).raise_for_status()
        body = {"name": "bench", "source": f"runs:/{run_id}/model", "run_id": run_id}
        alice.post(f"{api}/model-versions/create", json=body, timeout=60).raise_for_status()
        kinds = {
            "read (`model-versions/get`)": (
                "GET",
                "/model-versions/get",
                {"params": {"name": "bench", "version": "1"}},
            ),
            "free tag (`set-tag note`)": (
                "POST",
                "/model-versions/set-tag",
                {"json": {"name": "bench", "version": "1", "key": "note", "value": "x"}},
            ),
            "approval tag (`set-tag approval.note`, four-eyes + audit)": (
                "POST",
                "/model-versions/set-tag",
                {"json": {"name": "bench", "version": "1", "key": "approval.note", "value": "x"}},
            ),
        }
        servers = {"dxpipe": deployment.url, "basic-auth": plain_url}
        for _ in range(10):  # warm-up: connections, caches, first-request imports
            for base in servers.values():
                for method, path, kwargs in kinds.values():
                    _timed(rita, method, f"{base}/api/2.0/mlflow{path}", **kwargs)
        print(
            f"| request ({args.requests} each) | dxpipe median / p90 | basic-auth median / p90 | ratio of medians |"
        )
        print("|---|---|---|---|")
        for label, (method, path, kwargs) in kinds.items():
            times: dict[str, list[float]] = {name: [] for name in servers}
            for _ in range(args.requests):
                for name, base in servers.items():
                    times[name].append(_timed(rita, method, f"{base}/api/2.0/mlflow{path}", **kwargs))
            stats = {
                name: (statistics.median(t) * 1000, statistics.quantiles(t, n=10)[-1] * 1000)
                for name, t in times.items()
            }
            ratio = stats["dxpipe"][0] / stats["basic-auth"][0]
            print(
                f"| {label} | {stats['dxpipe'][0]:.1f} / {stats['dxpipe'][1]:.1f} ms | "
                f"{stats['basic-auth'][0]:.1f} / {stats['basic-auth'][1]:.1f} ms | {ratio:.2f} |"
            )
        print(f"load average after: {os.getloadavg()[0]:.1f}")
    finally:
        if plain is not None and plain.poll() is None:
            os.killpg(plain.pid, signal.SIGTERM)
            plain.wait(timeout=30)
        deployment.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
