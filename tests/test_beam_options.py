"""Beam cluster settings come from the config: validated at load and passed by both runners as Beam args."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import yaml

from pipelines.config import DEFAULT_CONFIG, BeamConfig, config_from_dict
from pipelines.errors import ConfigError

DATAFLOW = {
    "runner": "DataflowRunner",
    "options": {
        "project": "clinic-ml",
        "region": "europe-west4",
        "temp_location": "gs://clinic-ml/tmp",
        "max_num_workers": 8,
        "experiments": ["use_runner_v2", "no_use_multiple_sdk_containers"],
        "save_main_session": True,
    },
}


def _with_beam(beam: dict):
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw["beam"] = copy.deepcopy(beam)
    return config_from_dict(raw)


def test_the_default_is_the_direct_runner_in_memory():
    assert _with_beam({}).beam.args() == [
        "--runner=DirectRunner",
        "--direct_running_mode=in_memory",
        "--direct_num_workers=1",
    ]


def test_cluster_options_become_beam_flags_without_the_direct_runner_flags():
    args = _with_beam(DATAFLOW).beam.args()
    assert args == [
        "--runner=DataflowRunner",
        "--experiments=use_runner_v2",
        "--experiments=no_use_multiple_sdk_containers",
        "--max_num_workers=8",
        "--project=clinic-ml",
        "--region=europe-west4",
        "--save_main_session",
        "--temp_location=gs://clinic-ml/tmp",
    ]
    # Beam's own parser reads them back as the values written in the config.
    from apache_beam.options.pipeline_options import PipelineOptions

    parsed = PipelineOptions(args).get_all_options()
    assert parsed["project"] == "clinic-ml" and parsed["max_num_workers"] == 8
    assert parsed["experiments"] == ["use_runner_v2", "no_use_multiple_sdk_containers"]


@pytest.mark.parametrize(
    ("beam", "match"),
    [
        (
            {"runner": "FlinkRuner"},
            r"beam.runner is 'FlinkRuner'; use one of .*\(did you mean 'FlinkRunner'\?\)",
        ),
        ({"runner": "FlinkRunner"}, r"beam.options.flink_master is required with beam.runner FlinkRunner"),
        ({"runner": "SparkRunner", "options": {}}, r"beam.options.spark_master_url is required"),
        ({"runner": "PortableRunner"}, r"beam.options.job_endpoint is required"),
        (
            {"runner": "DataflowRunner", "options": {"project": "p", "region": "r"}},
            r"beam.options.temp_location is required with beam.runner DataflowRunner",
        ),
        (
            {"runner": "FlinkRunner", "options": {"flink_master": "flink:8081", "paralelism": 4}},
            r"beam.options.paralelism \(value 4\) is not a Beam pipeline option \(did you mean 'parallelism'\?\)",
        ),
        (
            {**DATAFLOW, "options": {**DATAFLOW["options"], "max_num_workers": "many"}},
            r"Beam refused .*--max_num_workers=many.*invalid int value: 'many'",
        ),
        ({"options": {"runner": "DataflowRunner"}}, r"beam.options.runner is set twice; set `beam.runner`"),
        ({"options": {"save_main_session": False}}, r"beam.options.save_main_session is false; remove it"),
        ({"options": {"num_workers": [1, 2]}}, r"beam.options.num_workers"),
        ({"direct_running_mode": "multiprocessing"}, r"did you mean 'multi_processing'"),
        ({"direct_num_workers": 0}, r"beam.direct_num_workers is 0; it must be at least 1"),
        ({"option": {}}, r"unknown key 'beam.option' \(did you mean 'options'\?\)"),
    ],
    ids=[
        "runner-typo",
        "flink-needs-master",
        "spark-needs-master",
        "portable-needs-endpoint",
        "dataflow-needs-temp-location",
        "unknown-option",
        "value-beam-refuses",
        "set-twice",
        "false-flag",
        "list-of-numbers",
        "mode-typo",
        "no-workers",
        "section-typo",
    ],
)
def test_bad_beam_settings_fail_at_load(beam, match):
    with pytest.raises(ConfigError, match=match):
        _with_beam(beam)


def test_replacing_the_beam_section_validates_again():
    with pytest.raises(ConfigError, match="flink_master is required"):
        BeamConfig(runner="FlinkRunner")


def test_the_local_runner_passes_the_configured_beam_args(tmp_path, default_cfg):
    from pipelines import local_runner

    beam = _with_beam(
        {"runner": "FlinkRunner", "options": {"flink_master": "flink:8081", "parallelism": 4}}
    ).beam
    cfg = dataclasses.replace(default_cfg, workdir=str(tmp_path / "work"), beam=beam)
    pipeline, _digest = local_runner.build(cfg, local_runner.Paths.for_config(cfg))
    assert pipeline.beam_pipeline_args == [
        "--runner=FlinkRunner",
        "--flink_master=flink:8081",
        "--parallelism=4",
    ]


def test_the_compiled_kubeflow_spec_carries_the_cluster_options(tmp_path, default_cfg):
    from pipelines.kubeflow_runner import KubeflowTarget, compile_pipeline

    cfg = dataclasses.replace(default_cfg, beam=_with_beam(DATAFLOW).beam)
    spec = yaml.safe_load(compile_pipeline(cfg, tmp_path / "wdbc.yaml", KubeflowTarget()).read_text())
    executors = spec["deploymentSpec"]["executors"]
    beam_executors = {
        name: executor["container"]["args"]
        for name, executor in executors.items()
        if "container" in executor and "--runner=DataflowRunner" in executor["container"]["args"]
    }
    # Every Beam-based component (ExampleGen, StatisticsGen, ExampleValidator, Evaluator) gets them.
    assert len(beam_executors) >= 4, sorted(executors)
    for args in beam_executors.values():
        assert {"--project=clinic-ml", "--region=europe-west4", "--temp_location=gs://clinic-ml/tmp"} <= set(
            args
        )
        assert not any(arg.startswith("--direct_") for arg in args)


@pytest.mark.parametrize("command", [["run"], ["compile", "--output", "kfp/wdbc.yaml"]])
def test_the_installed_cli_reports_a_bad_beam_option_in_one_line(tmp_path, command):
    import re
    import subprocess
    import sys
    from pathlib import Path

    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    raw["workdir"] = "work"
    raw["beam"] = {"runner": "FlinkRunner", "options": {"flink_master": "flink:8081", "paralelism": 4}}
    config = tmp_path / "cluster.yaml"
    config.write_text(yaml.safe_dump(raw))
    dxpipe = str(Path(sys.executable).parent / "dxpipe")
    done = subprocess.run(
        [dxpipe, *command, "--config", str(config)], capture_output=True, text=True, cwd=tmp_path, timeout=300
    )
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dxpipe: error: "), done.stderr
    assert re.search(r"beam.options.paralelism \(value 4\) .*did you mean 'parallelism'", lines[0]), lines[0]
    assert not (tmp_path / "work").exists() and not (tmp_path / "kfp").exists()  # stopped before anything
