"""Compiles the same pipeline factory for Kubeflow Pipelines (v2 IR).

Only the environment is bound here: the container image, the pipeline root, the data and serving
locations as the pods see them. TFX writes a `PipelineJob` JSON wrapper; the KFP SDK and the KFP UI load
the bare pipeline spec, so that is extracted and also written as YAML.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import yaml

from pipelines.config import Config

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
    """

    image: str = DEFAULT_IMAGE
    pipeline_root: str = "/mnt/dxpipe/pipelines"
    data_root: str = "/mnt/dxpipe/data"
    serving_root: str = "/mnt/dxpipe/serving"


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
        config=kubeflow_v2_dag_runner.KubeflowV2DagRunnerConfig(default_image=target.image),
        output_dir=str(job_file.parent),
        output_filename=job_file.name,
    )
    runner.run(pipeline, write_out=True)
    job = json.loads(job_file.read_text())
    output.write_text(yaml.safe_dump(job["pipelineSpec"], sort_keys=True))
    return output
