"""TFX shell of the registry gate: one DAG node that tracks the run, registers the model and gates it.

The node sits after the Evaluator and before the staging push (`tfx.dsl.Cond` on its verdict), so a
local run and the compiled Kubeflow pipeline hold the same tracking, registration and gate. Its inputs
are the artifacts the decision is made on (the model, the test split's examples, the TFMA evaluation and
blessing, the baseline the Evaluator re-scored, the clinical evaluation, the data reports); its output is
a `RegistryVerdict` whose `passed` custom property the push is conditioned on and whose `verdict.json`
holds every reason.

The MLflow side (opening or joining the run, logging, creating the version with its write-once
evidence) is I/O above this layer, so the executor is bound by the pipeline factory through TFX's
`custom_executor_spec`: this module defines the node's contract and the verdict record, and imports
nothing from `pipelines/`. `RegistryGateExecutor.gate` is the one method a binding implements.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from tfx import types
from tfx.dsl.components.base import base_component, base_executor, executor_spec
from tfx.types import artifact_utils, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from components.clinical_eval.component import ClinicalEvaluation

VERDICT_FILE = "verdict.json"
# The pipeline-level runtime parameter naming one run: the node re-decides every run (the registry's
# champion and pinned policy are state outside TFX's cache key), and the Kubeflow exit handler finds
# the MLflow run of a failed pipeline run by it.
RUN_ID_PARAMETER = "dxpipe_run_id"


class RegistryVerdict(types.Artifact):
    """The registry gate's decision on one model: `passed` (0/1), the version, the MLflow run.

    TFX's KFP v2 entrypoint imports a custom artifact's class by its type name, which the compiler
    requires to be `<namespace>.<Class>` (one dot): hence `components.RegistryVerdict`, which the
    `components` package resolves lazily to this class.
    """

    TYPE_NAME = "components.RegistryVerdict"


class RegistryGateSpec(ComponentSpec):
    """Inputs, parameters and output of the registry gate node."""

    PARAMETERS = {
        "model_name": ExecutionParameter(type=str),
        "pipeline_name": ExecutionParameter(type=str),
        "gate_policy": ExecutionParameter(type=str),
        "tracking": ExecutionParameter(type=str),
        "run_params": ExecutionParameter(type=str),
        "run_id": ExecutionParameter(type=str),
        # What only the config knows for the model card and the TFLite export (the binding's format).
        "model_card": ExecutionParameter(type=str, optional=True),
    }
    INPUTS = {
        "examples": ChannelParameter(type=standard_artifacts.Examples),
        "model": ChannelParameter(type=standard_artifacts.Model),
        "evaluation": ChannelParameter(type=standard_artifacts.ModelEvaluation),
        "blessing": ChannelParameter(type=standard_artifacts.ModelBlessing),
        "baseline_model": ChannelParameter(type=standard_artifacts.Model, optional=True),
        "schema": ChannelParameter(type=standard_artifacts.Schema, optional=True),
        "statistics": ChannelParameter(type=standard_artifacts.ExampleStatistics, optional=True),
        "anomalies": ChannelParameter(type=standard_artifacts.ExampleAnomalies, optional=True),
        "clinical_evaluation": ChannelParameter(type=ClinicalEvaluation, optional=True),
    }
    OUTPUTS = {"verdict": ChannelParameter(type=RegistryVerdict)}


def verdict_record(
    *,
    model_name: str,
    version: str,
    passed: bool,
    reused: bool,
    failures: tuple[str, ...] | list[str],
    compared_with: str,
    digest: str,
    mlflow_run_id: str,
    run_id: str,
    verdict: Mapping[str, Any],
) -> dict[str, Any]:
    """The verdict as `verdict.json` holds it (pure: the values a binding computed, in one shape).

    Args:
        model_name: Registered model name.
        version: The registry version the verdict is about.
        passed: Whether the version passed the gate.
        reused: Whether the model was already that version (nothing new registered).
        failures: One message per failed criterion.
        compared_with: What non-inferiority compared against.
        digest: The SavedModel's content digest.
        mlflow_run_id: The MLflow run that tracked this pipeline run.
        run_id: This pipeline run's id.
        verdict: Every criterion's result (`GateVerdict.to_dict()`).
    """
    return {
        "model_name": model_name,
        "version": str(version),
        "passed": bool(passed),
        "reused": bool(reused),
        "failures": list(failures),
        "compared_with": compared_with,
        "model_digest": digest,
        "mlflow_run_id": mlflow_run_id,
        "run_id": run_id,
        "verdict": dict(verdict),
    }


def read_verdict(artifact: types.Artifact) -> dict[str, Any]:
    """Reads `verdict.json` back from a RegistryVerdict artifact."""
    import tensorflow as tf  # Deferred: the artifact URI may be remote (gs://), read through gfile.

    with tf.io.gfile.GFile(os.path.join(artifact.uri, VERDICT_FILE)) as f:
        return json.loads(f.read())


class RegistryGateExecutor(base_executor.BaseExecutor):
    """Unpacks the node's artifacts, asks the binding's `gate` for a verdict and records it.

    A binding subclasses this and implements `gate`; the pipeline factory names the subclass in the
    node's `custom_executor_spec`. Unbound, the node refuses to run rather than push ungated.
    """

    def gate(self, inputs: Mapping[str, str | None], blessed: bool | None, params: Mapping[str, str]) -> dict:
        """Tracks, registers and gates the model; returns `verdict_record(...)`.

        Args:
            inputs: Input name -> artifact URI (None for an absent optional input).
            blessed: The Evaluator's blessing.
            params: The node's execution parameters.

        Raises:
            NotImplementedError: Always, here; a binding implements it.
        """
        raise NotImplementedError(
            "the RegistryGate node has no MLflow binding; build it with "
            "pipelines.pipeline.create_pipeline, which binds pipelines.registry_executor."
        )

    def Do(
        self,
        input_dict: dict[str, list[types.Artifact]],
        output_dict: dict[str, list[types.Artifact]],
        exec_properties: dict[str, Any],
    ) -> None:
        """Runs the gate and writes the verdict artifact (`passed`, `version` custom properties)."""
        inputs = {
            key: artifact_utils.get_single_uri(input_dict[key]) if input_dict.get(key) else None
            for key in RegistryGateSpec.INPUTS
        }
        blessing = artifact_utils.get_single_instance(input_dict["blessing"])
        blessed_value = (
            blessing.get_int_custom_property("blessed") if blessing.has_custom_property("blessed") else None
        )
        blessed = None if blessed_value is None else bool(blessed_value)
        record = self.gate(inputs, blessed, {k: str(v) for k, v in exec_properties.items()})
        verdict = artifact_utils.get_single_instance(output_dict["verdict"])
        import tensorflow as tf  # Deferred, as in `read_verdict`.

        tf.io.gfile.makedirs(verdict.uri)
        with tf.io.gfile.GFile(os.path.join(verdict.uri, VERDICT_FILE), "w") as f:
            f.write(json.dumps(record, sort_keys=True, indent=1))
        verdict.set_int_custom_property("passed", int(record["passed"]))
        verdict.set_string_custom_property("model_name", record["model_name"])
        verdict.set_string_custom_property("version", record["version"])
        verdict.set_string_custom_property("mlflow_run_id", record["mlflow_run_id"])
        verdict.set_int_custom_property("reused", int(record["reused"]))


class RegistryGate(base_component.BaseComponent):
    """The registry gate node (see the module docstring)."""

    SPEC_CLASS = RegistryGateSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(RegistryGateExecutor)

    def __init__(
        self,
        *,
        examples: types.BaseChannel,
        model: types.BaseChannel,
        evaluation: types.BaseChannel,
        blessing: types.BaseChannel,
        model_name: str,
        pipeline_name: str,
        gate_policy: str,
        tracking: str,
        run_params: str,
        run_id: Any,
        executor_class: type[RegistryGateExecutor] | None = None,
        model_card: str | None = None,
        baseline_model: types.BaseChannel | None = None,
        schema: types.BaseChannel | None = None,
        statistics: types.BaseChannel | None = None,
        anomalies: types.BaseChannel | None = None,
        clinical_evaluation: types.BaseChannel | None = None,
    ):
        """Builds the node.

        Args:
            examples: ExampleGen's examples (the test split's digest ties the verdict to its data).
            model: The Trainer's model.
            evaluation: The Evaluator's TFMA output.
            blessing: The Evaluator's blessing.
            model_name: Registered model name.
            pipeline_name: The MLflow experiment's name.
            gate_policy: The gate policy, as JSON.
            tracking: The tracking settings, as JSON (the binding's format).
            run_params: The run's configuration, as JSON, logged as the MLflow run's parameters.
            run_id: This pipeline run's id: a `RuntimeParameter` named `RUN_ID_PARAMETER`.
            executor_class: The binding's executor (a `RegistryGateExecutor` subclass).
            model_card: The config's side of the model card attached at registration (intended use,
                dataset, kind, input directory), as JSON; None attaches a card of computed facts only.
            baseline_model: The model the Evaluator re-scored as baseline, if any.
            schema: The curated schema, logged with the run.
            statistics: StatisticsGen's output, summarised in the run.
            anomalies: ExampleValidator's output, summarised in the run.
            clinical_evaluation: The ClinicalEvaluator's report, read by the gate's clinical criteria
                and logged with the run.
        """
        spec = RegistryGateSpec(
            examples=examples,
            model=model,
            evaluation=evaluation,
            blessing=blessing,
            baseline_model=baseline_model,
            schema=schema,
            statistics=statistics,
            anomalies=anomalies,
            clinical_evaluation=clinical_evaluation,
            model_name=model_name,
            pipeline_name=pipeline_name,
            gate_policy=gate_policy,
            tracking=tracking,
            run_params=run_params,
            run_id=run_id,
            model_card=model_card,
            verdict=types.Channel(type=RegistryVerdict),
        )
        custom = None if executor_class is None else executor_spec.ExecutorClassSpec(executor_class)
        super().__init__(spec=spec, custom_executor_spec=custom)
