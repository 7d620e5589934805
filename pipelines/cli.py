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

    local_runner.quiet_logs(args.verbose)
    print(f"dxpipe: running {cfg.pipeline_name} (dataset {cfg.dataset}) in {os.path.abspath(cfg.workdir)}")
    start = time.perf_counter()
    result = local_runner.run_tracked(cfg, enable_cache=not args.no_cache, emit=print)
    _print_summary(cfg, result, time.perf_counter() - start)
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
    except DxpipeError as err:
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
