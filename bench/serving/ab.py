"""`python -m bench.serving.ab --baseline DIR`: this checkout's `dxpipe serve` against another checkout's, in
alternating rounds on the same model and the same load, so a shared, noisy machine affects both alike.

Each round starts one server, measures batch 1 and batch 64 with 32 keep-alive clients (wrk), stops it, then
does the same for the other; the table gives each side's median over the rounds and their ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

from bench.serving.run import REPO, Server, dxpipe_request, free_port, run_wrk, train_model


def start(checkout: Path, base_path: str, python: str) -> Server:
    """Starts `python -m serving.server` from `checkout`."""
    port = free_port()
    argv = [python, "-m", "serving.server", f"--rest_api_port={port}", "--model_name=wdbc"]
    argv += [f"--model_base_path={base_path}", "--access_log=off"]
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    server = Server(checkout.name, argv, f"http://127.0.0.1:{port}", "/v1/models/wdbc", env)
    return server


def main(argv: list[str] | None = None) -> int:
    """Prints the comparison as markdown."""
    parser = argparse.ArgumentParser(prog="python -m bench.serving.ab", description=__doc__.split("\n")[0])
    parser.add_argument("--baseline", type=Path, required=True, help="Another checkout (e.g. main).")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=4.0)
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="dxpipe-serving-ab-"))
    base = workdir / "wdbc"
    train_model(str(base / "1"), epochs=5)
    sides = {"baseline": args.baseline.resolve(), "this checkout": REPO}
    results: dict[tuple[str, int], list[float]] = {}
    for _ in range(args.rounds):
        for side, checkout in sides.items():
            server = start(checkout, str(base), sys.executable)
            try:
                for batch in (1, 64):
                    path, body = dxpipe_request(batch)
                    r = run_wrk(server.url + path, body, 32, args.duration)
                    if r["errors"]:
                        raise RuntimeError(f"{side}: {r['errors']} errors at batch {batch}")
                    results.setdefault((side, batch), []).append(r["req_per_s"] * batch)
            finally:
                server.stop()
    print(
        f"A/B, {args.rounds} alternating rounds, {args.duration:g} s per cell, 32 clients, rows/s (median):\n"
    )
    print("| batch | baseline | this checkout | ratio |")
    print("|---:|---:|---:|---:|")
    for batch in (1, 64):
        a = statistics.median(results[("baseline", batch)])
        b = statistics.median(results[("this checkout", batch)])
        print(f"| {batch} | {a:.0f} | {b:.0f} | {b / a:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
