"""The executed-spec driver's own semantics (tests/kfp_driver.py), without containers.

The driver is the instrument of tests/test_kfp_image.py, so its DAG rules are pinned here on small specs:
order, conditions, fail-fast, an exit handler after a failed nested DAG (TFX's `tfx-dag` shape) with
the final status KFP passes, and the resolver refusal. `_execute` (one podman run) is replaced by a
recorder; everything else is the driver's code.
"""

import pytest

from tests.kfp_driver import Driver, PipelineFailed, TaskError, TaskResult, condition_holds, order


def _task(component: str, deps=(), inputs=None, **extra) -> dict:
    return {
        "componentRef": {"name": component},
        "dependentTasks": list(deps),
        "inputs": inputs or {},
        **extra,
    }


def _spec(root_tasks: dict, components: dict) -> dict:
    executors = {f"{name}_executor": {"container": {}} for name, c in components.items() if "dag" not in c}
    for name, c in components.items():
        c.setdefault("executorLabel", f"{name}_executor")
    return {
        "components": components,
        "deploymentSpec": {"executors": executors},
        "root": {"dag": {"tasks": root_tasks}},
    }


class Recorder(Driver):
    """Runs nothing: records each container task and fails the ones named in `fail`."""

    def __init__(self, spec, fail=(), metadata=None):
        super().__init__(spec=spec, mounts={"/tmp": "/mnt"}, pipeline_root="/mnt/p")
        self.fail, self.metadata, self.calls = set(fail), metadata or {}, []

    def _execute(self, run_id, name, component, parameters, inputs):
        self.calls.append((name, parameters, inputs))
        if name.rsplit("/", 1)[-1] in self.fail:
            raise TaskError(f"task {name} exited 1")
        return TaskResult(
            "SUCCEEDED", outputs={"out": [{"uri": f"/mnt/p/{name}", "metadata": self.metadata}]}
        )


def _ref(producer: str) -> dict:
    return {
        "artifacts": {"x": {"taskOutputArtifact": {"producerTask": producer, "outputArtifactKey": "out"}}}
    }


def test_order_follows_dependencies_and_inputs():
    tasks = {"c": _task("C", inputs=_ref("b")), "b": _task("B", deps=["a"]), "a": _task("A")}
    assert order(tasks) == ["a", "b", "c"]
    with pytest.raises(ValueError, match="cycle"):
        order({"a": _task("A", deps=["b"]), "b": _task("B", deps=["a"])})
    with pytest.raises(ValueError, match="not in their DAG: \\['gone'\\]"):
        order({"a": _task("A", deps=["gone"])})


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ("(inputs.artifacts['x'].artifacts[0].metadata['blessed'] == 1.0)", True),
        ("inputs.artifacts['x'].artifacts[0].metadata['blessed'] == 0.0", False),
        ("inputs.artifacts['x'].artifacts[0].metadata['verdict'] == 'promote'", True),
        ("inputs.artifacts['x'].artifacts[0].metadata['verdict'] != 'promote' || true", True),
        ("!(inputs.artifacts['x'].artifacts[0].metadata['blessed'] == 1) && true", False),
        (None, True),
    ],
)
def test_condition_subset(condition, expected):
    inputs = {"x": {"artifacts": [{"metadata": {"blessed": 1, "verdict": "promote"}}]}}
    assert condition_holds(condition, inputs) is expected


def test_condition_refuses_unknown_inputs_and_other_cel():
    inputs = {"x": {"artifacts": [{"metadata": {}}]}}
    with pytest.raises(ValueError, match="names input 'y'; the task has \\['x'\\]"):
        condition_holds("inputs.artifacts['y'].artifacts[0].metadata['b'] == 1", inputs)
    with pytest.raises(ValueError, match="outside the CEL subset"):
        condition_holds("size(inputs.artifacts['x'].artifacts) > 0", inputs)


def test_parameters_only_in_parameter_values_and_artifacts_from_producers():
    spec = _spec(
        {
            "a": _task("A", inputs={"parameters": {"p": {"runtimeValue": {"constant": "v"}}}}),
            "b": _task("B", inputs=_ref("a")),
        },
        {"A": {}, "B": {}},
    )
    driver = Recorder(spec)
    driver.run("r")
    assert driver.calls[0][1] == {"p": "v"}
    assert driver.calls[1][2] == {"x": {"artifacts": [{"uri": "/mnt/p/a", "metadata": {}}]}}


def test_false_condition_skips_the_task_and_its_consumers():
    condition = {"condition": "inputs.artifacts['x'].artifacts[0].metadata['blessed'] == 1.0"}
    spec = _spec(
        {
            "a": _task("A"),
            "b": _task("B", inputs=_ref("a"), triggerPolicy=condition),
            "c": _task("C", deps=["b"]),
        },
        {"A": {}, "B": {}, "C": {}},
    )
    results = Recorder(spec, metadata={"blessed": 0}).run("r")
    assert [r.state for r in results.values()] == ["SUCCEEDED", "SKIPPED", "SKIPPED"]


def test_exit_handler_runs_after_a_failed_nested_dag_with_its_final_status():
    """TFX's shape with an exit handler: every task in `tfx-dag`, the handler beside it in the root."""
    inner = {"gate": _task("Gate"), "train": _task("Train", deps=["gate"])}
    handler = _task(
        "Exit",
        deps=["tfx-dag"],
        inputs={"parameters": {"final_status": {"taskFinalStatus": {"producerTask": "tfx-dag"}}}},
        triggerPolicy={"strategy": "ALL_UPSTREAM_TASKS_COMPLETED"},
    )
    spec = _spec(
        {"tfx-dag": _task("tfx-dag"), "exit": handler},
        {"tfx-dag": {"dag": {"tasks": inner}}, "Gate": {}, "Train": {}, "Exit": {}},
    )
    driver = Recorder(spec, fail={"gate"})
    with pytest.raises(PipelineFailed, match="task tfx-dag/gate exited 1") as failed:
        driver.run("run-7")
    states = {name: r.state for name, r in failed.value.results.items()}
    assert states == {
        "tfx-dag/gate": "FAILED",
        "tfx-dag/train": "NOT_RUN",
        "tfx-dag": "FAILED",
        "exit": "SUCCEEDED",
    }
    status = driver.calls[-1][1]["final_status"]
    assert status["state"] == "FAILED" and status["pipelineTaskName"] == "tfx-dag"
    assert status["pipelineJobResourceName"] == "run-7"


def test_resolver_executor_is_refused_like_open_source_kfp():
    spec = _spec({"r": _task("R")}, {"R": {}})
    spec["deploymentSpec"]["executors"]["R_executor"] = {"resolver": {"outputArtifactQueries": {}}}
    with pytest.raises(ValueError, match="not something open-source KFP runs"):
        Driver(spec=spec, mounts={}, pipeline_root="/p").run("r")


def test_pipeline_parameters_reach_nested_tasks_only_through_their_dag():
    """The run's `dxpipe_run_id`, passed into `tfx-dag` and to the exit handler, as the compiled spec does."""
    param = {"componentInputParameter": "dxpipe_run_id"}
    inner = {"gate": _task("Gate", inputs={"parameters": {"run_id": param}})}
    spec = _spec(
        {
            "tfx-dag": _task("tfx-dag", inputs={"parameters": {"dxpipe_run_id": param}}),
            "exit": _task("Exit", deps=["tfx-dag"], inputs={"parameters": {"run_id": param}}),
        },
        {"tfx-dag": {"dag": {"tasks": inner}}, "Gate": {}, "Exit": {}},
    )
    spec["root"]["inputDefinitions"] = {"parameters": {"dxpipe_run_id": {"parameterType": "STRING"}}}
    driver = Recorder(spec)
    driver.run("r", {"dxpipe_run_id": "run-42"})
    assert [(name, parameters) for name, parameters, _ in driver.calls] == [
        ("tfx-dag/gate", {"run_id": "run-42"}),
        ("exit", {"run_id": "run-42"}),
    ]
    with pytest.raises(ValueError, match="no value for pipeline parameter 'dxpipe_run_id'"):
        Recorder(spec).run("r")
    # A nested task sees only what its DAG was given, not the root's parameters.
    del spec["root"]["dag"]["tasks"]["tfx-dag"]["inputs"]["parameters"]
    with pytest.raises(ValueError, match="not an input of the enclosing DAG"):
        Recorder(spec).run("r", {"dxpipe_run_id": "run-42"})


def test_credentials_reach_the_container_through_the_environment_not_the_command_line(tmp_path):
    # A stand-in `podman` records its argv and the environment it was given, then fails the task.
    record = tmp_path / "record"
    fake = tmp_path / "podman"
    fake.write_text(
        f'#!/bin/sh\nprintf "%s\\n" "$@" > {record}.argv\nprintenv SECRET_PW > {record}.env\nexit 3\n'
    )
    fake.chmod(0o755)
    spec = _spec({"a": _task("A")}, {"A": {}})
    spec["deploymentSpec"]["executors"]["A_executor"]["container"] = {"image": "img", "command": ["python"]}
    driver = Driver(
        spec=spec,
        mounts={str(tmp_path / "vol"): "/mnt"},
        pipeline_root="/mnt/p",
        env={"SECRET_PW": "s3cret-value"},
        podman=str(fake),
    )
    with pytest.raises(TaskError, match="exited 3"):
        driver._execute("r", "a", spec["components"]["A"], {}, {})
    argv = (tmp_path / "record.argv").read_text().splitlines()
    assert "SECRET_PW" in argv and not any("s3cret-value" in arg for arg in argv)  # `-e NAME` only
    assert (tmp_path / "record.env").read_text().strip() == "s3cret-value"
