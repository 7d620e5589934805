"""Feature scaling inside the Keras model vs. in a TFX Transform component, timed end to end.

Two pipelines that differ only in where preprocessing happens, each run cold (fresh workdir, no cache)
in its own fresh process, so both pay their own imports and neither warms the other:

- in-model: the real pipeline (`pipelines.pipeline.create_pipeline`); the Trainer standardises, imputes
  and one-hot encodes inside the model (`models.network.Preprocess`).
- transform: the same nodes (same ExampleGen split, schema, data gate, hyperparameters, Evaluator
  config, pusher, Beam settings) plus a Transform component that does the preprocessing with
  tf.Transform (`bench.transform_variant.preprocessing_fn`); the Trainer reads the transformed examples
  and exports the transform graph in front of the classifier, so serving still takes raw features.

Transform is given its best case: no pre/post-transform statistics (StatisticsGen already computed
them), no analyzer cache (nothing to reuse in a cold run) and only the splits the Trainer reads are
transformed. `--transform-defaults` measures TFX's defaults instead.

Usage: python -m bench.transform_vs_inmodel [--dataset wdbc] [--repeats N] [--transform-defaults]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

IN_MODEL = "in-model"
TRANSFORM = "transform"
_RESULT_PREFIX = "BENCH "


def create_transform_pipeline(
    cfg,
    *,
    pipeline_root: str,
    input_base: str,
    source_name: str,
    metadata_connection_config=None,
    enable_cache: bool = False,
    transform_defaults: bool = False,
):
    """Builds the Transform variant of `pipelines.pipeline.create_pipeline`.

    Every node but Transform and the Trainer's inputs is built by the same functions `create_pipeline`
    uses (`data_validation_nodes`, `evaluation_and_push_nodes`), so the two pipelines differ only in where
    the features are scaled.

    Args:
        cfg: The validated configuration.
        pipeline_root: Where TFX writes artifacts.
        input_base: Directory holding the canonical CSV.
        source_name: The data's user-facing name, for data-gate messages.
        metadata_connection_config: ML Metadata connection.
        enable_cache: Reuse outputs of unchanged executions.
        transform_defaults: Run Transform with TFX's defaults (statistics, analyzer cache, every split).

    Returns:
        The TFX pipeline.
    """
    import dataclasses

    from tfx.components import Trainer, Transform
    from tfx.orchestration import pipeline as tfx_pipeline
    from tfx.proto import transform_pb2

    from bench.transform_variant import PREPROCESSING_FN, RUN_FN, VOCABULARIES
    from models.features import features_from_schema, load_schema
    from pipelines.pipeline import data_validation_nodes, evaluation_and_push_nodes, models_code_digest

    data = cfg.data
    validation = data_validation_nodes(cfg, input_base, source_name)
    example_gen, _, schema_gen, _, data_gate = validation
    # The in-model layer one-hot encodes against the schema's string domains; so does the variant.
    schema_file = str(Path(data.schema_dir) / "schema.pbtxt")
    vocabularies = {
        f.name: list(f.vocabulary) for f in features_from_schema(load_schema(schema_file)) if not f.numeric
    }
    tuning = {}
    if not transform_defaults:
        tuning = dict(
            splits_config=transform_pb2.SplitsConfig(analyze=["train"], transform=["train", "eval"]),
            disable_statistics=True,
            disable_analyzer_cache=True,
        )
    transform = Transform(
        examples=example_gen.outputs["examples"],
        schema=schema_gen.outputs["schema"],
        preprocessing_fn=PREPROCESSING_FN,
        custom_config={VOCABULARIES: vocabularies},
        **tuning,
    )
    transform.add_upstream_node(data_gate)
    trainer = Trainer(
        run_fn=RUN_FN,
        examples=transform.outputs["transformed_examples"],
        transform_graph=transform.outputs["transform_graph"],
        schema=schema_gen.outputs["schema"],
        custom_config={"training": dataclasses.asdict(data.training), "code_digest": models_code_digest()},
    )
    # The exported model parses raw tf.Examples itself, so the Evaluator scores the raw test split with
    # the very config (and the same baseline resolver) the in-model pipeline uses.
    components = [
        *validation,
        transform,
        trainer,
        *evaluation_and_push_nodes(cfg, example_gen, trainer, None, builtin_resolver_only=False),
    ]
    return tfx_pipeline.Pipeline(
        pipeline_name=cfg.pipeline_name,
        pipeline_root=pipeline_root,
        components=components,
        enable_cache=enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=cfg.beam.args(),
    )


def _inner(variant: str, dataset: str, workdir: str, transform_defaults: bool) -> None:
    """Runs one variant cold in this process and prints its measurements as one JSON line."""
    t0 = time.perf_counter()
    from pipelines import beam_patches, local_runner
    from pipelines import data as data_lib
    from pipelines.config import load_config
    from pipelines.mlflow_mlmd import collect_outputs

    def emit(line: str) -> None:
        print(line, flush=True)

    local_runner.quiet_logs(False)
    cfg = load_config(dataset=dataset, workdir=workdir)
    paths = local_runner.Paths.for_config(cfg)
    paths.workdir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    if variant == IN_MODEL:
        timings, _ = local_runner.run_pipeline(cfg, enable_cache=False, emit=emit)
    else:
        from tfx.orchestration import metadata
        from tfx.orchestration.local.local_dag_runner import LocalDagRunner

        data_lib.materialize(cfg.data, paths.input_base)
        source = cfg.data.source
        source_name = source.path or (
            f"{source.package}/{source.resource}" if source.package else source.name
        )
        pipeline = create_transform_pipeline(
            cfg,
            pipeline_root=str(paths.pipeline_root),
            input_base=str(paths.input_base),
            source_name=source_name,
            metadata_connection_config=metadata.sqlite_metadata_connection_config(str(paths.metadata)),
            transform_defaults=transform_defaults,
        )
        # The same launch timer and Beam set-up run_pipeline uses, so both variants are measured the same way.
        with (
            local_runner._timed_launches(emit) as timings,
            beam_patches.no_tfx_sdist_for_direct_runner(cfg.beam.runner),
            beam_patches.memoized_dofn_introspection(),
            beam_patches.cached_option_views(),
        ):
            LocalDagRunner().run(pipeline)
    runner_s = time.perf_counter() - start

    from pipelines.report import load_test_metrics

    outputs = collect_outputs(str(paths.metadata), cfg.pipeline_name)
    history = json.loads(Path(outputs.training_history_path).read_text())
    metrics = load_test_metrics(outputs.evaluation_uri)["Overall"]
    result = {
        "components": {t.name: t.seconds for t in timings},
        "runner_s": runner_s,
        "before_runner_s": start - t0,
        "test_auc": metrics.get("auc"),
        "test_examples": metrics.get("example_count"),
        "epochs": len(history["history"]["loss"]),
        "blessed": outputs.blessed,
        "states": dict(outputs.execution_states),
    }
    print(_RESULT_PREFIX + json.dumps(result), flush=True)


def _run_variant(variant: str, dataset: str, transform_defaults: bool) -> dict:
    """Runs one variant in a fresh process and workdir; returns its measurements plus the process wall."""
    with tempfile.TemporaryDirectory(prefix=f"dxpipe-{variant}-") as tmp:
        cmd = [sys.executable, "-m", "bench.transform_vs_inmodel", "--inner", variant, "--dataset", dataset]
        cmd += ["--workdir", str(Path(tmp) / "work")]
        if transform_defaults:
            cmd.append("--transform-defaults")
        load = os.getloadavg()[0]
        print(f"\n{variant}: fresh process, workdir {tmp} (1-min load average {load:.2f})", flush=True)
        stderr_path = Path(tmp) / "stderr.txt"
        start = time.perf_counter()
        with stderr_path.open("w") as stderr:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=stderr, text=True)
            result = None
            for line in proc.stdout:
                if line.startswith(_RESULT_PREFIX):
                    result = json.loads(line[len(_RESULT_PREFIX) :])
                else:
                    print(line, end="", flush=True)
            proc.wait()
        wall = time.perf_counter() - start
        if proc.returncode or result is None:
            sys.exit(f"{variant} run failed (exit {proc.returncode}):\n{stderr_path.read_text()[-4000:]}")
    result["process_s"] = wall
    result["load_before"] = load
    result["load_after"] = os.getloadavg()[0]
    return result


def _table(runs: list[tuple[str, dict]]) -> str:
    """Per-component seconds, one column per run, then totals, AUC and epochs."""
    names: list[str] = []
    for _, run in runs:
        names += [n for n in run["components"] if n not in names]
    header = f"  {'':<32}" + "".join(f"{label:>16}" for label, _ in runs)
    lines = [header]

    def row(label: str, cells: list[str]) -> None:
        lines.append(f"  {label:<32}" + "".join(f"{c:>16}" for c in cells))

    for name in names:
        row(name, [f"{r['components'][name]:.2f}" if name in r["components"] else "-" for _, r in runs])
    row("sum of components", [f"{sum(r['components'].values()):.2f}" for _, r in runs])
    row("LocalDagRunner call", [f"{r['runner_s']:.2f}" for _, r in runs])
    row("whole process (wall)", [f"{r['process_s']:.2f}" for _, r in runs])
    row("test AUC (TFMA, overall)", [f"{r['test_auc']:.4f}" for _, r in runs])
    row("test examples", [f"{r['test_examples']:.0f}" for _, r in runs])
    row("epochs (early-stopped)", [str(r["epochs"]) for _, r in runs])
    row("blessed", [str(r["blessed"]) for _, r in runs])
    row("1-min load before/after", [f"{r['load_before']:.1f}/{r['load_after']:.1f}" for _, r in runs])
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="wdbc")
    parser.add_argument("--repeats", type=int, default=1, help="cold runs of each variant, alternating")
    parser.add_argument(
        "--transform-defaults",
        action="store_true",
        help="run Transform with TFX's defaults (statistics, analyzer cache, every split)",
    )
    parser.add_argument("--inner", choices=(IN_MODEL, TRANSFORM), help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        _inner(args.inner, args.dataset, args.workdir, args.transform_defaults)
        return
    if args.repeats < 1:
        parser.error(f"--repeats is {args.repeats}; it must be at least 1.")

    print(
        f"dataset {args.dataset}, {args.repeats} cold run(s) per variant, in-model first; "
        f"{os.cpu_count()} CPU cores, 1-min load average {os.getloadavg()[0]:.2f} at start "
        "(the machine may be shared with other jobs: compare runs from the same invocation only)"
    )
    runs: list[tuple[str, dict]] = []
    for i in range(1, args.repeats + 1):
        for variant in (IN_MODEL, TRANSFORM):
            runs.append((f"{variant} #{i}", _run_variant(variant, args.dataset, args.transform_defaults)))

    print("\nseconds per component (cold, no cache, fresh process and workdir per run)")
    print(_table(runs))
    in_model = [r for label, r in runs if label.startswith(IN_MODEL)]
    transform = [r for label, r in runs if label.startswith(TRANSFORM)]
    print("\nratio transform / in-model (mean over runs):")
    for key, label in (("process_s", "whole process"), ("runner_s", "LocalDagRunner call")):
        a = statistics.mean(r[key] for r in in_model)
        b = statistics.mean(r[key] for r in transform)
        print(f"  {label:<32} {b:7.1f} s / {a:7.1f} s = {b / a:5.2f}  (+{b - a:.1f} s)")
    extra = [r["components"].get("Transform", 0.0) for r in transform]
    trainer_delta = statistics.mean(r["components"]["Trainer"] for r in transform) - statistics.mean(
        r["components"]["Trainer"] for r in in_model
    )
    print(f"  Transform component alone        {statistics.mean(extra):7.1f} s (mean)")
    print(f"  Trainer, transform - in-model    {trainer_delta:+7.1f} s (mean)")
    auc_gap = max(abs(t["test_auc"] - m["test_auc"]) for t, m in zip(transform, in_model, strict=True))
    print(f"  largest test-AUC gap between paired runs: {auc_gap:.4f}")


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    main()
