"""The one pipeline factory. Runners (local, Kubeflow) only bind paths and the orchestrator.

ExampleGen -> StatisticsGen -> ImportSchemaGen (curated) -> ExampleValidator -> DataGate -> Trainer
-> Evaluator (test split, against a baseline) -> ClinicalEvaluator (intervals, calibration, slices,
decision curve, paired comparison with the same baseline) -> RegistryGate (MLflow run, registry version,
gate verdict, the clinical criteria among it) -> ServingPusher to staging (only if the registry gate
passed the version).

The baseline is the registry's champion when the runner knows it (an Importer of its Model artifact, so
non-inferiority is judged against what production serves, re-scored on this test split), else the latest
blessed model, and never the candidate itself (components/baseline), so a re-run hits the Evaluator's
cache. A compiled Kubeflow pipeline has no resolver (open-source KFP refuses them): `dxpipe compile
--baseline-model` imports the champion instead (pipelines/kubeflow_spec.py).
Components talk only through TFX artifacts and parameters, so the same definition compiles to KFP:
tracking, registration and the gate are a node of the DAG (components/registry_gate, its MLflow executor
bound here from pipelines/registry_executor), locally and on Kubeflow alike.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import tensorflow_model_analysis as tfma
from tfx.components import Evaluator, ExampleValidator, FileBasedExampleGen, StatisticsGen, Trainer
from tfx.components.schema_gen.import_schema_gen.component import ImportSchemaGen
from tfx.dsl.components.base import base_component, executor_spec
from tfx.dsl.components.common.importer import Importer
from tfx.dsl.components.common.resolver import Resolver
from tfx.dsl.experimental.conditionals.conditional import Cond
from tfx.dsl.input_resolution.strategies.latest_blessed_model_strategy import LatestBlessedModelStrategy
from tfx.orchestration import data_types
from tfx.orchestration import pipeline as tfx_pipeline
from tfx.proto import example_gen_pb2
from tfx.types import Channel, standard_artifacts, standard_component_specs
from tfx.types.component_spec import ExecutionParameter

import models
from components.baseline.strategy import BaselineStrategy
from components.clinical_eval.component import ClinicalEvaluator
from components.csv_examples.executor import Executor as CsvExamplesExecutor
from components.data_gate.component import DataGate
from components.registry_gate.component import RUN_ID_PARAMETER, RegistryGate
from components.serving_pusher.component import ServingPusher
from models.network import EXAMPLES_SIGNATURE, PROBABILITY
from pipelines.config import Config, EvaluationConfig, flatten
from pipelines.data import DATA_FILE, SPLITS
from schemas.files import read_schema, schema_path

TRAINER_RUN_FN = "models.trainer.run_fn"
GATED_SPLIT = "test"


def models_code_digest(subpackage: str = "") -> str:
    """Digest of the model package's source (its top-level modules, plus `subpackage`'s if named).

    The Trainer is referenced by module path, which TFX's cache key cannot see into; putting this digest
    in its custom_config makes a code change re-train instead of reusing a stale cached model.
    """
    root = Path(models.__file__).parent
    digest = hashlib.sha256()
    paths = sorted(root.glob("*.py")) + (sorted((root / subpackage).glob("*.py")) if subpackage else [])
    for path in paths:
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


class _CuratedSchemaSpec(standard_component_specs.ImportSchemaGenSpec):
    PARAMETERS = {
        **standard_component_specs.ImportSchemaGenSpec.PARAMETERS,
        "schema_digest": ExecutionParameter(type=str),
    }


class CuratedSchemaGen(ImportSchemaGen):
    """TFX's ImportSchemaGen, with the schema file's digest as an execution parameter.

    TFX's cache key sees ImportSchemaGen's `schema_file` *path*, not its content: an edited schema was
    reused from the cache and a tightened range was silently not enforced. The digest parameter (which
    the unchanged executor ignores) makes every edit a new cache key for this node and, through its new
    Schema artifact, for ExampleValidator, the data gate and the Trainer; an unchanged schema stays cached.
    """

    SPEC_CLASS = _CuratedSchemaSpec

    def __init__(self, schema_file: str, schema_digest: str):
        """Builds the node.

        Args:
            schema_file: The curated schema file.
            schema_digest: SHA-256 of its content.
        """
        spec = _CuratedSchemaSpec(
            schema_file=schema_file,
            schema_digest=schema_digest,
            schema=Channel(type=standard_artifacts.Schema),
        )
        base_component.BaseComponent.__init__(self, spec=spec)


def _bound(metric: str, lower: float | None = None, drop: float | None = None) -> tfma.MetricThreshold:
    threshold = tfma.MetricThreshold()
    if lower is not None:
        threshold.value_threshold.lower_bound.value = lower
    if drop is not None:
        threshold.change_threshold.direction = tfma.MetricDirection.HIGHER_IS_BETTER
        threshold.change_threshold.absolute.value = -drop
    return threshold


def eval_config(
    evaluation: EvaluationConfig, operating_threshold: float, slices: tuple[str, ...]
) -> tfma.EvalConfig:
    """Returns the TFMA config: metrics on the test split, value thresholds and a change threshold.

    Args:
        evaluation: Blessing thresholds.
        operating_threshold: Probability cut-off for accuracy, precision, recall and specificity.
        slices: Features to report per value of (in addition to the overall slice).
    """
    # BinaryAccuracy takes `threshold`; Precision, Recall and Specificity take `thresholds`.
    at = f'{{"threshold": {operating_threshold}}}'
    ats = f'{{"thresholds": {operating_threshold}}}'

    def metric(
        name: str, config: str = "", threshold: tfma.MetricThreshold | None = None
    ) -> tfma.MetricConfig:
        return tfma.MetricConfig(class_name=name, config=config, threshold=threshold)

    metrics = [
        metric("ExampleCount"),
        metric("AUC", threshold=_bound("auc", evaluation.min_auc, evaluation.max_auc_drop)),
        metric("BinaryAccuracy", at, _bound("accuracy", evaluation.min_accuracy)),
        metric("Precision", ats),
        metric("Recall", ats, _bound("recall", evaluation.min_recall)),
        metric("Specificity", ats, _bound("specificity", evaluation.min_specificity)),
        metric("MeanSquaredError", '{"name": "brier_score"}'),
        metric("Calibration"),
        metric("MeanLabel"),
        metric("MeanPrediction"),
        metric("CalibrationPlot", '{"num_buckets": 10}'),
        metric("ConfusionMatrixPlot"),
    ]
    spec = dict(
        signature_name=EXAMPLES_SIGNATURE,
        label_key="label",
        prediction_key=PROBABILITY,
        model_type="tf_generic",
    )
    return tfma.EvalConfig(
        model_specs=[
            tfma.ModelSpec(name="candidate", **spec),
            tfma.ModelSpec(name="baseline", is_baseline=True, **spec),
        ],
        slicing_specs=[tfma.SlicingSpec(), *(tfma.SlicingSpec(feature_keys=[f]) for f in slices)],
        metrics_specs=[tfma.MetricsSpec(metrics=metrics)],
    )


def _baseline(trainer, champion_uri: str | None, builtin_resolver_only: bool):
    """Returns (nodes to add, the Evaluator's baseline_model channel)."""
    every_model = Channel(type=standard_artifacts.Model)
    every_blessing = Channel(type=standard_artifacts.ModelBlessing)
    if builtin_resolver_only:
        resolver = Resolver(
            strategy_class=LatestBlessedModelStrategy, model=every_model, model_blessing=every_blessing
        ).with_id("latest_blessed_model_resolver")
        return [resolver], resolver.outputs["model"]
    nodes = []
    channels = {"candidate": trainer.outputs["model"], "model": every_model, "model_blessing": every_blessing}
    if champion_uri:
        # reimport=False: the champion keeps one artifact id, so the Evaluator's inputs (and cache key)
        # stay the same from run to run while the champion does.
        champion = Importer(
            source_uri=champion_uri, artifact_type=standard_artifacts.Model, reimport=False
        ).with_id("champion_model_importer")
        nodes.append(champion)
        channels["champion"] = champion.outputs["result"]
    resolver = Resolver(strategy_class=BaselineStrategy, **channels).with_id("baseline_resolver")
    return [*nodes, resolver], resolver.outputs["model"]


def data_validation_nodes(
    cfg: Config, input_base: str, source_name: str, schema_digest: str | None = None
) -> tuple:
    """Returns (ExampleGen, StatisticsGen, ImportSchemaGen, ExampleValidator, DataGate) for the dataset.

    Args:
        cfg: The validated configuration.
        input_base: Directory holding the split CSVs (see `pipelines.data.materialize`).
        source_name: The data's user-facing name, for data-gate messages.
        schema_digest: SHA-256 of the schema file; None reads it from `cfg.data.schema_dir` (a compiled
            Kubeflow pipeline passes the digest of the schema its image ships).

    Raises:
        schemas.files.SchemaFileError: If the schema is missing or does not parse.
    """
    # pipelines/data.py has split the rows (by patient, by date or by row content); ExampleGen reads the
    # three splits as they are. The input files' fingerprint (size and mtime; data.py rewrites a file
    # only when its bytes change) is in ExampleGen's cache key, so new data re-runs everything after it.
    # The executor makes CsvExampleGen's examples from the column types data.py recorded, streaming each
    # split in bounded memory (components/csv_examples); the node keeps CsvExampleGen's id and driver.
    example_gen = FileBasedExampleGen(
        input_base=input_base,
        input_config=example_gen_pb2.Input(
            splits=[example_gen_pb2.Input.Split(name=s, pattern=f"{s}/{DATA_FILE}") for s in SPLITS]
        ),
        custom_executor_spec=executor_spec.BeamExecutorSpec(CsvExamplesExecutor),
    ).with_id("CsvExampleGen")
    statistics_gen = StatisticsGen(examples=example_gen.outputs["examples"])
    schema_file = str(Path(cfg.data.schema_dir) / "schema.pbtxt")
    if schema_digest is None:
        _, schema_digest = read_schema(schema_path(cfg.data.schema_dir))
    schema_gen = CuratedSchemaGen(schema_file=schema_file, schema_digest=schema_digest).with_id(
        "ImportSchemaGen"
    )
    example_validator = ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"]
    )
    data_gate = DataGate(
        anomalies=example_validator.outputs["anomalies"],
        schema=schema_gen.outputs["schema"],
        source=source_name,
        data_dir=input_base,
        checks=json.dumps(dataclasses.asdict(cfg.data.checks), sort_keys=True),
    )
    return example_gen, statistics_gen, schema_gen, example_validator, data_gate


def run_id_parameter() -> data_types.RuntimeParameter:
    """The pipeline run's id, a runtime parameter the runner binds (no default: a run must name itself).

    The local runner binds its own TFX run id; a Kubeflow run is submitted with `dxpipe_run_id` set
    (e.g. the KFP run's name). It keeps the RegistryGate node out of the cache (the registry's champion
    and pinned policy are outside TFX's cache key) and ties the MLflow run to the pipeline run.
    """
    return data_types.RuntimeParameter(name=RUN_ID_PARAMETER, ptype=str)


def _run_params(cfg: Config) -> dict[str, str]:
    """The config as the MLflow run's params; URIs redacted (execution parameters are stored in MLMD)."""
    from pipelines.redact import redact_uri

    return {k: redact_uri(v) if k.endswith(("_uri", ".uri")) else v for k, v in flatten(cfg).items()}


def card_context(cfg: Config, input_base: str | None) -> dict[str, Any]:
    """What the model card needs from the config (`pipelines.model_card.facts.gather`'s `context`).

    The TFLite parity report joins it at registration, where the export is made.
    """
    return {
        "dataset": cfg.dataset,
        "positive_class": cfg.data.positive_class,
        "kind": cfg.data.kind,
        "intended": dataclasses.asdict(cfg.data.model_card),
        "input_base": input_base if cfg.data.kind == "table" else None,
    }


def registry_gate_node(
    cfg: Config,
    example_gen,
    trainer,
    evaluator,
    baseline_model,
    data_nodes=None,
    clinical=None,
    input_base: str | None = None,
):
    """Returns the RegistryGate node: tracking, registration and the registry gate, bound to MLflow.

    Args:
        cfg: The validated configuration.
        example_gen: The node whose examples were evaluated.
        trainer: The node whose model is registered.
        evaluator: The Evaluator whose evaluation and blessing are gated.
        baseline_model: The channel of the model the Evaluator re-scored as baseline.
        data_nodes: (StatisticsGen, ImportSchemaGen, ExampleValidator), whose reports the run logs.
        clinical: The ClinicalEvaluator whose report the gate's clinical criteria read (None: no report).
        input_base: ExampleGen's input directory (the split sizes on the model card).
    """
    from pipelines.registry_executor import MlflowRegistryGateExecutor, tracking_json

    reports = {}
    if data_nodes is not None:
        statistics_gen, schema_gen, example_validator = data_nodes
        reports = {
            "statistics": statistics_gen.outputs["statistics"],
            "schema": schema_gen.outputs["schema"],
            "anomalies": example_validator.outputs["anomalies"],
        }
    if clinical is not None:
        reports["clinical_evaluation"] = clinical.outputs["clinical_evaluation"]
    return RegistryGate(
        examples=example_gen.outputs["examples"],
        model=trainer.outputs["model"],
        evaluation=evaluator.outputs["evaluation"],
        blessing=evaluator.outputs["blessing"],
        baseline_model=baseline_model,
        model_name=cfg.model_name,
        pipeline_name=cfg.pipeline_name,
        gate_policy=json.dumps(cfg.gate_policy().to_dict(), sort_keys=True),
        tracking=tracking_json(cfg.tracking_config()),
        run_params=json.dumps(_run_params(cfg), sort_keys=True),
        run_id=run_id_parameter(),
        executor_class=MlflowRegistryGateExecutor,
        model_card=json.dumps(card_context(cfg, input_base), sort_keys=True),
        **reports,
    )


def evaluation_and_push_nodes(
    cfg: Config,
    example_gen,
    trainer,
    baseline_model_uri: str | None,
    builtin_resolver_only: bool,
    data_nodes=None,
    input_base: str | None = None,
) -> list:
    """Returns the baseline node(s), the Evaluator, the RegistryGate and the Pusher behind its verdict.

    Args:
        cfg: The validated configuration.
        example_gen: The node whose raw examples are evaluated.
        trainer: The node whose model is evaluated and pushed.
        baseline_model_uri: The champion's Model URI, if known (see `create_pipeline`).
        builtin_resolver_only: See `create_pipeline`.
        data_nodes: See `registry_gate_node`.
        input_base: See `registry_gate_node`.
    """
    data = cfg.data
    baseline_nodes, baseline_model = _baseline(trainer, baseline_model_uri, builtin_resolver_only)
    evaluator = Evaluator(
        examples=example_gen.outputs["examples"],
        model=trainer.outputs["model"],
        baseline_model=baseline_model,
        eval_config=eval_config(data.evaluation, data.training.operating_threshold, data.slice_features),
        example_splits=[GATED_SPLIT],
    )
    clinical = clinical_evaluation_node(cfg, example_gen, trainer, baseline_model)
    gate = registry_gate_node(
        cfg, example_gen, trainer, evaluator, baseline_model, data_nodes, clinical, input_base
    )
    # The push is guarded structurally by the registry's verdict (which requires the Evaluator's
    # blessing unless the pinned policy says otherwise); the Pusher re-checks the blessing itself.
    with Cond(gate.outputs["verdict"].future()[0].custom_property("passed") == 1):
        pusher = ServingPusher(
            model=trainer.outputs["model"],
            model_blessing=evaluator.outputs["blessing"],
            base_path=str(cfg.staging_base_path),
        )
    return [*baseline_nodes, evaluator, clinical, gate, pusher]


def _data_nodes(nodes: list) -> tuple | None:
    """(StatisticsGen, ImportSchemaGen, ExampleValidator) among `nodes`, for the run's data reports."""
    by_id = {node.id: node for node in nodes}
    found = tuple(by_id.get(name) for name in ("StatisticsGen", "ImportSchemaGen", "ExampleValidator"))
    return None if None in found else found


def clinical_evaluation_node(cfg: Config, example_gen, trainer, baseline_model) -> ClinicalEvaluator:
    """The clinical evaluation of the trained model on the gated split, paired with the Evaluator's baseline.

    Its `clinical_evaluation.json` (intervals, calibration, slices, decision curve, paired comparison)
    is an input of the RegistryGate node, whose `clinical:` criteria read it at registration.
    """
    return ClinicalEvaluator(
        examples=example_gen.outputs["examples"],
        model=trainer.outputs["model"],
        baseline_model=baseline_model,
        split=GATED_SPLIT,
        settings=json.dumps(dataclasses.asdict(cfg.clinical_settings()), sort_keys=True),
        slice_features=json.dumps(list(cfg.data.slice_features)),
    )


def create_pipeline(
    cfg: Config,
    *,
    pipeline_root: str,
    input_base: str,
    source_name: str,
    metadata_connection_config=None,
    beam_pipeline_args: list[str] | None = None,
    enable_cache: bool = True,
    baseline_model_uri: str | None = None,
    builtin_resolver_only: bool = False,
    schema_digest: str | None = None,
) -> tfx_pipeline.Pipeline:
    """Builds the dxpipe pipeline for the selected dataset.

    Args:
        cfg: The validated configuration.
        pipeline_root: Where TFX writes artifacts.
        input_base: Directory holding the split CSVs (see `pipelines.data.materialize`).
        source_name: The data's user-facing name (file path or loader), for data-gate messages.
        metadata_connection_config: ML Metadata connection (None lets the orchestrator choose).
        beam_pipeline_args: Arguments for the Beam-based components.
        enable_cache: Reuse outputs of executions whose inputs and parameters are unchanged.
        baseline_model_uri: URI of the Model artifact to compare against (the registry's champion);
            None resolves the latest blessed model instead.
        builtin_resolver_only: Resolve the baseline with TFX's LatestBlessedModelStrategy, the only
            model resolver Kubeflow's v2 compiler accepts. It can return the candidate itself, so a
            cached re-run re-evaluates once against its own model; local runs use BaselineStrategy.
        schema_digest: See `data_validation_nodes`.

    Returns:
        The TFX pipeline.
    """
    data = cfg.data
    if data.kind == "image":
        from pipelines.image_pipeline import image_nodes  # The image kind's own nodes, kept in its module.

        nodes, example_gen, trainer = image_nodes(cfg, input_base, source_name, models_code_digest("image"))
        return tfx_pipeline.Pipeline(
            pipeline_name=cfg.pipeline_name,
            pipeline_root=pipeline_root,
            components=[
                *nodes,
                *evaluation_and_push_nodes(
                    cfg,
                    example_gen,
                    trainer,
                    baseline_model_uri,
                    builtin_resolver_only,
                    _data_nodes(nodes),
                ),
            ],
            enable_cache=enable_cache,
            metadata_connection_config=metadata_connection_config,
            beam_pipeline_args=beam_pipeline_args if beam_pipeline_args is not None else cfg.beam.args(),
        )
    validation = data_validation_nodes(cfg, input_base, source_name, schema_digest)
    example_gen, statistics_gen, schema_gen, example_validator, data_gate = validation
    trainer = Trainer(
        run_fn=TRAINER_RUN_FN,
        examples=example_gen.outputs["examples"],
        schema=schema_gen.outputs["schema"],
        custom_config={
            "training": dataclasses.asdict(data.training),
            "operating_point": data.operating_point.to_dict(),
            "calibration": data.calibration,
            "code_digest": models_code_digest(),
        },
    )
    # Nothing is trained on data the gate rejected.
    trainer.add_upstream_node(data_gate)
    components = [
        *validation,
        trainer,
        *evaluation_and_push_nodes(
            cfg,
            example_gen,
            trainer,
            baseline_model_uri,
            builtin_resolver_only,
            (statistics_gen, schema_gen, example_validator),
            input_base,
        ),
    ]
    return tfx_pipeline.Pipeline(
        pipeline_name=cfg.pipeline_name,
        pipeline_root=pipeline_root,
        components=components,
        enable_cache=enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=beam_pipeline_args if beam_pipeline_args is not None else cfg.beam.args(),
    )
