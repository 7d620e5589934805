"""Pipeline benchmark: (a) whole pipeline cold, (b) cached re-runs, (c) the plain Keras floor, in one run.

Each measurement is a fresh process, as a user would run it, so TensorFlow's import is paid by both (a)
and (c). Both are timed the same way: from launching the process to the end of its work (wall-clock
stamps taken inside it), so neither counts interpreter shutdown; whole-process times are printed too.
(b) is measured three ways: the installed `dxpipe run` again on the same workdir (whole process, as a
user sees it), a fresh process timed from inside, and a re-run inside that process (no imports: the
orchestration cost alone).
The pipeline runs as `dxpipe run` does: tracked in MLflow (embedded store) and registered through the
gate; the seconds the runner waited on MLflow are reported separately as the tracking overhead.

Usage: python -m bench.pipeline_bench [--dataset wdbc]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_INNER = r"""
import json, os, sys, time
t0 = time.perf_counter()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
from pipelines.config import load_config
from pipelines import local_runner
local_runner.quiet_logs(False)
cfg = load_config(dataset=sys.argv[1], workdir=sys.argv[2])
runs = []
for i in range(int(sys.argv[3])):
    start = time.perf_counter()
    result = local_runner.run_tracked(cfg)
    outputs = result.outputs
    runs.append({"seconds": time.perf_counter() - start,
                 "components": {t.name: t.seconds for t in result.timings},
                 "states": dict(outputs.execution_states), "model_uri": outputs.model_uri,
                 "tracking_s": result.tracking_overhead_s,
                 "gate": None if result.version is None else result.version.passed,
                 "work_done_at": time.time()})
print("BENCH" + json.dumps({"runs": runs, "process_s": time.perf_counter() - t0}))
"""


def _run(cmd: list[str]) -> tuple[str, float, float]:
    """Runs a process; returns its stdout, its launch time (wall clock) and its whole wall time."""
    launched = time.time()
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"benchmark step failed: {' '.join(cmd)}\n{done.stderr[-3000:]}")
    return done.stdout, launched, wall


def _pipeline(python: str, dataset: str, workdir: str, runs: int) -> tuple[list[dict], float, float]:
    out, launched, wall = _run([python, "-c", _INNER, dataset, workdir, str(runs)])
    return json.loads(out.split("BENCH", 1)[1])["runs"], launched, wall


def _cached(run: dict) -> str:
    return ", ".join(sorted(n for n, s in run["states"].items() if s == "CACHED"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", default="wdbc")
    args = parser.parse_args()
    python = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        workdir = str(Path(tmp) / "work")
        (cold,), launched_a, wall_process_a = _pipeline(python, args.dataset, workdir, 1)
        # The installed command, exactly as a user re-runs it.
        dxpipe = str(Path(python).parent / "dxpipe")
        cli_out, _, wall_cli = _run([dxpipe, "run", "--dataset", args.dataset, "--workdir", workdir])
        # The same again, timed from inside, then one more run inside that process.
        (fresh, rerun), launched_b, _ = _pipeline(python, args.dataset, workdir, 2)
        history = json.loads((Path(cold["model_uri"]) / "training_history.json").read_text())
        epochs = len(history["history"]["loss"])
        # The floor reads the whole canonical CSV in one file (the pipeline's input is split by data.py).
        from pipelines.config import load_config
        from pipelines.data import canonical_csv

        csv = str(Path(tmp) / "floor.csv")
        Path(csv).write_text(canonical_csv(load_config(dataset=args.dataset).data))
        floor_out, launched_c, wall_process_c = _run(
            [python, "-m", "bench.keras_floor", "--csv", csv, "--epochs", str(epochs)]
        )
        floor = json.loads(floor_out.strip().splitlines()[-1])
        _, _, wall_import = _run([python, "-c", "import tensorflow"])
    wall_a = cold["work_done_at"] - launched_a
    wall_b = fresh["work_done_at"] - launched_b
    wall_c = floor["work_done_at"] - launched_c

    print(
        f"dataset {args.dataset}, {epochs} epochs (the Trainer's early-stopped run; the floor trains as many)"
    )
    print("times are from launching the process to the end of its work; interpreter shutdown excluded\n")
    print(f"(a) pipeline, cold                      {wall_a:7.1f} s ({cold['seconds']:.1f} s in run_tracked)")
    for name, seconds in cold["components"].items():
        print(f"      {name:<32} {seconds:7.2f} s")
    cli_cached = next(
        (line.strip() for line in cli_out.splitlines() if line.strip().startswith("cached:")), ""
    )
    print(f"(b) cached re-run: `dxpipe run` again    {wall_cli:6.1f} s, whole process")
    print(f"      {cli_cached or 'nothing cached!'}")
    print(
        f"    the same, launch -> end of work     {wall_b:7.1f} s ({fresh['seconds']:.1f} s in run_tracked)"
    )
    print(f"    cached re-run in the same process   {rerun['seconds']:7.1f} s   cached: {_cached(rerun)}")
    print(
        f"(c) plain Keras floor                   {wall_c:7.1f} s ({floor['train_eval_s']:.1f} s train+eval, "
        f"test AUC {floor['test_auc']:.4f})"
    )
    print(f"    `import tensorflow`, whole process  {wall_import:7.1f} s")
    print(f"    whole processes incl. shutdown: (a) {wall_process_a:.1f} s, (c) {wall_process_c:.1f} s")
    for label, run in (("cold", cold), ("2nd `dxpipe run`", fresh), ("same-process re-run", rerun)):
        share = 100 * run["tracking_s"] / run["seconds"]
        print(
            f"MLflow tracking + registry, {label}: {run['tracking_s']:5.2f} s of {run['seconds']:.1f} s "
            f"({share:.1f} %); gate passed: {run['gate']}"
        )
    clinical = cold["components"].get("ClinicalEvaluator")
    if clinical is not None:
        share = clinical / cold["seconds"]
        print(f"ClinicalEvaluator share of (a):         {share:6.1%}  ({clinical:.2f} s; target < 10 %)")
    print(f"\nratio (a)/(c):                          {wall_a / wall_c:5.2f}  (target <= 3)")
    print(f"ratio (a)/(c), whole processes:         {wall_process_a / wall_process_c:5.2f}")
    print(f"ratio (a)/(c), runner vs train+eval:    {cold['seconds'] / floor['train_eval_s']:5.2f}")
    print(f"cached re-run, `dxpipe run` again:      {wall_cli:5.1f} s  (target <= 10 s)")


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    main()
