"""Helpers that register gated versions the way the pipeline will: pipeline_run + register_and_gate."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from components.registry_gate.core import GatePolicy
from components.serving_pusher.core import publish_version
from pipelines import registry, tracking
from pipelines.identity import Identity
from pipelines.mlflow_mlmd import PipelineOutputs
from pipelines.mlflow_store import TrackingConfig
from pipelines.mlflow_tfma import Evaluation

POLICY = GatePolicy.from_dict(
    {
        "minimums": {"auc": 0.80, "recall": 0.70},
        "maximums": {"mean_squared_error": 0.25},
        "slices": [{"feature": "sex", "minimums": {"recall": 0.60}}],
        "non_inferiority": [{"metric": "auc", "margin": 0.02}],
    }
)


def metrics(auc: float, recall: float, mse: float = 0.12, female_recall: float | None = None) -> dict:
    """Candidate metrics per slice in the shape load_evaluation returns."""
    return {
        "Overall": {"auc": auc, "recall": recall, "mean_squared_error": mse, "example_count": 240.0},
        "sex:female": {"recall": recall if female_recall is None else female_recall, "example_count": 120.0},
        "sex:male": {"recall": recall, "example_count": 120.0},
    }


GOOD = metrics(0.93, 0.85)
BETTER = metrics(0.95, 0.88)
BAD = metrics(0.50, 0.30, mse=0.26)


def outputs_for(fixtures: dict, model: str, **changes) -> PipelineOutputs:
    """PipelineOutputs of a fake TFX run whose Trainer produced the session SavedModel `model`."""
    base = PipelineOutputs(
        pipeline_name="dxpipe-wdbc",
        tfx_run_id=f"run-{model}",
        metadata_path="/nonexistent/metadata.sqlite",
        model_uri=fixtures[f"model_{model}"],
        blessed=True,
        execution_ids={"Trainer": 7, "Evaluator": 9},
        execution_states={"Trainer": "COMPLETE", "Evaluator": "COMPLETE"},
    )
    return dataclasses.replace(base, **changes)


def register(
    cfg: TrackingConfig,
    fixtures: dict,
    model: str = "good",
    candidate: dict | None = None,
    *,
    author: str = "alice",
    baseline: dict | None = None,
    policy: GatePolicy = POLICY,
    model_name: str = "wdbc",
    push: bool = True,
    rescore_champion: bool = True,
    **output_changes,
) -> registry.RegisteredVersion:
    """Runs one tracked 'pipeline run' that registers and gates `model`; pushes it to staging if blessed.

    With `rescore_champion` (and no explicit baseline) the Evaluator is assumed to have been given the
    champion as its baseline (an Importer of `registry.champion_model_uri`), which is the wiring the
    registry expects; the champion's recorded metrics stand for its re-score.
    """
    if rescore_champion and baseline is None and "baseline_model_uri" not in output_changes:
        champion_uri = registry.champion_model_uri(cfg, model_name)
        if champion_uri:
            client = registry.client_for(cfg.resolved())
            number = registry.aliases_of(client, model_name)["champion"]
            # Plays the Evaluator re-scoring the champion: its metrics as registered stand for the re-score.
            baseline = {
                "Overall": {
                    k.removeprefix("metric."): float(v)
                    for k, v in registry.get_version(client, model_name, number).tags.items()
                    if k.startswith("metric.")
                }
            }
            output_changes["baseline_model_uri"] = champion_uri
    outputs = outputs_for(fixtures, model, **output_changes)
    evaluation = Evaluation(candidate if candidate is not None else GOOD, baseline)
    with tracking.pipeline_run(
        cfg, experiment="dxpipe-wdbc", params={"dataset": model_name}, author=author
    ) as run:
        version = registry.register_and_gate(
            run, outputs, policy, model_name=model_name, evaluation=evaluation
        )
    if push and outputs.blessed:
        publish_version(Path(outputs.model_uri) / "Format-Serving", cfg.resolved().staging_path(model_name))
    return version


def who(name: str) -> Identity:
    """A person acting through the Python API (the CLI asks the tracking store instead)."""
    return Identity(name=name, authenticated=False, source="test")
