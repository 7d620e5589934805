"""Runs the pipeline with TFX's LocalDagRunner: binds paths, the SQLite metadata store and Beam args.

Binding only: tracking, registration and the registry gate are the pipeline's RegistryGate node. This
runner lends that node the MLflow run it opened early (`run_tracked`, so MLflow's import and the run's
opening overlap TFX's) and ends the run FINISHED or FAILED around the whole TFX run.

Also turns the run into what a user reads: one progress line per component with its time, then a
summary read back from ML Metadata (test-split metrics, blessed or not and why, where the model went).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import errno
import fcntl
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from pipelines import beam_patches
from pipelines import data as data_lib
from pipelines.config import Config
from pipelines.errors import DataGateError, DxpipeError

METADATA_FILE = "metadata.sqlite"
RUN_LOCK = ".dxpipe-run.lock"


class WorkdirBusyError(DxpipeError):
    """Another dxpipe run holds the working directory."""


@contextlib.contextmanager
def workdir_lock(workdir: Path) -> Iterator[None]:
    """Serialises runs on one working directory: a second run is refused at once with a clear message.

    Two runs on one workdir share ML Metadata, the pipeline root and the staging path; TFX does not
    isolate them, so they are never run side by side. The kernel releases the flock if the holder dies.

    Raises:
        WorkdirBusyError: Another run holds the lock (names its pid and start time).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / RUN_LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
            raise WorkdirBusyError(
                f"another dxpipe run is using the working directory {workdir} ({holder}); runs on one "
                "working directory are serialised because they share ML Metadata and the pipeline root. "
                "Wait for it to finish, or give this run its own --workdir."
            ) from exc
        try:
            os.ftruncate(fd, 0)
            started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
            os.pwrite(fd, f"pid {os.getpid()}, started {started}".encode(), 0)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def new_run_id() -> str:
    """A TFX pipeline run id no other run can have (timestamp for humans, random suffix for uniqueness)."""
    return f"{dt.datetime.now().isoformat()}-{uuid.uuid4().hex[:8]}"


def _own_run_id_runner(run_id: str):
    """A LocalDagRunner whose pipeline run id is `run_id`, so this run can find its own outputs.

    LocalDagRunner names each run by the current time and offers no way to learn the name; reading "the
    most recent run" back from ML Metadata picks another run's outputs when two runs overlap. Binding the
    runtime parameter first leaves LocalDagRunner's own substitution nothing to replace.
    """
    from tfx.dsl.compiler import constants
    from tfx.orchestration.local.local_dag_runner import LocalDagRunner
    from tfx.orchestration.portable import runtime_parameter_utils

    from components.registry_gate.component import RUN_ID_PARAMETER

    class OwnRunIdRunner(LocalDagRunner):
        def run_with_ir(self, pipeline, run_options=None):
            # The RegistryGate node's `dxpipe_run_id` is the same id (see pipeline.run_id_parameter).
            runtime_parameter_utils.substitute_runtime_parameter(
                pipeline, {constants.PIPELINE_RUN_ID_PARAMETER_NAME: run_id, RUN_ID_PARAMETER: run_id}
            )
            return super().run_with_ir(pipeline, run_options)

    return OwnRunIdRunner()


@dataclasses.dataclass(frozen=True)
class Paths:
    """Where a local run keeps things, all under the config's workdir."""

    workdir: Path
    input_base: Path
    pipeline_root: Path
    metadata: Path

    @classmethod
    def for_config(cls, cfg: Config) -> Paths:
        """Returns the paths for a config's dataset."""
        workdir = Path(cfg.workdir).absolute()
        return cls(
            workdir=workdir,
            input_base=workdir / "data" / cfg.dataset,
            pipeline_root=workdir / "pipelines" / cfg.pipeline_name,
            metadata=workdir / METADATA_FILE,
        )


@dataclasses.dataclass
class ComponentTiming:
    """How one component went in this run."""

    name: str
    seconds: float
    state: str = ""


@contextlib.contextmanager
def _timed_launches(emit_line: Callable[[str], None]):
    """Times every node LocalDagRunner launches and reports it as it happens.

    LocalDagRunner offers no per-node hook, and its "Component X is finished" log lines vanish once a
    component lowers absl's verbosity (training does), so the launcher's `launch` is wrapped for the
    duration of one run and restored afterwards.
    """
    from tfx.orchestration.portable import launcher

    original = launcher.Launcher.launch
    timings: list[ComponentTiming] = []

    def launch(self):
        name = self._pipeline_node.node_info.id
        start = time.perf_counter()
        try:
            result = original(self)
        except BaseException:
            emit_line(f"  {name:<32} FAILED after {time.perf_counter() - start:6.2f} s")
            raise
        seconds = time.perf_counter() - start
        timings.append(ComponentTiming(name, seconds))
        emit_line(f"  {name:<32} {seconds:6.2f} s")
        return result

    launcher.Launcher.launch = launch
    try:
        yield timings
    finally:
        launcher.Launcher.launch = original


def quiet_logs(verbose: bool) -> None:
    """Silences absl/TF/Beam chatter unless verbose; progress lines are printed either way."""
    if verbose:
        return
    from absl import logging as absl_logging  # Deferred: absl comes with TFX.

    absl_logging.set_verbosity(absl_logging.FATAL)
    logging.getLogger().setLevel(logging.ERROR)
    for name in ("apache_beam", "tensorflow", "tfx", "ml_metadata"):
        logging.getLogger(name).setLevel(logging.ERROR)


def build(cfg: Config, paths: Paths, enable_cache: bool = True, baseline_model_uri: str | None = None):
    """Materialises the data and returns (pipeline, dataset digest)."""
    from tfx.orchestration import metadata

    from pipelines.pipeline import create_pipeline

    if cfg.data.kind == "image":
        from pipelines import image_data  # The image kind's converter (MD5-verified .npz -> tf.Examples).

        _, digest = image_data.materialize(cfg.data, paths.input_base)
    else:
        digest = data_lib.materialize(cfg.data, paths.input_base).digest
    source_name = data_lib.source_name(cfg.data)
    pipeline = create_pipeline(
        cfg,
        pipeline_root=str(paths.pipeline_root),
        input_base=str(paths.input_base),
        source_name=source_name,
        metadata_connection_config=metadata.sqlite_metadata_connection_config(str(paths.metadata)),
        enable_cache=enable_cache,
        baseline_model_uri=baseline_model_uri,
    )
    return pipeline, digest


def run_pipeline(
    cfg: Config,
    *,
    enable_cache: bool = True,
    emit: Callable[[str], None] = lambda line: None,
    baseline_model_uri: str | None = None,
    run_id: str | None = None,
) -> tuple[list[ComponentTiming], str]:
    """Runs the pipeline once with LocalDagRunner.

    Args:
        cfg: The configuration.
        enable_cache: Reuse unchanged executions.
        emit: Receives one progress line per component event.
        baseline_model_uri: The champion's Model artifact URI for the Evaluator's comparison; None
            compares against the latest blessed model.
        run_id: The TFX pipeline run id to use (default: a new unique one); read this run's outputs
            back with `collect_outputs(..., run_id=run_id)`.

    Returns:
        Per-component timings and the dataset digest.

    Raises:
        DxpipeError: For bad data or configuration (the data gate's report among them).
    """
    from pipelines.registry_executor import bind_run, is_bound

    paths = Paths.for_config(cfg)
    paths.workdir.mkdir(parents=True, exist_ok=True)
    pipeline, digest = build(cfg, paths, enable_cache, baseline_model_uri)
    run_id = run_id or new_run_id()
    with (
        # Without an open MLflow run bound by `run_tracked`, the RegistryGate node opens its own.
        (
            contextlib.nullcontext()
            if is_bound(run_id)
            else bind_run(run_id, str(paths.metadata), tracking=cfg.tracking_config())
        ),
        _timed_launches(emit) as timings,
        beam_patches.no_tfx_sdist_for_direct_runner(cfg.beam.runner),
        beam_patches.memoized_dofn_introspection(),
        beam_patches.cached_option_views(),
    ):
        _own_run_id_runner(run_id).run(pipeline)
    return timings, digest


def describe_baseline(baseline_uri: str | None, champion_uri: str | None) -> str:
    """Names what the Evaluator compared the candidate with, for the run's summary."""
    if baseline_uri is None:
        return "no baseline (no other blessed model yet)"
    if champion_uri and Path(baseline_uri) == Path(champion_uri):
        return "the registry's champion"
    return f"the latest blessed model ({baseline_uri})"


@dataclasses.dataclass
class TrackedResult:
    """What one tracked local run produced.

    Attributes:
        timings: Per-component timings.
        outputs: The TFX run's outputs read back from ML Metadata.
        version: The registry version and its gate verdict (None if the run trained no model).
        mlflow_run_id: The MLflow run.
        tracking_uri: Where the run was tracked.
        tracking_overhead_s: Seconds MLflow work added to the critical path.
        baseline: What the Evaluator compared against.
        intervals: Image runs: test-split AUC and accuracy with 95 % bootstrap intervals.
    """

    timings: list[ComponentTiming]
    outputs: object
    version: object
    mlflow_run_id: str
    tracking_uri: str
    tracking_overhead_s: float
    baseline: str
    intervals: dict | None = None


def run_tracked(
    cfg: Config, *, enable_cache: bool = True, emit: Callable[[str], None] = lambda line: None
) -> TrackedResult:
    """Runs the pipeline as one MLflow run; its RegistryGate node registers and gates the trained model.

    The MLflow run opens (in a worker process) while TFX is imported and is lent to the RegistryGate
    node; the champion, if any, becomes the Evaluator's baseline. A failed or interrupted pipeline ends
    the MLflow run as FAILED.

    Raises:
        DxpipeError: Bad data or config, an unreachable MLflow, or a run that trained no model.
    """
    from pipelines import registry, tracking
    from pipelines.config import flatten
    from pipelines.mlflow_mlmd import collect_outputs

    tracking_cfg = cfg.tracking_config()
    paths = Paths.for_config(cfg)
    run_id = new_run_id()
    tags = {
        "tfx.pipeline_name": cfg.pipeline_name,
        "tfx.pipeline_root": str(paths.pipeline_root),
        "tfx.run_id": run_id,
    }
    with (
        workdir_lock(paths.workdir),
        tracking.pipeline_run(tracking_cfg, cfg.pipeline_name, flatten(cfg), tags) as run,
    ):
        # Importing TFX takes long enough for the worker to open the run meanwhile (so nothing that
        # imports TFX is imported before the worker starts).
        import pipelines.pipeline  # noqa: F401
        from pipelines.registry_executor import bind_run

        champion_uri = run.call(
            "champion", "reading the champion", registry.champion_in_session, cfg.model_name
        )
        if champion_uri and not Path(champion_uri).is_dir():
            emit(f"  (champion's model {champion_uri} is gone; comparing with the latest blessed model)")
            champion_uri = None
        try:
            with bind_run(run_id, str(paths.metadata), run) as binding:
                timings, _ = run_pipeline(
                    cfg, enable_cache=enable_cache, emit=emit, baseline_model_uri=champion_uri, run_id=run_id
                )
        except DataGateError:
            # The run ends FAILED either way; its statistics and anomalies are what a reader needs then.
            with contextlib.suppress(DxpipeError):
                tracking.log_pipeline_outputs(
                    run, collect_outputs(str(paths.metadata), cfg.pipeline_name, run_id=run_id)
                )
            raise
        # This run's own outputs, by its own run id: never "the most recent run" of the pipeline.
        outputs = collect_outputs(str(paths.metadata), cfg.pipeline_name, run_id=run_id)
        # The push follows the RegistryGate node, so its outcome is added to the run here.
        pushed = {"tfx.pushed": str(bool(outputs.pushed)).lower()}
        if outputs.pushed and outputs.pushed_version:
            pushed[registry.TAG_STAGING_VERSION] = outputs.pushed_version
        run.call("log_outputs", "recording the staging push", tracking.set_run_tags, pushed)
        intervals = None
        if cfg.data.kind == "image":
            from pipelines.image_report import log_image_report  # Bootstrap intervals, confident errors.

            threshold = cfg.data.training.operating_threshold
            cache = paths.workdir / "reports"
            intervals = log_image_report(run, outputs, threshold, cfg.data.positive_class, cache)
        # Registered and gated by the RegistryGate node, in this run.
        version = binding.version
        result = TrackedResult(
            timings=timings,
            outputs=outputs,
            version=version,
            mlflow_run_id=run.run_id,
            tracking_uri=run.config.tracking_uri or "",
            tracking_overhead_s=0.0,
            baseline=describe_baseline(outputs.baseline_model_uri, champion_uri),
            intervals=intervals,
        )
    result.tracking_overhead_s = run.overhead_s
    return result
