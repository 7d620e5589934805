"""The `dxpipe` command.

Heavy imports (TensorFlow, TFX, MLflow) happen inside the subcommands, after logging is configured, so
`dxpipe --help` and configuration errors answer at once.
"""

from __future__ import annotations

import argparse
import atexit
import os
import sys
import time
import warnings

from pipelines.errors import DxpipeError
from pipelines.redact import redact_uri
from schemas.files import SchemaFileError


def _quiet_environment(verbose: bool) -> None:
    # Must happen before TensorFlow is imported: its C++ logging reads the variable once.
    if not verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        # Read by MLflow at import, in this process and in the tracking worker it starts.
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
        warnings.filterwarnings("ignore")


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", help="YAML config file (default: the packaged pipelines/configs/default.yaml)"
    )
    parser.add_argument("--dataset", help="dataset entry to run (default: the config's `dataset`)")
    parser.add_argument(
        "--workdir", help="working directory for artifacts, metadata and serving (default .dxpipe)"
    )


def _load(args: argparse.Namespace):
    from pipelines.config import load_config

    return load_config(args.config, dataset=args.dataset, workdir=args.workdir)


def _data_summary(cfg) -> str:
    """Prepares the split data (what the pipeline reads) and describes it: sizes, removals, leakage."""
    from components.data_checks import guards
    from pipelines import data as data_lib
    from pipelines.local_runner import Paths

    prepared = data_lib.materialize(cfg.data, Paths.for_config(cfg).input_base)
    return _describe(cfg, prepared, guards)


def _describe(cfg, prepared, guards) -> str:
    table, split = prepared.table, cfg.data.split
    per_split = {
        name: ([table.rows[i] for i, s in enumerate(prepared.assignment) if s == name],
               [table.groups[i] for i, s in enumerate(prepared.assignment) if s == name] if table.groups else [])
        for name in prepared.sizes
    }  # fmt: skip
    shared = guards.split_leakage(table.columns, per_split)
    how = (
        f"grouped by {split.group_by}"
        if split.group_by
        else f"ordered by {split.order_by}"
        if split.order_by
        else "by row content"
    )
    sizes = " / ".join(f"{name} {size}" for name, size in prepared.sizes.items())
    lines = [f"data: {len(table.rows)} rows from {table.origin}, split {how}: {sizes}"]
    if table.dropped_by_label:
        dropped = ", ".join(f"{n} with label {k!r}" for k, n in sorted(table.dropped_by_label.items()))
        lines.append(f"  removed by label_map `drop`: {dropped}")
    leak = f"  across splits: {shared['identical_rows_across_splits']} identical feature row(s)"
    if split.group_by:
        groups = len(set(table.groups))
        leak += f", {shared['shared_groups']} shared {split.group_by} value(s) of {groups}"
    lines.append(leak)
    return "\n".join(lines)


def _clinical_lines(outputs) -> list[str]:
    from pipelines.clinical_report import ClinicalReportError, load_clinical, summary_lines

    try:
        report = load_clinical(outputs.clinical_uri)
    except ClinicalReportError as exc:
        return [f"Clinical evaluation: {exc}"]
    return [] if report is None else summary_lines(report)


def _print_summary(cfg, result, wall: float) -> None:
    from pipelines import report

    outputs, version = result.outputs, result.version
    print(f"\nRun {outputs.tfx_run_id} of {cfg.pipeline_name} finished in {wall:.1f} s")
    cached = sorted(n for n, s in outputs.execution_states.items() if s == "CACHED")
    if cached:
        print(f"  cached: {', '.join(cached)}")
    if outputs.evaluation_uri:
        metrics = report.load_test_metrics(outputs.evaluation_uri)
        print(
            f"\nTest split ({cfg.data.positive_class} = 1, threshold {cfg.data.training.operating_threshold}):"
        )
        print(report.format_metrics_table(metrics))
    if outputs.model_uri:
        from models.operating_point import OperatingPointError, read_record

        try:
            record = read_record(os.path.join(outputs.model_uri, "Format-Serving"))
        except OperatingPointError as exc:
            print(f"Operating point: unreadable: {exc}")
        else:
            if record is not None:
                print(report.describe_operating_point(record))
    clinical = _clinical_lines(outputs)
    if clinical:
        print("\n" + "\n".join(clinical))
    if getattr(result, "intervals", None):
        bounds = ", ".join(f"{name} {interval}" for name, interval in result.intervals.items())
        print(f"95% bootstrap intervals (test split resampled 1000 times): {bounds}")
    if outputs.blessed:
        print(f"\nEvaluator: blessed - every threshold met; compared with {result.baseline}.")
    elif outputs.blessed is False:
        print(f"\nEvaluator: NOT blessed (compared with {result.baseline}):")
        for line in report.load_failed_thresholds(outputs.evaluation_uri):
            print(f"  - {line}")
    if outputs.pushed:
        print(f"Pushed to staging: {outputs.pushed_destination}")
    else:
        print("Not pushed to staging: only blessed models are.")
    if getattr(result, "tflite", None) is not None:
        from pipelines.tflite_step import describe

        for line in describe(result.tflite):
            print(line)
    print(f"\nMLflow run {result.mlflow_run_id} at {redact_uri(result.tracking_uri)}")
    if version is None:
        return
    aliases = ", ".join(version.aliases) or "no alias"
    if version.reused:
        print(
            f"Registry: the same model as '{version.name}' version {version.version} ({aliases}); "
            "no new version registered."
        )
        return
    if version.passed:
        print(f"Registry: '{version.name}' version {version.version} passed the gate -> alias candidate")
        print(
            f"  A reviewer other than the run's author approves it for production, running as themselves:\n"
            f'    dxpipe approve {version.name} {version.version} --note "<why>"'
        )
    else:
        print(f"Registry: '{version.name}' version {version.version} FAILED the gate; it cannot be approved:")
        for failure in version.failures:
            print(f"  - {failure}")
    print(f"  non-inferiority compared with: {version.compared_with}")


def cmd_run(args: argparse.Namespace) -> int:
    """Runs the pipeline locally as one MLflow run, registers and gates the model, prints the summary."""
    cfg = _load(args)
    from pipelines import local_runner

    image = cfg.data.kind == "image"
    # An image dataset's schema holds the encoded image (BYTES with an image_domain) and its id, not the
    # table contract, and its data is a verified MedMNIST file converted by pipelines/image_data.py.
    if not image:
        _schema_file(cfg)
    local_runner.quiet_logs(args.verbose)
    print(f"dxpipe: running {cfg.pipeline_name} (dataset {cfg.dataset}) in {os.path.abspath(cfg.workdir)}")
    if not image:
        print(_data_summary(cfg))
    start = time.perf_counter()
    result = local_runner.run_tracked(cfg, enable_cache=not args.no_cache, emit=print)
    _print_summary(cfg, result, time.perf_counter() - start)
    return 0


def _schema_file(cfg):
    """Returns (schema, path), or raises ConfigError naming the file and the fix (before any component)."""
    from pipelines.errors import ConfigError
    from schemas.files import SchemaFileError, read_schema, schema_path

    try:
        path = schema_path(cfg.data.schema_dir)
        return read_schema(path)[0], path
    except SchemaFileError as err:
        raise ConfigError(f"datasets.{cfg.dataset}.schema_dir: {err}") from None


def cmd_schema_draft(args: argparse.Namespace) -> int:
    """Writes a first schema for the configured data to its schema_dir and prints the review checklist."""
    cfg = _load(args)
    from pathlib import Path

    from pipelines import data as data_lib
    from pipelines.errors import ConfigError
    from pipelines.schema_draft import draft_schema
    from schemas.files import SCHEMA_FILE, bundled_dir

    target = Path(cfg.data.schema_dir) / SCHEMA_FILE
    if Path(bundled_dir("")).resolve() in target.resolve().parents:
        raise ConfigError(
            f"{target} is a schema shipped with dxpipe and is never re-drafted; point the dataset's "
            "schema_dir at a directory of your own."
        )
    if target.exists() and not args.force:
        raise ConfigError(
            f"{target} exists (a reviewed schema is never overwritten); check the data against it with "
            "`dxpipe schema check`, or pass --force to draft a new one."
        )
    table = data_lib.load_table(cfg.data)
    draft = draft_schema(table, cfg.data, cfg.data.checks.max_unique_fraction)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(draft.text)
    except OSError as err:
        raise ConfigError(f"cannot write {target}: {err.strerror}; check schema_dir.") from None
    print(f"wrote {target} from {table.origin} ({len(table.rows)} rows, {len(table.columns)} columns)")
    if draft.config_lines:
        print(f"\nAdd to datasets.{cfg.dataset} in your config:")
        for line in draft.config_lines:
            print(f"    {line}")
    print("\nReview checklist:")
    for item in draft.checklist:
        print(f"  - {item}")
    print(
        "  - set clinical bounds where the schema shows an observed range (REVIEW comments)\n"
        "\nThen: dxpipe schema check   (every row against the schema, without running the pipeline)"
    )
    return 0


def cmd_schema_check(args: argparse.Namespace) -> int:
    """Checks every row against the schema and the guards, without running the pipeline."""
    cfg = _load(args)
    schema, path = _schema_file(cfg)
    from components.data_checks import guards, rows
    from components.data_checks.findings import without_guarded
    from components.data_gate.core import format_report
    from pipelines import data as data_lib
    from pipelines.errors import DataGateError

    table = data_lib.load_table(cfg.data)
    assignment = data_lib.assign_splits(table, cfg.data.split)
    splits = {
        name: ([table.rows[i] for i, s in enumerate(assignment) if s == name],
               [table.lines[i] for i, s in enumerate(assignment) if s == name])
        for name in data_lib.SPLITS
    }  # fmt: skip
    checks = cfg.data.checks
    row_findings = rows.check_rows(table.columns, splits, schema, checks.report_rows)
    guard_findings = guards.check_columns(
        table.columns,
        splits,
        guards.allowed_columns(schema),
        max_unique_fraction=checks.max_unique_fraction,
        max_single_feature_auc=checks.max_single_feature_auc,
        limit=checks.report_rows,
    )
    findings = [*without_guarded(row_findings, guard_findings), *guard_findings]
    if findings:
        raise DataGateError(format_report(findings, table.origin).replace(
            "nothing was trained or pushed", f"checked against {path}"))  # fmt: skip
    print(f"{table.origin}: {len(table.rows)} rows match {path} and pass the identifier and leakage checks.")
    return 0


def cmd_prepare_data(args: argparse.Namespace) -> int:
    """Writes the split files the compiled pipeline reads under `<data-root>/<dataset>/`.

    The same step `dxpipe run` takes before its TFX run (`pipelines.data.materialize`), as a command, so
    a Kubeflow run needs nothing from the developer's machine: run it where the pods' data volume is
    mounted (or copy its output there), then compile with the same `--data-root`.
    """
    cfg = _load(args)
    from pathlib import Path

    target = Path(args.data_root) / cfg.dataset
    if cfg.data.kind == "image":
        from pipelines import image_data

        _, digest = image_data.materialize(cfg.data, target)
    else:
        from components.data_checks import guards
        from pipelines import data as data_lib

        prepared = data_lib.materialize(cfg.data, target)
        digest = prepared.digest
        print(_describe(cfg, prepared, guards))
    print(
        f"wrote {target} (dataset digest {digest}); compile with: dxpipe compile --data-root {args.data_root}"
    )
    return 0


def cmd_compile(args: argparse.Namespace) -> int:
    """Compiles the pipeline to a Kubeflow Pipelines v2 spec."""
    cfg = _load(args)
    from pipelines.kubeflow_runner import KubeflowTarget, compile_pipeline

    target = KubeflowTarget(
        image=args.image,
        pipeline_root=args.pipeline_root,
        data_root=args.data_root,
        serving_root=args.serving_root,
        baseline_model_uri=args.baseline_model,
    )
    path = compile_pipeline(cfg, args.output, target)
    print(f"wrote {path} (KFP SDK / UI) and {path.with_suffix('.json')} (PipelineJob)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Returns the argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="dxpipe", description=__doc__.splitlines()[0])
    parser.add_argument("--verbose", action="store_true", help="keep TensorFlow/TFX/Beam logs and tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser(
        "run", help="train, validate, evaluate, push to staging, track in MLflow and gate in the registry"
    )
    _add_config_args(run)
    run.add_argument("--no-cache", action="store_true", help="re-execute every component")
    run.set_defaults(func=cmd_run)

    schema = sub.add_parser("schema", help="draft a schema for your CSV, or check every row against it")
    schema_sub = schema.add_subparsers(dest="schema_command", required=True)
    draft = schema_sub.add_parser(
        "draft", help="write a first schema for the configured data to its schema_dir, for review"
    )
    _add_config_args(draft)
    draft.add_argument("--force", action="store_true", help="overwrite an existing schema.pbtxt")
    draft.set_defaults(func=cmd_schema_draft)
    check = schema_sub.add_parser(
        "check", help="report every row that violates the schema or the guards (no pipeline run)"
    )
    _add_config_args(check)
    check.set_defaults(func=cmd_schema_check)

    prepare = sub.add_parser(
        "prepare-data",
        help="write the split CSVs a compiled Kubeflow pipeline reads, to <data-root>/<dataset>/",
    )
    _add_config_args(prepare)
    prepare.add_argument(
        "--data-root", required=True, help="the directory mounted in the pods as `dxpipe compile --data-root`"
    )
    prepare.set_defaults(func=cmd_prepare_data)

    from pipelines.kubeflow_runner import KubeflowTarget

    defaults = KubeflowTarget()
    kfp = sub.add_parser("compile", help="compile the same pipeline for Kubeflow Pipelines (v2 IR)")
    _add_config_args(kfp)
    kfp.add_argument(
        "--output", default="build/kfp/pipeline.yaml", help="YAML to write (default %(default)s)"
    )
    kfp.add_argument("--image", default=defaults.image, help="container image with dxpipe installed")
    kfp.add_argument("--pipeline-root", default=defaults.pipeline_root, help="artifact root seen by the pods")
    kfp.add_argument("--data-root", default=defaults.data_root, help="directory holding <dataset>/data.csv")
    kfp.add_argument(
        "--serving-root", default=defaults.serving_root, help="TF Serving model base paths' parent"
    )
    kfp.add_argument(
        "--baseline-model",
        default=None,
        help="the champion's Model artifact URI as the pods see it, imported as the Evaluator's baseline "
        "(open-source KFP runs no resolver nodes); without it the run has no baseline",
    )
    kfp.set_defaults(func=cmd_compile)

    from pipelines import registry_cli
    from serving import cli as serving_cli

    registry_cli.register(sub)
    serving_cli.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `dxpipe` console script."""
    args = build_parser().parse_args(argv)
    _quiet_environment(args.verbose)
    try:
        return args.func(args)
    except (DxpipeError, SchemaFileError) as err:
        if args.verbose:
            raise
        print(f"dxpipe: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dxpipe: interrupted", file=sys.stderr)
        return 130


def console_main() -> None:
    """The installed `dxpipe` script: `main`, then a quick exit once TensorFlow has been loaded.

    With TensorFlow, TFX and Beam imported, CPython's finalisation (tearing down some 9,000 modules and
    their native objects) took ~2 s after the work was done: a fifth of a cached `dxpipe run`. By then
    every file is closed and every database write committed (SQLite survives far worse than an early
    exit), so exit handlers run as usual, the standard streams are flushed, and the process exits
    without the teardown. `main` itself never exits, so tests and embedding code call it safely.
    """
    code = main()
    if "tensorflow" in sys.modules:
        atexit._run_exitfuncs()  # logging.shutdown and any other registered handlers, as at a normal exit
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    console_main()
