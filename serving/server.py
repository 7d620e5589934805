"""`dxpipe serve` / `python -m serving.server`: a TF Serving-compatible REST model server.

Flags keep `tensorflow_model_server`'s names and `--flag=value` syntax, so the same command lines and the same
`models.config` work here and on the real TF Serving (which is what production runs, see `serving/k8s/`). A
few flags are dxpipe's own (request-size and read limits, the access log, batching without a file); they are
marked as such in `--help`.

TensorFlow is imported only when a server is built, so `--help` and flag errors are instant.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import logging
import os
import signal
import ssl
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from serving.auth import AuthPolicy
from serving.config import (
    BatchingOptions,
    ModelConfig,
    load_model_config_file,
    parse_batching_parameters,
    single_model_config,
)
from serving.errors import ModelConfigError, ServingError
from serving.httpserver import HttpLimits

log = logging.getLogger("dxpipe.serving")

DEFAULT_REST_API_PORT = 8501
DEFAULT_REST_API_HOST = "127.0.0.1"


def _flag_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def add_server_flags(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Adds the server's flags (TF Serving's names) to a parser; used by `dxpipe serve` too."""
    tfs = parser.add_argument_group("tensorflow_model_server flags")
    tfs.add_argument(
        "--rest_api_port", type=int, default=DEFAULT_REST_API_PORT, help="HTTP/REST port (0: any free)."
    )
    tfs.add_argument("--model_name", default="default", help="Model name (ignored with --model_config_file).")
    tfs.add_argument("--model_base_path", default="", help="Directory of numbered versions of the model.")
    tfs.add_argument(
        "--model_config_file", default="", help="TF Serving models.config (ModelServerConfig text)."
    )
    tfs.add_argument(
        "--model_config_file_poll_wait_seconds",
        type=float,
        default=0.0,
        help="Re-read --model_config_file this often (0: never).",
    )
    tfs.add_argument(
        "--file_system_poll_wait_seconds",
        type=float,
        default=1.0,
        help="Look for new or removed version directories this often (0: only at startup).",
    )
    tfs.add_argument(
        "--rest_api_timeout_in_ms", type=int, default=30000, help="Deadline of one inference request."
    )
    tfs.add_argument(
        "--rest_api_enable_cors_support",
        type=_flag_bool,
        nargs="?",
        const=True,
        default=False,
        help="Add CORS headers.",
    )
    tfs.add_argument(
        "--enable_batching",
        type=_flag_bool,
        nargs="?",
        const=True,
        default=True,
        help="Merge concurrent requests into one model call (on by default here; off in TF Serving).",
    )
    tfs.add_argument(
        "--batching_parameters_file", default="", help="TF Serving BatchingParameters text file."
    )
    tfs.add_argument(
        "--enable_model_warmup",
        type=_flag_bool,
        nargs="?",
        const=True,
        default=True,
        help="Warm up new versions.",
    )
    tfs.add_argument("--num_request_iterations_for_warmup", type=int, default=1)
    tfs.add_argument("--saved_model_tags", default="serve", help="Comma-separated MetaGraph tags to load.")
    tfs.add_argument("--tensorflow_intra_op_parallelism", type=int, default=0)
    tfs.add_argument(
        "--tensorflow_inter_op_parallelism",
        type=int,
        default=-1,
        help="-1 (default here) runs a model call's ops in the calling thread: fastest for small models.",
    )
    tfs.add_argument("--port", type=int, default=0, help="gRPC port: accepted for compatibility, not served.")
    own = parser.add_argument_group("dxpipe flags")
    own.add_argument("--rest_api_host", default=DEFAULT_REST_API_HOST, help="Address to bind (0.0.0.0: all).")
    own.add_argument("--max_batch_size", type=int, default=BatchingOptions.max_batch_size)
    own.add_argument("--batch_timeout_micros", type=int, default=BatchingOptions.batch_timeout_micros)
    own.add_argument("--num_batch_threads", type=int, default=BatchingOptions.num_batch_threads)
    own.add_argument("--max_enqueued_batches", type=int, default=BatchingOptions.max_enqueued_batches)
    own.add_argument("--rest_api_max_body_bytes", type=int, default=HttpLimits.max_body_bytes)
    own.add_argument(
        "--rest_api_max_inflight_body_bytes",
        type=int,
        default=HttpLimits.max_inflight_body_bytes,
        help="Request-body bytes the server holds at once, all connections together (503 beyond).",
    )
    own.add_argument(
        "--rest_api_read_timeout_seconds",
        type=float,
        default=HttpLimits.read_timeout,
        help="Time allowed to receive a whole request.",
    )
    own.add_argument(
        "--rest_api_idle_timeout_seconds",
        type=float,
        default=HttpLimits.idle_timeout,
        help="Keep-alive idle limit.",
    )
    own.add_argument(
        "--out_of_domain",
        choices=["refuse", "flag"],
        default="refuse",
        help="Values outside the schema's domain, for models that carry their schema: 400 (refuse) or an "
        "answer with an 'out_of_domain' list (flag).",
    )
    own.add_argument(
        "--auth_token_file",
        default="",
        help="JSON file of bearer-token digests and their models (python -m serving.auth new ...); "
        "unset: no authentication, as in TF Serving.",
    )
    own.add_argument(
        "--auth_public",
        default="",
        help="Comma-separated route kinds answered without a token: status, metadata, metrics (for probes).",
    )
    own.add_argument(
        "--ssl_certfile", default="", help="PEM certificate chain: serve HTTPS (with --ssl_keyfile)."
    )
    own.add_argument("--ssl_keyfile", default="", help="PEM private key of --ssl_certfile.")
    own.add_argument("--access_log", default="-", help="'-' for stderr, a file path, or 'off'.")
    own.add_argument("--log_level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser


@dataclasses.dataclass(frozen=True)
class ServerOptions:
    """Everything a server needs, validated.

    Attributes:
        models: The models to serve.
        model_config_file: Set when the models came from a file (which may then be polled).
        config_poll_seconds: `--model_config_file_poll_wait_seconds`.
        file_system_poll_seconds: `--file_system_poll_wait_seconds`.
        host: Address to bind.
        port: Port to bind (0 picks a free one).
        timeout_ms: Deadline of an inference request.
        enable_cors: Add CORS headers.
        batching: Batching options.
        limits: HTTP limits.
        tags: MetaGraph tags.
        warmup: Warm up new versions.
        warmup_iterations: Warm-up repetitions.
        intra_op_threads: TensorFlow intra-op threads.
        inter_op_threads: TensorFlow inter-op threads (-1: caller's thread).
        access_log: `-` (stderr), a file path, or `off`.
        out_of_domain: `refuse` or `flag` (models that carry their schema).
        auth: Bearer-token policy (None: no authentication).
        ssl_context: TLS for the REST port (None: plain HTTP).
    """

    models: tuple[ModelConfig, ...]
    model_config_file: str | None = None
    config_poll_seconds: float = 0.0
    file_system_poll_seconds: float = 1.0
    host: str = DEFAULT_REST_API_HOST
    port: int = DEFAULT_REST_API_PORT
    timeout_ms: int = 30000
    enable_cors: bool = False
    batching: BatchingOptions = dataclasses.field(default_factory=BatchingOptions)
    limits: HttpLimits = dataclasses.field(default_factory=HttpLimits)
    tags: tuple[str, ...] = ("serve",)
    warmup: bool = True
    warmup_iterations: int = 1
    intra_op_threads: int = 0
    inter_op_threads: int = -1
    access_log: str = "off"
    out_of_domain: str = "refuse"
    auth: AuthPolicy | None = None
    ssl_context: ssl.SSLContext | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ServingError(f"--rest_api_port={self.port} is not a port number (0-65535).")
        if self.file_system_poll_seconds < 0 or self.config_poll_seconds < 0:
            raise ServingError("Poll intervals cannot be negative.")
        if self.limits.max_body_bytes < 1:
            raise ServingError("--rest_api_max_body_bytes must be positive.")
        if self.limits.max_inflight_body_bytes < self.limits.max_body_bytes:
            raise ServingError(
                f"--rest_api_max_inflight_body_bytes={self.limits.max_inflight_body_bytes} is below "
                f"--rest_api_max_body_bytes={self.limits.max_body_bytes}: a request at the body limit could never "
                "be received; raise it (default 256 MiB) or lower the body limit."
            )
        if not self.models:
            raise ModelConfigError("No model to serve.")


def options_from_args(args: argparse.Namespace) -> ServerOptions:
    """Validates parsed flags into `ServerOptions`.

    Raises:
        ServingError: A flag combination that cannot work, with the fix.
    """
    if args.model_config_file:
        models = load_model_config_file(args.model_config_file)
        config_file = os.path.abspath(args.model_config_file)
    elif args.model_base_path:
        if not os.path.isdir(args.model_base_path):
            raise ModelConfigError(
                f"--model_base_path={args.model_base_path} is not a directory; point it at the directory that holds "
                "the numbered version directories."
            )
        models = (single_model_config(args.model_name, args.model_base_path),)
        config_file = None
    else:
        raise ModelConfigError(
            "Either --model_config_file or --model_base_path must be set (with --model_name) to serve a model."
        )
    batching = BatchingOptions(
        enabled=args.enable_batching,
        max_batch_size=args.max_batch_size,
        batch_timeout_micros=args.batch_timeout_micros,
        num_batch_threads=args.num_batch_threads,
        max_enqueued_batches=args.max_enqueued_batches,
    )
    if args.batching_parameters_file:
        try:
            text = Path(args.batching_parameters_file).read_text()
        except OSError as exc:
            raise ServingError(
                f"Cannot read --batching_parameters_file {args.batching_parameters_file}: {exc.strerror}."
            ) from None
        batching = parse_batching_parameters(text, args.batching_parameters_file, batching)
    if args.port:
        log.warning(
            "--port=%d (gRPC) is accepted for compatibility but dxpipe serve only serves REST.", args.port
        )
    return ServerOptions(
        models=models,
        model_config_file=config_file,
        config_poll_seconds=args.model_config_file_poll_wait_seconds,
        file_system_poll_seconds=args.file_system_poll_wait_seconds,
        host=args.rest_api_host,
        port=args.rest_api_port,
        timeout_ms=args.rest_api_timeout_in_ms,
        enable_cors=args.rest_api_enable_cors_support,
        batching=batching,
        limits=HttpLimits(
            max_body_bytes=args.rest_api_max_body_bytes,
            max_inflight_body_bytes=args.rest_api_max_inflight_body_bytes,
            read_timeout=args.rest_api_read_timeout_seconds,
            idle_timeout=args.rest_api_idle_timeout_seconds,
        ),
        tags=tuple(t.strip() for t in args.saved_model_tags.split(",") if t.strip()),
        warmup=args.enable_model_warmup,
        warmup_iterations=args.num_request_iterations_for_warmup,
        intra_op_threads=args.tensorflow_intra_op_parallelism,
        inter_op_threads=args.tensorflow_inter_op_parallelism,
        access_log=args.access_log,
        out_of_domain=args.out_of_domain,
        auth=_auth_from_args(args),
        ssl_context=_ssl_from_args(args),
    )


def _auth_from_args(args: argparse.Namespace) -> AuthPolicy | None:
    public = [p.strip() for p in args.auth_public.split(",") if p.strip()]
    if not args.auth_token_file:
        if public:
            raise ServingError("--auth_public needs --auth_token_file (without it every route is public).")
        return None
    return AuthPolicy.load(args.auth_token_file, public)


def _ssl_from_args(args: argparse.Namespace) -> ssl.SSLContext | None:
    if not args.ssl_certfile and not args.ssl_keyfile:
        return None
    if not (args.ssl_certfile and args.ssl_keyfile):
        raise ServingError("--ssl_certfile and --ssl_keyfile go together: set both to serve HTTPS.")
    return tls_context(args.ssl_certfile, args.ssl_keyfile)


def tls_context(certfile: str, keyfile: str) -> ssl.SSLContext:
    """A server TLS context (TLS 1.2 or later) from PEM files.

    Raises:
        ServingError: A file cannot be read or the key does not match the certificate.
    """
    for flag, path in (("--ssl_certfile", certfile), ("--ssl_keyfile", keyfile)):
        if not os.path.isfile(path):
            # ssl's own error does not say which file is missing
            raise ServingError(f"Cannot read {flag} {path}: no such file.")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(certfile, keyfile)
    except ssl.SSLError as exc:  # before OSError, of which it is a subclass
        raise ServingError(
            f"--ssl_certfile {certfile} / --ssl_keyfile {keyfile} cannot be used: {exc.reason or exc}; "
            "give the PEM certificate chain and its matching private key."
        ) from None
    except OSError as exc:
        raise ServingError(
            f"Cannot read --ssl_certfile {certfile} / --ssl_keyfile {keyfile}: {exc.strerror}."
        ) from None
    return context


class ModelServer:
    """The model manager, the batcher and the HTTP server, started and stopped together.

    Args:
        options: Server options.
        loader: Overrides how a version is loaded (`loader(name, version, path)`); defaults to SavedModels.
    """

    def __init__(self, options: ServerOptions, loader: Callable | None = None):
        # Imported here: these pull in TensorFlow.
        from serving.batching import Batcher
        from serving.httpserver import HttpServer
        from serving.manager import ModelManager
        from serving.metrics import AccessLog, Metrics
        from serving.rest_api import RestApi

        if loader is None:
            from serving import savedmodel

            session = savedmodel.SessionOptions(
                tags=options.tags,
                inter_op_threads=options.inter_op_threads,
                intra_op_threads=options.intra_op_threads,
                warmup=options.warmup,
                warmup_iterations=options.warmup_iterations,
                out_of_domain=options.out_of_domain,
            )

            def loader(name: str, version: int, path: str):
                return savedmodel.load_version(name, version, path, session)

        self.options = options
        self.manager = ModelManager(
            options.models,
            loader,
            file_system_poll_seconds=options.file_system_poll_seconds,
            config_file=options.model_config_file,
            config_poll_seconds=options.config_poll_seconds,
        )
        self.metrics = Metrics(self.manager.model_names, self.manager.has_model, self.manager.version_states)
        self.batcher = Batcher(options.batching, on_batch=self.metrics.on_batch)
        self.access_log = AccessLog.open(options.access_log)
        self.api = RestApi(
            self.manager,
            self.batcher,
            self.metrics,
            timeout_ms=options.timeout_ms,
            enable_cors=options.enable_cors,
            access_log=self.access_log,
            auth=options.auth,
        )
        self.http = HttpServer(self.api, options.limits, on_tick=self._tick)
        self.port: int | None = None

    def _tick(self) -> None:
        self.api.expire_overdue()
        self.access_log.flush()

    async def start(self) -> int:
        """Loads the initial versions, then listens; returns the bound port."""
        await self.manager.start()
        self.port = await self.http.start(self.options.host, self.options.port, self.options.ssl_context)
        log.info(
            "serving %s on %s://%s:%d%s",
            ", ".join(self.manager.model_names()),
            "https" if self.options.ssl_context else "http",
            self.options.host,
            self.port,
            " (bearer tokens required)" if self.options.auth else "",
        )
        return self.port

    async def stop(self, grace: float = 5.0) -> None:
        """Stops accepting, finishes requests in progress (up to `grace` seconds), unloads everything."""
        await self.http.stop(grace)
        await self.manager.stop()
        await asyncio.to_thread(self.batcher.close)
        await asyncio.to_thread(self.api.close)
        self.access_log.close()


class ServerThread:
    """A `ModelServer` running on its own event loop in a background thread (tests, notebooks, embedding).

    Attributes:
        server: The server.
        port: The bound port.
        url: `http://host:port`.
    """

    def __init__(self, options: ServerOptions, loader: Callable | None = None):
        self.server = ModelServer(options, loader)
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="dxpipe-serve", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error
        self.port = self.server.port
        self.url = f"{'https' if options.ssl_context else 'http'}://{options.host}:{self.port}"

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self.server.start())
        except BaseException as exc:  # noqa: BLE001 - handed to the constructor's caller
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()

    def call(self, coro, timeout: float = 60.0):
        """Runs a coroutine on the server's loop and returns its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def stop(self, grace: float = 5.0) -> None:
        """Stops the server and its thread."""
        if not self._thread.is_alive():
            return
        self.call(self.server.stop(grace), timeout=grace + 30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def __enter__(self) -> ServerThread:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def configure_logging(level: str) -> None:
    """The server's own log goes to stderr (the access log is separate: `--access_log`)."""
    root = logging.getLogger("dxpipe.serving")
    root.setLevel(level)
    root.propagate = False  # TensorFlow installs a root handler; without this every line would print twice
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)


async def _serve(options: ServerOptions) -> None:
    server = ModelServer(options)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    # Everything imported and loaded so far lives as long as the process: keep the collector off it.
    gc.freeze()
    await stop.wait()
    log.info("shutting down")
    await server.stop()


def run(options: ServerOptions) -> None:
    """Serves until SIGTERM or SIGINT, then drains and exits."""
    asyncio.run(_serve(options))


def build_parser() -> argparse.ArgumentParser:
    """The parser of `python -m serving.server`."""
    parser = argparse.ArgumentParser(
        prog="python -m serving.server", description="Serve SavedModels over TF Serving's REST API."
    )
    return add_server_flags(parser)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code. Errors are one line on stderr."""
    args = build_parser().parse_args(argv)
    # TensorFlow's C++ runtime logs a warning for every request a kernel rejects; the REST answer already
    # carries that message, so keep stderr for the server's own log.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    configure_logging(args.log_level)
    try:
        options = options_from_args(args)
        run(options)
    except ServingError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    except OSError as exc:
        sys.stderr.write(
            f"error: cannot serve on {args.rest_api_host}:{args.rest_api_port}: {exc.strerror}\n"
        )
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
