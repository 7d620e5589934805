"""Beam cluster settings from the config: checked against Beam's own option registry, turned into flags.

The data components (ExampleGen, StatisticsGen, ExampleValidator, the Evaluator) run on whichever Beam
runner `beam.runner` names; `beam.options` carries that runner's settings (Dataflow's project and region,
a Flink master, a Spark master, a job endpoint, worker images) as Beam's flags without their dashes. Both
runners, local and Kubeflow, pass the result as `beam_pipeline_args`, so moving to a cluster is a config
edit, never a code edit. Names and values are checked by Beam's own argument parser at load, so a typo
fails before any component runs, not inside a worker an hour later.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Mapping
from typing import Any

from pipelines.config_errors import did_you_mean
from pipelines.errors import ConfigError

RUNNERS = ("DirectRunner", "DataflowRunner", "FlinkRunner", "SparkRunner", "PortableRunner")
DIRECT_MODES = ("in_memory", "multi_threading", "multi_processing")
# What each cluster runner cannot do without. Beam would otherwise fall back to a default that silently
# does something else: Flink's `[auto]` and Spark's `local[4]` start an embedded cluster (and download a
# job server), and Dataflow cannot start without a project, a region and a staging location.
REQUIRED = {
    "DataflowRunner": {
        "project": "the Google Cloud project",
        "region": "the Dataflow region, e.g. europe-west4",
        "temp_location": "a gs:// staging path",
    },
    "FlinkRunner": {"flink_master": "the Flink JobManager, host:port"},
    "SparkRunner": {"spark_master_url": "the Spark master, e.g. spark://host:7077"},
    "PortableRunner": {"job_endpoint": "the Beam job service, host:port"},
}
# Set through their own keys in `beam:`, so a second copy in `options` could only disagree.
OWN_KEYS = ("runner", "direct_running_mode", "direct_num_workers")


def option_flags(options: Mapping[str, Any]) -> list[str]:
    """Beam flags for `options`: `--key=value`; a list repeats the flag; `true` adds a bare flag."""
    flags: list[str] = []
    for key, value in sorted(options.items()):
        if isinstance(value, bool):
            flags += [f"--{key}"] if value else []
        elif isinstance(value, list | tuple):
            flags += [f"--{key}={item}" for item in value]
        else:
            flags.append(f"--{key}={value}")
    return flags


def _beam_option_names() -> set[str]:
    # Imported here: only a config with Beam options pays for importing Beam at load.
    from apache_beam.options.pipeline_options import PipelineOptions

    return set(PipelineOptions([]).get_all_options())


def check(runner: str, options: Mapping[str, Any]) -> None:
    """Checks a runner's options the way Beam will read them.

    Raises:
        ConfigError: Naming the option, the value and the fix: an option Beam does not know (with the
            closest one it does), one set twice, a required one missing, or a value Beam's parser refuses.
    """
    for key in options:
        if key in OWN_KEYS:
            raise ConfigError(
                f"beam.options.{key} is set twice; set `beam.{key}` instead and remove it here."
            )
    for key, what in REQUIRED.get(runner, {}).items():
        if key not in options:
            raise ConfigError(
                f"beam.options.{key} is required with beam.runner {runner}: add `{key}: <{what}>` under "
                "`beam.options`."
            )
    if not options:
        return
    known = _beam_option_names()
    for key, value in options.items():
        if key not in known:
            raise ConfigError(
                f"beam.options.{key} (value {value!r}) is not a Beam pipeline option"
                f"{did_you_mean(key, known)}; write Beam's flag without its dashes, e.g. temp_location."
            )
        if value is False:
            raise ConfigError(f"beam.options.{key} is false; remove it (true adds the flag `--{key}`).")
    _parse(option_flags(options))


def _parse(flags: list[str]) -> None:
    """Runs Beam's own parser over the flags; it exits on a value of the wrong kind, which we report."""
    from apache_beam.options.pipeline_options import PipelineOptions

    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            PipelineOptions(flags).get_all_options(retain_unknown_options=False)
    except SystemExit:
        reason = (stderr.getvalue().strip().splitlines() or ["a value Beam cannot parse"])[-1]
        raise ConfigError(
            f"beam.options: Beam refused {' '.join(flags)}: {reason.split('error: ', 1)[-1]}. Fix the value."
        ) from None
