"""Starts the shared, authenticated MLflow server on loopback: PostgreSQL + `mlflow server --app-name dxpipe`.

Everything lives in one directory (`make mlflow-server` uses `.dxpipe/mlflow-server`):

    pg/                 the PostgreSQL cluster (Debian's postgresql package; databases `mlflow` and
                        `mlflow_auth`), listening on 127.0.0.1 only, password (SCRAM) authentication
    artifacts/          run artifacts, proxied by the server (`--artifacts-destination`)
    auth.ini            MLflow's basic-auth config: `database_uri` = the `mlflow_auth` database (mode 0600)
    pgpass              libpq's password file (mode 0600), so no URI carries the database password
    secrets.json        generated once: PostgreSQL and admin passwords, the Flask secret key (mode 0600)
    server.json         where it runs: the tracking URI, PIDs, ports (written when the server is up)

PostgreSQL refuses to run as root, so as root the cluster directory is given to the `postgres` user and
its commands run through `runuser -u postgres --`. The tests use the same code (session-scoped fixture).

Usage:
    python -m pipelines.registry_server.deploy start DIR [--port 5000]    # foreground; Ctrl-C stops both
    python -m pipelines.registry_server.deploy add-user DIR NAME [--reviewer]   # prints the password
    python -m pipelines.registry_server.deploy stop DIR      # what a killed `start` left running
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

from pipelines.errors import DxpipeError

ADMIN = "admin"
PG_USER = "postgres"


class DeployError(DxpipeError):
    """The shared server could not be started or configured."""


def free_port() -> int:
    """An unused TCP port on loopback (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pg_bindir() -> Path:
    """Where Debian's PostgreSQL server binaries are (`initdb`, `pg_ctl`, `postgres` are not on PATH)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).resolve().parent
    raise DeployError("PostgreSQL is not installed: run `apt-get install -y postgresql` (Debian's package).")


def _as_postgres(cmd: list[str]) -> list[str]:
    # initdb and postgres refuse to run as root: run them as the `postgres` system user (the package creates it).
    return ["runuser", "-u", PG_USER, "--", *cmd] if os.geteuid() == 0 else cmd


@dataclasses.dataclass
class Deployment:
    """One shared server in `root` (see the module docstring)."""

    root: Path
    port: int = 0
    pg_port: int = 0
    server: subprocess.Popen | None = None

    @property
    def pgdata(self) -> Path:
        """The cluster's data directory."""
        return self.root / "pg" / "data"

    @property
    def url(self) -> str:
        """The tracking URI clients use."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def secrets(self) -> dict[str, str]:
        """The generated passwords and key (created on first use)."""
        path = self.root / "secrets.json"
        if not path.exists():
            values = {
                "postgres_password": secrets.token_urlsafe(24),
                "admin_password": secrets.token_urlsafe(24),
                "flask_secret_key": secrets.token_hex(32),
            }
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(values, f)
        return json.loads(path.read_text())

    def database_uri(self, database: str) -> str:
        """A SQLAlchemy URI for one of the cluster's databases, without the password (libpq reads `pgpass`)."""
        return f"postgresql://{PG_USER}@127.0.0.1:{self.pg_port}/{database}"

    @property
    def pgpass(self) -> Path:
        """The libpq password file (0600): the password never appears in a URI, a command line or `ps`."""
        path = self.root / "pgpass"
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(f"127.0.0.1:*:*:{PG_USER}:{self.secrets['postgres_password']}\n")
        return path

    # PostgreSQL ---------------------------------------------------------------------------------------
    def start_postgres(self) -> None:
        """Creates the cluster on first use, starts it on loopback and creates the two databases."""
        self.root.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            # The postgres user must traverse this directory to reach its cluster (mkdtemp makes it 0700).
            self.root.chmod(self.root.stat().st_mode | 0o111)
        bindir = pg_bindir()
        pg = self.root / "pg"
        pg.mkdir(exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(pg, PG_USER, PG_USER)
        self.pg_port = self.pg_port or free_port()
        if not (self.pgdata / "PG_VERSION").exists():
            pwfile = pg / "pwfile"
            pwfile.write_text(self.secrets["postgres_password"] + "\n")
            if os.geteuid() == 0:
                shutil.chown(pwfile, PG_USER, PG_USER)
            pwfile.chmod(0o600)
            try:
                self._run(
                    [
                        str(bindir / "initdb"),
                        "--no-sync",  # a throwaway or single-host cluster; fsync stays on for the server
                        "-D",
                        str(self.pgdata),
                        "-U",
                        PG_USER,
                        "--auth=scram-sha-256",
                        f"--pwfile={pwfile}",
                        "-E",
                        "UTF8",
                        "--locale=C",
                    ],
                    "initdb",
                )
            finally:
                pwfile.unlink(missing_ok=True)
        if self.postgres_running():
            raise DeployError(
                f"PostgreSQL for {self.root} is still running (was `make mlflow-server` killed?): stop what it "
                f"left with `python -m pipelines.registry_server.deploy stop {self.root}` "
                "(`make mlflow-server-stop`), then start again."
            )
        log = pg / "postgres.log"
        options = f"-c listen_addresses=127.0.0.1 -p {self.pg_port} -c unix_socket_directories={pg}"
        self._run(
            [
                str(bindir / "pg_ctl"),
                "-w",
                "-t",
                "60",
                "-D",
                str(self.pgdata),
                "-l",
                str(log),
                "-o",
                options,
                "start",
            ],
            "pg_ctl start",
        )
        for database in ("mlflow", "mlflow_auth"):
            self._createdb(bindir, database)

    def _createdb(self, bindir: Path, database: str) -> None:
        env = {**os.environ, "PGPASSFILE": str(self.pgpass)}
        cmd = [
            str(bindir / "createdb"),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.pg_port),
            "-U",
            PG_USER,
            database,
        ]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0 and "already exists" not in done.stderr:
            raise DeployError(f"createdb {database} failed: {done.stderr.strip()}")

    def postgres_running(self) -> bool:
        """Whether the cluster in this directory is running (`pg_ctl status`)."""
        if not (self.pgdata / "postmaster.pid").exists():
            return False
        cmd = [str(pg_bindir() / "pg_ctl"), "-D", str(self.pgdata), "status"]
        return subprocess.run(_as_postgres(cmd), capture_output=True, check=False, cwd="/").returncode == 0

    def stop_leftovers(self) -> list[str]:
        """Stops what a killed `start` left running: the recorded server, then the cluster; says what it stopped."""
        stopped = []
        info_path = self.root / "server.json"
        if info_path.exists():
            pid = int(json.loads(info_path.read_text()).get("pid") or 0)
            # Only a process that is this directory's MLflow server: a pid may have been reused since.
            if pid and _is_server_of(pid, self.root):
                os.killpg(pid, signal.SIGTERM)
                deadline = time.monotonic() + 30
                while _is_server_of(pid, self.root) and time.monotonic() < deadline:
                    time.sleep(0.2)
                stopped.append(f"MLflow server (pid {pid})")
            info_path.unlink()
        if self.postgres_running():
            self.stop_postgres()
            stopped.append("PostgreSQL")
        return stopped

    def stop_postgres(self) -> None:
        """Stops the cluster (fast shutdown); a no-op when it is not running."""
        if (self.pgdata / "postmaster.pid").exists():
            cmd = [str(pg_bindir() / "pg_ctl"), "-w", "-D", str(self.pgdata), "-m", "fast", "stop"]
            subprocess.run(_as_postgres(cmd), capture_output=True, check=False)

    def _run(self, cmd: list[str], what: str) -> None:
        done = subprocess.run(_as_postgres(cmd), capture_output=True, text=True, check=False, cwd="/")
        if done.returncode != 0:
            raise DeployError(
                f"{what} failed (exit {done.returncode}): {(done.stderr or done.stdout).strip()[-2000:]}"
            )

    # MLflow -------------------------------------------------------------------------------------------
    def write_auth_config(self) -> Path:
        """Writes MLflow's basic-auth .ini (users in PostgreSQL, no anonymous access) and returns its path.

        Every authenticated user may edit; dxpipe's app guards the approval rules on top.
        """
        path = self.root / "auth.ini"
        text = (
            "[mlflow]\n"
            "# Data scientists create runs and register versions: EDIT for every authenticated user.\n"
            "# Approval (alias champion, approval.* tags) is checked by dxpipe's app, not by this setting.\n"
            "default_permission = EDIT\n"
            f"database_uri = {self.database_uri('mlflow_auth')}\n"
            f"admin_username = {ADMIN}\n"
            f"admin_password = {self.secrets['admin_password']}\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
            "grant_default_workspace_access = true\n"
            "# One worker (see server_command): password changes and deletions invalidate its cache at once.\n"
            "auth_cache_ttl_seconds = 60\n"
        )
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        return path

    def server_command(self) -> tuple[list[str], dict[str, str]]:
        """The `mlflow server` command line and environment."""
        mlflow = Path(sys.executable).parent / "mlflow"
        self.port = self.port or free_port()
        env = {
            **os.environ,
            "MLFLOW_AUTH_CONFIG_PATH": str(self.write_auth_config()),
            "MLFLOW_FLASK_SERVER_SECRET_KEY": self.secrets["flask_secret_key"],
            "PGPASSFILE": str(self.pgpass),
            # The job runner (huey) is not used by dxpipe; off keeps the server to one process tree.
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        }
        for name in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
            env.pop(name, None)
        cmd = [
            str(mlflow),
            "server",
            "--app-name",
            "dxpipe",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--backend-store-uri",
            self.database_uri("mlflow"),  # no password in it: `ps` shows this line to every local user
            "--artifacts-destination",
            str(self.root / "artifacts"),
            "--workers",
            "1",
        ]
        return cmd, env

    def start_server(self, *, timeout_s: float = 240) -> None:
        """Starts `mlflow server` in the background and waits until it answers."""
        cmd, env = self.server_command()
        log = (self.root / "server.log").open("ab")
        self.server = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, cwd=self.root, env=env, start_new_session=True
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.server.poll() is not None:
                tail = (self.root / "server.log").read_text(errors="replace")[-3000:]
                raise DeployError(f"mlflow server exited with {self.server.returncode}:\n{tail}")
            try:
                if requests.get(f"{self.url}/health", timeout=2).ok:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.5)
        else:
            self.stop_server()
            raise DeployError(f"mlflow server did not answer on {self.url} within {timeout_s:.0f} s")
        (self.root / "server.json").write_text(
            json.dumps({"tracking_uri": self.url, "pid": self.server.pid, "pg_port": self.pg_port}, indent=2)
        )

    def stop_server(self) -> None:
        """Stops the server's whole process group (uvicorn and its worker)."""
        if self.server is not None and self.server.poll() is None:
            os.killpg(self.server.pid, signal.SIGTERM)
            try:
                self.server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.server.pid, signal.SIGKILL)
                self.server.wait()

    def start(self) -> None:
        """PostgreSQL, then the MLflow server."""
        self.start_postgres()
        try:
            self.start_server()
        except BaseException:
            self.stop_postgres()
            raise

    def stop(self) -> None:
        """The MLflow server, then PostgreSQL."""
        self.stop_server()
        self.stop_postgres()
        (self.root / "server.json").unlink(missing_ok=True)

    # Users ---------------------------------------------------------------------------------------------
    def admin_auth(self) -> tuple[str, str]:
        """The admin's basic-auth credentials."""
        return ADMIN, self.secrets["admin_password"]

    def add_user(self, name: str, password: str, *, reviewer: bool = False) -> None:
        """Creates an MLflow user through the server's REST API (as admin); optionally a reviewer."""
        created = requests.post(
            f"{self.url}/api/2.0/mlflow/users/create",
            json={"username": name, "password": password},
            auth=self.admin_auth(),
            timeout=30,
        )
        if not created.ok and "RESOURCE_ALREADY_EXISTS" not in created.text:
            raise DeployError(f"creating user '{name}' failed ({created.status_code}): {created.text[:500]}")
        if reviewer:
            granted = requests.post(
                f"{self.url}/api/2.0/dxpipe/reviewers/grant",
                json={"user": name},
                auth=self.admin_auth(),
                timeout=30,
            )
            if not granted.ok:
                raise DeployError(
                    f"granting reviewer to '{name}' failed ({granted.status_code}): {granted.text[:500]}"
                )


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _is_server_of(pid: int, root: Path) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"server" in cmdline and str(root / "artifacts").encode() in cmdline


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """`start` runs the server in the foreground; `add-user` creates a user on a running one."""
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.registry_server.deploy", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    start = sub.add_parser("start", help="start PostgreSQL and the MLflow server; Ctrl-C stops both")
    start.add_argument("root", type=Path)
    start.add_argument("--port", type=int, default=5000)
    stop = sub.add_parser("stop", help="stop a server and PostgreSQL left running by a killed `start`")
    stop.add_argument("root", type=Path)
    add = sub.add_parser("add-user", help="create a user on the running server (prints the password)")
    add.add_argument("root", type=Path)
    add.add_argument("name")
    add.add_argument("--reviewer", action="store_true", help="grant dxpipe's reviewer role")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    try:
        if args.command == "start":
            # Ctrl-C, `kill` or a closed terminal all stop the server *and* PostgreSQL (see `finally`).
            signal.signal(signal.SIGTERM, _interrupt)
            signal.signal(signal.SIGHUP, _interrupt)
            deployment = Deployment(root, port=args.port)
            deployment.start()
            _say(
                f"MLflow (dxpipe app, PostgreSQL) on {deployment.url}; admin password in {root / 'secrets.json'}"
            )
            _say("Stop with Ctrl-C.")
            try:
                deployment.server.wait()  # type: ignore[union-attr]
            except KeyboardInterrupt:
                pass
            finally:
                deployment.stop()
            return 0
        if args.command == "stop":
            stopped = Deployment(root).stop_leftovers()
            _say(f"stopped: {', '.join(stopped)}" if stopped else f"nothing of {root} was running")
            return 0
        info = json.loads((root / "server.json").read_text())
        deployment = Deployment(root, port=int(info["tracking_uri"].rsplit(":", 1)[1]))
        password = secrets.token_urlsafe(18)
        deployment.add_user(args.name, password, reviewer=args.reviewer)
        _say(f"user {args.name} ({'reviewer' if args.reviewer else 'data scientist'}); password: {password}")
        return 0
    except (DeployError, OSError, requests.RequestException) as exc:
        sys.stderr.write(f"dxpipe: error: {exc}\n")
        return 2


if __name__ == "__main__":
    sys.exit(main())
