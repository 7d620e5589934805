"""models.config, batching parameters and server flags: parsed once, every invalid value refused with its fix."""

from __future__ import annotations

import pytest

from serving.config import (
    BatchingOptions,
    ModelConfig,
    VersionPolicy,
    parse_batching_parameters,
    parse_model_config_text,
)
from serving.errors import ModelConfigError, ServingError
from serving.server import build_parser, options_from_args


def test_full_models_config():
    text = """
    model_config_list {
      config {
        name: "a" base_path: "/m/a" model_platform: "tensorflow"
        model_version_policy { specific { versions: 3 versions: 1 } }
        version_labels { key: "stable" value: 1 }
        version_labels { key: "canary" value: 3 }
      }
      config { name: "b" base_path: "/m/b" model_version_policy { latest { num_versions: 2 } } }
      config { name: "c" base_path: "/m/c" model_version_policy { all {} } }
      config { name: "d" base_path: "/m/d" }
    }
    """
    a, b, c, d = parse_model_config_text(text)
    assert a == ModelConfig(
        "a", "/m/a", VersionPolicy("specific", versions=(1, 3)), {"stable": 1, "canary": 3}
    )
    assert b.policy == VersionPolicy("latest", num_versions=2)
    assert c.policy == VersionPolicy("all")
    assert d.policy == VersionPolicy("latest", num_versions=1)


def test_relative_base_paths_are_resolved_against_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (model,) = parse_model_config_text('model_config_list { config { name: "a" base_path: "models/a" } }')
    assert model.base_path == str(tmp_path / "models" / "a")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('model_config_list { config { nme: "a" } }', 'no field named "nme". Did you mean "name"?'),
        ('model_config_list { config { name: "a" base_pth: "/x" } }', 'Did you mean "base_path"?'),
        ("model_config_list {", "Expected"),
        ("", "configures no model"),
        (
            'model_config_list { config { name: "a" base_path: "/x" } config { name: "a" base_path: "/y" } }',
            "configured twice",
        ),
        (
            'model_config_list { config { name: "a" base_path: "/x" model_platform: "pytorch" } }',
            'only "tensorflow"',
        ),
        ('model_config_list { config { name: "" base_path: "/x" } }', "empty name"),
        ('model_config_list { config { name: "a/b" base_path: "/x" } }', "contains '/' or ':'"),
        ('model_config_list { config { name: "a" } }', "has no base_path"),
        (
            'model_config_list { config { name: "a" base_path: "/x" model_version_policy { specific {} } } }',
            "lists no versions",
        ),
        (
            'model_config_list { config { name: "a" base_path: "/x" version_labels { key: "s" value: 0 } } }',
            "use a positive number",
        ),
        ("custom_model_config { }", "custom_model_config is not supported"),
    ],
)
def test_invalid_models_config(text, message):
    with pytest.raises(ModelConfigError) as info:
        parse_model_config_text(text, "models.config")
    assert message in str(info.value)
    assert str(info.value).startswith("models.config")


def test_version_policy_selection():
    versions = [5, 1, 3]
    assert VersionPolicy().select(versions) == [5]
    assert VersionPolicy("latest", num_versions=2).select(versions) == [3, 5]
    assert VersionPolicy("specific", versions=(1, 4)).select(versions) == [1]
    assert VersionPolicy("all").select(versions) == [1, 3, 5]
    with pytest.raises(ModelConfigError, match="at least 1"):
        VersionPolicy("latest", num_versions=0)


def test_batching_parameters_file():
    text = """
    # TF Serving's format, as in serving/k8s/configmap.yaml
    max_batch_size { value: 32 }
    batch_timeout_micros { value: 500 }
    num_batch_threads { value: 3 }
    max_enqueued_batches { value: 10 }
    pad_variable_length_inputs: true
    allowed_batch_sizes: 8
    """
    options = parse_batching_parameters(text, "batching.config", BatchingOptions())
    assert options == BatchingOptions(True, 32, 500, 3, 10)
    with pytest.raises(ModelConfigError, match='Did you mean "max_batch_size"'):
        parse_batching_parameters("max_batch_sise { value: 3 }", "b", BatchingOptions())
    with pytest.raises(ModelConfigError, match="must be an integer"):
        parse_batching_parameters("max_batch_size { value: many }", "b", BatchingOptions())
    with pytest.raises(ModelConfigError, match="at least 1"):
        parse_batching_parameters("max_batch_size { value: 0 }", "b", BatchingOptions())


def test_server_flags_use_tensorflow_model_server_names(tmp_path):
    (tmp_path / "1").mkdir()
    batching = tmp_path / "batching.config"
    batching.write_text("max_batch_size { value: 16 }\n")
    args = build_parser().parse_args(
        [
            "--rest_api_port=9001",
            "--model_name=m",
            f"--model_base_path={tmp_path}",
            "--file_system_poll_wait_seconds=2",
            "--rest_api_timeout_in_ms=500",
            "--rest_api_enable_cors_support",
            f"--batching_parameters_file={batching}",
            "--enable_model_warmup=false",
            "--saved_model_tags=serve,gpu",
        ]
    )
    options = options_from_args(args)
    assert options.port == 9001
    assert options.host == "127.0.0.1"
    assert options.models == (ModelConfig("m", str(tmp_path)),)
    assert options.file_system_poll_seconds == 2
    assert options.timeout_ms == 500
    assert options.enable_cors is True
    assert options.batching.max_batch_size == 16 and options.batching.enabled
    assert options.warmup is False
    assert options.tags == ("serve", "gpu")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--enable_batching=maybe"])
    with pytest.raises(ServingError, match="not a port number"):
        options_from_args(
            build_parser().parse_args([f"--model_base_path={tmp_path}", "--rest_api_port=70000"])
        )
