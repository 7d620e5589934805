"""A small test driver that executes a compiled KFP v2 pipeline spec, task by task, in its container image.

No Kubernetes here, so this plays the part of open-source KFP's driver and launcher, following their
executor-input contract and nothing more:

- tasks run in DAG order (`dependentTasks` plus the producers of their inputs); a task whose component is
  a DAG (TFX's `tfx-dag` when the pipeline has an exit handler) runs its own tasks the same way;
- each container task runs the spec's own image, command and args, unmodified, with `{{$}}` replaced by
  the executor input: parameters ONLY in `inputs.parameterValues` (what KFP 2.x's launcher passes; no
  legacy `inputs.parameters`), input artifacts as the producers' `executor_output.json` described them,
  output artifacts with URIs under the pipeline root (`<root>/<run>/<task>/<key>`) and `outputs.outputFile`;
- an `importer` task yields an artifact at its URI, as KFP's importer launcher does;
- `triggerPolicy.condition` is evaluated over the task's resolved input artifacts (the subset of CEL that
  TFX's `Cond` writes: artifact metadata compared with literals, `&&`, `||`, `!`); a false condition skips
  the task and every task that consumes it;
- in a DAG, the first failure stops the tasks not yet started (Argo's fail-fast) and fails the DAG; a task
  with `strategy: ALL_UPSTREAM_TASKS_COMPLETED` (an exit handler) runs anyway, and a `taskFinalStatus`
  parameter receives the producer's final status as a struct, as open-source KFP's driver builds it
  (`resolveTaskFinalStatus`: state, pipelineTaskName, pipelineJobResourceName, error);
- a `resolver` executor is refused, as open-source KFP's backend refuses it (the compile step removes them).

What it does not do (only a cluster verifies these): pods, KFP's ML Metadata, caching, `lifecycle`
pre-cache-check hooks (open-source KFP does not run them either), retries, loops, pipeline parameters.

The container runtime is the `podman` CLI rather than `kfp.local`'s container handler: that handler needs
the `docker` Python SDK (not in the lock) and a Docker API socket, and its dispatcher cannot run a pipeline
(it refuses input artifacts); the one command per task below is the same `run image command args`.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

_ARTIFACT_REF = re.compile(r"inputs\.artifacts\['([^']+)'\]\.artifacts\[0\]\.metadata\['([^']+)'\]")
_ALLOWED = (ast.Expression, ast.BoolOp, ast.And, ast.Or, ast.UnaryOp, ast.Not, ast.Compare, ast.Constant)
_COMPARE = {
    ast.Eq: lambda a, b: a == b,
    ast.NotEq: lambda a, b: a != b,
    ast.Lt: lambda a, b: a < b,
    ast.LtE: lambda a, b: a <= b,
    ast.Gt: lambda a, b: a > b,
    ast.GtE: lambda a, b: a >= b,
}
_ALLOWED += (*_COMPARE, ast.Load)


class PipelineFailed(RuntimeError):
    """A task failed; `results` holds every task's result (the failed one's log tail is in the message)."""

    def __init__(self, message: str, results: dict[str, TaskResult]):
        super().__init__(message)
        self.results = results


@dataclasses.dataclass
class TaskResult:
    """What one task did: `state` is SUCCEEDED, SKIPPED, FAILED or NOT_RUN; `seconds` its wall time."""

    state: str
    seconds: float = 0.0
    outputs: dict = dataclasses.field(default_factory=dict)
    executor_input: dict | None = None
    error: str = ""


@dataclasses.dataclass
class Driver:
    """Runs one compiled spec in its image with podman.

    Attributes:
        spec: The pipeline spec (the YAML `dxpipe compile` writes, loaded).
        mounts: Host directory -> path in the container (the pipeline root, data and serving volumes);
            paths in the spec are container paths.
        pipeline_root: The pipeline root as the containers see it (one of the mounts).
        env: Environment for every container (e.g. MLFLOW_TRACKING_URI of the host's server).
        podman: The container CLI.
    """

    spec: dict
    mounts: dict[str, str]
    pipeline_root: str
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    podman: str = "podman"

    def host_path(self, container_path: str) -> Path:
        """The host path of a path inside a mounted volume."""
        for host, inside in self.mounts.items():
            if container_path == inside or container_path.startswith(inside.rstrip("/") + "/"):
                return Path(host) / container_path[len(inside) :].lstrip("/")
        raise ValueError(f"{container_path} is not under any mount {sorted(self.mounts.values())}")

    def run(self, run_id: str, parameters: dict[str, Any] | None = None) -> dict[str, TaskResult]:
        """Runs the root DAG.

        Args:
            run_id: The run's name (its pipeline-root folder, the final status's job name).
            parameters: The run's pipeline parameters, as a KFP submitter gives them.

        Returns:
            Task name -> its result, in execution order; a nested DAG's tasks are named `dag/task`.

        Raises:
            PipelineFailed: If any task failed (after the exit handler, if any, has run).
            ValueError: If the run gives no value for a declared parameter without a default (KFP
                refuses such a submission).
        """
        parameters = dict(parameters or {})
        declared = self.spec["root"].get("inputDefinitions", {}).get("parameters", {})
        for name, definition in declared.items():
            if name not in parameters:
                if "defaultValue" not in definition:
                    raise ValueError(f"the run gives no value for pipeline parameter {name!r}")
                parameters[name] = definition["defaultValue"]
        results: dict[str, TaskResult] = {}
        self._run_dag(self.spec["root"]["dag"], run_id, "", results, parameters)
        failed = [name for name, r in results.items() if r.state == "FAILED" and r.error]
        if failed:
            raise PipelineFailed("\n".join(results[n].error for n in failed), results)
        return results

    def _run_dag(
        self, dag: dict, run_id: str, prefix: str, results: dict[str, TaskResult], scope: dict[str, Any]
    ) -> str:
        """Runs a DAG's tasks into `results` (keys prefixed); returns the DAG's final state."""
        tasks = dag["tasks"]
        local: dict[str, TaskResult] = {}
        failed = False
        for name in order(tasks):
            task = tasks[name]
            upstream = _upstream(task)
            all_completed = task.get("triggerPolicy", {}).get("strategy") == "ALL_UPSTREAM_TASKS_COMPLETED"
            if failed and not all_completed:
                local[name] = TaskResult("NOT_RUN")
            elif not all_completed and any(local[u].state in ("SKIPPED", "NOT_RUN") for u in upstream):
                local[name] = TaskResult("SKIPPED")
            else:
                local[name] = self._run_task(run_id, prefix, name, task, local, results, scope)
            results[prefix + name] = local[name]
            failed = failed or local[name].state == "FAILED"
        return "FAILED" if failed else "SUCCEEDED"

    def _run_task(
        self,
        run_id: str,
        prefix: str,
        name: str,
        task: dict,
        local: dict,
        results: dict[str, TaskResult],
        scope: dict[str, Any],
    ) -> TaskResult:
        component = self.spec["components"][task["componentRef"]["name"]]
        inputs = {
            key: {
                "artifacts": local[s["taskOutputArtifact"]["producerTask"]].outputs[
                    s["taskOutputArtifact"]["outputArtifactKey"]
                ]
            }
            for key, s in task.get("inputs", {}).get("artifacts", {}).items()
        }
        if not condition_holds(task.get("triggerPolicy", {}).get("condition"), inputs):
            return TaskResult("SKIPPED")
        started = time.monotonic()
        parameters = {
            key: self._parameter(run_id, value, local, scope)
            for key, value in task.get("inputs", {}).get("parameters", {}).items()
        }
        if "dag" in component:
            # A sub-DAG sees only the parameters its task passes it, as KFP scopes them.
            result = TaskResult(
                self._run_dag(component["dag"], run_id, f"{prefix}{name}/", results, parameters)
            )
        else:
            try:
                result = self._execute(run_id, prefix + name, component, parameters, inputs)
            except TaskError as error:
                result = TaskResult("FAILED", error=str(error))
        result.seconds = time.monotonic() - started
        return result

    def _parameter(self, run_id: str, value: dict, local: dict, scope: dict[str, Any]):
        if "runtimeValue" in value:
            return value["runtimeValue"]["constant"]
        if "componentInputParameter" in value:
            name = value["componentInputParameter"]
            if name not in scope:
                raise ValueError(f"parameter {name!r} is not an input of the enclosing DAG")
            return scope[name]
        if "taskFinalStatus" in value:
            producer = value["taskFinalStatus"]["producerTask"]
            state = local[producer].state
            return {
                "state": state,
                "pipelineTaskName": producer,
                "pipelineJobResourceName": run_id,
                "error": {"message": "" if state == "SUCCEEDED" else f"{producer} {state}", "code": 0},
            }
        raise ValueError(
            f"parameter {value} is not a constant, a DAG input or a task's final status (not supported here)"
        )

    def _execute(self, run_id: str, name: str, component: dict, parameters: dict, inputs: dict) -> TaskResult:
        executor = self.spec["deploymentSpec"]["executors"][component["executorLabel"]]
        if "importer" in executor:
            spec = executor["importer"]
            uri = parameters[spec["artifactUri"]["runtimeParameter"]]
            artifact = {
                "name": f"{run_id}/{name}/artifact",
                "type": spec["typeSchema"],
                "uri": uri,
                "metadata": {},
            }
            return TaskResult("SUCCEEDED", outputs={"artifact": [artifact]})
        if "container" not in executor:
            raise ValueError(
                f"task {name}: executor {sorted(executor)} is not something open-source KFP runs"
            )
        task_root = f"{self.pipeline_root.rstrip('/')}/{run_id}/{name}"
        declared = component.get("outputDefinitions", {}).get("artifacts", {})
        outputs = {
            key: {
                "artifacts": [
                    {
                        "name": f"{run_id}/{name}/{key}",
                        "type": definition["artifactType"],
                        "uri": f"{task_root}/{key}",
                        "metadata": {},
                    }
                ]
            }
            for key, definition in declared.items()
        }
        executor_input = {
            "inputs": {"parameterValues": parameters, "artifacts": inputs},
            "outputs": {"artifacts": outputs, "outputFile": f"{task_root}/executor_output.json"},
        }
        self.host_path(task_root).mkdir(parents=True, exist_ok=True)
        container = executor["container"]
        args = [json.dumps(executor_input) if a == "{{$}}" else a for a in container.get("args", [])]
        command = [self.podman, "run", "--rm", "--network", "host"]
        for host, inside in self.mounts.items():
            command += ["-v", f"{host}:{inside}"]
        # `-e NAME` alone: podman copies the value from its own environment, so a credential (the service
        # account's MLflow password) never appears on a command line that `ps` shows every local user.
        for key in self.env:
            command += ["-e", key]
        command += [
            "--entrypoint",
            container["command"][0],
            container["image"],
            *container["command"][1:],
            *args,
        ]
        log = self.host_path(task_root) / "container.log"
        with log.open("wb") as out:
            code = subprocess.run(
                command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **self.env}, check=False
            ).returncode
        if code != 0:
            tail = log.read_text(errors="replace")[-4000:]
            raise TaskError(f"task {name} exited {code}; log {log}:\n{tail}")
        produced = json.loads(self.host_path(f"{task_root}/executor_output.json").read_text())
        result = {key: value["artifacts"] for key, value in outputs.items()}
        for key, value in produced.get("artifacts", {}).items():
            # The executor reports its outputs' final URIs and metadata (e.g. `blessed`); KFP records those.
            result[key] = [
                {**mine, **{k: v for k, v in reported.items() if k in ("uri", "metadata")}}
                for mine, reported in zip(result[key], value["artifacts"], strict=True)
            ]
        return TaskResult("SUCCEEDED", outputs=result, executor_input=executor_input)


class TaskError(RuntimeError):
    """A task's container exited non-zero."""


def order(tasks: dict) -> list[str]:
    """Task names so that each follows the tasks it depends on (ties broken by name, for a stable order)."""
    deps = {name: set(_upstream(task)) for name, task in tasks.items()}
    unknown = {d for ds in deps.values() for d in ds} - set(tasks)
    if unknown:
        raise ValueError(f"tasks depend on tasks not in their DAG: {sorted(unknown)}")
    done: list[str] = []
    while len(done) < len(tasks):
        ready = sorted(n for n in tasks if n not in done and deps[n] <= set(done))
        if not ready:
            raise ValueError(f"cycle among {sorted(set(tasks) - set(done))}")
        done.append(ready[0])
    return done


def _upstream(task: dict) -> list[str]:
    producers = [
        source["taskOutputArtifact"]["producerTask"]
        for source in task.get("inputs", {}).get("artifacts", {}).values()
        if "taskOutputArtifact" in source
    ]
    return sorted(set(task.get("dependentTasks", [])) | set(producers))


def condition_holds(condition: str | None, inputs: dict) -> bool:
    """Evaluates the CEL subset TFX's `Cond` compiles to over the task's input artifacts.

    Raises:
        ValueError: If the condition names an input the task does not have (KFP's driver fails the same
            way) or uses CEL beyond metadata comparisons with literals, `&&`, `||` and `!`.
    """
    if not condition:
        return True

    values: dict[str, object] = {}

    def placeholder(match: re.Match) -> str:
        key, field = match.groups()
        if key not in inputs:
            raise ValueError(f"condition {condition!r} names input {key!r}; the task has {sorted(inputs)}")
        name = f"_v{len(values)}"
        values[name] = inputs[key]["artifacts"][0].get("metadata", {}).get(field)
        return name

    # CEL and Python share literals and comparisons; only the logical operators and booleans differ.
    python = _ARTIFACT_REF.sub(placeholder, condition)
    python = re.sub(r"\btrue\b", "True", re.sub(r"\bfalse\b", "False", python))
    python = re.sub(r"!(?!=)", " not ", python.replace("&&", " and ").replace("||", " or "))
    tree = ast.parse(python.strip(), mode="eval")
    for node in ast.walk(tree):
        if not isinstance(node, _ALLOWED) and not (isinstance(node, ast.Name) and node.id in values):
            raise ValueError(f"condition {condition!r} is outside the CEL subset this driver evaluates")
    return bool(_evaluate(tree.body, values))


def _evaluate(node: ast.AST, values: dict):
    """Evaluates the checked tree (names are the artifact values; nothing else can be called or looked up)."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        return values[node.id]
    if isinstance(node, ast.UnaryOp):
        return not _evaluate(node.operand, values)
    if isinstance(node, ast.BoolOp):
        parts = [_evaluate(v, values) for v in node.values]
        return all(parts) if isinstance(node.op, ast.And) else any(parts)
    left = _evaluate(node.left, values)
    for op, right_node in zip(node.ops, node.comparators, strict=True):
        right = _evaluate(right_node, values)
        if not _COMPARE[type(op)](left, right):
            return False
        left = right
    return True
