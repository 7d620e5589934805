"""register_and_gate: every trained model becomes a version; the gate decides its tags and alias."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow import MlflowClient

from components.serving_pusher.core import saved_model_digest
from pipelines import registry, tracking
from pipelines.mlflow_mlmd import PipelineOutputs
from pipelines.mlflow_store import TrackingConfig
from tests.registry.support import BAD, BETTER, GOOD, POLICY, metrics, register


def client(cfg: TrackingConfig) -> MlflowClient:
    resolved = cfg.resolved()
    return MlflowClient(tracking_uri=resolved.tracking_uri, registry_uri=resolved.registry_uri)


def test_passing_version_gets_candidate_and_carries_model_metrics_lineage(cfg, fixtures):
    version = register(cfg, fixtures, "good", GOOD)
    assert (version.version, version.passed, version.failures, version.aliases) == (
        "1",
        True,
        (),
        ("candidate",),
    )
    assert version.compared_with == "none (no champion yet)"
    mv = client(cfg).get_model_version("wdbc", "1")
    assert mv.aliases == ["candidate"]
    tags = mv.tags
    assert tags["gate"] == "passed" and tags["gate.failures"] == "0"
    assert tags["gate.notes"] == "no champion yet: non-inferiority was not assessed."
    assert float(tags["metric.auc"]) == 0.93 and float(tags["metric.recall"]) == 0.85
    assert tags["model.digest"] == saved_model_digest(Path(fixtures["model_good"]) / "Format-Serving")
    assert tags["dxpipe.author"] == "alice"
    assert tags["tfx.run_id"] == "run-good" and tags["tfx.model_uri"] == fixtures["model_good"]
    assert json.loads(tags["mlmd.execution_ids"]) == {"Evaluator": 9, "Trainer": 7}
    assert json.loads(tags["gate.verdict"])["passed"] is True
    # The SavedModel travels with the version, inside its MLflow Model (the run's LoggedModel).
    assert mv.source.startswith("models:/m-")
    location = Path(client(cfg).get_model_version_download_uri("wdbc", "1").removeprefix("file://"))
    assert saved_model_digest(location / "data" / "Format-Serving") == tags["model.digest"]
    run = client(cfg).get_run(mv.run_id)
    assert run.data.tags["gate"] == "passed" and run.data.tags["registry.version"] == "1"


def test_bad_model_is_registered_failed_with_every_reason_and_no_alias(cfg, fixtures):
    """A model trained on shuffled labels: AUC 0.5. Registered, but gate=failed and never a candidate."""
    register(cfg, fixtures, "good", GOOD)
    version = register(cfg, fixtures, "bad", BAD, blessed=False)
    assert not version.passed and version.aliases == ()
    mv = client(cfg).get_model_version("wdbc", version.version)
    assert mv.aliases == []
    assert registry.aliases_of(client(cfg), "wdbc") == {"candidate": "1"}
    tags = mv.tags
    assert tags["gate"] == "failed"
    fails = {k: v for k, v in tags.items() if k.startswith("gate.fail.")}
    assert set(fails) == {
        "gate.fail.evaluator_blessing",
        "gate.fail.minimum:auc",
        "gate.fail.minimum:recall",
        "gate.fail.maximum:mean_squared_error",
        "gate.fail.slice:sex:female:minimum:recall",
        "gate.fail.slice:sex:male:minimum:recall",
    }
    assert tags["gate.failures"] == "6"
    assert "auc = 0.5000 on slice Overall is below the minimum 0.8000" in fails["gate.fail.minimum:auc"]
    assert mv.description.startswith("Gate FAILED: ")
    assert set(version.failures) == set(fails.values())


def test_non_inferiority_uses_the_evaluator_baseline_when_it_is_the_champion(cfg, fixtures):
    register(cfg, fixtures, "other", GOOD, author="alice")
    client(cfg).set_registered_model_alias("wdbc", "champion", "1")
    worse_baseline = {"Overall": {"auc": 0.99}}
    version = register(
        cfg, fixtures, "good", GOOD, baseline=worse_baseline, baseline_model_uri=fixtures["model_other"]
    )
    assert version.compared_with == "champion version 1, re-scored by the Evaluator on this test split"
    assert not version.passed
    assert version.failures == (
        "auc = 0.9300 vs champion version 1 0.9900: inferior by more than the margin "
        "0.0200 (needs >= 0.9700)",
    )


def test_non_inferiority_ignores_a_baseline_that_is_not_the_champion(cfg, fixtures):
    register(cfg, fixtures, "other", GOOD)
    client(cfg).set_registered_model_alias("wdbc", "champion", "1")
    # The Evaluator re-scored "better" (say, the latest blessed model), not the champion "other".
    version = register(
        cfg,
        fixtures,
        "good",
        GOOD,
        baseline={"Overall": {"auc": 0.5}},
        baseline_model_uri=fixtures["model_better"],
    )
    assert version.compared_with == "champion version 1: not re-scored on this test split"
    assert not version.passed
    assert "champion version 1 was not re-scored on this test split" in version.failures[0]
    assert "give the Evaluator the champion as its baseline model" in version.failures[0]


def test_non_inferiority_uses_recorded_champion_metrics_on_an_identical_test_split(cfg, fixtures):
    register(cfg, fixtures, "other", metrics(0.94, 0.85), examples_uri=fixtures["examples_uri"])
    client(cfg).set_registered_model_alias("wdbc", "champion", "1")
    # Same examples in other shards and order: the split digest matches, the recorded metrics are a re-score.
    passing = register(
        cfg,
        fixtures,
        "good",
        metrics(0.93, 0.85),
        examples_uri=fixtures["examples_reshuffled_uri"],
        rescore_champion=False,
    )
    assert passing.compared_with.startswith(
        "champion version 1, its recorded metrics on an identical test split"
    )
    assert passing.passed
    failing = register(
        cfg,
        fixtures,
        "better",
        metrics(0.90, 0.85),
        examples_uri=fixtures["examples_uri"],
        rescore_champion=False,
    )
    assert [f.criterion for f in failing.verdict.failures] == ["non_inferiority:auc"]
    # A different test split is not comparable.
    other_split = register(
        cfg,
        fixtures,
        "good",
        metrics(0.99, 0.9),
        examples_uri=fixtures["examples_other_uri"],
        rescore_champion=False,
    )
    assert other_split.compared_with == "champion version 1: not re-scored on this test split"
    assert not other_split.passed


def test_candidate_alias_moves_to_the_newest_passing_version(cfg, fixtures):
    register(cfg, fixtures, "good", GOOD)
    register(cfg, fixtures, "better", BETTER)
    register(cfg, fixtures, "bad", BAD)
    assert registry.aliases_of(client(cfg), "wdbc") == {"candidate": "2"}


def test_missing_savedmodel_is_a_clear_error_and_registers_nothing(cfg, fixtures, tmp_path):
    outputs = PipelineOutputs("dxpipe-wdbc", "run-x", "/m.sqlite", model_uri=str(tmp_path / "nothing"))
    with (
        pytest.raises(
            registry.RegistryError, match=r"TFX run run-x produced no SavedModel .*Check the Trainer"
        ),
        tracking.pipeline_run(cfg, "dxpipe-wdbc", {}) as run,
    ):
        registry.register_and_gate(run, outputs, POLICY, model_name="wdbc")
    assert client(cfg).get_run(run.run_id).info.status == "FAILED"
    assert client(cfg).search_registered_models() == []


def test_run_without_evaluation_is_registered_failed(cfg, fixtures):
    outputs = PipelineOutputs(
        "dxpipe-wdbc", "run-y", "/m.sqlite", model_uri=fixtures["model_good"], blessed=True
    )
    with tracking.pipeline_run(cfg, "dxpipe-wdbc", {}) as run:
        version = registry.register_and_gate(run, outputs, POLICY, model_name="wdbc")
    assert not version.passed
    assert "has no Evaluator output" in version.verdict.notes[0]
    assert "auc is missing from the evaluation of slice Overall" in " ".join(version.failures)


def test_invalid_model_name_is_refused_before_anything_is_written(cfg, fixtures):
    from pipelines.errors import ConfigError

    with pytest.raises(ConfigError, match=r"model name '\.\./etc' is not usable"):
        register(cfg, fixtures, "good", GOOD, model_name="../etc")


def test_register_and_gate_over_a_real_tfma_evaluation(cfg, fixtures):
    """End to end on real TFMA output: the Evaluator's baseline is the champion, re-scored."""
    champion = register(cfg, fixtures, "other", GOOD)
    client(cfg).set_registered_model_alias("wdbc", "champion", champion.version)
    outputs = PipelineOutputs(
        "dxpipe-wdbc",
        "run-real",
        "/m.sqlite",
        model_uri=fixtures["model_good"],
        evaluation_uri=fixtures["evaluation_uri"],
        baseline_model_uri=fixtures["model_other"],
        blessed=True,
        examples_uri=fixtures["examples_uri"],
    )
    with tracking.pipeline_run(cfg, "dxpipe-wdbc", {}) as run:
        tracking.log_pipeline_outputs(run, outputs)
        version = registry.register_and_gate(run, outputs, POLICY, model_name="wdbc")
    assert version.compared_with == "champion version 1, re-scored by the Evaluator on this test split"
    assert version.passed, version.failures
    ni = next(r for r in version.verdict.results if r.criterion == "non_inferiority:auc")
    assert ni.passed and ni.observed > 0.9
    assert client(cfg).get_model_version("wdbc", version.version).tags["data.test_digest"].startswith("240:")


def test_champion_model_uri_for_the_evaluator_baseline(cfg, fixtures):
    assert registry.champion_model_uri(cfg, "wdbc") is None
    register(cfg, fixtures, "good", GOOD)
    assert registry.champion_model_uri(cfg, "wdbc") is None
    client(cfg).set_registered_model_alias("wdbc", "champion", "1")
    assert registry.champion_model_uri(cfg, "wdbc") == fixtures["model_good"]


def test_cached_rerun_with_the_same_model_reuses_its_version(cfg, fixtures):
    first = register(cfg, fixtures, "good", GOOD)
    again = register(cfg, fixtures, "good", GOOD)
    assert (again.version, again.passed, again.aliases) == (first.version, True, ("candidate",))
    assert again.verdict == first.verdict
    assert [v.version for v in client(cfg).search_model_versions("name='wdbc'")] in (["1"], [1])
    runs = client(cfg).search_runs([client(cfg).get_experiment_by_name("dxpipe-wdbc").experiment_id])
    assert sorted(r.data.tags.get("registry.reused", "false") for r in runs) == ["false", "true"]
    # A config with another policy does not change the one pinned at the model's first registration:
    # the same model under the pinned policy is still the same version.
    import dataclasses

    looser = dataclasses.replace(POLICY, require_evaluator_blessing=False)
    assert register(cfg, fixtures, "good", GOOD, policy=looser).version == "1"
