"""MLflow 3's own objects for a registered model: LoggedModel, dataset inputs, experiment kind, report.

`log_native_model` runs where MLflow lives (the run's worker process), once per new registry version,
from the registration call site. It

- marks the experiment as custom model development, so MLflow's UI opens its model-training view;
- logs each example split as a dataset input of the run: name, digest, schema and size, never a row;
- logs the SavedModel as an MLflow Model (`mlflow_model.save_native_model`) in a `LoggedModel` linked to
  the run, with the test-split metrics (overall and per slice) on it, the plots and the reviewer's
  report as its artifacts;
- returns the `models:/<model_id>` source for the registry version and its description
  (`version_report.describe_version`).

The registered digest stays the SavedModel's: the MLflow Model holds the same bytes (checked after the
copy) under `data/Format-Serving/`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from components.registry_gate.core import GateVerdict
from pipelines.mlflow_mlmd import PipelineOutputs, split_digest
from pipelines.mlflow_model import input_features, save_native_model
from pipelines.mlflow_store import is_unreachable, sanitize_key
from pipelines.version_report import Evidence, describe_version, evidence_dict

if TYPE_CHECKING:
    from pipelines.tracking import Session

EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
# The value MLflow's UI reads as "machine learning (custom model development)", not GenAI.
EXPERIMENT_KIND = "custom_model_development"
CONTEXT_TAG = "mlflow.data.context"
PLOTS = ("roc", "precision_recall", "calibration", "confusion_matrix", "reliability", "decision_curve")


@dataclasses.dataclass(frozen=True)
class NativeModel:
    """What registration needs from the logged model.

    Attributes:
        model_id: The LoggedModel's id.
        source: The registry version's source, `models:/<model_id>` (MLflow 3's link to the LoggedModel).
        description: The reviewer's report (Markdown).
        datasets: Dataset name -> digest of each split logged as a run input.
    """

    model_id: str
    source: str
    description: str
    datasets: Mapping[str, str]


def prewarm() -> None:
    """Imports and caches, while TFX trains, what logging the model needs (keeps it off the critical path).

    MLflow's pyfunc import and its first scan of installed distributions (to check the pinned
    requirements) cost about a second the first time, nothing after.
    """
    import mlflow.pyfunc  # noqa: F401
    from mlflow.utils.requirements_utils import warn_dependency_requirement_mismatches

    from pipelines.mlflow_model import pinned_requirements

    warn_dependency_requirement_mismatches(pinned_requirements())


def _split_sizes(examples_uri: str | None) -> dict[str, tuple[int, str]]:
    """{split: (examples, digest hex)} from the ExampleGen output's order-independent split digests."""
    if not examples_uri or not Path(examples_uri).is_dir():
        return {}
    out = {}
    for split_dir in sorted(Path(examples_uri).glob("Split-*")):
        split = split_dir.name[len("Split-") :]
        digest = split_digest(examples_uri, split)
        if digest:
            count, hexdigest = digest.split(":", 1)
            out[split] = (int(count), hexdigest)
    return out


def _dataset_inputs(name: str, schema_path: str | None, examples_uri: str, sizes: Mapping[str, Any]) -> list:
    from mlflow.entities import Dataset, DatasetInput, InputTag

    columns = []
    if schema_path:
        columns = [{"type": kind, "name": n, "required": req} for n, kind, req in input_features(schema_path)]
        columns.append({"type": "long", "name": "label", "required": True})
    inputs = []
    for split, (count, hexdigest) in sizes.items():
        dataset = Dataset(
            name=name,
            digest=hexdigest[:32],  # MLflow's digest column holds 36 characters
            source_type="local",
            source=json.dumps({"uri": str(Path(examples_uri) / f"Split-{split}")}),
            schema=json.dumps({"mlflow_colspec": columns}),
            profile=json.dumps({"num_rows": count, "split": split}),
        )
        inputs.append(DatasetInput(dataset, [InputTag(CONTEXT_TAG, split)]))
    return inputs


def _plot_links(model_id: str, names: list[str]) -> dict[str, str]:
    # Relative to the UI's origin (its pages are hash routes under "/"), served by the tracking server's
    # logged-model artifact endpoint.
    return {
        name: f"ajax-api/2.0/mlflow/logged-models/{model_id}/artifacts/files?artifact_file_path=plots/{name}.png"
        for name in names
    }


def _anomalies(outputs: PipelineOutputs) -> dict[str, dict[str, list[str]]]:
    from google.protobuf.message import DecodeError

    from pipelines.mlflow_summaries import anomalies_summary

    if not outputs.anomalies_uri:
        return {}
    try:
        summary = anomalies_summary(outputs.anomalies_uri)
    except (OSError, DecodeError, ValueError):
        return {}
    return {
        split: {**s["features"], **({"(dataset)": s["dataset"]} if s["dataset"] else {})}
        for split, s in summary.items()
    }


def _statistics(outputs: PipelineOutputs) -> dict[str, Any] | None:
    from google.protobuf.message import DecodeError

    from pipelines.mlflow_summaries import statistics_summary

    if not outputs.statistics_uri:
        return None
    try:
        return statistics_summary(outputs.statistics_uri)
    except (OSError, DecodeError, ValueError):
        return None


def log_native_model(
    session: Session,
    outputs: PipelineOutputs,
    *,
    model_name: str,
    verdict: GateVerdict,
    compared_with: str,
    candidate: Mapping[str, Mapping[str, float]],
    champion: Mapping[str, float] | None,
    digest: str,
    test_digest: str | None,
) -> NativeModel:
    """Logs the run's SavedModel as a LoggedModel with its metrics, datasets, plots and report.

    Args:
        session: The open MLflow session of the pipeline run.
        outputs: The TFX run's outputs (SavedModel, schema, statistics, examples, anomalies).
        model_name: Registered model name (also the datasets' name).
        verdict: The gate verdict of this version.
        compared_with: What non-inferiority compared against.
        candidate: The test-split metrics per slice.
        champion: The champion's overall metrics used by the comparison, if any.
        digest: The SavedModel's digest (the version's `model.digest`).
        test_digest: The test split's digest.

    Returns:
        The logged model's id, the registry source and the version's description.

    Raises:
        NativeModelError: If the MLflow Model's copy of the SavedModel does not match `digest`.
    """
    from mlflow.entities import LoggedModelOutput, LoggedModelStatus, Metric

    client, run_id, cfg = session.client, session.run_id, session.config
    export_dir = Path(outputs.saved_model_dir or "")
    schema_file = Path(outputs.schema_uri or "", "schema.pbtxt")
    schema_path = str(schema_file) if outputs.schema_uri and schema_file.is_file() else None

    client.set_experiment_tag(session.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    sizes = _split_sizes(outputs.examples_uri)
    if sizes and outputs.examples_uri:
        client.log_inputs(
            run_id, datasets=_dataset_inputs(model_name, schema_path, outputs.examples_uri, sizes)
        )

    model = client.create_logged_model(
        session.experiment_id,
        name=model_name,
        source_run_id=run_id,
        tags={"model.digest": digest, "dxpipe.model": model_name, "tfx.run_id": outputs.tfx_run_id},
        model_type="classifier",
    )
    try:
        with tempfile.TemporaryDirectory(prefix="dxpipe-native-") as tmp:
            root = Path(tmp) / "model"
            save_native_model(export_dir, root, schema_path, _statistics(outputs), expected_digest=digest)
            plots = _copy_run_plots(session, root / "plots")
            evidence = Evidence(
                model_name=model_name,
                verdict=verdict,
                compared_with=compared_with,
                candidate=candidate,
                champion=champion,
                digest=digest,
                test_digest=test_digest,
                splits={split: count for split, (count, _) in sizes.items()},
                anomalies=_anomalies(outputs),
                plots=_plot_links(model.model_id, plots),
                run_id=run_id,
                tfx_run_id=outputs.tfx_run_id,
            )
            description = describe_version(evidence)
            (root / "report").mkdir()
            (root / "report" / "report.md").write_text(description)
            (root / "report" / "evidence.json").write_text(json.dumps(evidence_dict(evidence), indent=1))
            client.log_model_artifacts(model.model_id, str(root))

        test = sizes.get(cfg.test_split)
        now = int(time.time() * 1000)
        metrics = [
            Metric(
                sanitize_key(f"test/{slice_}/{name}"),
                float(value),
                now,
                0,
                model_id=model.model_id,
                dataset_name=model_name if test else None,
                dataset_digest=test[1][:32] if test else None,
                run_id=run_id,
            )
            for slice_, values in candidate.items()
            for name, value in values.items()
            if value is not None and math.isfinite(value)
        ]
        for i in range(0, len(metrics), 1000):
            client.log_batch(run_id, metrics=metrics[i : i + 1000])
        client.log_outputs(run_id, [LoggedModelOutput(model.model_id, 0)])
        client.finalize_logged_model(model.model_id, LoggedModelStatus.READY)
    except BaseException:
        # A model that could not be completed is marked FAILED, never left PENDING or registered; if MLflow
        # is gone, the original error is the one to report.
        with contextlib.suppress(Exception):
            client.finalize_logged_model(model.model_id, LoggedModelStatus.FAILED)
        raise
    return NativeModel(
        model_id=model.model_id,
        source=f"models:/{model.model_id}",
        description=description,
        datasets={f"{model_name}/{split}": hexdigest[:32] for split, (_, hexdigest) in sizes.items()},
    )


def _copy_run_plots(session: Session, dest: Path) -> list[str]:
    """Copies the run's plots (drawn when its outputs were logged) next to the model; returns their names."""
    names = {Path(a.path).stem for a in session.client.list_artifacts(session.run_id, "plots")}
    found = [n for n in PLOTS if n in names]
    if found:
        dest.mkdir(parents=True)
        with tempfile.TemporaryDirectory(prefix="dxpipe-plots-") as tmp:
            local = Path(session.client.download_artifacts(session.run_id, "plots", tmp))
            for name in found:
                (dest / f"{name}.png").write_bytes((local / f"{name}.png").read_bytes())
    return found


def download_saved_model(client: Any, name: str, version: str, scratch: Path) -> Path:
    """Downloads the SavedModel a registry version points at (to be digest-checked by the caller).

    A version registered as an MLflow Model has the SavedModel where its `MLmodel`'s pyfunc flavor says
    (`data/Format-Serving`): the bytes `mlflow.pyfunc.load_model` loads are the bytes that are served.
    A version registered before that is a bare SavedModel (the run's `model/` artifacts).

    Args:
        client: An MlflowClient of the registry's store.
        name: Registered model name.
        version: Version number.
        scratch: An empty local directory.

    Raises:
        MlflowException: If MLflow cannot provide the artifacts.
    """
    import mlflow.artifacts
    import yaml

    tracking_uri = client.tracking_uri
    location = client.get_model_version_download_uri(name, version).rstrip("/")
    try:
        mlmodel = mlflow.artifacts.download_artifacts(
            artifact_uri=f"{location}/MLmodel", dst_path=str(scratch / "mlmodel"), tracking_uri=tracking_uri
        )
    except Exception as exc:
        if is_unreachable(exc):
            raise
        data = ""  # no MLmodel: a bare SavedModel
    else:
        data = "/" + yaml.safe_load(Path(mlmodel).read_text())["flavors"]["python_function"]["data"]
    return Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri=f"{location}{data}", dst_path=str(scratch / "model"), tracking_uri=tracking_uri
        )
    )


@contextlib.contextmanager
def registry_resolves_models_uris(client: Any) -> Iterator[None]:
    """Lets MLflow's SQL registry resolve a `models:/<model_id>` source in this client's store.

    MLflow's SqlAlchemy registry looks the LoggedModel up with a default `MlflowClient()`, i.e. through
    the process-global tracking URI (its own TODO says so), not the creating client's store; with
    another global URI, registering fails with "Logged model ... not found". The global URI is set to
    this client's for the one call and restored after (MLflow's own scoped setter).
    """
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    with _use_tracking_uri(client.tracking_uri):
        yield
