"""collect_outputs against an ML Metadata store populated through the ml_metadata API the way TFX records runs.

TFX records a run as contexts `pipeline` (the pipeline name), `pipeline_run` (the run id) and `node`
(`<pipeline>.<node id>`); each execution is attributed to all three and linked to its artifacts by events
whose path is [key, index]. A cached component records a CACHED execution linked to the reused outputs.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2 as mlmd

from pipelines.mlflow_mlmd import MetadataError, collect_outputs, split_digest

PIPELINE = "dxpipe-wdbc"


class FakeTfx:
    """Writes executions, artifacts and events like TFX's LocalDagRunner does."""

    def __init__(self, path: Path) -> None:
        config = mlmd.ConnectionConfig()
        config.sqlite.filename_uri = str(path)
        config.sqlite.connection_mode = mlmd.SqliteMetadataSourceConfig.READWRITE_OPENCREATE
        self.store = metadata_store.MetadataStore(config)
        self.types: dict[str, int] = {}
        for name in ("pipeline", "pipeline_run", "node"):
            self.types[name] = self.store.put_context_type(mlmd.ContextType(name=name))
        self.contexts: dict[tuple[str, str], mlmd.Context] = {}
        self.root = path.parent / "root"

    def context(self, kind: str, name: str) -> mlmd.Context:
        if (kind, name) not in self.contexts:
            [cid] = self.store.put_contexts([mlmd.Context(type_id=self.types[kind], name=name)])
            self.contexts[(kind, name)] = self.store.get_contexts_by_id([cid])[0]
        return self.contexts[(kind, name)]

    def artifact(self, type_name: str, uri: str, **custom: object) -> mlmd.Artifact:
        type_id = self.store.put_artifact_type(mlmd.ArtifactType(name=type_name))
        artifact = mlmd.Artifact(type_id=type_id, uri=uri, state=mlmd.Artifact.LIVE)
        for key, value in custom.items():
            if isinstance(value, int):
                artifact.custom_properties[key].int_value = value
            else:
                artifact.custom_properties[key].string_value = str(value)
        return artifact

    def execute(
        self,
        run: str,
        node: str,
        state: int = mlmd.Execution.COMPLETE,
        inputs: dict[str, mlmd.Artifact] | None = None,
        outputs: dict[str, mlmd.Artifact] | None = None,
    ) -> dict[str, mlmd.Artifact]:
        type_id = self.store.put_execution_type(mlmd.ExecutionType(name=f"tfx.components.{node}"))
        pairs = []
        for kind, items in ((mlmd.Event.INPUT, inputs or {}), (mlmd.Event.OUTPUT, outputs or {})):
            for key, artifact in items.items():
                event = mlmd.Event(type=kind)
                event.path.steps.add().key = key
                event.path.steps.add().index = 0
                pairs.append((artifact, event))
        contexts = [
            self.context("pipeline", PIPELINE),
            self.context("pipeline_run", run),
            self.context("node", f"{PIPELINE}.{node}"),
        ]
        _, artifact_ids, _ = self.store.put_execution(
            mlmd.Execution(type_id=type_id, last_known_state=state), pairs, contexts
        )
        stored = dict(
            zip(
                [k for _, items in ((0, inputs or {}), (1, outputs or {})) for k in items],
                artifact_ids,
                strict=True,
            )
        )
        return {k: self.store.get_artifacts_by_id([a])[0] for k, a in stored.items()}


@pytest.fixture
def two_runs(tmp_path) -> tuple[Path, dict]:
    tfx = FakeTfx(tmp_path / "metadata.sqlite")
    r = str(tfx.root)
    # Run 1: everything executes; the model is blessed and pushed.
    ex = tfx.execute(
        "run-1",
        "CsvExampleGen",
        outputs={"examples": tfx.artifact("Examples", f"{r}/CsvExampleGen/examples/1")},
    )
    stats = tfx.execute(
        "run-1",
        "StatisticsGen",
        inputs=ex,
        outputs={"statistics": tfx.artifact("ExampleStatistics", f"{r}/StatisticsGen/statistics/2")},
    )
    schema = tfx.execute(
        "run-1",
        "SchemaGen",
        inputs=stats,
        outputs={"schema": tfx.artifact("Schema", f"{r}/SchemaGen/schema/3")},
    )
    tfx.execute(
        "run-1",
        "ExampleValidator",
        inputs={**stats, **schema},
        outputs={"anomalies": tfx.artifact("ExampleAnomalies", f"{r}/ExampleValidator/anomalies/4")},
    )
    model1 = tfx.execute(
        "run-1",
        "Trainer",
        inputs={**ex, **schema},
        outputs={
            "model": tfx.artifact("Model", f"{r}/Trainer/model/5"),
            "model_run": tfx.artifact("ModelRun", f"{r}/Trainer/model_run/5"),
        },
    )
    ev1 = tfx.execute(
        "run-1",
        "Evaluator",
        inputs={**ex, "model": model1["model"]},
        outputs={
            "evaluation": tfx.artifact("ModelEvaluation", f"{r}/Evaluator/evaluation/6"),
            "blessing": tfx.artifact("ModelBlessing", f"{r}/Evaluator/blessing/6", blessed=1),
        },
    )
    tfx.execute(
        "run-1",
        "Pusher",
        inputs={"model": model1["model"], "model_blessing": ev1["blessing"]},
        outputs={
            "pushed_model": tfx.artifact(
                "PushedModel",
                f"{r}/Pusher/pushed_model/7",
                pushed=1,
                pushed_version="1700000000",
                pushed_destination="/s/wdbc-staging/1700000000",
            )
        },
    )
    # Run 2: ExampleGen is a cache hit (same artifact), the new model is not blessed, the Pusher is skipped,
    # and a failed execution's output must be ignored.
    tfx.execute("run-2", "CsvExampleGen", state=mlmd.Execution.CACHED, outputs={"examples": ex["examples"]})
    model2 = tfx.execute(
        "run-2", "Trainer", inputs=ex, outputs={"model": tfx.artifact("Model", f"{r}/Trainer/model/8")}
    )
    tfx.execute(
        "run-2",
        "Evaluator",
        inputs={**ex, "model": model2["model"], "baseline_model": model1["model"]},
        outputs={
            "evaluation": tfx.artifact("ModelEvaluation", f"{r}/Evaluator/evaluation/9"),
            "blessing": tfx.artifact("ModelBlessing", f"{r}/Evaluator/blessing/9", blessed=0),
        },
    )
    tfx.execute(
        "run-2",
        "Tuner",
        state=mlmd.Execution.FAILED,
        outputs={"model": tfx.artifact("Model", f"{r}/Tuner/model/10")},
    )
    return tmp_path / "metadata.sqlite", {"root": r}


def test_collects_a_fresh_run(two_runs):
    db, paths = two_runs
    r = paths["root"]
    out = collect_outputs(str(db), PIPELINE, run_id="run-1")
    assert out.tfx_run_id == "run-1"
    assert out.model_uri == f"{r}/Trainer/model/5"
    assert out.saved_model_dir == f"{r}/Trainer/model/5/Format-Serving"
    assert out.training_history_path == f"{r}/Trainer/model/5/training_history.json"
    assert out.model_run_uri == f"{r}/Trainer/model_run/5"
    assert (out.evaluation_uri, out.blessed) == (f"{r}/Evaluator/evaluation/6", True)
    assert out.baseline_model_uri is None
    assert (out.schema_uri, out.statistics_uri, out.anomalies_uri) == (
        f"{r}/SchemaGen/schema/3",
        f"{r}/StatisticsGen/statistics/2",
        f"{r}/ExampleValidator/anomalies/4",
    )
    assert (out.pushed, out.pushed_version, out.pushed_destination) == (
        True,
        "1700000000",
        "/s/wdbc-staging/1700000000",
    )
    assert set(out.execution_ids) == {
        "CsvExampleGen",
        "StatisticsGen",
        "SchemaGen",
        "ExampleValidator",
        "Trainer",
        "Evaluator",
        "Pusher",
    }
    assert set(out.execution_states.values()) == {"COMPLETE"}


def test_collects_a_run_with_cache_hits_a_baseline_and_no_push(two_runs):
    db, paths = two_runs
    r = paths["root"]
    out = collect_outputs(str(db), PIPELINE, run_id="run-2")
    assert out.examples_uri == f"{r}/CsvExampleGen/examples/1"  # reused by the cache hit
    assert out.execution_states["CsvExampleGen"] == "CACHED"
    assert out.model_uri == f"{r}/Trainer/model/8"  # not the failed Tuner's
    assert out.execution_states["Tuner"] == "FAILED"
    assert out.baseline_model_uri == f"{r}/Trainer/model/5"
    assert out.blessed is False
    assert (out.pushed_model_uri, out.pushed) == (None, None)
    assert out.schema_uri is None


def test_latest_run_is_picked_when_no_run_id_is_given(two_runs):
    db, _ = two_runs
    assert collect_outputs(str(db), PIPELINE).tfx_run_id == "run-2"


@pytest.mark.parametrize(
    ("pipeline", "run_id", "message"),
    [
        (
            "dxpipe-heart",
            None,
            r"the metadata store has no pipeline named 'dxpipe-heart'; check the pipeline name",
        ),
        (PIPELINE, "run-9", r"the metadata store has no run 'run-9' of pipeline 'dxpipe-wdbc'"),
    ],
    ids=["unknown-pipeline", "unknown-run"],
)
def test_unknown_pipeline_or_run(two_runs, pipeline, run_id, message):
    db, _ = two_runs
    with pytest.raises(MetadataError, match=message):
        collect_outputs(str(db), pipeline, run_id=run_id)


def test_missing_store(tmp_path):
    with pytest.raises(MetadataError, match=r"no metadata store at .*; run the pipeline first"):
        collect_outputs(str(tmp_path / "metadata.sqlite"), PIPELINE)


def test_split_digest_ignores_shard_layout_and_order(fixtures, tmp_path):
    same = split_digest(fixtures["examples_uri"], "test")
    assert same is not None and same.startswith("240:")
    assert split_digest(fixtures["examples_reshuffled_uri"], "test") == same
    assert split_digest(fixtures["examples_other_uri"], "test") != same
    assert split_digest(fixtures["examples_uri"], "train") is None
    assert split_digest(None, "test") is None


def test_split_digest_refuses_a_truncated_file(fixtures, tmp_path):
    import gzip

    source = next((Path(fixtures["examples_uri"]) / "Split-test").glob("*.gz"))
    data = gzip.decompress(source.read_bytes())
    (tmp_path / "Split-test").mkdir()
    (tmp_path / "Split-test" / "part.gz").write_bytes(gzip.compress(data[:-7]))
    with pytest.raises(MetadataError, match=r"is not a complete TFRecord file"):
        split_digest(str(tmp_path), "test")
