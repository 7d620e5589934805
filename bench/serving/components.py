"""`python -m bench.serving.components --baseline DIR`: the per-request CPU of the pieces issue 10 changed,
this checkout against another checkout's `serving/` (e.g. the commit before the issue), in one process.

In-process timings are far steadier than load tests on a shared machine: each figure is the best of five
runs. Measured per request, for the serving bench's batch-1 and batch-64 WDBC predict requests:

* HTTP: framing one keep-alive request (the body in 16 KiB reads) and answering it, on a fake transport;
* conversion: the row-format JSON instances to input tensors (`tensors.instances_to_arrays`);
* contract: `InputContract.check_feeds` on those tensors (this checkout only; the baseline has none).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

from bench.serving.run import REPO, dxpipe_request, rows


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _best_us(fn, n: int = 2000) -> float:
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - started) / n * 1e6)
    return best


class _Transport:
    """A sink for what the protocol writes."""

    def write(self, data):
        pass

    def writelines(self, data):
        pass

    def is_closing(self):
        return False

    def get_extra_info(self, key):
        return ("127.0.0.1", 1)

    def pause_reading(self):
        pass

    def resume_reading(self):
        pass

    def close(self):
        pass


def http_us(module, raw: bytes) -> float:
    """Per-request microseconds to frame `raw` and answer it with an empty JSON object."""
    server = module.HttpServer(lambda request: module.Response(200, b"{}"), module.HttpLimits())
    protocol = module.HttpProtocol(server)
    protocol.connection_made(_Transport())
    pieces = [raw[i : i + 16384] for i in range(0, len(raw), 16384)]

    def one():
        for piece in pieces:
            protocol.data_received(piece)

    return _best_us(one)


def main(argv: list[str] | None = None) -> int:
    """Prints the comparison as markdown."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.serving.components", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--baseline", type=Path, required=True, help="A checkout whose serving/ to compare with."
    )
    args = parser.parse_args(argv)
    old_http = _load("baseline_httpserver", args.baseline / "serving" / "httpserver.py")
    old_tensors = _load("baseline_tensors", args.baseline / "serving" / "tensors.py")
    from serving import httpserver, tensors
    from serving.input_contract import InputContract

    schema = (REPO / "schemas" / "wdbc" / "schema.pbtxt").read_text()
    contract = InputContract.from_schema_text(schema, "wdbc")
    names = sorted(contract.names)

    def signature(module):
        return module.Signature(
            "serving_default",
            "",
            {n: module.TensorInfo(n, f"{n}:0", module.DT_FLOAT, (-1,)) for n in names},
            {},
        )

    print("| batch | piece | baseline µs | this checkout µs | ratio |")
    print("|---:|---|---:|---:|---:|")
    for batch in (1, 64):
        path, body = dxpipe_request(batch)
        head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        raw = f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body
        a, b = http_us(old_http, raw), http_us(httpserver, raw)
        print(f"| {batch} | HTTP framing and answer | {a:.1f} | {b:.1f} | {b / a:.2f} |")
        instances = rows(batch)
        old_sig, new_sig = signature(old_tensors), signature(tensors)
        a = _best_us(lambda i=instances, s=old_sig: old_tensors.instances_to_arrays(i, s))
        b = _best_us(lambda i=instances, s=new_sig: tensors.instances_to_arrays(i, s))
        print(f"| {batch} | JSON rows to tensors | {a:.1f} | {b:.1f} | {b / a:.2f} |")
        feeds = tensors.instances_to_arrays(instances, new_sig)
        c = _best_us(lambda f=feeds: contract.check_feeds(f, {}))
        print(f"| {batch} | input contract check | - | {c:.1f} | - |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
