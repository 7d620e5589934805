"""`dxpipe serve` and `dxpipe predict`.

`register(subparsers)` adds both subcommands to the `dxpipe` parser; each sets `func(args) -> int` (the exit
code) as its default, and reports a user error by raising a `DxpipeError`, which the caller prints as one line.
`main()` does the same on its own (`python -m serving.cli ...`).
"""

from __future__ import annotations

import argparse
import base64
import csv
import json
import math
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from schemas.errors import DxpipeError
from schemas.naming import feature_name
from serving.client import DEFAULT_URL, ServingClient
from serving.errors import ServingError
from serving.input_contract import CONTRACT_HEADER


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds `serve` and `predict` to an argparse subparsers object."""
    from serving.server import add_server_flags

    serve = subparsers.add_parser(
        "serve",
        help="Serve SavedModels over TF Serving's REST API.",
        description=(
            "Serve the numbered SavedModel versions under --model_base_path (or every model of "
            "--model_config_file) over TF Serving's REST API, with tensorflow_model_server's flag names."
        ),
    )
    add_server_flags(serve)
    serve.set_defaults(func=run_serve)

    predict = subparsers.add_parser(
        "predict",
        help="Send rows to a TF Serving endpoint and print the predictions.",
        description=(
            "Send rows from a CSV file (a header row naming the model's inputs; other columns are ignored) or a "
            "JSON file (a request body, or a list of instances) to MODEL's :predict, and print one JSON line "
            "per prediction."
        ),
    )
    predict.add_argument("model", help="Model name, as in /v1/models/<model>.")
    source = predict.add_mutually_exclusive_group(required=True)
    source.add_argument("--csv", type=Path, help="CSV file with a header row.")
    source.add_argument("--json", type=Path, help='JSON file: {"instances": ...}, {"inputs": ...} or a list.')
    source.add_argument(
        "--image", type=Path, nargs="+", help="Image file(s) (PNG or JPEG), sent as b64 to an image model."
    )
    predict.add_argument("--server", default=DEFAULT_URL, help=f"REST endpoint (default {DEFAULT_URL}).")
    predict.add_argument("--signature_name", default="", help="Signature to call (default serving_default).")
    predict.add_argument("--batch_size", type=int, default=256, help="CSV rows per request.")
    predict.add_argument("--timeout", type=float, default=30.0, help="Seconds per request.")
    predict.add_argument(
        "--token_file",
        type=Path,
        help="File holding a bearer token, for a server that requires one (a file keeps it out of `ps`).",
    )
    predict.set_defaults(func=run_predict)


def run_serve(args: argparse.Namespace) -> int:
    """`dxpipe serve`: serves until SIGTERM/SIGINT."""
    import os

    from serving import server

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    server.configure_logging(args.log_level)
    try:
        options = server.options_from_args(args)
        server.run(options)
    except OSError as exc:
        raise ServingError(
            f"cannot serve on {args.rest_api_host}:{args.rest_api_port}: {exc.strerror}"
        ) from None
    return 0


_FLOATS = ("DT_FLOAT", "DT_DOUBLE", "DT_HALF", "DT_BFLOAT16")
_INTS = ("DT_INT8", "DT_INT16", "DT_INT32", "DT_INT64", "DT_UINT8", "DT_UINT16", "DT_UINT32", "DT_UINT64")


def _converter(name: str, dtype: str):
    if dtype in _FLOATS:
        return float
    if dtype in _INTS:
        return int
    if dtype == "DT_BOOL":

        def to_bool(text: str) -> bool:
            lowered = text.strip().lower()
            if lowered in ("true", "1"):
                return True
            if lowered in ("false", "0"):
                return False
            raise ValueError(text)

        return to_bool
    if dtype == "DT_STRING":
        return str
    raise ServingError(f"input {name!r} has dtype {dtype}, which cannot be read from a CSV file.")


def _blank(dtype: str, nulls: bool) -> Any:
    if nulls:
        return None
    if dtype in _FLOATS:
        return math.nan
    if dtype == "DT_STRING":
        return ""
    raise ValueError("blank")


def _csv_instances(path: Path, inputs: dict[str, dict], nulls: bool = True) -> Iterator[dict[str, Any]]:
    try:
        handle = path.open(newline="")
    except OSError as exc:
        raise ServingError(f"cannot read --csv {path}: {exc.strerror}.") from None
    with handle:
        reader = csv.DictReader(handle)
        raw_header = reader.fieldnames or []
        # The training CSV's raw header works here too: columns are matched by the one naming rule.
        named = {feature_name(column, i): column for i, column in enumerate(raw_header)}
        header = [column for column in raw_header if column in inputs] + [
            name for name in named if name in inputs and named[name] not in inputs
        ]
        missing = sorted(set(inputs) - set(header))
        if missing:
            raise ServingError(
                f"--csv {path} lacks columns for the model's inputs {', '.join(missing)} (its header has "
                f"{', '.join(raw_header) or 'no columns'})."
            )
        convert = {name: _converter(name, info.get("dtype", "DT_STRING")) for name, info in inputs.items()}
        for line, row in enumerate(reader, start=2):
            instance = {}
            for name, to_value in convert.items():
                text = row[name] if name in row else row[named[name]]
                try:
                    # A blank cell is a missing value: JSON null for a model that carries its schema (which
                    # refuses NaN as a non-finite number), else NaN / "" as before.
                    blank = text is None or not text.strip()
                    instance[name] = _blank(inputs[name].get("dtype"), nulls) if blank else to_value(text)
                except (TypeError, ValueError):
                    raise ServingError(
                        f"--csv {path} line {line}: column {name} is {text!r}, not a {inputs[name].get('dtype')} value."
                    ) from None
            yield instance


def _chunks(items: Iterator[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _read_image(path: Path) -> bytes:
    """Returns an image file's bytes; the model decodes and checks them (a bad one gets the server's 400)."""
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ServingError(f"cannot read --image {path}: {exc.strerror}.") from None


def _print_json(value: Any) -> None:
    print(json.dumps(value, ensure_ascii=False))


def run_predict(args: argparse.Namespace) -> int:
    """`dxpipe predict`: prints one JSON line per prediction."""
    if args.batch_size < 1:
        raise ServingError(f"--batch_size={args.batch_size} must be at least 1.")
    token = None
    if args.token_file is not None:
        try:
            token = args.token_file.read_text().strip()
        except OSError as exc:
            raise ServingError(f"cannot read --token_file {args.token_file}: {exc.strerror}.") from None
    client = ServingClient(args.server, timeout=args.timeout, token=token)
    if args.image is not None:
        for chunk in _chunks(iter(args.image), args.batch_size):
            instances = [{"b64": base64.b64encode(_read_image(path)).decode("ascii")} for path in chunk]
            for prediction in client.predict(
                args.model, instances, signature_name=args.signature_name or None
            ):
                _print_json(prediction)
        return 0
    if args.csv is not None:
        signature = args.signature_name or "serving_default"
        signatures = client.signature_defs(args.model)
        if signature not in signatures:
            raise ServingError(
                f"model {args.model} has no signature {signature!r}; it has {', '.join(sorted(signatures))}."
            )
        inputs = signatures[signature]["inputs"]
        # A version that carries its schema takes null for a missing value; one that does not (served as TF
        # Serving serves it) refuses null, and its model imputes NaN for numbers and "" for categories.
        nulls = client.last_headers.get(CONTRACT_HEADER) == "schema"
        for chunk in _chunks(_csv_instances(args.csv, inputs, nulls), args.batch_size):
            for prediction in client.predict(args.model, chunk, signature_name=args.signature_name or None):
                # A dxpipe model answers its decision and threshold per row; the version that made them
                # is named once per answer, and repeated on each line so every line stands on its own.
                if client.last_model_version is not None and isinstance(prediction, dict):
                    prediction = {**prediction, "model_version": client.last_model_version}
                _print_json(prediction)
        return 0
    try:
        body = json.loads(args.json.read_text())
    except OSError as exc:
        raise ServingError(f"cannot read --json {args.json}: {exc.strerror}.") from None
    except ValueError as exc:
        raise ServingError(f"--json {args.json} is not JSON: {exc}.") from None
    if isinstance(body, list):
        body = {"instances": body}
    if not isinstance(body, dict) or ("instances" in body) == ("inputs" in body):
        raise ServingError(
            f'--json {args.json} must hold a list of instances, or an object with "instances" or "inputs".'
        )
    signature = args.signature_name or body.get("signature_name") or None
    if "instances" in body:
        for prediction in client.predict(args.model, body["instances"], signature_name=signature):
            _print_json(prediction)
    else:
        _print_json(client.predict(args.model, inputs=body["inputs"], signature_name=signature))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m serving.cli {serve,predict} ...`; user errors are one line on stderr and exit code 2."""
    parser = argparse.ArgumentParser(prog="dxpipe", description="dxpipe serving commands.")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except DxpipeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
