"""The compiled Kubeflow Pipelines v2 spec: golden file, open-source KFP form, and TFX's entrypoint on it.

Refresh the golden file after an intended change with:
    DXPIPE_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/test_kubeflow.py

What open-source KFP 2.x needs that TFX's default (Vertex) form lacks, and what is checked here:
- Parameters declared with `parameterType` and passed only in `parameterValues`: TFX's container
  entrypoint reads `parameterValues` only when `--json_serialized_inputs_spec_args` is in its args. The
  compile step uses TFX's pipeline-spec 2.1 form, which writes both; a test runs the entrypoint on the
  compiled args with parameters only in `parameterValues`, and shows the 2.0 args fail that way.
- Resolver nodes (`outputArtifactQueries`) are Vertex ML Metadata queries; open-source KFP's backend
  compiler refuses a spec that has one ("resolver not implemented yet"). The compile step replaces them by
  an Importer of the baseline model bound at compile time (`--baseline-model`), or by no baseline.
The executed test (tests/test_kfp_image.py) runs the whole spec in the image.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipelines.kubeflow_runner import IMAGE_PROJECT_ROOT, KubeflowTarget, compile_pipeline
from pipelines.kubeflow_spec import IMPORTER_TASK, SpecError, bind_conditions, replace_resolvers

GOLDEN = Path(__file__).parent / "golden" / "kfp_wdbc.yaml"
TARGET = KubeflowTarget(
    image="example.org/dxpipe:test", pipeline_root="/mnt/p", data_root="/mnt/d", serving_root="/mnt/s"
)
CHAMPION = "/mnt/p/dxpipe-wdbc/run-1/Trainer/model"
REPO = Path(__file__).resolve().parent.parent


def _dag_tasks(spec: dict) -> dict:
    """The pipeline's tasks: with the exit handler, TFX nests them in the `tfx-dag` sub-DAG."""
    return spec["components"]["tfx-dag"]["dag"]["tasks"]


def _normalise(text: str) -> str:
    # The Trainer's cache key carries a digest of models/*.py; it changes with every model edit.
    return re.sub(r'(code_digest\\?"\s*:\s*\\?")[0-9a-f]+', r"\1<digest>", text)


@pytest.fixture(scope="module")
def compiled(tmp_path_factory, default_cfg):
    return compile_pipeline(default_cfg, tmp_path_factory.mktemp("kfp") / "wdbc.yaml", TARGET)


@pytest.fixture(scope="module")
def spec(compiled):
    return yaml.safe_load(compiled.read_text())


@pytest.fixture(scope="module")
def with_champion(tmp_path_factory, default_cfg):
    target = KubeflowTarget(**{**TARGET.__dict__, "baseline_model_uri": CHAMPION})
    path = compile_pipeline(default_cfg, tmp_path_factory.mktemp("kfp-champion") / "wdbc.yaml", target)
    return yaml.safe_load(path.read_text())


def test_compiled_spec_matches_golden(compiled):
    text = _normalise(compiled.read_text())
    if os.environ.get("DXPIPE_UPDATE_GOLDEN"):
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text(), "KFP spec changed; refresh the golden file if intended (see docstring)"


def test_make_image_tags_what_the_spec_names_by_default():
    from pipelines.kubeflow_runner import DEFAULT_IMAGE

    done = subprocess.run(
        ["make", "-n", "image", "CONTAINER_TOOL=podman"], cwd=REPO, capture_output=True, text=True, check=True
    )
    (build,) = [line for line in done.stdout.splitlines() if line.startswith("podman build")]
    assert f" -t {DEFAULT_IMAGE} " in build + " "
    assert "--build-arg BASE_IMAGE=python:3.10-slim" in build  # the official image unless told otherwise


def test_kfp_sdk_loads_the_yaml(compiled):
    from kfp import components

    component = components.load_component_from_file(str(compiled))
    tasks = component.pipeline_spec.components["tfx-dag"].dag.tasks
    assert component.name == "dxpipe-wdbc"
    assert set(tasks) >= {"CsvExampleGen", "DataGate", "Trainer", "Evaluator", "ServingPusher"}


def test_job_json_carries_the_same_spec(compiled, spec):
    job = json.loads(compiled.with_suffix(".json").read_text())
    assert job["pipelineSpec"] == spec
    assert job["runtimeConfig"]["gcsOutputDirectory"] == "/mnt/p/dxpipe-wdbc"


def test_wiring_survives_compilation(spec):
    tasks = _dag_tasks(spec)
    assert "DataGate" in tasks["Trainer"]["dependentTasks"]  # nothing trains on rejected data
    # Push only what the registry gate passed (its policy requires the Evaluator's blessing).
    assert "_RegistryGate.verdict" in tasks["ServingPusher"]["triggerPolicy"]["condition"]
    assert all(
        c["container"]["image"] == TARGET.image
        for c in spec["deploymentSpec"]["executors"].values()
        if "container" in c
    )
    pusher = tasks["ServingPusher"]["inputs"]["parameters"]["base_path"]["runtimeValue"]
    assert pusher == {"constant": "/mnt/s/wdbc-staging"}


def test_parameters_are_declared_the_modern_way(spec):
    assert spec["schemaVersion"] == "2.1.0"
    declared = [
        (name, key, definition)
        for name, component in spec["components"].items()
        for key, definition in component.get("inputDefinitions", {}).get("parameters", {}).items()
    ]
    assert declared, "the spec declares no parameters at all"
    legacy = [(name, key) for name, key, definition in declared if "type" in definition]
    assert not legacy, f"legacy `type` declarations (no parameterType): {legacy}"
    assert all("parameterType" in definition for _, _, definition in declared)
    for task in [*_dag_tasks(spec).values(), *spec["root"]["dag"]["tasks"].values()]:
        for value in task.get("inputs", {}).get("parameters", {}).values():
            assert "constantValue" not in value.get("runtimeValue", {}), "legacy constantValue form"


def test_every_container_passes_the_inputs_spec_flag(spec):
    containers = {
        k: e["container"] for k, e in spec["deploymentSpec"]["executors"].items() if "container" in e
    }
    assert len(containers) >= 8
    for label, container in containers.items():
        assert "--json_serialized_inputs_spec_args" in container["args"], label
        hook = container.get("lifecycle", {}).get("preCacheCheck")
        if hook:
            assert "--json_serialized_inputs_spec_args" in hook["args"], label


def test_no_resolver_nodes_and_no_baseline_without_a_champion(spec):
    executors = spec["deploymentSpec"]["executors"].values()
    assert not [e for e in executors if "resolver" in e], "open-source KFP refuses resolver nodes"
    evaluator = _dag_tasks(spec)["Evaluator"]
    assert "baseline_model" not in evaluator["inputs"]["artifacts"]
    assert spec["components"]["Evaluator"]["inputDefinitions"]["artifacts"]["baseline_model"]["isOptional"]
    assert IMPORTER_TASK not in _dag_tasks(spec)


def test_champion_is_imported_as_the_baseline(with_champion):
    tasks = _dag_tasks(with_champion)
    importer = tasks[IMPORTER_TASK]
    assert importer["inputs"]["parameters"]["uri"]["runtimeValue"]["constant"] == CHAMPION
    executor = with_champion["deploymentSpec"]["executors"][f"{IMPORTER_TASK}_executor"]["importer"]
    assert executor["typeSchema"]["instanceSchema"].startswith("title: tfx.Model\n")
    assert executor["artifactUri"] == {"runtimeParameter": "uri"}
    evaluator = tasks["Evaluator"]
    assert evaluator["inputs"]["artifacts"]["baseline_model"]["taskOutputArtifact"] == {
        "producerTask": IMPORTER_TASK,
        "outputArtifactKey": "artifact",
    }
    assert IMPORTER_TASK in evaluator["dependentTasks"]
    assert not [e for e in with_champion["deploymentSpec"]["executors"].values() if "resolver" in e]


def test_condition_names_an_input_the_task_declares(spec):
    pusher = _dag_tasks(spec)["ServingPusher"]
    keys = re.findall(r"inputs\.artifacts\['([^']+)'\]", pusher["triggerPolicy"]["condition"])
    # The registry gate's verdict, an input the task and its component declare.
    assert keys == ["_RegistryGate.verdict"]
    assert pusher["inputs"]["artifacts"]["_RegistryGate.verdict"]["taskOutputArtifact"] == {
        "producerTask": "RegistryGate",
        "outputArtifactKey": "verdict",
    }
    declared = spec["components"][pusher["componentRef"]["name"]]["inputDefinitions"]["artifacts"]
    assert "_RegistryGate.verdict" in declared


def _tiny_spec(consumer_schema: str = "title: tfx.Model\ntype: object\n") -> dict:
    """A two-task spec with a resolver feeding a consumer, as TFX writes one."""
    return {
        "components": {
            "R": {"executorLabel": "R_executor", "outputDefinitions": {"artifacts": {"model": {}}}},
            "C": {
                "executorLabel": "C_executor",
                "inputDefinitions": {
                    "artifacts": {"m": {"artifactType": {"instanceSchema": consumer_schema}}}
                },
                "outputDefinitions": {
                    "artifacts": {"out": {"artifactType": {"instanceSchema": "title: x\n"}}}
                },
            },
            "D": {"executorLabel": "D_executor", "inputDefinitions": {"parameters": {}}},
        },
        "deploymentSpec": {
            "executors": {
                "R_executor": {"resolver": {"outputArtifactQueries": {}}},
                "C_executor": {"container": {}},
                "D_executor": {"container": {}},
            }
        },
        "root": {
            "dag": {
                "tasks": {
                    "R": {"componentRef": {"name": "R"}},
                    "C": {
                        "componentRef": {"name": "C"},
                        "dependentTasks": ["R"],
                        "inputs": {
                            "artifacts": {
                                "m": {
                                    "taskOutputArtifact": {"producerTask": "R", "outputArtifactKey": "model"}
                                }
                            }
                        },
                    },
                    "D": {
                        "componentRef": {"name": "D"},
                        "triggerPolicy": {
                            "condition": "inputs.artifacts['_C.out'].artifacts[0].metadata['ok'] == 1.0"
                        },
                    },
                }
            }
        },
    }


def test_replace_resolvers_refuses_a_resolved_non_model():
    with pytest.raises(SpecError, match=r"task 'C' input 'm' comes from resolver 'R' but is not a tfx.Model"):
        replace_resolvers(_tiny_spec("title: tfx.Examples\n"), "/x")


def test_replace_resolvers_leaves_its_input_alone():
    original = _tiny_spec()
    replace_resolvers(original, "/x")
    assert "R" in original["root"]["dag"]["tasks"]


def test_condition_on_an_undeclared_output_gets_an_input():
    spec = bind_conditions(replace_resolvers(_tiny_spec(), None))
    d = spec["root"]["dag"]["tasks"]["D"]
    assert (
        d["triggerPolicy"]["condition"]
        == "inputs.artifacts['condition_C_out'].artifacts[0].metadata['ok'] == 1.0"
    )
    assert d["inputs"]["artifacts"]["condition_C_out"] == {
        "taskOutputArtifact": {"producerTask": "C", "outputArtifactKey": "out"}
    }
    assert d["dependentTasks"] == ["C"]
    assert "condition_C_out" in spec["components"]["D"]["inputDefinitions"]["artifacts"]


def test_condition_on_an_unknown_task_is_an_error():
    spec = _tiny_spec()
    spec["root"]["dag"]["tasks"]["D"]["triggerPolicy"]["condition"] = (
        "inputs.artifacts['_Gone.x'].artifacts[0]"
    )
    with pytest.raises(SpecError, match="names unknown task 'Gone'"):
        bind_conditions(spec)


def _entrypoint(args: list[str], executor_input: dict) -> subprocess.CompletedProcess:
    argv = [json.dumps(executor_input) if a == "{{$}}" else a for a in args]
    return subprocess.run(
        [sys.executable, "-m", "tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor", *argv],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _schema_gen_input(spec: dict, out: Path) -> dict:
    """ImportSchemaGen's executor input as KFP's launcher builds it: parameters only in parameterValues."""
    task = _dag_tasks(spec)["ImportSchemaGen"]
    values = {k: v["runtimeValue"]["constant"] for k, v in task["inputs"]["parameters"].items()}
    # The image holds the repository at IMAGE_PROJECT_ROOT; here it is this checkout.
    values["schema_file"] = values["schema_file"].replace(IMAGE_PROJECT_ROOT, str(REPO))
    schema_type = spec["components"]["ImportSchemaGen"]["outputDefinitions"]["artifacts"]["schema"]
    return {
        "inputs": {"parameterValues": values},
        "outputs": {
            "artifacts": {
                "schema": {
                    "artifacts": [
                        {"name": "a/1", "type": schema_type["artifactType"], "uri": str(out / "schema")}
                    ]
                }
            },
            "outputFile": str(out / "executor_output.json"),
        },
    }


@pytest.mark.slow
def test_entrypoint_reads_parameter_values_with_the_compiled_args(spec, tmp_path):
    args = spec["deploymentSpec"]["executors"]["ImportSchemaGen_executor"]["container"]["args"]
    done = _entrypoint(args, _schema_gen_input(spec, tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "schema" / "schema.pbtxt").read_text() == (
        REPO / "schemas/wdbc/schema.pbtxt"
    ).read_text()
    output = json.loads((tmp_path / "executor_output.json").read_text())
    assert output["artifacts"]["schema"]["artifacts"][0]["uri"] == str(tmp_path / "schema")


@pytest.mark.slow
def test_tfx_default_args_ignore_parameter_values(spec, tmp_path):
    """Without the flag (TFX's 2.0 form) the same executor input loses every parameter: what this fixes."""
    args = spec["deploymentSpec"]["executors"]["ImportSchemaGen_executor"]["container"]["args"]
    flag = args.index("--json_serialized_inputs_spec_args")
    legacy = args[:flag] + args[flag + 2 :]
    done = _entrypoint(legacy, _schema_gen_input(spec, tmp_path))
    assert done.returncode != 0
    assert "Schema file path is missing in exec_properties" in done.stderr
