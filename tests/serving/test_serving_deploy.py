"""The Kubernetes manifests agree with each other and with the code: ports, paths, names, file formats."""

from __future__ import annotations

import importlib.metadata
import posixpath

import pytest
import yaml

from serving import deploy
from serving.config import BatchingOptions, parse_batching_parameters, parse_model_config_text
from serving.rest_api import parse_route


@pytest.fixture(scope="module")
def objects() -> dict[str, dict]:
    return {obj["kind"]: obj for obj in deploy.load_manifests()}


def container(objects) -> dict:
    (only,) = objects["Deployment"]["spec"]["template"]["spec"]["containers"]
    return only


def flags(objects) -> dict[str, str]:
    out = {}
    for arg in container(objects)["args"]:
        name, _, value = arg.partition("=")
        out[name] = value
    return out


def test_kustomization_lists_every_manifest():
    kustomization = yaml.safe_load((deploy.MANIFEST_DIR / "kustomization.yaml").read_text())
    files = {p.name for p in deploy.MANIFEST_DIR.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files


def test_official_image_matching_the_api_package(objects):
    image = container(objects)["image"]
    repository, tag = image.split(":")
    assert repository == "tensorflow/serving"
    api_version = importlib.metadata.version("tensorflow-serving-api")
    assert tag.split(".")[:2] == api_version.split(".")[:2]
    assert container(objects)["command"] == ["/usr/bin/tensorflow_model_server"]


def test_ports_agree(objects):
    args = flags(objects)
    assert int(args["--rest_api_port"]) == deploy.REST_API_PORT == 8501
    assert int(args["--port"]) == deploy.GRPC_PORT
    ports = {p["name"]: p["containerPort"] for p in container(objects)["ports"]}
    assert ports == {"http": deploy.REST_API_PORT, "grpc": deploy.GRPC_PORT}
    service_ports = {p["name"]: (p["port"], p["targetPort"]) for p in objects["Service"]["spec"]["ports"]}
    assert service_ports == {"http": (deploy.REST_API_PORT, "http"), "grpc": (deploy.GRPC_PORT, "grpc")}
    selector = objects["Service"]["spec"]["selector"]
    labels = objects["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= labels.items()
    assert objects["Deployment"]["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_readiness_probe_is_the_model_status_url(objects):
    probe = container(objects)["readinessProbe"]["httpGet"]
    assert probe["port"] == deploy.REST_API_PORT
    assert probe["path"] == deploy.readiness_path()
    route = parse_route("GET", probe["path"])  # the same router dxpipe serve uses
    assert (route.verb, route.model) == ("status", deploy.MODEL_NAME)


def _config_files(objects) -> dict[str, str]:
    return objects["ConfigMap"]["data"]


def test_models_config_parses_and_points_into_the_models_volume(objects):
    args = flags(objects)
    mounts = {m["name"]: m for m in container(objects)["volumeMounts"]}
    volumes = {v["name"]: v for v in objects["Deployment"]["spec"]["template"]["spec"]["volumes"]}
    config_mount = mounts["config"]["mountPath"]
    assert config_mount == deploy.CONFIG_DIR
    assert volumes["config"]["configMap"]["name"] == objects["ConfigMap"]["metadata"]["name"]
    files = _config_files(objects)
    for flag in ("--model_config_file", "--batching_parameters_file", "--monitoring_config_file"):
        directory, name = posixpath.split(args[flag])
        assert directory == config_mount and name in files, flag
    models = parse_model_config_text(files["models.config"], "configmap")  # dxpipe's own parser
    assert {m.name: m.base_path for m in models} == {
        deploy.MODEL_NAME: posixpath.join(deploy.MODEL_ROOT, deploy.MODEL_NAME),
        deploy.STAGING_MODEL_NAME: posixpath.join(deploy.MODEL_ROOT, deploy.STAGING_MODEL_NAME),
    }
    assert mounts["models"]["mountPath"] == deploy.MODEL_ROOT
    assert mounts["models"]["readOnly"] is True
    claim = volumes["models"]["persistentVolumeClaim"]["claimName"]
    assert claim == objects["PersistentVolumeClaim"]["metadata"]["name"]


def test_served_paths_are_where_the_pipeline_pushes():
    from pipelines.config import load_config
    from pipelines.kubeflow_runner import KubeflowTarget, bind

    cfg = bind(load_config(), KubeflowTarget())
    assert str(cfg.serving_root) == deploy.MODEL_ROOT
    assert cfg.model_name == deploy.MODEL_NAME
    assert posixpath.join(deploy.MODEL_ROOT, deploy.MODEL_NAME) == str(cfg.production_base_path)
    assert posixpath.join(deploy.MODEL_ROOT, deploy.STAGING_MODEL_NAME) == str(cfg.staging_base_path)


def test_batching_and_monitoring_files(objects):
    files = _config_files(objects)
    batching = parse_batching_parameters(files["batching.config"], "configmap", BatchingOptions())
    assert batching.max_batch_size == BatchingOptions().max_batch_size == 1000
    assert flags(objects)["--enable_batching"] == "true"
    assert f'path: "{deploy.METRICS_PATH}"' in files["monitoring.config"]
    annotations = objects["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/path"] == deploy.METRICS_PATH
    assert int(annotations["prometheus.io/port"]) == deploy.REST_API_PORT


# ------------------------------------------------------------------------------ dxpipe serve for a clinic

SECURE_DIR = deploy.MANIFEST_DIR / "dxpipe-serve"


@pytest.fixture(scope="module")
def secure() -> dict[str, dict]:
    return {obj["kind"]: obj for obj in deploy.load_manifests(SECURE_DIR)}


def test_secure_overlay_replaces_tf_serving_and_keeps_the_base_volume_and_config(objects):
    kustomization = yaml.safe_load((SECURE_DIR / "kustomization.yaml").read_text())
    files = {p.name for p in SECURE_DIR.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == {"../", *files}
    deleted = {
        (p["kind"], p["metadata"]["name"])
        for p in map(yaml.safe_load, (x["patch"] for x in kustomization["patches"]))
    }
    assert deleted == {
        ("Deployment", objects["Deployment"]["metadata"]["name"]),
        ("Service", objects["Service"]["metadata"]["name"]),
    }


def test_secure_deployment_flags_are_real_and_agree_with_the_mounts(objects, secure):
    from pipelines.kubeflow_runner import DEFAULT_IMAGE
    from serving.server import build_parser

    (box,) = secure["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert box["image"] == DEFAULT_IMAGE
    assert box["command"] == ["python", "-m", "serving.server"]
    args = build_parser().parse_args(box["args"])  # every flag is one dxpipe serve has
    mounts = {m["name"]: m["mountPath"] for m in box["volumeMounts"]}
    volumes = {v["name"]: v for v in secure["Deployment"]["spec"]["template"]["spec"]["volumes"]}
    assert posixpath.dirname(args.auth_token_file) == mounts["tokens"]
    assert volumes["tokens"]["secret"]["secretName"] == "dxpipe-serve-tokens"
    assert (posixpath.dirname(args.ssl_certfile), posixpath.basename(args.ssl_certfile)) == (
        mounts["tls"],
        "tls.crt",
    )
    assert (posixpath.dirname(args.ssl_keyfile), posixpath.basename(args.ssl_keyfile)) == (
        mounts["tls"],
        "tls.key",
    )
    assert volumes["tls"]["secret"]["secretName"] == "dxpipe-serve-tls"
    assert posixpath.dirname(args.model_config_file) == mounts["config"] == deploy.CONFIG_DIR
    assert volumes["config"]["configMap"]["name"] == objects["ConfigMap"]["metadata"]["name"]
    assert (
        volumes["models"]["persistentVolumeClaim"]["claimName"]
        == objects["PersistentVolumeClaim"]["metadata"]["name"]
    )
    assert mounts["models"] == deploy.MODEL_ROOT
    assert args.rest_api_port == deploy.REST_API_PORT
    # The readiness probe is a status call over HTTPS, public so the kubelet needs no token.
    probe = box["readinessProbe"]["httpGet"]
    assert (probe["scheme"], probe["port"], probe["path"]) == (
        "HTTPS",
        deploy.REST_API_PORT,
        deploy.readiness_path(),
    )
    assert parse_route("GET", probe["path"]).verb == "status"
    assert {"status", "metrics"} == set(args.auth_public.split(","))
    service = secure["Service"]
    assert (
        service["spec"]["selector"].items()
        <= secure["Deployment"]["spec"]["template"]["metadata"]["labels"].items()
    )
    assert [(p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [
        (deploy.REST_API_PORT, "https")
    ]
