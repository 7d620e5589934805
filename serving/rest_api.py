"""TF Serving's REST API (v1): routing, the handlers, and the order in which their checks run.

The order matters because it decides which error a client sees (see `shared/reference/tfserving-rest-api.md`):
for :predict the body is parsed and `signature_name` checked before the model is looked up, and the
`instances`/`inputs` keys after; for :classify and :regress the whole body, examples included, is converted
before the model is looked up. Paths are matched with TF Serving's own regular expressions, case-insensitively,
on the path only.

A predict request takes a synchronous path (parse, look up, convert, queue for the batcher) and resumes in a
callback when its batch returns, with no coroutine or task of its own; bodies over `_LARGE_BODY` bytes are
parsed and converted in a thread instead, so a huge or hostile body cannot stall the event loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import re
import time
import urllib.parse
from collections.abc import Callable

import numpy as np
import orjson

from serving import auth, tensors
from serving.auth import AuthPolicy
from serving.errors import ApiError, Code, invalid_argument
from serving.httpserver import Request, Response, json_error
from serving.input_contract import CONTRACT_HEADER, InputContract, add_flags
from serving.jsonio import debug_string, encode_text, parse_request_body
from serving.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from serving.metrics import PROMETHEUS_PATH, AccessLog, Metrics

_V1 = re.compile(r"/v1/.*", re.IGNORECASE | re.DOTALL)
_PREDICTION_PATH = re.compile(
    r"/v1/models/([^/:]+)(?:(?:/versions/([0-9]+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)",
    re.IGNORECASE | re.DOTALL,
)
_STATUS_PATH = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:(?:/versions/([0-9]+))|(?:/labels/([^/:]+)))?(?:/(metadata))?",
    re.IGNORECASE | re.DOTALL,
)
_ORIGIN = re.compile(r"https?://")
_INT64_MAX = (1 << 63) - 1
_LARGE_BODY = 256 * 1024
_NOT_FOUND_HTML = (
    b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head>"
    b"<body><h1>Not Found</h1><p>The requested URL was not found on this server.</p></body></html>\n"
)
_CORS_HEADERS = (
    ("Access-Control-Allow-Origin", "*"),
    ("Access-Control-Allow-Methods", "POST, GET"),
    ("Access-Control-Allow-Headers", "Content-Type"),
)


def with_model_version(body: str, version: int) -> str:
    """Adds `"model_version": "<n>"` to a predict response object, next to `predictions` or `outputs`.

    Only for dxpipe models (those carrying a locked operating point): their answer then names the version
    whose threshold made the decision. The version is a string, as TF Serving writes it in `model_spec`
    (metadata); clients that read only `predictions` or `outputs` are unaffected by the extra key.
    """
    return f'{body[:-1]},"model_version":"{int(version)}"}}'


def _decode_arg(text: str) -> str:
    # curl_easy_unescape: %XX only, '+' stays; bytes that are not UTF-8 survive as surrogate escapes.
    return urllib.parse.unquote_to_bytes(text).decode("utf-8", "surrogateescape")


class _Route:
    __slots__ = ("label", "model", "verb", "version")

    def __init__(self, model: str, version: int | None, label: str | None, verb: str):
        self.model = model
        self.version = version
        self.label = label
        self.verb = verb


def parse_route(method: str, path: str) -> _Route:
    """`ParseModelInfo` plus the dispatch of `HttpRestApiHandler::ProcessRequest`.

    Returns a route whose verb is predict, classify, regress, metadata or status.

    Raises:
        ApiError: 400 `Malformed request: ...`, `Failed to convert version: ...`.
    """
    match = None
    if method == "POST":
        match = _PREDICTION_PATH.fullmatch(path)
    elif method == "GET":
        match = _STATUS_PATH.fullmatch(path)
    if match is None:
        raise invalid_argument(f"Malformed request: {method} {path}")
    name_raw, version_raw, label_raw, last = match.groups()
    name = _decode_arg(name_raw) if name_raw else ""
    version = None
    if version_raw:
        version = int(version_raw)
        if version > _INT64_MAX:
            raise invalid_argument(f"Failed to convert version: {version_raw} to numeric.")
    label = _decode_arg(label_raw) if label_raw else None
    if method == "POST":
        if last not in (
            "predict",
            "classify",
            "regress",
        ):  # the regex is case-insensitive, the compare is not
            raise invalid_argument(f"Malformed request: {method} {path}")
        verb = last
    else:
        verb = "metadata" if last == "metadata" else "status"
    return _Route(name, version, label, verb)


_FEATURES, _EXAMPLES = "features", "examples"


def _contract_form(contract: InputContract | None, signature) -> str | None:
    """How a signature takes the contract's features: by name, as serialized examples, or not at all."""
    if contract is None:
        return None
    inputs = signature.inputs
    if inputs.keys() == contract.names:
        return _FEATURES
    if len(inputs) == 1:
        (info,) = inputs.values()
        if info.dtype == tensors.DT_STRING and info.alias in ("examples", "inputs"):
            return _EXAMPLES
    return None


class RestApi:
    """The request handler given to `serving.http.HttpServer`.

    Args:
        manager: The `ModelManager`.
        batcher: The `Batcher` that runs model calls.
        metrics: Where requests are counted.
        timeout_ms: Deadline for one inference request (`--rest_api_timeout_in_ms`); 0 for none.
        enable_cors: Add CORS headers to every answer (`--rest_api_enable_cors_support`).
        access_log: Where request lines go.
        auth: Bearer-token policy; None serves everyone (the default, as TF Serving does).
    """

    def __init__(
        self,
        manager,
        batcher,
        metrics: Metrics,
        *,
        timeout_ms: int = 30000,
        enable_cors: bool = False,
        access_log: AccessLog | None = None,
        auth: AuthPolicy | None = None,
    ):
        self.auth = auth
        self.manager = manager
        self.access_log = access_log or AccessLog(None)
        self.batcher = batcher
        self.metrics = metrics
        self.timeout = timeout_ms / 1000.0
        self.extra_headers = _CORS_HEADERS if enable_cors else ()
        # Large bodies are parsed here, off the event loop. Two threads: a hostile body cannot take more than
        # that much CPU, and few threads means few malloc arenas, so memory stays flat.
        self._parsers = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="dxpipe-parse")
        self._deadlines: dict[asyncio.Future, float] = {}

    def close(self) -> None:
        """Stops the parser threads."""
        self._parsers.shutdown(wait=True)

    # ---------------------------------------------------------------------------------------- entry point

    def __call__(self, request: Request) -> Response | asyncio.Future:
        """Answers one request: directly, or with a future for inference."""
        if self.auth is not None and request.method != "OPTIONS":  # CORS preflights carry no credentials
            denial = self._authorize(request)
            if denial is not None:
                return denial
        path = request.path
        if path == PROMETHEUS_PATH:
            return self._finish(
                request,
                Response(200, self.metrics.render(), METRICS_CONTENT_TYPE),
                "",
                None,
                "metrics",
            )
        if not _V1.fullmatch(path):
            return self._finish(request, Response(404, _NOT_FOUND_HTML, "text/html"), "", None, "other")
        if request.method == "OPTIONS":
            ok = bool(_ORIGIN.search(request.headers.get("origin", "")))
            return self._finish(request, Response(200 if ok else 400, b"", None), "", None, "options")
        try:
            route = parse_route(request.method, path)
        except ApiError as exc:
            return self._error(request, exc, "", None, "other")
        label = self.metrics.model_label(route.model)
        if route.verb == "status":
            return self._status(request, route, label)
        if route.verb == "metadata":
            return self._metadata(request, route, label)
        if len(request.body) > _LARGE_BODY:
            return asyncio.ensure_future(self._infer_async(request, route, label))
        try:
            job = self._prepare(route, request.body)
        except ApiError as exc:
            return self._error(request, exc, label, None, route.verb)
        return self._run(request, route, label, job)

    def _authorize(self, request: Request) -> Response | None:
        path = request.path
        model = None
        if path == PROMETHEUS_PATH:
            kind = auth.METRICS
        elif _V1.fullmatch(path):
            try:
                route = parse_route(request.method, path)
            except ApiError:
                kind = auth.OTHER
            else:
                model = route.model
                kind = route.verb if route.verb in (auth.STATUS, auth.METADATA) else auth.INFERENCE
        else:
            kind = auth.OTHER
        denial = self.auth.check(request.headers.get("authorization"), kind, model)
        if denial is None:
            return None
        response = json_error(denial.status, denial.message)
        if denial.status == 401:
            response.headers = (("WWW-Authenticate", 'Bearer realm="dxpipe"'),)
        return self._finish(request, response, "", None, "auth")

    # ---------------------------------------------------------------------------------------- status, metadata

    def _status(self, request: Request, route: _Route, label: str) -> Response:
        # The label is ignored here: GetModelStatus only honours a numeric version.
        try:
            if not route.model:
                raise invalid_argument("Missing model name in request.")
            entries = self.manager.status(route.model, route.version)
        except ApiError as exc:
            return self._error(request, exc, label, route.version, "status")
        body = orjson.dumps({"model_version_status": entries})
        return self._finish(request, Response(200, body), label, route.version, "status")

    def _metadata(self, request: Request, route: _Route, label: str) -> Response:
        try:
            if not route.model:
                raise invalid_argument("Missing model name in request.")
            model = self.manager.lookup(route.model, route.version, route.label)
        except ApiError as exc:
            return self._error(request, exc, label, route.version, "metadata")
        body = orjson.dumps(
            {
                "model_spec": {"name": model.name, "signature_name": "", "version": str(model.version)},
                "metadata": {"signature_def": model.signature_def_map},
            }
        )
        response = Response(200, body)
        if getattr(model, "contract", None) is not None:
            response.headers = ((CONTRACT_HEADER, "schema"),)
        return self._finish(request, response, label, model.version, "metadata")

    # ---------------------------------------------------------------------------------------- inference

    @staticmethod
    def _parse(body: bytes, verb: str) -> tuple[dict, str, object]:
        """Parses a body into (doc, signature name, examples).

        `examples` is None for predict, else the serialized tf.Examples or the error building them gave:
        TF Serving builds them before it looks the model up.
        """
        doc = parse_request_body(body)
        signature_name = doc.get("signature_name", "")
        if type(signature_name) is not str:
            raise invalid_argument(
                f"JSON Value: {debug_string(doc)} not formatted correctly. 'signature_name' key must be a string value."
            )
        examples: object = None
        if verb != "predict":
            try:
                examples = tensors.examples_from_request(doc)
            except ApiError as exc:
                examples = exc
        return doc, signature_name, examples

    def _examples_error_stands(self, route: _Route, examples: object) -> bool:
        """Whether building the examples failed for good.

        Yes unless the model carries a contract, under which `null` features (what TF Serving's builder
        refuses that a contract accepts) are legal.
        """
        if not isinstance(examples, ApiError):
            return False
        try:
            model = self.manager.lookup(route.model, route.version, route.label)
        except ApiError:
            return True  # TF Serving's order: the body's error before the model's
        return getattr(model, "contract", None) is None

    def _resolve(self, route: _Route, signature_name: str):
        model = self.manager.lookup(route.model, route.version, route.label)
        key = signature_name or "serving_default"
        signature = model.signatures.get(key)
        if signature is None:
            if route.verb == "predict":
                raise invalid_argument(f'Serving signature name: "{key}" not found in signature def')
            raise invalid_argument(f"No signature was found with the name: {key}")
        return model, signature

    @staticmethod
    def _convert(
        route: _Route, doc: dict, signature, contract: InputContract | None, examples: object = None
    ) -> tuple[dict, tuple[str, ...], Callable]:
        """Request body -> feeds, fetches and the renderer of the answer (contract checks included)."""
        flags: list[dict] = []
        if route.verb == "predict":
            if not signature.inputs:
                raise invalid_argument(
                    f"Failed to get input map for signature: {doc.get('signature_name') or 'DEFAULT'}"
                )
            fmt = tensors.predict_format(doc)
            form = _contract_form(contract, signature)
            nulls: dict = {}
            if fmt == tensors.ROW:
                instances = doc["instances"]
                try:
                    feeds = tensors.instances_to_arrays(instances, signature)
                except ApiError:
                    if form != _FEATURES:
                        raise
                    # Only a row that fails conversion can lack a feature, name an unknown one or hold a
                    # null (conversion demands exactly the inputs' names and numbers), so valid rows pay
                    # nothing here: the contract names the problem, or turns nulls into missing markers.
                    instances, nulls = contract.prepare_instances(instances)
                    feeds = tensors.instances_to_arrays(instances, signature)
                render = tensors.row_response
            else:
                inputs = doc["inputs"]
                if form == _FEATURES:
                    inputs, nulls = contract.prepare_columns(inputs)
                feeds = tensors.inputs_to_arrays(inputs, signature)
                render = tensors.columnar_response
            tensors.check_feed_shapes(feeds, signature)
            if form == _FEATURES:
                flags = contract.check_feeds(feeds, nulls)
            elif form == _EXAMPLES:
                (column,) = feeds.values()
                if column.ndim == 1:
                    flags = contract.check_serialized_examples(column)
            if not signature.outputs:
                raise invalid_argument("Cannot convert empty tensor map to JSON")
            if flags:
                return feeds, tuple(signature.outputs), lambda outputs: add_flags(render(outputs), flags)
            return feeds, tuple(signature.outputs), render
        if contract is not None and _contract_form(contract, signature) == _EXAMPLES:
            cleaned, flags = contract.prepare_json_examples(doc)
            if cleaned is not doc or not isinstance(examples, list):
                examples = tensors.examples_from_request(cleaned)
        elif isinstance(examples, ApiError):
            raise examples
        elif examples is None:
            examples = tensors.examples_from_request(doc)
        select = tensors.classify_fetches if route.verb == "classify" else tensors.regress_fetches
        alias, fetches = select(signature)
        feeds = {alias: np.array(examples, dtype=object)}
        count = len(examples)
        respond = tensors.classify_response if route.verb == "classify" else tensors.regress_response
        return feeds, tuple(fetches), lambda outputs: add_flags(respond(outputs, count), flags)

    def _prepare(self, route: _Route, body: bytes):
        doc, signature_name, examples = self._parse(body, route.verb)
        if self._examples_error_stands(route, examples):
            raise examples
        model, signature = self._resolve(route, signature_name)
        feeds, fetches, render = self._convert(
            route, doc, signature, getattr(model, "contract", None), examples
        )
        return model, signature, feeds, fetches, render

    async def _infer_async(self, request: Request, route: _Route, label: str) -> Response:
        loop = asyncio.get_running_loop()
        try:
            doc, signature_name, examples = await loop.run_in_executor(
                self._parsers, self._parse, request.body, route.verb
            )
            if self._examples_error_stands(route, examples):
                raise examples
            model, signature = self._resolve(route, signature_name)
        except ApiError as exc:
            return self._error(request, exc, label, None, route.verb)
        # Hold the version from here to the answer, so an unload cannot close it underneath.
        self.manager.acquire(model)
        try:
            feeds, fetches, render = await loop.run_in_executor(
                self._parsers,
                self._convert,
                route,
                doc,
                signature,
                getattr(model, "contract", None),
                examples,
            )
        except ApiError as exc:
            self.manager.release(model)
            return self._error(request, exc, label, model.version, route.verb)
        except BaseException:
            self.manager.release(model)
            raise
        return await self._run(
            request, route, label, (model, signature, feeds, fetches, render), acquired=True
        )

    def _run(
        self, request: Request, route: _Route, label: str, job, acquired: bool = False
    ) -> asyncio.Future:
        model, signature, feeds, fetches, render = job
        loop = asyncio.get_running_loop()
        answer = loop.create_future()
        if not acquired:
            self.manager.acquire(model)
        pending = self.batcher.submit(model, signature, feeds, fetches)
        if self.timeout > 0:
            self._deadlines[pending] = time.monotonic() + self.timeout

        def done(future: asyncio.Future) -> None:
            self._deadlines.pop(future, None)
            self.manager.release(model)
            if future.cancelled():
                response = self._error(
                    request,
                    ApiError(Code.DEADLINE_EXCEEDED, "Deadline Exceeded"),
                    label,
                    model.version,
                    route.verb,
                )
            else:
                exc = future.exception()
                if exc is not None:
                    error = exc if isinstance(exc, ApiError) else ApiError(Code.INTERNAL, str(exc))
                    response = self._error(request, error, label, model.version, route.verb)
                else:
                    try:
                        body = render(future.result())
                        if route.verb == "predict" and getattr(model, "operating_point", None) is not None:
                            body = with_model_version(body, model.version)
                    except ApiError as error:
                        response = self._error(request, error, label, model.version, route.verb)
                    else:
                        response = self._finish(
                            request,
                            Response(200, encode_text(body)),
                            label,
                            model.version,
                            route.verb,
                        )
            if not answer.done():
                answer.set_result(response)

        pending.add_done_callback(done)
        return answer

    def expire_overdue(self) -> None:
        """Fails inference requests past their deadline with 504 (called every half second).

        A per-request timer would cost a heap operation on every request; deadlines are all `timeout` after
        submission, so the dict is in deadline order and a sweep stops at the first request still in time.
        """
        now = time.monotonic()
        overdue = []
        for pending, deadline in self._deadlines.items():
            if deadline > now:
                break
            overdue.append(pending)
        for pending in overdue:
            self._deadlines.pop(pending, None)
            if not pending.done():
                pending.set_exception(ApiError(Code.DEADLINE_EXCEEDED, "Deadline Exceeded"))

    # ---------------------------------------------------------------------------------------- answers

    def _error(self, request: Request, exc: ApiError, label: str, version: int | None, verb: str) -> Response:
        response = json_error(exc.http_status, exc.message)
        return self._finish(request, response, label, version, verb)

    def _finish(
        self, request: Request, response: Response, label: str, version: int | None, verb: str
    ) -> Response:
        if self.extra_headers:
            response.headers = response.headers + self.extra_headers
        elapsed = time.perf_counter() - request.received
        self.metrics.observe(label, verb, response.status, elapsed)
        self.access_log.record(
            request.method,
            request.path,
            response.status,
            elapsed * 1000.0,
            label or None,
            version,
            verb,
            len(request.body),
            len(response.body),
            request.peer,
        )
        return response
