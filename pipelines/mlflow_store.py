"""Where MLflow tracking, the model registry and the serving directories live, and how to reach them.

One frozen `TrackingConfig` (the `tracking:` section of the config) is resolved once per public call
(`TrackingConfig.resolved`) into absolute paths and concrete URIs; nothing below reads the environment.

With nothing configured, tracking and registry use an embedded SQLite store in the working directory
(`sqlite:///<workdir>/mlflow.db`, artifacts under `<workdir>/mlartifacts`). With `MLFLOW_TRACKING_URI` set,
or `tracking_uri` in the config (which wins), the same code talks to an MLflow server over HTTP.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from components.registry_gate.dictcfg import as_bool, as_float, as_int, as_str, check_keys
from pipelines.errors import ConfigError, DxpipeError
from pipelines.redact import redact_text, redact_uri

if TYPE_CHECKING:
    from mlflow import MlflowClient

DEFAULT_WORKDIR = ".dxpipe"
# A registered model name is also a directory under the serving root: keep it to a safe alphabet so it
# can never escape the root ("../x") or collide with the staging suffix in surprising ways.
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
_BAD_KEY_CHARS = re.compile(r"[^\w./\- :]")
_ENV_SET_BY_US: set[str] = set()


class TrackingError(DxpipeError):
    """MLflow could not be reached or refused a write; the message names the URI and what was being done."""


@dataclasses.dataclass(frozen=True)
class TrackingConfig:
    """Where tracking, registry and serving live, and the approval rules.

    Attributes:
        workdir: Project working directory; holds the embedded MLflow store and, by default, the
            serving root. Relative paths are resolved against the current directory.
        tracking_uri: MLflow tracking URI; None means `MLFLOW_TRACKING_URI`, else the embedded SQLite store.
        registry_uri: MLflow registry URI; None means the tracking URI.
        serving_root: Root of the TF Serving model base paths (`<root>/<model>/` for production,
            `<root>/<model>-staging/` for the Pusher's candidates); None means `<workdir>/serving`.
        four_eyes: Refuse an approval whose reviewer is the run's author.
        test_split: Name of the split whose metrics gate promotion (the Evaluator's split).
        operating_threshold: Decision threshold used for the confusion-matrix plot.
        log_plots: Render ROC / precision-recall / calibration / confusion-matrix PNGs.
        http_timeout_s: Timeout of one HTTP request to an MLflow server.
        http_max_retries: Retries of a failed HTTP request; kept low so a dead server is reported in
            seconds, not after MLflow's default four minutes of back-off.
        worker_process: Do a pipeline run's MLflow work in a worker process, so importing MLflow and
            opening the run overlap the TFX run (see `pipelines.mlflow_worker`).
        log_raw_extremes: Log each feature's exact min/max and rare categories to MLflow (cells of single
            patient rows); off by default, when only rounded aggregates are logged.
    """

    workdir: str = DEFAULT_WORKDIR
    tracking_uri: str | None = None
    registry_uri: str | None = None
    serving_root: str | None = None
    four_eyes: bool = True
    test_split: str = "test"
    operating_threshold: float = 0.5
    log_plots: bool = True
    http_timeout_s: int = 15
    http_max_retries: int = 2
    worker_process: bool = True
    log_raw_extremes: bool = False

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], path: str = "tracking") -> TrackingConfig:
        """Builds the config from the `tracking:` section; unknown keys are rejected with a hint.

        Raises:
            ConfigError: On unknown keys or values of the wrong type.
        """
        fields = [f.name for f in dataclasses.fields(cls)]
        check_keys(d, fields, path)
        kwargs: dict[str, Any] = {}
        for key, value in d.items():
            where = f"{path}.{key}"
            if key in ("workdir", "test_split"):
                kwargs[key] = as_str(value, where)
            elif key in ("tracking_uri", "registry_uri", "serving_root"):
                kwargs[key] = as_str(value, where, allow_none=True)
            elif key in ("four_eyes", "log_plots", "worker_process", "log_raw_extremes"):
                kwargs[key] = as_bool(value, where)
            elif key == "operating_threshold":
                threshold = as_float(value, where)
                if not 0.0 < threshold < 1.0:
                    raise ConfigError(f"{where}: must be strictly between 0 and 1, got {threshold}.")
                kwargs[key] = threshold
            else:
                kwargs[key] = as_int(value, where, minimum=1 if key == "http_timeout_s" else 0)
        return cls(**kwargs)

    def resolved(self, environ: Mapping[str, str] | None = None) -> TrackingConfig:
        """Returns a copy with an absolute workdir and serving root and concrete tracking/registry URIs.

        Args:
            environ: The environment to read `MLFLOW_TRACKING_URI` / `MLFLOW_REGISTRY_URI` from
                (defaults to os.environ). This is the only place dxpipe reads them.
        """
        env = os.environ if environ is None else environ
        workdir = Path(self.workdir).expanduser().absolute()
        tracking = self.tracking_uri or env.get("MLFLOW_TRACKING_URI") or f"sqlite:///{workdir / 'mlflow.db'}"
        registry = self.registry_uri or env.get("MLFLOW_REGISTRY_URI") or tracking
        serving = (
            Path(self.serving_root).expanduser().absolute() if self.serving_root else workdir / "serving"
        )
        return dataclasses.replace(
            self,
            workdir=str(workdir),
            tracking_uri=tracking,
            registry_uri=registry,
            serving_root=str(serving),
        )

    @property
    def is_embedded(self) -> bool:
        """True when tracking uses a local SQLite file (call on a resolved config)."""
        return (self.tracking_uri or "").startswith("sqlite:")

    def artifact_location(self, experiment: str) -> str | None:
        """Artifact root of a new experiment: under the workdir when embedded; else the server decides."""
        if not self.is_embedded:
            return None
        return (Path(self.workdir) / "mlartifacts" / sanitize_key(experiment).replace("/", "_")).as_uri()

    def production_path(self, model_name: str) -> Path:
        """TF Serving base path of the production model (only promotion writes here)."""
        return Path(self.serving_root or "") / check_model_name(model_name)

    def staging_path(self, model_name: str) -> Path:
        """TF Serving base path where the Pusher writes blessed candidates for reviewers to query."""
        return Path(self.serving_root or "") / f"{check_model_name(model_name)}-staging"


def check_model_name(name: str) -> str:
    """Returns `name` if it is a usable registered-model name (it is also a serving directory name).

    Raises:
        ConfigError: If the name is empty or has characters outside [A-Za-z0-9_.-].
    """
    if not isinstance(name, str) or not _MODEL_NAME.match(name) or name.endswith("-staging"):
        raise ConfigError(
            f"model name {name!r} is not usable: use letters, digits, '_', '.', '-' (starting with a letter "
            "or digit, not ending in '-staging'), e.g. 'wdbc'."
        )
    return name


def sanitize_key(key: str) -> str:
    """Maps a string to a valid MLflow metric/param/tag key (alphanumerics, `_ - . / : space`)."""
    cleaned = _BAD_KEY_CHARS.sub("_", str(key))
    cleaned = re.sub(r"/+", "/", cleaned).strip("/ ")
    cleaned = cleaned.replace("..", "_.")
    return cleaned[:250] or "_"


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Flattens a nested mapping into dotted keys with string values (lists as JSON)."""
    out: dict[str, str] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        elif isinstance(value, (list, tuple)):
            out[name] = json.dumps(value, default=str)
        else:
            out[name] = "" if value is None else str(value)
    return out


def forget_env_settings() -> None:
    """Forgets which MLflow environment settings `client_for` made (the environment was replaced)."""
    _ENV_SET_BY_US.clear()


def client_for(cfg: TrackingConfig) -> MlflowClient:
    """Returns an MlflowClient bound to a resolved config's URIs (no global `mlflow.set_tracking_uri`).

    MLflow reads its HTTP retry settings from the environment on each request; dxpipe sets them from the
    config (unless the user set them before dxpipe did), so a dead server is reported within seconds
    instead of after MLflow's default four minutes of back-off. MLflow's usage telemetry is switched off
    the same way (set MLFLOW_DISABLE_TELEMETRY=false to allow it).
    """
    for name, value in (
        ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", cfg.http_max_retries),
        ("MLFLOW_HTTP_REQUEST_TIMEOUT", cfg.http_timeout_s),
        ("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", 1),
        ("MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", 0.0),
        ("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false"),
        # Usage telemetry to a third party has no place next to patient data, and its threads cost time.
        ("MLFLOW_DISABLE_TELEMETRY", "true"),
    ):
        if name in os.environ and name not in _ENV_SET_BY_US:
            continue  # the user's own setting wins
        os.environ[name] = str(value)
        _ENV_SET_BY_US.add(name)
    from mlflow import MlflowClient

    if cfg.is_embedded:
        return _embedded_client(cfg)
    return MlflowClient(tracking_uri=cfg.tracking_uri, registry_uri=cfg.registry_uri)


_STORES_READY: set[str] = set()
STORE_LOCK = ".mlflow-store.lock"


def _embedded_client(cfg: TrackingConfig) -> MlflowClient:
    """A client of the embedded SQLite store, created (migrated) under a file lock the first time.

    MLflow creates its tables when a client first opens a store; two processes doing that on a new
    workdir race and one dies with `sqlite3.OperationalError: duplicate column name`. Whoever holds the
    lock creates the tables; the others wait, then find them. Once per process and store.
    """
    import fcntl

    from mlflow import MlflowClient

    if cfg.tracking_uri in _STORES_READY:
        return MlflowClient(tracking_uri=cfg.tracking_uri, registry_uri=cfg.registry_uri)
    workdir = Path(cfg.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    fd = os.open(workdir / STORE_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # held while the schema is created (a second or so, first use only)
        try:
            with mlflow_errors(cfg, "opening the embedded MLflow store"):
                client = MlflowClient(tracking_uri=cfg.tracking_uri, registry_uri=cfg.registry_uri)
                # The registry store initialises the same schema on its first use.
                client.search_registered_models(max_results=1)
            rebase_artifact_locations(cfg)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
    _STORES_READY.add(cfg.tracking_uri or "")
    return client


# Columns of the embedded store that hold absolute artifact locations (MLflow's SQL schema).
_LOCATION_COLUMNS = (
    ("experiments", "artifact_location", "experiment_id"),
    ("runs", "artifact_uri", "run_uuid"),
    ("model_versions", "source", "rowid"),
    ("model_versions", "storage_location", "rowid"),
)


def rebase_artifact_locations(cfg: TrackingConfig) -> int:
    """Points the embedded store's artifact locations at this workdir's `mlartifacts` (a copied workdir).

    MLflow stores absolute `file://` locations, so a workdir copied or moved elsewhere would keep
    writing new runs (and reading models) in the original's `mlartifacts`. dxpipe owns the embedded store,
    so on first use it rewrites locations under another `.../mlartifacts/` to this workdir's. Call under
    the store lock. MLflow has no API to change an experiment's artifact location, hence plain SQL.

    Returns:
        The number of locations rewritten.
    """
    import sqlite3

    db = Path((cfg.tracking_uri or "").removeprefix("sqlite:///"))
    if not db.is_file():
        return 0
    root = (Path(cfg.workdir) / "mlartifacts").as_uri()
    changed = 0
    with contextlib.closing(sqlite3.connect(db, timeout=30)) as con, con:
        for table, column, key in _LOCATION_COLUMNS:
            try:
                rows = con.execute(f"SELECT {key}, {column} FROM {table}").fetchall()
            except sqlite3.OperationalError:
                continue  # an older schema without the column
            for row_key, location in rows:
                if not location or not location.startswith("file://") or "/mlartifacts/" not in location:
                    continue
                if location.startswith(root + "/"):
                    continue
                rebased = f"{root}/{location.split('/mlartifacts/', 1)[1]}"
                con.execute(f"UPDATE {table} SET {column} = ? WHERE {key} = ?", (rebased, row_key))
                changed += 1
    return changed


def error_code(exc: BaseException) -> str | None:
    """Returns MLflow's error code (e.g. RESOURCE_DOES_NOT_EXIST) of an MlflowException, else None."""
    return getattr(exc, "error_code", None)


def is_unreachable(exc: BaseException) -> bool:
    """True when an exception means the MLflow server could not be reached (not that it refused)."""
    import requests

    if isinstance(exc, (requests.exceptions.RequestException, ConnectionError, TimeoutError)):
        return True
    text = str(exc)
    return any(
        marker in text
        for marker in ("Max retries exceeded", "Connection refused", "Failed to establish", "Read timed out")
    )


@contextlib.contextmanager
def mlflow_errors(cfg: TrackingConfig, doing: str) -> Iterator[None]:
    """Translates MLflow/HTTP failures into a one-line TrackingError naming the URI and the action."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except DxpipeError:
        raise
    except (MlflowException, OSError, ConnectionError) as exc:
        raise tracking_error(cfg, doing, exc) from exc
    except Exception as exc:
        import requests

        if isinstance(exc, requests.exceptions.RequestException):
            raise tracking_error(cfg, doing, exc) from exc
        raise


def tracking_error(cfg: TrackingConfig, doing: str, exc: BaseException) -> TrackingError:
    """Builds the TrackingError for a failed MLflow call."""
    if is_unreachable(exc):
        fix = (
            "start the MLflow server (or fix MLFLOW_TRACKING_URI / tracking.tracking_uri), then retry"
            if not cfg.is_embedded
            else "check that the working directory is writable, then retry"
        )
        return TrackingError(f"MLflow at {redact_uri(cfg.tracking_uri)} is unreachable while {doing}; {fix}.")
    detail = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
    # Library errors quote the URL they failed on, credentials included.
    detail = redact_text(detail, cfg.tracking_uri)
    return TrackingError(f"MLflow at {redact_uri(cfg.tracking_uri)} failed while {doing}: {detail}")
