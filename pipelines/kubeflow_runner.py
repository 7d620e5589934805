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
        baseline_model_uri: The champion's Model artifact URI as the pods see it, imported as the
            Evaluator's baseline; None: no baseline (see `kubeflow_spec.replace_resolvers`).
    """

    image: str = DEFAULT_IMAGE
    pipeline_root: str = "/mnt/dxpipe/pipelines"
    data_root: str = "/mnt/dxpipe/data"
    serving_root: str = "/mnt/dxpipe/serving"
    baseline_model_uri: str | None = None


def bind(cfg: Config, target: KubeflowTarget) -> Config:
    """Returns the config with local paths replaced by the pods' paths."""
    data = dataclasses.replace(cfg.data, schema_dir=f"{IMAGE_PROJECT_ROOT}/schemas/{cfg.dataset}")
    return dataclasses.replace(
        cfg,
        datasets={**cfg.datasets, cfg.dataset: data},
        serving=dataclasses.replace(cfg.serving, root=target.serving_root),
    )


def compile_pipeline(cfg: Config, output: str | Path, target: KubeflowTarget = KubeflowTarget()) -> Path:
    """Writes the KFP v2 pipeline spec for the selected dataset.

    Args:
        cfg: The configuration.
        output: Destination `.yaml` (the KFP SDK's format); a `.json` PipelineJob is written beside it.
        target: Image and paths inside the cluster.

    Returns:
        The YAML path.
    """
    from tfx.orchestration.kubeflow.v2 import kubeflow_v2_dag_runner

    from pipelines.pipeline import create_pipeline
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
    runner.run(pipeline, write_out=True)
    job = json.loads(job_file.read_text())
    job["pipelineSpec"] = for_open_source_kfp(job["pipelineSpec"], target.baseline_model_uri)
    job_file.write_text(json.dumps(job, indent=2, sort_keys=True))
    output.write_text(yaml.safe_dump(job["pipelineSpec"], sort_keys=True))
    return output
