"""Image pipeline benchmark: cold `dxpipe run` on each MedMNIST dataset, then cached re-runs, in one run.

Every measurement is a fresh `dxpipe run` process (wall clock, as a user sees it). The baseline for the
cached re-run is the tabular `wdbc` pipeline's cached re-run measured in the same session, alternated
with the image re-runs so that load from other users of the machine hits both alike; the ratio is what
the image kind adds to an unchanged re-run. The test-split figures are read from the cold run's output.

Usage: DXPIPE_MEDMNIST_DIR=... python -m bench.image_bench [--repeats 3] [--datasets pneumoniamnist breastmnist]
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DXPIPE = str(Path(sys.executable).with_name("dxpipe"))


def _run(dataset: str, workdir: Path) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(
        [DXPIPE, "run", "--dataset", dataset, "--workdir", str(workdir)],
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"dxpipe run --dataset {dataset} failed:\n{done.stdout}\n{done.stderr}")
    return seconds, done.stdout


def _figures(out: str) -> str:
    keep = [line.strip() for line in out.splitlines() if re.match(r"\s+(AUC|accuracy|Trainer)\s", line)]
    keep += [line for line in out.splitlines() if line.startswith("95% bootstrap")]
    return "\n    ".join(keep)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--datasets", nargs="+", default=["pneumoniamnist", "breastmnist"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dxpipe-image-bench-") as tmp:
        root = Path(tmp)
        _run("wdbc", root / "wdbc")  # the baseline's cold run, not measured
        for dataset in args.datasets:
            cold, out = _run(dataset, root / dataset)
            print(f"{dataset}: cold dxpipe run {cold:.1f} s\n    {_figures(out)}", flush=True)
            image, table = [], []
            for _ in range(args.repeats):
                image.append(_run(dataset, root / dataset)[0])
                table.append(_run("wdbc", root / "wdbc")[0])
            mi, mt = statistics.median(image), statistics.median(table)
            print(
                f"{dataset}: cached re-run median {mi:.1f} s {sorted(round(s, 1) for s in image)}; "
                f"wdbc cached re-run median {mt:.1f} s {sorted(round(s, 1) for s in table)}; ratio {mi / mt:.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
