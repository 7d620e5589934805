"""MLflow tracking of pipeline runs: one MLflow run per TFX run, in one experiment per pipeline.

Driven from the local runner::

    with tracking.pipeline_run(cfg, experiment=pipeline_name, params=config_dict, tags={...}) as run:
        LocalDagRunner().run(...)
        outputs = tracking.collect_outputs(metadata_db_path, pipeline_name, run_id=tfx_run_id)
        evaluation = tracking.log_pipeline_outputs(run, outputs)
        version = registry.register_and_gate(run, outputs, gate_policy, model_name="wdbc")

A run that raises (including KeyboardInterrupt and SIGTERM) ends FAILED; one that returns ends FINISHED.

By default the MLflow work happens in a worker process (`pipelines.mlflow_worker`) started when the
run opens, so importing MLflow and opening the run overlap the TFX run instead of adding to it; only the
logging after TFX (about a second) is on the pipeline's critical path. `run.overhead_s` is that critical
path, what the pipeline benchmark should report; `run.worker_timings` is where the worker spent its time.
If the runner is killed outright, the worker sees its input close and ends the run FAILED. If both die,
a marker file under `<workdir>/mlflow_open_runs/` lets the next `pipeline_run` in that workdir end the run
FAILED; the same marker carries an end status that could not be delivered because the server was down.

MLflow is used through an explicit `MlflowClient` (never the fluent `mlflow.start_run` globals), so a
runner can hold several configs and nothing leaks between tests.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.metadata
import json
import logging
import os
import platform
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.errors import DxpipeError
from pipelines.identity import Identity, current_identity
from pipelines.mlflow_mlmd import MetadataError, PipelineOutputs, collect_outputs, split_digest
from pipelines.mlflow_store import (
    TrackingConfig,
    TrackingError,
    client_for,
    error_code,
    flatten,
    mlflow_errors,
    sanitize_key,
    tracking_error,
)
from pipelines.redact import redact_uri

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from pipelines.mlflow_tfma import Evaluation

__all__ = [
    "MetadataError",
    "PipelineOutputs",
    "Session",
    "TrackedRun",
    "TrackingConfig",
    "TrackingError",
    "collect_outputs",
    "log_pipeline_outputs",
    "pipeline_run",
    "reap_stale_runs",
]

_log = logging.getLogger(__name__)
_MARKERS = "mlflow_open_runs"
_VERSIONED_PACKAGES = ("tfx", "tensorflow", "mlflow", "tensorflow-model-analysis", "ml-metadata")


@dataclasses.dataclass
class Session:
    """The MLflow side of an open run, in the process that talks to MLflow (worker or runner).

    Attributes:
        config: The resolved tracking config.
        client: Client bound to the config's URIs.
        run_id: MLflow run id.
        experiment_id: MLflow experiment id.
        author: Who started the run.
        marker: The open-run marker file.
        timings: Seconds spent in each MLflow step in this process.
        ended: Whether the run has been ended.
        author_authenticated: Whether an MLflow server authenticated the author.
        author_source: Where the author's name came from (see `pipelines.identity`).
    """

    config: TrackingConfig
    client: MlflowClient
    run_id: str
    experiment_id: str
    author: str
    marker: Path
    timings: dict[str, float] = dataclasses.field(default_factory=dict)
    ended: bool = False
    author_authenticated: bool = False
    author_source: str = ""

    @contextlib.contextmanager
    def timed(self, step: str) -> Iterator[None]:
        """Adds the time spent in the block to `timings[step]`."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[step] = self.timings.get(step, 0.0) + time.perf_counter() - start

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Sets run tags (keys sanitized, values stringified), in batches."""
        from mlflow.entities import RunTag

        items = [RunTag(sanitize_key(k), str(v)[:8000]) for k, v in tags.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, tags=items[i : i + 100])

    def log_metrics(self, values: Mapping[str, float], step: int = 0) -> None:
        """Logs finite metrics in batches of 1000."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [
            Metric(sanitize_key(k), float(v), now, step)
            for k, v in values.items()
            if v is not None and float(v) == float(v) and abs(float(v)) != float("inf")
        ]
        for i in range(0, len(items), 1000):
            self.client.log_batch(self.run_id, metrics=items[i : i + 1000])


@dataclasses.dataclass(frozen=True)
class RunInfo:
    """What the runner learns about the run once it is open."""

    run_id: str
    experiment_id: str


def describe(session: Session) -> RunInfo:
    """The picklable facts of a session."""
    return RunInfo(session.run_id, session.experiment_id)


class TrackedRun:
    """The runner's handle on an open MLflow run (whose MLflow side may live in the worker process).

    Attributes:
        config: The resolved tracking config.
        experiment: Experiment name (the pipeline name).
        author: Who started the run; the four-eyes rule compares reviewers against it.
        timings: Seconds the runner waited on MLflow work, per step; `overhead_s` is their sum.
        worker_timings: Seconds the MLflow side spent per step (filled when the run ends).
        evaluations: TFMA evaluations loaded for this run, by URI.
    """

    def __init__(
        self,
        config: TrackingConfig,
        experiment: str,
        author: str,
        *,
        session: Session | None = None,
        worker: Any = None,
        opening: Any = None,
    ) -> None:
        self.config = config
        self.experiment = experiment
        self.author = author
        self.timings: dict[str, float] = {}
        self.worker_timings: dict[str, float] = {}
        self.evaluations: dict[str, Evaluation] = {}
        self._session = session
        self._worker = worker
        self._opening = opening
        self._info: RunInfo | None = None if session is None else describe(session)
        self._open_error: BaseException | None = None

    @property
    def in_worker(self) -> bool:
        """Whether the MLflow side runs in the worker process."""
        return self._worker is not None

    @property
    def run_id(self) -> str:
        """MLflow run id (waits for the run to be open)."""
        return self._opened().run_id

    @property
    def experiment_id(self) -> str:
        """MLflow experiment id (waits for the run to be open)."""
        return self._opened().experiment_id

    @property
    def overhead_s(self) -> float:
        """Seconds MLflow added to the pipeline's critical path (what the pipeline benchmark reports)."""
        return sum(self.timings.values())

    def _opened(self) -> RunInfo:
        if self._info is None:
            if self._open_error is not None:
                raise self._open_error
            with self.timed("wait_open"):
                try:
                    self._info = self._worker.result(self._opening)
                except BaseException as exc:
                    self._open_error = exc
                    raise
        return self._info

    @contextlib.contextmanager
    def timed(self, step: str) -> Iterator[None]:
        """Adds the time spent in the block to `timings[step]`."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[step] = self.timings.get(step, 0.0) + time.perf_counter() - start

    def call(self, step: str, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Runs `fn(session, *args, **kwargs)` where MLflow lives, timing the wait under `step`.

        `fn` must be a module-level function (it travels to the worker by reference); `what` completes
        "... while <what>" in error messages.
        """
        self._opened()
        with self.timed(step):
            if self._worker is None:
                return fn(self._session, *args, **kwargs)
            return self._worker.call(what, fn, *args, **kwargs)


def _package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _VERSIONED_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def _git_commit() -> dict[str, str]:
    """The commit of the dxpipe checkout that runs the pipeline ("unknown" outside a git checkout)."""
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return {"commit": "unknown", "dirty": "unknown"}
    if commit.returncode != 0:
        return {"commit": "unknown", "dirty": "unknown"}
    return {"commit": commit.stdout.strip(), "dirty": str(bool(dirty.stdout.strip())).lower()}


def _marker_dir(cfg: TrackingConfig) -> Path:
    return Path(cfg.workdir) / _MARKERS


def _write_marker(cfg: TrackingConfig, run_id: str, **extra: Any) -> Path:
    path = _marker_dir(cfg) / f"{run_id}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    stat = _proc_stat(os.getpid())
    record = {
        "run_id": run_id,
        # Redacted: marker files are plain files in the workdir; reaping matches them to the live URI.
        "tracking_uri": redact_uri(cfg.tracking_uri),
        "pid": os.getpid(),
        "pid_start": None if stat is None else stat[1],
        "host": socket.gethostname(),
        "started": time.time(),
        **extra,
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record))
    os.replace(tmp, path)
    return path


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """(state, start time) of a process from /proc, or None where /proc is unavailable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], fields[19]


def _pid_alive(pid: int, started: str | None = None) -> bool:
    """Whether the process that wrote a marker still runs (not a zombie, not a reused pid)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = _proc_stat(pid)
    if stat is None:
        return True
    state, start = stat
    # An orphaned process killed with its parent can linger as a zombie where nothing reaps it.
    return state != "Z" and (started is None or start == started)


def reap_stale_runs(cfg: TrackingConfig) -> list[str]:
    """Ends runs left open by a killed process, or whose end status could not be delivered.

    A run is stale when its marker names this host and a process that no longer exists, or carries a
    pending end status. It is set to that status (FAILED for a killed process) with tag `dxpipe.reaped`.
    Markers whose run cannot be updated now (server still down) are kept for the next call.

    Returns:
        The run ids that were ended.
    """
    cfg = cfg.resolved()
    reaped: list[str] = []
    markers = sorted(_marker_dir(cfg).glob("*.json")) if _marker_dir(cfg).is_dir() else []
    for marker in markers:
        try:
            record = json.loads(marker.read_text())
        except (OSError, ValueError):
            continue
        pending = record.get("pending_status")
        same_host = record.get("host") == socket.gethostname()
        alive = _pid_alive(int(record.get("pid", 0)), record.get("pid_start"))
        if pending is None and not (same_host and not alive):
            continue
        status = pending or "FAILED"
        why = record.get("pending_reason") or f"process {record.get('pid')} on {record.get('host')} died"
        recorded = record.get("tracking_uri") or ""
        if recorded in ("", redact_uri(cfg.tracking_uri)):
            recorded = cfg.tracking_uri or ""
        elif "***" in recorded:
            continue  # another server's credentials are not ours to guess; its own runs reap it
        run_cfg = dataclasses.replace(cfg, tracking_uri=recorded)
        try:
            client = client_for(run_cfg)
            run = client.get_run(record["run_id"])
            if run.info.status == "RUNNING":
                client.set_tag(record["run_id"], "dxpipe.reaped", why[:500])
                client.set_terminated(record["run_id"], status)
        except Exception as exc:  # noqa: BLE001 - reaping is best effort; the marker stays for the next try.
            if error_code(exc) != "RESOURCE_DOES_NOT_EXIST":
                _log.warning("could not end stale MLflow run %s yet: %s", record.get("run_id"), exc)
                continue
        marker.unlink(missing_ok=True)
        reaped.append(record["run_id"])
    return reaped


def _experiment_id(client: MlflowClient, cfg: TrackingConfig, name: str) -> str:
    existing = client.get_experiment_by_name(name)
    if existing is not None:
        if existing.lifecycle_stage == "deleted":
            raise TrackingError(
                f"MLflow experiment '{name}' is deleted; restore it in the MLflow UI or with `mlflow "
                f"experiments restore --experiment-id {existing.experiment_id}`."
            )
        return existing.experiment_id
    try:
        return client.create_experiment(
            name, artifact_location=cfg.artifact_location(name), tags={"dxpipe.pipeline": name}
        )
    except Exception as exc:
        # Two runs of a new pipeline may race to create its experiment; the loser uses the winner's.
        if error_code(exc) == "RESOURCE_ALREADY_EXISTS":
            again = client.get_experiment_by_name(name)
            if again is not None:
                return again.experiment_id
        raise


@contextlib.contextmanager
def _sigterm_as_exit() -> Iterator[None]:
    """Turns SIGTERM into SystemExit inside the block so the run is ended FAILED, not left RUNNING."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    if previous not in (signal.SIG_DFL, None):
        yield
        return

    def _raise(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}"[:1000]


def open_session(
    cfg: TrackingConfig,
    experiment: str,
    params: Mapping[str, Any],
    tags: Mapping[str, Any],
    author: Identity,
    run_name: str | None,
) -> Session:
    """Creates the MLflow run and logs its parameters (runs where MLflow lives)."""
    started = time.perf_counter()
    identity, author = author, author.name
    client = client_for(cfg)  # the first call imports MLflow: part of the cost, so timed
    with contextlib.suppress(OSError):
        reap_stale_runs(cfg)
    run_tags = {
        "mlflow.user": author,
        "dxpipe.author": author,
        "dxpipe.author.source": identity.source,
        "dxpipe.author.authenticated": str(identity.authenticated).lower(),
        "mlflow.source.name": "dxpipe",
        "mlflow.source.type": "JOB",
        "dxpipe.host": socket.gethostname(),
        **{sanitize_key(k): str(v) for k, v in tags.items()},
    }
    if run_name:
        run_tags["mlflow.runName"] = run_name
    with mlflow_errors(cfg, f"opening a run in experiment '{experiment}'"):
        experiment_id = _experiment_id(client, cfg, experiment)
        info = client.create_run(experiment_id, tags=run_tags, run_name=run_name).info
    session = Session(
        cfg,
        client,
        info.run_id,
        experiment_id,
        author,
        _marker_dir(cfg) / f"{info.run_id}.json",
        author_authenticated=identity.authenticated,
        author_source=identity.source,
    )
    session.timings["open"] = time.perf_counter() - started
    try:
        _write_marker(cfg, session.run_id)
        with session.timed("params"), mlflow_errors(cfg, "logging the run's parameters"):
            _log_params(session, params)
    except BaseException as exc:
        end_session(session, "FAILED", {"dxpipe.failure": _describe(exc)})
        raise
    _prewarm()
    return session


def _prewarm() -> None:
    # Imported now, while TFX runs, rather than on the critical path after it.
    with contextlib.suppress(ImportError):
        import matplotlib.backends.backend_agg
        import matplotlib.figure  # noqa: F401
        from google.protobuf.message import DecodeError  # noqa: F401
        from tensorflow_metadata.proto.v0 import anomalies_pb2, statistics_pb2  # noqa: F401

        from pipelines.mlflow_native import prewarm

        prewarm()


def end_session(session: Session, status: str, tags: Mapping[str, str]) -> tuple[bool, dict[str, float]]:
    """Ends the run; on failure records the pending status in the marker.

    Returns:
        Whether MLflow got the status, and the session's timings.
    """
    try:
        with session.timed("close"):
            if tags:
                session.set_tags(tags)
            session.client.set_terminated(session.run_id, status)
    except Exception as exc:  # noqa: BLE001 - any failure here must leave a marker, never a RUNNING run.
        error = tracking_error(session.config, "ending the run", exc)
        reason = f"{status} (could not be delivered: {_describe(error)})"
        _write_marker(session.config, session.run_id, pending_status=status, pending_reason=reason[:500])
        _log.warning("MLflow run %s could not be ended %s: %s", session.run_id, status, exc)
        session.ended = True
        return False, dict(session.timings)
    session.marker.unlink(missing_ok=True)
    session.ended = True
    return True, dict(session.timings)


def _preflight(cfg: TrackingConfig) -> None:
    """Fails before the TFX run starts when tracking cannot work at all (server down, workdir unwritable)."""
    uri = cfg.tracking_uri or ""
    if uri.startswith(("http://", "https://")):
        import requests

        try:
            response = requests.get(f"{uri.rstrip('/')}/health", timeout=min(5, cfg.http_timeout_s))
        except requests.exceptions.RequestException as exc:
            raise tracking_error(cfg, "checking the server before the pipeline run", exc) from exc
        if response.status_code != 200:
            raise TrackingError(
                f"MLflow at {redact_uri(uri)} answered /health with HTTP {response.status_code}; check the "
                "server, then retry."
            )
    elif cfg.is_embedded:
        try:
            Path(cfg.workdir).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TrackingError(
                f"the working directory {cfg.workdir} is not writable ({exc}); fix it or pass --workdir."
            ) from exc


@contextlib.contextmanager
def pipeline_run(
    cfg: TrackingConfig,
    experiment: str,
    params: Mapping[str, Any],
    tags: Mapping[str, Any] | None = None,
    *,
    author: Identity | str | None = None,
    run_name: str | None = None,
) -> Iterator[TrackedRun]:
    """Opens one MLflow run for one pipeline run; ends it FINISHED, or FAILED on any exception.

    Args:
        cfg: The tracking config (resolved here). With `cfg.worker_process` (the default) the MLflow
            work runs in a worker process and the run opens in parallel with the body.
        experiment: Experiment name; one per pipeline.
        params: The full resolved config (nested mappings are flattened to dotted keys). Package
            versions (`env.*`) and the git commit (`git.*`) are added. The unflattened config is also
            logged as the artifact `config/params.json`, since MLflow params are truncated strings.
        tags: Extra run tags (e.g. the pipeline root).
        author: Who runs the pipeline. By default who the tracking store says we are
            (`pipelines.identity.current_identity`: the authenticated server user, or the OS account of
            the embedded store); a plain string (API callers, tests) is recorded as unauthenticated.
            Recorded with the version's evidence; the four-eyes rule refuses this person as reviewer.
        run_name: MLflow run name (default: MLflow's generated name).

    Yields:
        The open run.

    Raises:
        TrackingError: If MLflow cannot be reached to open the run (checked before the body runs), or
            (after a successful body) to log or close it.
    """
    entered = time.perf_counter()
    cfg = cfg.resolved()
    _preflight(cfg)
    if author is None:
        identity = current_identity(cfg.tracking_uri)
    elif isinstance(author, Identity):
        identity = author
    else:
        identity = Identity(name=str(author).strip(), authenticated=False, source="caller")
    who = identity.name
    if cfg.worker_process:
        from pipelines.mlflow_worker import Worker

        worker = Worker.acquire()
        opening = worker.submit(
            f"opening a run in experiment '{experiment}'",
            open_session,
            cfg,
            experiment,
            dict(params),
            dict(tags or {}),
            identity,
            run_name,
        )
        run = TrackedRun(cfg, experiment, who, worker=worker, opening=opening)
    else:
        worker = None
        run = TrackedRun(
            cfg,
            experiment,
            who,
            session=open_session(cfg, experiment, params, tags or {}, identity, run_name),
        )
    run.timings["open"] = time.perf_counter() - entered
    run_ended_cleanly = False
    try:
        try:
            with _sigterm_as_exit():
                yield run
        except BaseException as exc:
            interrupted = isinstance(exc, (KeyboardInterrupt, SystemExit))
            tags_failed = {"dxpipe.failure": _describe(exc), "dxpipe.interrupted": str(interrupted).lower()}
            if run._open_error is not None:
                raise  # the run was never opened: there is nothing to end
            try:
                delivered = run.call("close", "ending the run", end_session, "FAILED", tags_failed)[0]
            except DxpipeError as close_exc:
                # The run never opened, or the worker died: nothing more can be told to MLflow now.
                _log.warning("MLflow run could not be ended FAILED: %s", close_exc)
                delivered = run._open_error is not None
            if run._open_error is not None:
                raise
            if not delivered and isinstance(exc, TrackingError):
                raise TrackingError(
                    f"{exc} The MLflow run could not be marked FAILED now; the next pipeline run in "
                    f"{cfg.workdir} will do it."
                ) from exc
            raise
        delivered, run.worker_timings = run.call("close", "ending the run", end_session, "FINISHED", {})
        run_ended_cleanly = delivered
        if not delivered:
            raise TrackingError(
                f"MLflow at {redact_uri(cfg.tracking_uri)} is unreachable while ending run {run.run_id}: the pipeline "
                f"succeeded but the run still shows RUNNING; the next pipeline run in {cfg.workdir} will "
                "mark it FINISHED."
            )
    finally:
        if worker is not None:
            if run_ended_cleanly:
                worker.release()  # serves the next run in this process, if there is one
            else:
                # Wait: after a failure the child may still have to mark the run FAILED itself.
                worker.close()
        elif run._session is not None:
            run.worker_timings = dict(run._session.timings)


def _log_params(session: Session, params: Mapping[str, Any]) -> None:
    from mlflow.entities import Param

    flat = {k: redact_uri(v) if k.endswith(("_uri", ".uri")) else v for k, v in flatten(params).items()}
    flat.update(flatten({"env": _package_versions(), "git": _git_commit()}))
    items = [Param(sanitize_key(k), v[:6000]) for k, v in sorted(flat.items())]
    for i in range(0, len(items), 100):
        session.client.log_batch(session.run_id, params=items[i : i + 100])
    session.client.log_dict(
        session.run_id, _redacted(json.loads(json.dumps(params, default=str))), "config/params.json"
    )


def _redacted(value: Any, key: str = "") -> Any:
    """The config with every `*_uri` value's credentials redacted (it is logged as an artifact)."""
    if isinstance(value, dict):
        return {k: _redacted(v, str(k)) for k, v in value.items()}
    if isinstance(value, str) and key.endswith("_uri"):
        return redact_uri(value)
    return value


def _pipeline_root(outputs: PipelineOutputs) -> str | None:
    # TFX artifact URIs are <pipeline_root>/<node_id>/<output_key>/<execution_id>.
    for uri in (outputs.model_uri, outputs.evaluation_uri, outputs.schema_uri):
        if uri:
            return str(Path(uri).parents[2])
    return None


def _read_history(outputs: PipelineOutputs) -> Mapping[str, Any] | None:
    path = outputs.training_history_path
    if path is None or not Path(path).is_file():
        return None
    return json.loads(Path(path).read_text())


def log_pipeline_outputs(
    run: TrackedRun,
    outputs: PipelineOutputs,
    training_history: Mapping[str, Any] | None = None,
) -> Evaluation | None:
    """Logs a TFX run's results to its MLflow run: lineage tags, curves, test metrics, plots, data reports.

    Args:
        run: The open run.
        outputs: What the TFX run produced (from `collect_outputs`).
        training_history: Per-epoch Keras history {metric: [value per epoch]} (or the Trainer's file
            content, with the history under "history"); by default read from
            `<model_uri>/training_history.json`.

    Returns:
        The loaded TFMA evaluation (also cached on the run for `register_and_gate`), or None when the
        run produced none.

    Raises:
        TrackingError: If MLflow cannot be reached.
    """
    evaluation, problem = load_run_evaluation(run, outputs)
    history = training_history if training_history is not None else _read_history(outputs)
    warnings = {"evaluation": problem} if problem else {}
    run.call(
        "log_outputs",
        "logging the pipeline's outputs",
        log_outputs_in_session,
        outputs,
        None if history is None else dict(history),
        evaluation,
        warnings,
    )
    return evaluation


def load_run_evaluation(run: TrackedRun, outputs: PipelineOutputs) -> tuple[Evaluation | None, str | None]:
    """Loads (once per run) the TFMA evaluation in the runner, which already has TensorFlow loaded.

    Returns:
        The evaluation or None, and why it is missing (None when there was nothing to load).
    """
    if not outputs.evaluation_uri:
        return None, None
    if outputs.evaluation_uri in run.evaluations:
        return run.evaluations[outputs.evaluation_uri], None
    from pipelines.mlflow_tfma import EvaluationMissingError, load_evaluation

    with run.timed("load_evaluation"):
        try:
            evaluation = load_evaluation(outputs.evaluation_uri)
        except EvaluationMissingError as exc:
            return None, str(exc)
    run.evaluations[outputs.evaluation_uri] = evaluation
    return evaluation, None


def log_outputs_in_session(
    session: Session,
    outputs: PipelineOutputs,
    history: Mapping[str, Any] | None,
    evaluation: Evaluation | None,
    warnings: dict[str, str],
) -> None:
    """The MLflow side of `log_pipeline_outputs` (runs where MLflow lives)."""
    cfg = session.config
    lineage = {
        "tfx.pipeline_name": outputs.pipeline_name,
        "tfx.run_id": outputs.tfx_run_id,
        "tfx.pipeline_root": _pipeline_root(outputs) or "",
        "tfx.model_uri": outputs.model_uri or "",
        "mlmd.db": outputs.metadata_path,
        "mlmd.execution_ids": json.dumps(dict(outputs.execution_ids), sort_keys=True),
        **{f"mlmd.execution.{node}": e_id for node, e_id in outputs.execution_ids.items()},
        **{f"tfx.state.{node}": state for node, state in outputs.execution_states.items()},
    }
    if outputs.blessed is not None:
        lineage["tfx.blessed"] = str(outputs.blessed).lower()
    if outputs.pushed is not None:
        lineage["tfx.pushed"] = str(outputs.pushed).lower()
    digest = split_digest(outputs.examples_uri, cfg.test_split)
    if digest:
        lineage["data.test_digest"] = digest

    with session.timed("log_outputs"), mlflow_errors(cfg, "logging the pipeline's outputs"):
        session.set_tags(lineage)
        if history:
            _log_history(session, history)
        if evaluation is not None:
            _log_evaluation(session, evaluation, outputs.evaluation_uri or "")
        _log_data_reports(session, outputs, warnings)
        if warnings:
            session.set_tags({f"dxpipe.warning.{k}": v for k, v in warnings.items()})


def set_run_tags(session: Session, tags: Mapping[str, Any]) -> None:
    """Sets tags on the open run (runs where MLflow lives, see `TrackedRun.call`)."""
    with session.timed("tags"), mlflow_errors(session.config, "setting the run's tags"):
        session.set_tags(tags)


def _log_history(session: Session, history: Mapping[str, Any]) -> None:
    """Logs per-epoch curves as `train/<name>` (step = epoch) and scalar facts as `train/<name>`.

    Accepts the Keras history itself ({"loss": [...], ...}) or the Trainer's file, which nests it under
    "history" next to scalars such as "best_epoch".
    """
    from mlflow.entities import Metric

    nested = history.get("history")
    curves = nested if isinstance(nested, Mapping) else history
    scalars = {
        k: v
        for k, v in history.items()
        if isinstance(nested, Mapping) and isinstance(v, (int, float)) and not isinstance(v, bool)
    }
    now = int(time.time() * 1000)
    items = []
    for key, values in curves.items():
        if not isinstance(values, (list, tuple)):
            continue
        for epoch, value in enumerate(values):
            if isinstance(value, (int, float)) and value == value and abs(value) != float("inf"):
                items.append(Metric(sanitize_key(f"train/{key}"), float(value), now, epoch))
    items.extend(Metric(sanitize_key(f"train/{k}"), float(v), now, 0) for k, v in scalars.items())
    for i in range(0, len(items), 1000):
        session.client.log_batch(session.run_id, metrics=items[i : i + 1000])
    session.client.log_dict(session.run_id, dict(history), "training/history.json")


def _log_evaluation(session: Session, evaluation: Evaluation, eval_uri: str) -> None:
    from components.registry_gate.core import OVERALL
    from pipelines.mlflow_plots import write_plots

    metrics = {
        f"test/{slice_}/{name}": value
        for slice_, values in evaluation.candidate.items()
        for name, value in values.items()
    }
    if evaluation.baseline:
        metrics.update(
            {f"baseline/{OVERALL}/{k}": v for k, v in evaluation.baseline.get(OVERALL, {}).items()}
        )
    session.log_metrics(metrics)
    if evaluation.validation_ok is not None:
        session.set_tags({"tfma.validation_ok": str(evaluation.validation_ok).lower()})
    session.client.log_artifacts(session.run_id, eval_uri, "tfma")
    if session.config.log_plots and evaluation.plots.get(OVERALL):
        with tempfile.TemporaryDirectory(prefix="dxpipe-plots-") as tmp:
            written = write_plots(evaluation.plots[OVERALL], Path(tmp), session.config.operating_threshold)
            if written:
                session.client.log_artifacts(session.run_id, tmp, "plots")


def _log_data_reports(session: Session, outputs: PipelineOutputs, warnings: dict[str, str]) -> None:
    from google.protobuf.message import DecodeError

    from pipelines.mlflow_summaries import anomalies_summary, statistics_summary

    if outputs.schema_uri and (Path(outputs.schema_uri) / "schema.pbtxt").is_file():
        session.client.log_artifact(session.run_id, str(Path(outputs.schema_uri) / "schema.pbtxt"), "data")
    raw = session.config.log_raw_extremes
    reports = (
        (
            "statistics",
            outputs.statistics_uri,
            lambda uri: statistics_summary(uri, raw),
            "statistics_summary.json",
        ),
        ("anomalies", outputs.anomalies_uri, anomalies_summary, "anomalies.json"),
    )
    for what, uri, summarize, filename in reports:
        if not uri:
            continue
        try:
            summary = summarize(uri)
        except (OSError, DecodeError, ValueError) as exc:
            warnings[what] = f"could not summarize {uri}: {exc}"
            continue
        session.client.log_dict(session.run_id, summary, f"data/{filename}")
        if what == "anomalies":
            session.log_metrics({f"data/anomalies/{split}": s["count"] for split, s in summary.items()})
        else:
            session.log_metrics({f"data/examples/{split}": s["num_examples"] for split, s in summary.items()})
