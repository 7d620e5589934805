"""Compiles the same pipeline factory for Kubeflow Pipelines (v2 IR).

Only the environment is bound here: the container image, the pipeline root, the data and serving
locations as the pods see them, and the baseline model. TFX writes a `PipelineJob` JSON wrapper in
pipeline-spec 2.1 form; `kubeflow_spec.for_open_source_kfp` makes it runnable on open-source KFP 2.x (see
there), and the bare pipeline spec (what the KFP SDK and UI load) is also written as YAML.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import yaml

from pipelines.config import Config
from pipelines.kubeflow_spec import for_open_source_kfp

EXIT_HANDLER_ID = "mlflow_run_finalizer"
TFX_DAG = "tfx-dag"  # The sub-DAG TFX's v2 compiler nests the pipeline in when it has an exit handler.
# `make image` tags the image with the package version (setup.py), the same tag as here.
DEFAULT_IMAGE = "ghcr.io/dxpipe/dxpipe:0.1.0"
# Where the Docker image keeps the project (schemas/ included).
IMAGE_PROJECT_ROOT = "/opt/dxpipe"


@dataclasses.dataclass(frozen=True)
class KubeflowTarget:
    """Where things are, as seen from inside the Kubeflow pods.

    Attributes:
        image: Container image with dxpipe installed (`pip install .` on top of the lock).
        pipeline_root: Artifact root (e.g. `gs://bucket/dxpipe` or a mounted volume).
        data_root: Directory holding `<dataset>/{train,eval,test}/data.csv` as `pipelines.data.materialize`
            writes them.
        serving_root: The TF Serving model base paths' parent, mounted by the serving Deployment too.
        work_root: The pods' working directory (the RegistryGate node's open-run markers; the embedded
            MLflow store only if the pods have no `MLFLOW_TRACKING_URI`, which a cluster should set).
        baseline_model_uri: The champion's Model artifact URI as the pods see it, imported as the
            Evaluator's baseline; None: no baseline (see `kubeflow_spec.replace_resolvers`).
    """

    image: str = DEFAULT_IMAGE
    pipeline_root: str = "/mnt/dxpipe/pipelines"
    data_root: str = "/mnt/dxpipe/data"
    serving_root: str = "/mnt/dxpipe/serving"
    work_root: str = "/mnt/dxpipe/work"
    baseline_model_uri: str | None = None


def bind(cfg: Config, target: KubeflowTarget) -> Config:
    """Returns the config with local paths replaced by the pods' paths."""
    data = dataclasses.replace(cfg.data, schema_dir=f"{IMAGE_PROJECT_ROOT}/schemas/{cfg.dataset}")
    # The tracking URI is the pods' `MLFLOW_TRACKING_URI`, never this machine's store or credentials.
    tracking = {k: v for k, v in cfg.tracking.items() if k not in ("tracking_uri", "registry_uri")}
    return dataclasses.replace(
        cfg,
        datasets={**cfg.datasets, cfg.dataset: data},
        serving=dataclasses.replace(cfg.serving, root=target.serving_root),
        workdir=target.work_root,
        tracking=tracking,
    )


def _wire_runtime_parameters(spec: dict) -> None:
    """Passes the pipeline's runtime parameters into the DAG and the exit handler (TFX 1.16 does not).

    With an exit handler, TFX's v2 compiler nests the pipeline's tasks in a `tfx-dag` sub-DAG but
    declares the runtime parameters only on the root, so a task inside reading `dxpipe_run_id` would
    find nothing; and it builds the exit handler's task outside the context that declares runtime
    parameters (`parameter_utils.attach_parameter` raises there), so the handler is compiled with a
    placeholder constant. Here each root parameter is declared on `tfx-dag` and passed to it, and the
    handler's `run_id` reads the run's `dxpipe_run_id`, as KFP v2 resolves `componentInputParameter`.
    """
    from components.registry_gate.component import RUN_ID_PARAMETER

    parameters = spec["root"].get("inputDefinitions", {}).get("parameters", {})
    if RUN_ID_PARAMETER not in parameters:
        raise RuntimeError(f"the compiled pipeline declares no '{RUN_ID_PARAMETER}' parameter")
    dag_component = spec["components"][TFX_DAG]
    dag_task = spec["root"]["dag"]["tasks"][TFX_DAG]
    for name, declaration in parameters.items():
        dag_component.setdefault("inputDefinitions", {}).setdefault("parameters", {})[name] = dict(
            declaration
        )
        dag_task.setdefault("inputs", {}).setdefault("parameters", {})[name] = {
            "componentInputParameter": name
        }
    task = spec["root"]["dag"]["tasks"][EXIT_HANDLER_ID]
    task["inputs"]["parameters"]["run_id"] = {"componentInputParameter": RUN_ID_PARAMETER}


def compile_pipeline(cfg: Config, output: str | Path, target: KubeflowTarget = KubeflowTarget()) -> Path:
    """Writes the KFP v2 pipeline spec for the selected dataset.

    Args:
        cfg: The configuration.
        output: Destination `.yaml` (the KFP SDK's format); a `.json` PipelineJob is written beside it.
        target: Image and paths inside the cluster.

    Returns:
        The YAML path.
    """
    from tfx.orchestration.kubeflow.decorators import FinalStatusStr
    from tfx.orchestration.kubeflow.v2 import kubeflow_v2_dag_runner

    from pipelines.kubeflow_exit import MlflowRunFinalizer
    from pipelines.pipeline import create_pipeline
    from pipelines.registry_executor import tracking_json
    from schemas.files import read_schema, schema_path

    # The image ships the same schemas/ as this checkout: the digest keeps the schema in the cache key.
    _, schema_digest = read_schema(schema_path(cfg.data.schema_dir))
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    bound = bind(cfg, target)
    pipeline = create_pipeline(
        bound,
        pipeline_root=f"{target.pipeline_root}/{cfg.pipeline_name}",
        input_base=f"{target.data_root}/{cfg.dataset}",
        source_name=f"{target.data_root}/{cfg.dataset}",
        # `beam:` in the config: by default the direct runner inside each task's pod, or a cluster runner.
        beam_pipeline_args=cfg.beam.args(),
        builtin_resolver_only=True,
        schema_digest=schema_digest,
    )
    job_file = output.with_suffix(".json")
    runner = kubeflow_v2_dag_runner.KubeflowV2DagRunner(
        # Spec 2.1: modern parameter declarations and the entrypoint flag that makes it read
        # `parameterValues` (the only form open-source KFP passes); TFX's default 2.0 form fails there.
        config=kubeflow_v2_dag_runner.KubeflowV2DagRunnerConfig(
            default_image=target.image, use_pipeline_spec_2_1=True
        ),
        output_dir=str(job_file.parent),
        output_filename=job_file.name,
    )
    # After the whole DAG, whatever its outcome: a failed run still ends FAILED in MLflow.
    runner.set_exit_handler(
        MlflowRunFinalizer(
            final_status=FinalStatusStr(),
            tracking=tracking_json(bound.tracking_config()),
            pipeline_name=bound.pipeline_name,
            run_id="",  # wired to the `dxpipe_run_id` pipeline parameter below
        ).with_id(EXIT_HANDLER_ID)
    )
    runner.run(pipeline, write_out=True)
    job = json.loads(job_file.read_text())
    _wire_runtime_parameters(job["pipelineSpec"])
    job["pipelineSpec"] = for_open_source_kfp(job["pipelineSpec"], target.baseline_model_uri)
    job_file.write_text(json.dumps(job, indent=2, sort_keys=True))
    output.write_text(yaml.safe_dump(job["pipelineSpec"], sort_keys=True))
    return output
