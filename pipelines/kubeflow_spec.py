"""Makes TFX's compiled KFP v2 spec runnable on open-source Kubeflow Pipelines 2.x, not only on Vertex.

Pure functions on the spec as a dict (no TFX import), applied by `kubeflow_runner.compile_pipeline` after
TFX writes the spec with its pipeline-spec 2.1 switch (modern `parameterType` declarations, constants as
`runtimeValue.constant`, and `--json_serialized_inputs_spec_args`, the flag without which TFX's entrypoint
ignores `parameterValues`, the only form open-source KFP's launcher passes). Two things remain Vertex-only
in what TFX writes, and are rewritten here:

- **Resolver nodes** (`executors.*.resolver.outputArtifactQueries`) are Vertex ML Metadata queries.
  Open-source KFP's backend compiler refuses the whole pipeline at submission
  (`argocompiler.Resolver`: "resolver not implemented yet", kubeflow/pipelines
  `backend/src/v2/compiler/argocompiler/argo.go`). Each resolver chain is replaced by an **Importer** of
  the baseline model bound at compile time (the registry's champion, `dxpipe compile --baseline-model`),
  which open-source KFP runs; without one, the consumer's input is dropped and declared optional, which
  is what a resolver that finds nothing gives the Evaluator (no baseline: absolute thresholds only).
- **Trigger conditions** name artifacts as `inputs.artifacts['_<Producer>.<key>']`, a key TFX never
  declares among the task's inputs; KFP's driver evaluates the condition over the task's resolved inputs,
  so the condition is rewritten to the input that carries that producer's output (added if none does).
"""

from __future__ import annotations

import copy
import re
from typing import Any

IMPORTER_TASK = "baseline_model_importer"
_MODEL_SCHEMA = "title: tfx.Model\ntype: object\n"
_CONDITION_REF = re.compile(r"inputs\.artifacts\['_([^'.]+)\.([^']+)'\]")


class SpecError(ValueError):
    """The compiled spec has a shape this post-processing does not know how to make portable."""


def _executor_label(spec: dict, task: dict) -> str:
    return spec["components"][task["componentRef"]["name"]].get("executorLabel", "")


def dags(spec: dict) -> list[dict]:
    """The spec's DAGs: the root's and each DAG component's.

    TFX puts every task in a `tfx-dag` component when the pipeline has an exit handler, which then runs
    beside it in the root DAG.
    """
    nested = [component["dag"] for _, component in sorted(spec["components"].items()) if "dag" in component]
    return [spec["root"]["dag"], *nested]


def _resolver_tasks(spec: dict, dag: dict) -> set[str]:
    executors = spec["deploymentSpec"]["executors"]
    return {
        name
        for name, task in dag["tasks"].items()
        if "resolver" in executors.get(_executor_label(spec, task), {})
    }


def _add_importer(spec: dict, dag: dict, uri: str) -> None:
    """Adds a KFP importer task of a tfx.Model at `uri` (the form the KFP SDK's `dsl.importer` compiles to)."""
    component = IMPORTER_TASK
    spec["components"][component] = {
        "executorLabel": f"{component}_executor",
        "inputDefinitions": {"parameters": {"uri": {"parameterType": "STRING"}}},
        "outputDefinitions": {"artifacts": {"artifact": {"artifactType": {"instanceSchema": _MODEL_SCHEMA}}}},
    }
    spec["deploymentSpec"]["executors"][f"{component}_executor"] = {
        "importer": {
            "artifactUri": {"runtimeParameter": "uri"},
            "typeSchema": {"instanceSchema": _MODEL_SCHEMA},
            # reimport false: every run names the same champion artifact, so the Evaluator's cache key
            # stays the same while the champion does (as the local runner's Importer).
            "reimport": False,
        }
    }
    dag["tasks"][IMPORTER_TASK] = {
        "componentRef": {"name": component},
        "inputs": {"parameters": {"uri": {"runtimeValue": {"constant": uri}}}},
        "taskInfo": {"name": IMPORTER_TASK},
    }


def replace_resolvers(spec: dict, baseline_model_uri: str | None) -> dict:
    """Returns the spec with its resolver nodes replaced by an Importer of `baseline_model_uri` (or none).

    Args:
        spec: A KFP pipeline spec as TFX writes it (not modified).
        baseline_model_uri: URI of the Model artifact to compare against (its `Format-Serving/` holds the
            SavedModel), as the pods see it; None for no baseline.

    Returns:
        A new spec without resolver tasks, components or executors.

    Raises:
        SpecError: If a resolver's output feeds anything but a tfx.Model input.
    """
    spec = copy.deepcopy(spec)
    for dag in dags(spec):
        _replace_in_dag(spec, dag, baseline_model_uri)
    return spec


def _replace_in_dag(spec: dict, dag: dict, baseline_model_uri: str | None) -> None:
    resolvers = _resolver_tasks(spec, dag)
    if not resolvers:
        return
    tasks = dag["tasks"]
    if baseline_model_uri:
        _add_importer(spec, dag, baseline_model_uri)
    for name, task in tasks.items():
        if name in resolvers:
            continue
        artifacts = task.get("inputs", {}).get("artifacts", {})
        for key, source in list(artifacts.items()):
            producer = source.get("taskOutputArtifact", {}).get("producerTask")
            if producer not in resolvers:
                continue
            definition = spec["components"][task["componentRef"]["name"]]["inputDefinitions"]["artifacts"][
                key
            ]
            if "title: tfx.Model\n" not in definition["artifactType"].get("instanceSchema", ""):
                raise SpecError(
                    f"task {name!r} input {key!r} comes from resolver {producer!r} but is not a tfx.Model; "
                    "only a model baseline can be bound at compile time"
                )
            if baseline_model_uri:
                artifacts[key] = {
                    "taskOutputArtifact": {"producerTask": IMPORTER_TASK, "outputArtifactKey": "artifact"}
                }
            else:
                del artifacts[key]
                definition["isOptional"] = True
        if "dependentTasks" in task:
            deps = [d for d in task["dependentTasks"] if d not in resolvers]
            if baseline_model_uri and len(deps) < len(task["dependentTasks"]):
                deps.append(IMPORTER_TASK)
            task["dependentTasks"] = sorted(set(deps))
    for name in resolvers:
        component = tasks.pop(name)["componentRef"]["name"]
        label = spec["components"].pop(component).get("executorLabel")
        spec["deploymentSpec"]["executors"].pop(label, None)


def bind_conditions(spec: dict) -> dict:
    """Returns the spec with each trigger condition naming an input its task really declares.

    Raises:
        SpecError: If a condition names a producer that is not a task of the DAG.
    """
    spec = copy.deepcopy(spec)
    for dag in dags(spec):
        _bind_in_dag(spec, dag["tasks"])
    return spec


def _bind_in_dag(spec: dict, tasks: dict) -> None:
    for name, task in tasks.items():
        condition = task.get("triggerPolicy", {}).get("condition")
        if not condition:
            continue

        def to_input(match: re.Match, task: dict = task, name: str = name, condition: str = condition) -> str:
            producer, key = match.group(1), match.group(2)
            if producer not in tasks:
                raise SpecError(f"task {name!r}: condition {condition!r} names unknown task {producer!r}")
            artifacts = task.setdefault("inputs", {}).setdefault("artifacts", {})
            wanted = {"producerTask": producer, "outputArtifactKey": key}
            for input_key, source in sorted(artifacts.items()):
                if source.get("taskOutputArtifact") == wanted:
                    return f"inputs.artifacts['{input_key}']"
            # No input carries it: declare one (the executor ignores inputs its spec does not name).
            input_key = f"condition_{producer}_{key}"
            artifacts[input_key] = {"taskOutputArtifact": wanted}
            produced = spec["components"][tasks[producer]["componentRef"]["name"]]["outputDefinitions"]
            definitions = spec["components"][task["componentRef"]["name"]].setdefault("inputDefinitions", {})
            definitions.setdefault("artifacts", {})[input_key] = copy.deepcopy(produced["artifacts"][key])
            if producer not in task.setdefault("dependentTasks", []):
                task["dependentTasks"] = sorted([*task["dependentTasks"], producer])
            return f"inputs.artifacts['{input_key}']"

        task["triggerPolicy"]["condition"] = _CONDITION_REF.sub(to_input, condition)


def for_open_source_kfp(spec: dict[str, Any], baseline_model_uri: str | None = None) -> dict[str, Any]:
    """Both rewrites (see the module docstring); the input is not modified."""
    return bind_conditions(replace_resolvers(spec, baseline_model_uri))
