"""A small test driver that executes a compiled KFP v2 pipeline spec, task by task, in its container image.

No Kubernetes here, so this plays the part of open-source KFP's driver and launcher, following their
executor-input contract and nothing more:

- tasks run in DAG order (`dependentTasks` plus the producers of their inputs);
- each container task runs the spec's own image, command and args, unmodified, with `{{$}}` replaced by
  the executor input: parameters ONLY in `inputs.parameterValues` (what KFP 2.x's launcher passes; no
  legacy `inputs.parameters`), input artifacts as the producers' `executor_output.json` described them,
  output artifacts with URIs under the pipeline root (`<root>/<run>/<task>/<key>`) and `outputs.outputFile`;
- an `importer` task yields an artifact at its URI, as KFP's importer launcher does;
- `triggerPolicy.condition` is evaluated over the task's resolved input artifacts (the subset of CEL that
  TFX writes: `inputs.artifacts['k'].artifacts[0].metadata['m'] == <number>`); a false condition skips the
  task and every task that consumes it;
- a `resolver` executor is refused, as open-source KFP's backend refuses it (the compile step removes them).

What it does not do (only a cluster verifies these): pods, KFP's ML Metadata, caching, `lifecycle`
pre-cache-check hooks (open-source KFP does not run them either), retries.

The container runtime is the `podman` CLI rather than `kfp.local`'s container handler: that handler needs
the `docker` Python SDK (not in the lock) and a Docker API socket, and its dispatcher cannot run a pipeline
(it refuses input artifacts); the one command per task below is the same `run image command args`.
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import time
from pathlib import Path

_CONDITION = re.compile(
    r"^\(?inputs\.artifacts\['([^']+)'\]\.artifacts\[0\]\.metadata\['([^']+)'\]\s*==\s*([-0-9.]+)\)?$"
)


class TaskFailed(RuntimeError):
    """A task's container exited non-zero (its log tail is in the message)."""


@dataclasses.dataclass
class TaskResult:
    """What one task did: `state` is SUCCEEDED, SKIPPED or FAILED; `seconds` its wall time."""

    state: str
    seconds: float = 0.0
    outputs: dict = dataclasses.field(default_factory=dict)
    executor_input: dict | None = None


@dataclasses.dataclass
class Driver:
    """Runs one compiled spec in `image` with podman.

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

    def order(self) -> list[str]:
        """Task names in an order where every task follows the tasks it depends on (stable by name)."""
        tasks = self.spec["root"]["dag"]["tasks"]
        deps = {name: set(_upstream(task)) for name, task in tasks.items()}
        done: list[str] = []
        while len(done) < len(tasks):
            ready = sorted(n for n in tasks if n not in done and deps[n] <= set(done))
            if not ready:
                raise ValueError(f"cycle among {sorted(set(tasks) - set(done))}")
            done.append(ready[0])
        return done

    def run(self, run_id: str) -> dict[str, TaskResult]:
        """Runs every task of the root DAG; raises TaskFailed at the first failing task.

        Returns:
            Task name -> its result, in execution order.
        """
        results: dict[str, TaskResult] = {}
        for name in self.order():
            task = self.spec["root"]["dag"]["tasks"][name]
            if any(results[up].state == "SKIPPED" for up in _upstream(task)):
                results[name] = TaskResult("SKIPPED")
                continue
            inputs = self._input_artifacts(task, results)
            if not _condition_holds(task.get("triggerPolicy", {}).get("condition"), inputs):
                results[name] = TaskResult("SKIPPED")
                continue
            started = time.monotonic()
            results[name] = self._execute(run_id, name, task, inputs)
            results[name].seconds = time.monotonic() - started
        return results

    def _component(self, task: dict) -> dict:
        return self.spec["components"][task["componentRef"]["name"]]

    def _executor(self, task: dict) -> dict:
        return self.spec["deploymentSpec"]["executors"][self._component(task)["executorLabel"]]

    def _input_artifacts(self, task: dict, results: dict[str, TaskResult]) -> dict:
        artifacts = {}
        for key, source in task.get("inputs", {}).get("artifacts", {}).items():
            ref = source["taskOutputArtifact"]
            artifacts[key] = {"artifacts": results[ref["producerTask"]].outputs[ref["outputArtifactKey"]]}
        return artifacts

    def _execute(self, run_id: str, name: str, task: dict, inputs: dict) -> TaskResult:
        executor = self._executor(task)
        parameters = {
            key: value["runtimeValue"]["constant"]
            for key, value in task.get("inputs", {}).get("parameters", {}).items()
        }
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
            for key, definition in self._component(task)
            .get("outputDefinitions", {})
            .get("artifacts", {})
            .items()
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
        for key, value in self.env.items():
            command += ["-e", f"{key}={value}"]
        command += [
            "--entrypoint",
            container["command"][0],
            container["image"],
            *container["command"][1:],
            *args,
        ]
        log = self.host_path(task_root) / "container.log"
        with log.open("wb") as out:
            code = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, check=False).returncode
        if code != 0:
            tail = log.read_text(errors="replace")[-4000:]
            raise TaskFailed(f"task {name} exited {code}; log {log}:\n{tail}")
        produced = json.loads(self.host_path(f"{task_root}/executor_output.json").read_text())
        result = {key: value["artifacts"] for key, value in outputs.items()}
        for key, value in produced.get("artifacts", {}).items():
            # The executor reports its outputs' final URIs and metadata (e.g. `blessed`); KFP records those.
            result[key] = [
                {**declared, **{k: v for k, v in reported.items() if k in ("uri", "metadata")}}
                for declared, reported in zip(result[key], value["artifacts"], strict=True)
            ]
        return TaskResult("SUCCEEDED", outputs=result, executor_input=executor_input)


def _upstream(task: dict) -> list[str]:
    producers = [
        source["taskOutputArtifact"]["producerTask"]
        for source in task.get("inputs", {}).get("artifacts", {}).values()
        if "taskOutputArtifact" in source
    ]
    return sorted(set(task.get("dependentTasks", [])) | set(producers))


def _condition_holds(condition: str | None, inputs: dict) -> bool:
    if not condition:
        return True
    match = _CONDITION.match(condition.strip())
    if not match:
        raise ValueError(f"condition {condition!r} is outside the CEL subset this driver evaluates")
    key, field, value = match.groups()
    if key not in inputs:
        # KFP's driver would fail the same way: the condition names an input the task does not have.
        raise ValueError(f"condition {condition!r} names input {key!r}; the task has {sorted(inputs)}")
    return float(inputs[key]["artifacts"][0].get("metadata", {}).get(field, "nan")) == float(value)
