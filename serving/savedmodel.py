"""One loaded SavedModel version, run the way TF Serving runs it.

TF Serving loads a SavedModel's MetaGraphDef into a TF1 `Session` and runs signatures by feeding and fetching
the tensor names recorded in each SignatureDef; so does this module. Besides being faithful (the metadata
is the MetaGraphDef's own SignatureDefs, the errors are the kernels' own), it is fast: a Session callable
built with `CallableOptions` costs tens of microseconds per call where calling a restored TF2 signature
function from Python costs about a millisecond, because it skips the Python-side function dispatch.

`ModelVersion.run` is called from worker threads; everything else from the event loop or the loader thread.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
from collections.abc import Mapping, Sequence

import numpy as np
import tensorflow as tf
from google.protobuf import json_format, text_format
from tensorflow.core.protobuf import config_pb2
from tensorflow_serving.apis import get_model_metadata_pb2, prediction_log_pb2

from serving import tensors
from serving.errors import ApiError, Code
from serving.input_contract import REFUSE, SCHEMA_ASSET, ContractError, InputContract

log = logging.getLogger("dxpipe.serving")

WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
# The locked operating point a dxpipe export carries (written by `models.operating_point`; serving reads
# only the model base path, so it reads the file itself rather than importing model code).
OPERATING_POINT_ASSET = os.path.join("assets.extra", "dxpipe_operating_point.json")
INIT_OP_SIGNATURE = "__saved_model_init_op"


@dataclasses.dataclass(frozen=True)
class SessionOptions:
    """How versions are loaded and run.

    Attributes:
        tags: MetaGraph tags to load (`--saved_model_tags`).
        inter_op_threads: `inter_op_parallelism_threads`; -1 runs a call's ops in the calling thread, which
            suits small models: no thread hand-off per call.
        intra_op_threads: `intra_op_parallelism_threads`; 0 lets TensorFlow choose.
        warmup: Run a warm-up request on a new version before it serves (`--enable_model_warmup`).
        warmup_iterations: Times each warm-up request runs (`--num_request_iterations_for_warmup`).
        out_of_domain: What a version with an input contract does with values outside the schema's
            domain: `refuse` or `flag` (`--out_of_domain`).
    """

    tags: tuple[str, ...] = ("serve",)
    inter_op_threads: int = -1
    intra_op_threads: int = 0
    warmup: bool = True
    warmup_iterations: int = 1
    out_of_domain: str = REFUSE


def _tensor_info(alias: str, proto) -> tensors.TensorInfo:
    shape = None if proto.tensor_shape.unknown_rank else tuple(d.size for d in proto.tensor_shape.dim)
    return tensors.TensorInfo(alias=alias, name=proto.name, dtype=proto.dtype, shape=shape)


def signature_from_proto(key: str, proto) -> tensors.Signature:
    """Reduces a SignatureDef proto to a `tensors.Signature` (inputs and outputs sorted by alias)."""
    return tensors.Signature(
        key=key,
        method_name=proto.method_name,
        inputs={a: _tensor_info(a, proto.inputs[a]) for a in sorted(proto.inputs)},
        outputs={a: _tensor_info(a, proto.outputs[a]) for a in sorted(proto.outputs)},
        debug_string=text_format.MessageToString(proto),
    )


def _api_error(exc: tf.errors.OpError) -> ApiError:
    try:
        code = Code(exc.error_code)
    except ValueError:
        code = Code.UNKNOWN
    return ApiError(code, exc.message)


class ModelVersion:
    """A loaded, ready version of a model.

    Attributes:
        name: Model name.
        version: Version number.
        path: The version directory.
        signatures: Signatures by key.
        signature_def_map: The `SignatureDefMap` as proto3 JSON (snake_case, defaults printed), for metadata.
        refs: Requests holding this version (event-loop only); an unload waits for zero.
        contract: The input contract the version carries (`assets.extra/dxpipe_schema.pbtxt`), or None.
        operating_point: The locked operating point a dxpipe export carries
            (`assets.extra/dxpipe_operating_point.json`), or None (an older or a foreign model).
    """

    def __init__(self, name: str, version: int, path: str, session: tf.compat.v1.Session, meta_graph):
        self.name = name
        self.version = version
        self.path = path
        self._session = session
        self.signatures = {
            key: signature_from_proto(key, meta_graph.signature_def[key])
            for key in sorted(meta_graph.signature_def)
        }
        sig_map = get_model_metadata_pb2.SignatureDefMap()
        for key, sig in meta_graph.signature_def.items():
            sig_map.signature_def[key].CopyFrom(sig)
        self.signature_def_map = json_format.MessageToDict(
            sig_map, preserving_proto_field_name=True, including_default_value_fields=True
        )
        self._callables: dict[tuple[str, tuple[str, ...]], object] = {}
        self._lock = threading.Lock()
        self.calls = 0  # model calls run (a batch counts once)
        self.refs = 0
        self.closed = False
        self.contract: InputContract | None = None
        self.operating_point: dict | None = None

    def _callable(self, signature: tensors.Signature, fetches: tuple[str, ...]):
        key = (signature.key, fetches)
        fn = self._callables.get(key)
        if fn is None:
            with self._lock:
                fn = self._callables.get(key)
                if fn is None:
                    options = config_pb2.CallableOptions()
                    options.feed.extend(info.name for info in signature.inputs.values())
                    options.fetch.extend(signature.outputs[a].name for a in fetches)
                    # The public make_callable(feed_list=...) falls back to Session.run per call; this is
                    # the C++ MakeCallable path that Keras' TF1 backend uses.
                    fn = self._session._make_callable_from_options(options)
                    self._callables[key] = fn
        return fn

    def run(
        self, signature: tensors.Signature, feeds: Mapping[str, np.ndarray], fetches: Sequence[str]
    ) -> dict[str, np.ndarray]:
        """Runs one signature: feeds are every input by alias, fetches the output aliases wanted.

        Raises:
            ApiError: The model's error with its canonical code (INVALID_ARGUMENT for bad data, so 400).
        """
        fetches = tuple(fetches)
        with self._lock:
            self.calls += 1
        try:
            fn = self._callable(signature, fetches)  # fails for signatures that cannot be fed by name
            results = fn(*(feeds[a] for a in signature.inputs))
        except tf.errors.OpError as exc:
            raise _api_error(exc) from None
        except UnicodeDecodeError as exc:
            # TensorFlow raises this instead of the OpError when the kernel's message quotes input bytes that
            # are not UTF-8 (say, junk sent as a serialized tf.Example): the message is about the client's
            # bytes, so it is the client's error. Its bytes go back as they are, as TF Serving sends them.
            message = exc.object if isinstance(exc.object, bytes) else bytes(exc.object)
            raise ApiError(Code.INVALID_ARGUMENT, message.decode("utf-8", "surrogateescape")) from None
        return {alias: np.asarray(value) for alias, value in zip(fetches, results, strict=True)}

    def close(self) -> None:
        """Releases the session (call once no request holds this version)."""
        if not self.closed:
            self.closed = True
            self._callables.clear()
            self._session.close()


def load_version(name: str, version: int, path: str, options: SessionOptions) -> ModelVersion:
    """Loads `<path>` (a SavedModel) into its own graph and session, then warms it up.

    Raises:
        ApiError: The version cannot be loaded or its warm-up failed (the code tells why).
    """
    graph = tf.Graph()
    config = tf.compat.v1.ConfigProto(
        inter_op_parallelism_threads=options.inter_op_threads,
        intra_op_parallelism_threads=options.intra_op_threads,
        allow_soft_placement=True,
    )
    with graph.as_default():
        session = tf.compat.v1.Session(graph=graph, config=config)
        try:
            meta_graph = tf.compat.v1.saved_model.loader.load(session, list(options.tags), path)
        except tf.errors.OpError as exc:
            session.close()
            raise _api_error(exc) from None
        except (OSError, RuntimeError, ValueError) as exc:
            session.close()
            raise ApiError(
                Code.NOT_FOUND if isinstance(exc, OSError) else Code.INVALID_ARGUMENT, str(exc)
            ) from None
    model = ModelVersion(name, version, path, session, meta_graph)
    try:
        model.contract = load_contract(path, options.out_of_domain)
        model.operating_point = load_operating_point(path)
    except ContractError as exc:
        model.close()
        raise ApiError(Code.INVALID_ARGUMENT, str(exc)) from None
    if options.warmup:
        try:
            warm_up(model, options.warmup_iterations)
        except ApiError:
            model.close()
            raise
    return model


def load_operating_point(path: str) -> dict | None:
    """The operating point stored with a version, or None when it carries none (threshold 0.5 then).

    Raises:
        ContractError: The file exists but is not a JSON object with a numeric threshold: the version
            would serve decisions nobody can account for, so it is not loaded.
    """
    asset = os.path.join(path, OPERATING_POINT_ASSET)
    try:
        with open(asset, "rb") as handle:
            text = handle.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ContractError(f"cannot read {asset}: {exc.strerror}.") from None
    try:
        record = json.loads(text)
    except ValueError as exc:
        raise ContractError(f"{asset} is not JSON ({exc}); re-export the model.") from None
    threshold = record.get("threshold") if isinstance(record, dict) else None
    if isinstance(threshold, bool) or not isinstance(threshold, int | float):
        raise ContractError(f"{asset} has no numeric 'threshold'; re-export the model.")
    return record


def load_contract(path: str, out_of_domain: str = REFUSE) -> InputContract | None:
    """The input contract stored with a version, or None when it carries none.

    Raises:
        ContractError: The asset is there but is not a usable schema (the version must not serve).
    """
    asset = os.path.join(path, SCHEMA_ASSET)
    try:
        with tf.io.gfile.GFile(asset) as handle:
            text = handle.read()
    except tf.errors.NotFoundError:
        return None
    return InputContract.from_schema_text(text, asset, out_of_domain)


def _synthetic_feeds(signature: tensors.Signature) -> dict[str, np.ndarray] | None:
    # String inputs are usually serialized tf.Examples, which an all-empty batch of one would fail to parse
    # (and log a kernel error for): a batch of zero rows builds the same executors without failing.
    rows = 0 if any(info.dtype == tensors.DT_STRING for info in signature.inputs.values()) else 1
    feeds = {}
    for alias, info in signature.inputs.items():
        if info.shape is None:
            shape = [rows]
        else:
            shape = [rows if i == 0 and d < 0 else (1 if d < 0 else d) for i, d in enumerate(info.shape)]
        if info.dtype == tensors.DT_STRING:
            feeds[alias] = np.full(shape, b"", dtype=object)
        elif info.dtype in tensors._NUMPY:
            feeds[alias] = np.zeros(shape, dtype=tensors._NUMPY[info.dtype])
        else:
            return None
    return feeds


def warm_up(model: ModelVersion, iterations: int = 1) -> int:
    """Runs warm-up requests on a freshly loaded version; returns how many ran.

    With `assets.extra/tf_serving_warmup_requests` (TF Serving's warm-up file of PredictionLogs) those are
    replayed and any failure fails the load, as in TF Serving. Without it, every signature runs once on a
    zero-filled batch of one row (of zero rows when an input is a string): this builds the callables and lets
    TensorFlow do its one-off work before the first real request. Zeros may be invalid data for a model, so
    INVALID_ARGUMENT from a synthetic request is expected and ignored; any other error fails the load.

    Raises:
        ApiError: A warm-up request failed in a way real requests would fail too.
    """
    warmup_path = os.path.join(model.path, WARMUP_FILE)
    if os.path.exists(warmup_path):
        return _replay_warmup_file(model, warmup_path, iterations)
    ran = 0
    for signature in model.signatures.values():
        if not signature.inputs or not signature.outputs:
            continue
        feeds = _synthetic_feeds(signature)
        if feeds is None:
            continue
        for _ in range(iterations):
            try:
                model.run(signature, feeds, tuple(signature.outputs))
            except ApiError as exc:
                if exc.code not in (Code.INVALID_ARGUMENT, Code.FAILED_PRECONDITION, Code.OUT_OF_RANGE):
                    raise ApiError(
                        exc.code, f"Warm-up of signature {signature.key!r} failed: {exc.message}"
                    ) from None
            ran += 1
    return ran


def _replay_warmup_file(model: ModelVersion, path: str, iterations: int) -> int:
    ran = 0
    for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
        entry = prediction_log_pb2.PredictionLog.FromString(record)
        kind = entry.WhichOneof("log_type")
        if kind == "predict_log":
            request = entry.predict_log.request
            key = request.model_spec.signature_name or "serving_default"
            signature = _warmup_signature(model, key)
            feeds = {alias: tf.make_ndarray(proto) for alias, proto in request.inputs.items()}
            fetches = tuple(request.output_filter) or tuple(signature.outputs)
        elif kind in ("classify_log", "regress_log"):
            request = getattr(entry, kind).request
            key = request.model_spec.signature_name or "serving_default"
            signature = _warmup_signature(model, key)
            inputs = request.input
            if inputs.WhichOneof("kind") == "example_list_with_context":
                context = inputs.example_list_with_context.context.SerializeToString()
                examples = [
                    context + e.SerializeToString() for e in inputs.example_list_with_context.examples
                ]
            else:
                examples = [e.SerializeToString() for e in inputs.example_list.examples]
            select = tensors.classify_fetches if kind == "classify_log" else tensors.regress_fetches
            alias, fetch_list = select(signature)
            feeds = {alias: np.array(examples, dtype=object)}
            fetches = tuple(fetch_list)
        else:
            raise ApiError(Code.UNIMPLEMENTED, f"Unsupported log_type for warmup: {kind}")
        missing = set(signature.inputs) - set(feeds)
        if missing:
            raise ApiError(
                Code.INVALID_ARGUMENT, f"Warm-up request for {key!r} lacks inputs {sorted(missing)}"
            )
        for _ in range(iterations):
            model.run(signature, feeds, fetches)
            ran += 1
    return ran


def _warmup_signature(model: ModelVersion, key: str) -> tensors.Signature:
    if key not in model.signatures:
        raise ApiError(Code.INVALID_ARGUMENT, f"Warm-up request names unknown signature {key!r}")
    return model.signatures[key]


def read_signatures(path: str, tags: tuple[str, ...] = ("serve",)) -> dict[str, tensors.Signature]:
    """The signatures of a SavedModel on disk, read from its MetaGraphDef without loading it.

    Useful with `serving.contract.contract_problems` to check an exported model before it is pushed.

    Raises:
        ValueError: No MetaGraphDef with those tags.
    """
    from tensorflow.core.protobuf import saved_model_pb2

    with open(os.path.join(path, "saved_model.pb"), "rb") as handle:
        saved_model = saved_model_pb2.SavedModel.FromString(handle.read())
    for meta_graph in saved_model.meta_graphs:
        if set(meta_graph.meta_info_def.tags) == set(tags):
            return {
                key: signature_from_proto(key, meta_graph.signature_def[key])
                for key in meta_graph.signature_def
            }
    raise ValueError(f"{path} has no MetaGraphDef tagged {', '.join(tags)}")


def has_saved_model(path: str) -> bool:
    """Whether a version directory is complete enough to load (its graph file is written last)."""
    return os.path.isfile(os.path.join(path, "saved_model.pb")) or os.path.isfile(
        os.path.join(path, "saved_model.pbtxt")
    )
