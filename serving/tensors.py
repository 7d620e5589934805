"""JSON request bodies to numpy feeds and model outputs to JSON, with TF Serving's rules and messages.

This is `json_tensor.cc` re-done for numpy: the same accepted shapes and types, the same error text and the
same order of checks (the first error TF Serving would report is the one reported here). It imports no
TensorFlow, so it can be tested and benchmarked on its own.

Every conversion has a fast path (validate a whole column at once with C-level loops, then one `np.array`)
and an exact path that walks the values in TF Serving's order; the exact path runs only when the fast path
finds something wrong, so that the error message is the one TF Serving would give.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import functools
import operator
from collections.abc import Mapping, Sequence
from itertools import chain

import numpy as np

from serving.errors import ApiError, Code, invalid_argument
from serving.jsonio import (
    debug_string,
    decimal_token,
    decimal_tokens,
    encode_text,
    json_type_name,
    quote,
    quote_bytes,
)

# tensorflow/core/framework/types.proto numbers and `DataTypeString` names.
DT_FLOAT, DT_DOUBLE, DT_INT32, DT_UINT8, DT_INT16, DT_INT8, DT_STRING = 1, 2, 3, 4, 5, 6, 7
DT_INT64, DT_BOOL, DT_UINT16, DT_HALF, DT_UINT32, DT_UINT64 = 9, 10, 17, 19, 22, 23
DTYPE_NAMES = {
    1: "float", 2: "double", 3: "int32", 4: "uint8", 5: "int16", 6: "int8", 7: "string", 8: "complex64",
    9: "int64", 10: "bool", 11: "qint8", 12: "quint8", 13: "qint32", 14: "bfloat16", 15: "qint16",
    16: "quint16", 17: "uint16", 18: "complex128", 19: "half", 20: "resource", 21: "variant", 22: "uint32",
    23: "uint64",
}  # fmt: skip
_NUMPY = {
    DT_FLOAT: np.float32, DT_DOUBLE: np.float64, DT_INT32: np.int32, DT_UINT8: np.uint8, DT_INT16: np.int16,
    DT_INT8: np.int8, DT_STRING: object, DT_INT64: np.int64, DT_BOOL: np.bool_, DT_UINT32: np.uint32,
    DT_UINT64: np.uint64,
}  # fmt: skip
# Integer ranges accepted per dtype (rapidjson's IsInt / IsInt64 / IsUint / IsUint64).
_INT_RANGE = {
    DT_INT32: (-(1 << 31), (1 << 31) - 1),
    DT_INT16: (-(1 << 31), (1 << 31) - 1),
    DT_INT8: (-(1 << 31), (1 << 31) - 1),
    DT_UINT8: (-(1 << 31), (1 << 31) - 1),
    DT_INT64: (-(1 << 63), (1 << 63) - 1),
    DT_UINT32: (0, (1 << 32) - 1),
    DT_UINT64: (0, (1 << 64) - 1),
}
_NUMBER_TYPES = frozenset((int, float))
_INT_TYPES = frozenset((int,))
_BOOL_TYPES = frozenset((bool,))
_MAX_RANK = 254  # TensorShape::MaxDimensions()
_F32_MAX = float(np.finfo(np.float32).max)
_MISSING = object()


def dtype_name(dtype: int) -> str:
    """TensorFlow's short name of a DataType enum value (`float`, `int64`, ...)."""
    return DTYPE_NAMES.get(dtype, f"type{dtype}")


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    """One input or output of a signature.

    Attributes:
        alias: The key in the signature's inputs/outputs map (what JSON uses).
        name: The graph tensor name, e.g. `serving_default_x:0`.
        dtype: The DataType enum value.
        shape: Dimension sizes (-1 unknown), or None for unknown rank.
    """

    alias: str
    name: str
    dtype: int
    shape: tuple[int, ...] | None


@dataclasses.dataclass(frozen=True)
class Signature:
    """A SignatureDef reduced to what request handling needs.

    Attributes:
        key: The signature name.
        method_name: The SignatureDef's method_name.
        inputs: Inputs by alias, sorted by alias.
        outputs: Outputs by alias, sorted by alias.
        debug_string: The SignatureDef in text format (TF Serving puts it in some error messages).
    """

    key: str
    method_name: str
    inputs: Mapping[str, TensorInfo]
    outputs: Mapping[str, TensorInfo]
    debug_string: str = ""

    @functools.cached_property
    def input_names(self) -> frozenset[str]:
        """The input aliases as a set."""
        return frozenset(self.inputs)

    @functools.cached_property
    def dtype_groups(self) -> tuple[tuple[int, tuple[str, ...]], ...]:
        """Inputs grouped by dtype, so one row of a table converts with one numpy call per dtype."""
        groups: dict[int, list[str]] = {}
        for alias, info in self.inputs.items():
            groups.setdefault(info.dtype, []).append(alias)
        return tuple((dtype, tuple(aliases)) for dtype, aliases in groups.items())

    @functools.cached_property
    def all_vectors(self) -> bool:
        """Whether every input has shape [-1] (one scalar per row: a table's columns)."""
        return all(info.shape == (-1,) for info in self.inputs.values())

    @functools.cached_property
    def shape_checks(self) -> tuple[tuple[str, int, tuple[tuple[int, int], ...]], ...]:
        """(alias, rank, fixed dimensions) of every input of known rank."""
        return tuple(
            (alias, len(info.shape), tuple((i, d) for i, d in enumerate(info.shape) if d != -1))
            for alias, info in self.inputs.items()
            if info.shape is not None
        )


# --------------------------------------------------------------------------------------------------- values


def _type_error(value: object, dtype: int) -> ApiError:
    return invalid_argument(
        f"JSON Value: {debug_string(value)} Type: {json_type_name(value)} "
        f"is not of expected type: {dtype_name(dtype)}"
    )


def _is_b64_object(value: object) -> bool:
    return type(value) is dict and len(value) == 1 and type(value.get("b64")) is str


def _b64decode(text: str) -> bytes:
    # absl::Base64Unescape accepts missing padding; Python's decoder does not.
    data = text.encode("ascii", "replace")
    if len(data) % 4:
        data += b"=" * (-len(data) % 4)
    return base64.b64decode(data, validate=True)


def decode_b64_object(value: object) -> bytes:
    """Decodes `{"b64": "..."}` like `JsonDecodeBase64Object`.

    Raises:
        ApiError: INVALID_ARGUMENT when the object is not exactly `{"b64": string}` or not valid base64.
    """
    if not _is_b64_object(value):
        raise invalid_argument(f"JSON Value: {debug_string(value)} not formatted correctly for base64 data")
    try:
        return _b64decode(value["b64"])
    except (binascii.Error, ValueError):
        raise invalid_argument("Unable to base64 decode") from None


def _text_bytes(text: str) -> bytes:
    return encode_text(text)


def _check_leaf(value: object, dtype: int) -> None:
    """Raises TF Serving's error for one leaf value that does not fit `dtype` (`AddValueToTensor`)."""
    t = type(value)
    if t is dict:
        if dtype == DT_STRING:
            decode_b64_object(value)
            return
        raise _type_error(value, dtype)
    if dtype in (DT_FLOAT, DT_DOUBLE):
        if t is not int and t is not float:
            raise _type_error(value, dtype)
    elif dtype in _INT_RANGE:
        low, high = _INT_RANGE[dtype]
        if t is not int or not low <= value <= high:
            raise _type_error(value, dtype)
    elif dtype == DT_STRING:
        if t is not str:
            raise _type_error(value, dtype)
    elif dtype == DT_BOOL:
        if t is not bool:
            raise _type_error(value, dtype)
    else:
        raise _unsupported(value, dtype)


def _leaves_to_array(leaves: list, dtype: int) -> np.ndarray | None:
    """Converts validated-or-not leaves to a 1-D array; None if any leaf is not acceptable."""
    types = set(map(type, leaves))
    if dtype in (DT_FLOAT, DT_DOUBLE):
        if not types <= _NUMBER_TYPES:
            return None
        values = np.array(leaves, dtype=np.float64)
        if dtype == DT_DOUBLE:
            return values
        # fmax/fmin skip NaN; only finite values beyond float range overflow (and would warn) in the cast.
        if values.size and max(np.fmax.reduce(values), -np.fmin.reduce(values)) > _F32_MAX:
            with np.errstate(over="ignore"):  # a double beyond float range becomes +-inf, as in C++
                return values.astype(np.float32)
        return values.astype(np.float32)
    if dtype in _INT_RANGE:
        if not types <= _INT_TYPES:
            return None
        low, high = _INT_RANGE[dtype]
        if leaves and not (low <= min(leaves) and max(leaves) <= high):
            return None
        if dtype == DT_UINT64:
            return np.array(leaves, dtype=np.uint64)
        # Narrow types wrap like the C++ cast from the proto's int32 field.
        return np.array(leaves, dtype=np.int64).astype(_NUMPY[dtype])
    if dtype == DT_BOOL:
        if not types <= _BOOL_TYPES:
            return None
        return np.array(leaves, dtype=np.bool_)
    if dtype == DT_STRING:
        if types == {str}:
            return _object_array([_text_bytes(v) for v in leaves])
        if not types <= {str, dict}:
            return None
        try:
            return _object_array([_text_bytes(v) if type(v) is str else decode_b64_object(v) for v in leaves])
        except ApiError:
            return None
    return None


def _object_array(items: list) -> np.ndarray:
    arr = np.empty(len(items), dtype=object)
    arr[:] = items
    return arr


def _dense_shape(value: object) -> list[int]:
    """`GetDenseTensorShape`: sizes along the first element at every level."""
    shape: list[int] = []
    while type(value) is list:
        shape.append(len(value))
        if len(shape) > _MAX_RANK:
            break
        if not value:
            break
        value = value[0]
    return shape


def _flatten(items: list, dims: Sequence[int]) -> list | None:
    """Flattens items that should each have shape `dims`; None if any list is of the wrong size or level."""
    for size in dims:
        for item in items:
            if type(item) is not list or len(item) != size:
                return None
        items = list(chain.from_iterable(items))
    return items


def _rank_error(shape: Sequence[int]) -> ApiError:
    return invalid_argument(f"Shape {list(shape)} has more than {_MAX_RANK} dimensions")


def _fill_exact(value: object, level: int, shape: Sequence[int], dtype: int) -> int:
    """`FillTensorProto` in TF Serving's order: returns the number of leaves or raises the first error."""
    rank = len(shape)
    if type(value) is not list:
        if level != rank:
            raise invalid_argument(
                f"JSON Value: {debug_string(value)} found at incorrect level: {level + 1} in the JSON DOM. "
                f"Expected at level: {rank}"
            )
        _check_leaf(value, dtype)
        return 1
    if level >= rank:
        raise invalid_argument(f"Encountered list at unexpected level: {level} expected < {rank}")
    if len(value) != shape[level]:
        raise invalid_argument(
            f"Encountered list at unexpected size: {len(value)} at level: {level} "
            f"expected size: {shape[level]}"
        )
    return sum(_fill_exact(v, level + 1, shape, dtype) for v in value)


def value_to_array(value: object, dtype: int) -> np.ndarray:
    """Converts one JSON value (scalar, nested list, b64 object) to an array of its dense shape.

    Raises:
        ApiError: TF Serving's error for the first value that does not fit.
    """
    shape = _dense_shape(value)
    if len(shape) > _MAX_RANK:
        raise _rank_error(shape)
    leaves = _flatten([value], shape)
    if leaves is not None and dtype in _NUMPY:
        arr = _leaves_to_array(leaves, dtype)
        if arr is not None:
            return arr.reshape(shape)
    _fill_exact(value, 0, shape, dtype)
    # The exact walk found nothing wrong, so only an unsupported dtype (with no values) can be left.
    raise _unsupported(value, dtype)


def _unsupported(value: object, dtype: int) -> ApiError:
    return ApiError(
        Code.UNIMPLEMENTED, f"Conversion of JSON Value: {debug_string(value)} to type: {dtype_name(dtype)}"
    )


# --------------------------------------------------------------------------------------------------- predict

ROW = "row"
COLUMNAR = "columnar"


def predict_format(doc: dict) -> str:
    """Checks the `instances`/`inputs` keys in TF Serving's order and returns ROW or COLUMNAR.

    Raises:
        ApiError: Both or neither key, or `instances` not a non-empty list.
    """
    has_instances = "instances" in doc
    if has_instances:
        if "inputs" in doc:
            raise invalid_argument(
                f"JSON Value: {debug_string(doc)} Not formatted correctly expecting only one of 'inputs' or "
                "'instances' keys to exist "
            )
        instances = doc["instances"]
        if type(instances) is not list:
            raise invalid_argument(
                f"JSON Value: {debug_string(doc)} Expecting 'instances' to be an list/array"
            )
        if not instances:
            raise invalid_argument(f"JSON Value: {debug_string(doc)} No values in 'instances' array")
        return ROW
    if "inputs" in doc:
        return COLUMNAR
    raise invalid_argument("Missing 'inputs' or 'instances' key")


def _is_element_object(value: object) -> bool:
    return type(value) is dict and not _is_b64_object(value)


def instances_to_arrays(instances: list, signature: Signature) -> dict[str, np.ndarray]:
    """Row format: one array per input, the 0-th dimension being the number of instances.

    Raises:
        ApiError: TF Serving's error for the first problem, in its order.
    """
    inputs = signature.inputs
    names = signature.input_names
    first = instances[0]
    if type(first) is not dict and len(inputs) > 1:
        raise invalid_argument(
            "instances is a plain list, but expecting list of objects as multiple input tensors required as "
            "per tensorinfo_map"
        )
    if _is_element_object(first):
        count = len(names)
        # Same size and (checked by the lookups below, which raise KeyError otherwise) every name present
        # means exactly the input names.
        if all(type(e) is dict and len(e) == count for e in instances) and "b64" not in names:
            try:
                result = _table_to_arrays(instances, signature) if signature.all_vectors else None
            except KeyError:
                return _instances_exact(instances, signature)
            if result is not None:
                return result
            result = {}
            for alias, info in inputs.items():
                column = [e.get(alias, _MISSING) for e in instances]
                arr = _column_to_array(column, info.dtype) if _MISSING not in column else None
                if arr is None:
                    break
                result[alias] = arr
            else:
                return result
    else:
        alias, info = next(iter(inputs.items()))
        if not any(_is_element_object(e) for e in instances):
            arr = _column_to_array(instances, info.dtype)
            if arr is not None:
                return {alias: arr}
    return _instances_exact(instances, signature)


class Feeds(dict):
    """Input arrays by alias, plus the [inputs x rows] blocks the table path built them from.

    Attributes:
        blocks: (aliases, block) per multi-input dtype group: `block[j]` is the array of `aliases[j]`.
            Checks over many inputs (serving/input_contract.py) read the block in one numpy call.
    """

    blocks: tuple[tuple[tuple[str, ...], np.ndarray], ...] = ()


def _table_to_arrays(instances: list, signature: Signature) -> dict[str, np.ndarray] | None:
    """Fastest path: every input is one scalar per instance (a table). One numpy conversion per dtype."""
    rows = len(instances)
    result = Feeds()
    blocks = []
    for dtype, aliases in signature.dtype_groups:
        if dtype == DT_STRING:
            for alias in aliases:
                column = [e[alias] for e in instances]
                if set(map(type, column)) != {str}:
                    return None  # b64 objects, lists...: the general path
                result[alias] = _object_array([encode_text(v) for v in column])
            continue
        if dtype not in _NUMPY:
            return None
        if len(aliases) == 1:
            values = _leaves_to_array([e[aliases[0]] for e in instances], dtype)
            if values is None:
                return None
            result[aliases[0]] = values
            continue
        table = list(map(operator.itemgetter(*aliases), instances))  # rows of values, in C
        values = _leaves_to_array(list(chain.from_iterable(table)), dtype)
        if values is None:
            return None
        # Rows x inputs -> inputs x rows, contiguous, so each input's column is a contiguous view.
        columns = values.reshape(rows, len(aliases)).T.copy()
        for j, alias in enumerate(aliases):
            result[alias] = columns[j]
        blocks.append((aliases, columns))
    result.blocks = tuple(blocks)
    return result


def _column_to_array(column: list, dtype: int) -> np.ndarray | None:
    """Fast path for one input across instances; None if anything needs the exact path."""
    if dtype not in _NUMPY:
        return None
    dims = _dense_shape(column[0])
    if len(dims) > _MAX_RANK:
        return None
    leaves = _flatten(column, dims)
    if leaves is None:
        return None
    arr = _leaves_to_array(leaves, dtype)
    if arr is None:
        return None
    return arr.reshape([len(column), *dims])


def _instances_exact(instances: list, signature: Signature) -> dict[str, np.ndarray]:
    inputs = signature.inputs
    names = signature.input_names
    shapes: dict[str, list[int]] = {}
    sizes: dict[str, int] = {}
    values: dict[str, list] = {alias: [] for alias in inputs}

    def add_item(item: object, alias: str) -> None:
        if alias not in inputs:
            raise invalid_argument(f"JSON object: does not have named input: {alias}")
        shape = _dense_shape(item)
        if len(shape) > _MAX_RANK:
            raise _rank_error(shape)
        size = _fill_exact(item, 0, shape, inputs[alias].dtype)
        if alias not in sizes:
            sizes[alias], shapes[alias] = size, shape
        elif sizes[alias] != size:
            raise invalid_argument(f"Expecting tensor size: {sizes[alias]} but got: {size}")
        elif shapes[alias] != shape:
            raise invalid_argument(
                f"Expecting shape [{','.join(map(str, shapes[alias]))}] but got: [{','.join(map(str, shape))}]"
            )
        values[alias].append(item)

    elements_are_objects = _is_element_object(instances[0])
    for index, element in enumerate(instances):
        if elements_are_objects:
            if not _is_element_object(element):
                raise invalid_argument(f"Expecting object but got list at item {index} of input list")
            for key, item in element.items():
                try:
                    add_item(item, key)
                except ApiError as exc:
                    raise invalid_argument(
                        f"Failed to process element: {index} key: {key} of 'instances' list. "
                        f"Error: {exc.status_string()}"
                    ) from None
            if element.keys() != names:
                raise invalid_argument(
                    f"Failed to process element: {index} of 'instances' list. JSON object: "
                    f"{debug_string(element)} keys must be equal to: {','.join(sorted(names))}"
                )
        else:
            if _is_element_object(element):
                raise invalid_argument(f"Expecting value/list but got object at item {index} of input list")
            alias = next(iter(inputs))
            try:
                add_item(element, alias)
            except ApiError as exc:
                raise invalid_argument(
                    f"Failed to process element: {index} of 'instances' list. Error: {exc.status_string()}"
                ) from None
    # Every value was checked above, so the fast conversion cannot refuse any of them now.
    result = {}
    for alias, items in values.items():
        leaves = _flatten(items, shapes[alias])
        arr = _leaves_to_array(leaves, inputs[alias].dtype) if leaves is not None else None
        if arr is None:
            raise _unsupported(items, inputs[alias].dtype)
        result[alias] = arr.reshape([len(items), *shapes[alias]])
    return result


def inputs_to_arrays(value: object, signature: Signature) -> dict[str, np.ndarray]:
    """Columnar format (`inputs`): one array per input; extra keys of an object are ignored.

    Raises:
        ApiError: TF Serving's error for the first problem, in its order.
    """
    inputs = signature.inputs
    if type(value) is not dict or _is_b64_object(value):
        if len(inputs) > 1:
            raise invalid_argument(
                "inputs is a plain value/list, but expecting an object as multiple input tensors required as "
                "per tensorinfo_map"
            )
        alias, info = next(iter(inputs.items()))
        return {alias: value_to_array(value, info.dtype)}
    result = {}
    for alias, info in inputs.items():
        if alias not in value:
            raise invalid_argument(f"Missing named input: {alias} in 'inputs' object.")
        result[alias] = value_to_array(value[alias], info.dtype)
    return result


def check_feed_shapes(feeds: Mapping[str, np.ndarray], signature: Signature) -> None:
    """Refuses a feed whose shape contradicts the signature before it reaches a kernel.

    TF Serving passes such a tensor on and lets the graph fail (or not); refusing it here keeps malformed
    input away from kernels that abort the process on an unexpected shape.
    """
    for alias, rank, fixed in signature.shape_checks:
        arr = feeds[alias]
        if arr.ndim != rank or (fixed and any(arr.shape[i] != d for i, d in fixed)):
            expected = tuple(None if d == -1 else d for d in signature.inputs[alias].shape)
            raise invalid_argument(
                f"Cannot feed value of shape {tuple(arr.shape)} for Tensor {signature.inputs[alias].name}, "
                f"which has shape {expected}"
            )


# --------------------------------------------------------------------------------------------------- outputs


def _tokens(arr: np.ndarray, as_bytes: bool) -> list[str]:
    flat = arr.reshape(-1)
    kind = arr.dtype.kind
    if kind == "f" and arr.dtype in (np.float32, np.float64):
        return decimal_tokens(flat)
    if kind in "iu":
        return list(map(str, flat.tolist()))
    if kind == "b":
        return ["true" if v else "false" for v in flat.tolist()]
    if kind in "OSa":
        if as_bytes:
            return ['{"b64":"' + base64.b64encode(v).decode("ascii") + '"}' for v in flat.tolist()]
        return [quote_bytes(v) if type(v) is bytes else quote(str(v)) for v in flat.tolist()]
    raise invalid_argument(f"Failed to write JSON value for tensor type: {arr.dtype.name}")


def _nest(tokens: list[str], dims: Sequence[int], outer: int) -> list[str]:
    """Groups flat tokens into `outer` JSON values of shape `dims`."""
    items = tokens
    for level in range(len(dims) - 1, -1, -1):
        size = dims[level]
        count = outer
        for d in dims[:level]:
            count *= d
        if size == 0:
            items = ["[]"] * count
        else:
            items = ["[" + ",".join(items[i * size : (i + 1) * size]) + "]" for i in range(count)]
    return items


@functools.lru_cache(maxsize=1024)
def _key_prefix(alias: str) -> str:
    return quote(alias) + ":"


def _is_bytes_output(alias: str, arr: np.ndarray) -> bool:
    return alias.endswith("_bytes") and arr.dtype.kind in "OSa"


def _scalar_rows_response(outputs: Mapping[str, np.ndarray], batch: int) -> str:
    """`row_response` for several outputs of one value per instance (a classifier's usual answer).

    Every row has the same keys in the same order, so one %-template per row, repeated, takes all the
    values in a single C-level formatting call instead of joining key/value pairs row by row; integers
    are formatted by the template itself. Same bytes as the general path.
    """
    parts = []
    columns = []
    for alias, arr in outputs.items():
        prefix = _key_prefix(alias).replace("%", "%%")
        if arr.dtype.kind in "iu":
            parts.append(prefix + "%d")
            columns.append(arr.tolist())
        else:
            parts.append(prefix + "%s")
            columns.append(_tokens(arr, _is_bytes_output(alias, arr)))
    if batch == 0:
        return '{"predictions":[]}'
    row = "{" + ",".join(parts) + "}"
    values = tuple(chain.from_iterable(zip(*columns, strict=True)))
    return '{"predictions":[' + ",".join([row] * batch) % values + "]}"


def row_response(outputs: Mapping[str, np.ndarray]) -> str:
    """`{"predictions": [...]}`: bare values for one output, one object per instance for several.

    Raises:
        ApiError: An output without a batch dimension, or outputs with different batch sizes.
    """
    if not outputs:
        raise invalid_argument("Cannot convert empty tensor map to JSON")
    batch = -1
    for alias, arr in outputs.items():
        if arr.ndim == 0:
            raise invalid_argument(f"Tensor name: {alias} has no shape information ")
        if batch >= 0 and arr.shape[0] != batch:
            raise invalid_argument(
                f"Tensor name: {alias} has inconsistent batch size: {arr.shape[0]} expecting: {batch}"
            )
        batch = arr.shape[0]
    if len(outputs) > 1 and all(arr.ndim == 1 for arr in outputs.values()):
        return _scalar_rows_response(outputs, batch)
    return _nested_rows_response(outputs)


def _nested_rows_response(outputs: Mapping[str, np.ndarray]) -> str:
    """`row_response` for any outputs (checked by the caller): each value nested to its per-row shape."""
    per_output = {
        alias: _nest(_tokens(arr, _is_bytes_output(alias, arr)), arr.shape[1:], arr.shape[0])
        for alias, arr in outputs.items()
    }
    if len(per_output) == 1:
        (items,) = per_output.values()
        return '{"predictions":[' + ",".join(items) + "]}"
    prefixes = [_key_prefix(alias) for alias in per_output]
    rows = [
        "{" + ",".join(map(operator.add, prefixes, values)) + "}"
        for values in zip(*per_output.values(), strict=True)
    ]
    return '{"predictions":[' + ",".join(rows) + "]}"


def columnar_response(outputs: Mapping[str, np.ndarray]) -> str:
    """`{"outputs": X}`: the bare tensor for one output, `{name: tensor}` for several."""
    if not outputs:
        raise invalid_argument("Cannot convert empty tensor map to JSON")
    rendered = {
        alias: _nest(_tokens(arr, _is_bytes_output(alias, arr)), arr.shape, 1)[0]
        for alias, arr in outputs.items()
    }
    if len(rendered) == 1:
        (body,) = rendered.values()
        return '{"outputs":' + body + "}"
    return '{"outputs":{' + ",".join(quote(a) + ":" + v for a, v in rendered.items()) + "}}"


# --------------------------------------------------------------------------------------------------- classify


def _varint(value: int) -> bytes:
    value &= 0xFFFFFFFFFFFFFFFF
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


_BYTES, _FLOAT, _INT64 = "bytes", "float", "int64"


def _feature_values(name: str, content: object) -> tuple[str | None, list]:
    """`AddValueToFeature` for a feature's value or list: (kind, values), kind None for an empty list."""
    kind: str | None = None
    values: list = []
    for value in content if type(content) is list else (content,):
        t = type(value)
        if t is bool:
            this, item = _INT64, int(value)
        elif t is int:
            if value > (1 << 63) - 1:
                if kind not in (None, _INT64):
                    raise _kind_error(name, kind)
                raise invalid_argument(f"Feature: {name} has uint64_t element. Only int64_t is supported.")
            this, item = _INT64, value
        elif t is float:
            this, item = _FLOAT, value
        elif t is str:
            this, item = _BYTES, _text_bytes(value)
        elif _is_b64_object(value):
            this, item = _BYTES, None
        else:
            raise invalid_argument(
                f"Feature: {name} has element with unexpected JSON type: {json_type_name(value)}"
            )
        if kind is not None and kind != this:
            raise _kind_error(name, kind)
        if item is None:
            item = decode_b64_object(value)
        kind = this
        values.append(item)
    return kind, values


def _kind_error(name: str, kind: str) -> ApiError:
    return invalid_argument(f"Unexpected element type in feature: {name} expecting type: {kind}")


def _encode_feature(kind: str | None, values: list) -> bytes:
    if kind is None:
        return b""
    if kind == _BYTES:
        return _field(1, b"".join(_field(1, v) for v in values))
    if kind == _FLOAT:
        with np.errstate(over="ignore"):
            packed = np.array(values, dtype="<f4").tobytes()
        return _field(2, _field(1, packed))
    return _field(3, _field(1, b"".join(_varint(v) for v in values)))


def example_from_json(value: object) -> bytes:
    """Serializes a JSON object `{feature: value | [values]}` as a tf.Example (`MakeExampleFromJsonObject`).

    JSON integers and booleans become int64_list, numbers with a point or exponent float_list, strings and
    `{"b64": ...}` bytes_list.

    Raises:
        ApiError: TF Serving's error for a value that cannot be a feature.
    """
    if type(value) is not dict:
        raise invalid_argument(f"Example must be JSON object but got JSON {json_type_name(value)}")
    entries = []
    for name, content in value.items():
        kind, values = _feature_values(name, content)
        entry = _field(1, _text_bytes(name)) + _field(2, _encode_feature(kind, values))
        entries.append(_field(1, entry))
    if not entries:
        return b""
    return _field(1, b"".join(entries))


def examples_from_request(doc: dict) -> list[bytes]:
    """The serialized examples of a classify/regress body, context merged in (the example's value wins).

    Raises:
        ApiError: TF Serving's errors, in its order (context first, then the `examples` checks).
    """
    context = example_from_json(doc["context"]) if "context" in doc else None
    if "examples" not in doc:
        raise invalid_argument(
            f"JSON Value: {debug_string(doc)} When method is classify, key 'examples' is expected and was not found"
        )
    examples = doc["examples"]
    if type(examples) is not list:
        raise invalid_argument(
            f"JSON Value: {debug_string(doc)} Expecting 'examples' value to be an list/array"
        )
    if not examples:
        raise invalid_argument(f"JSON Value: {debug_string(doc)} 'examples' value is an empty array")
    serialized = [example_from_json(e) for e in examples]
    if context:
        # Protobuf merges concatenated messages and a later map entry replaces an earlier one: exactly what
        # TF Serving's InputToSerializedExampleTensor relies on.
        serialized = [context + s for s in serialized]
    return serialized


CLASSES, SCORES, REGRESS_IO = "classes", "scores", "outputs"


def classify_fetches(signature: Signature) -> tuple[str, list[str]]:
    """`PreProcessClassification`: (input alias, output aliases) or TF Serving's error."""
    if len(signature.inputs) != 1:
        raise invalid_argument("Expected one input Tensor.")
    if len(signature.outputs) not in (1, 2):
        raise invalid_argument(f"Expected one or two output Tensors, found {len(signature.outputs)}")
    if "inputs" not in signature.inputs:
        raise invalid_argument(f"No classification inputs found in SignatureDef: {signature.debug_string}")
    fetches = [a for a in (CLASSES, SCORES) if a in signature.outputs]
    if not fetches:
        raise invalid_argument(
            'Expected classification signature outputs to contain at least one of "classes" or "scores". '
            f"Signature was: {signature.debug_string}"
        )
    return "inputs", fetches


def regress_fetches(signature: Signature) -> tuple[str, list[str]]:
    """`PreProcessRegression`: (input alias, output aliases) or TF Serving's error."""
    if len(signature.inputs) != 1:
        raise invalid_argument("Expected one input Tensor.")
    if len(signature.outputs) != 1:
        raise invalid_argument("Expected one output Tensor.")
    if "inputs" not in signature.inputs:
        raise invalid_argument(f"No regression inputs found in SignatureDef: {signature.debug_string}")
    if REGRESS_IO not in signature.outputs:
        raise invalid_argument(f"No regression outputs found in SignatureDef: {signature.debug_string}")
    return "inputs", [REGRESS_IO]


_DT_PROTO_NAMES = {np.dtype(np.float32): "DT_FLOAT", np.dtype(np.float64): "DT_DOUBLE", np.dtype(object): "DT_STRING",
                   np.dtype(np.int64): "DT_INT64", np.dtype(np.int32): "DT_INT32", np.dtype(np.bool_): "DT_BOOL"}  # fmt: skip


def _dt_proto_name(arr: np.ndarray) -> str:
    return _DT_PROTO_NAMES.get(arr.dtype, "DT_" + arr.dtype.name.upper())


def _shape_debug(arr: np.ndarray) -> str:
    return "[" + ",".join(map(str, arr.shape)) + "]"


def classify_response(outputs: Mapping[str, np.ndarray], num_examples: int) -> str:
    """`PostProcessClassificationResult` + `MakeJsonFromClassificationResult`: `{"results": [[[label, score]]]}`."""
    classes, scores = outputs.get(CLASSES), outputs.get(SCORES)
    for label, arr, kind, dt in ((CLASSES, classes, "OSa", "DT_STRING"), (SCORES, scores, "f", "DT_FLOAT")):
        if arr is None:
            continue
        if arr.ndim != 2:
            raise invalid_argument(
                f"Expected Tensor shape: [batch_size num_classes] but got {_shape_debug(arr)}"
            )
        if arr.dtype.kind not in kind or (dt == "DT_FLOAT" and arr.dtype != np.float32):
            raise invalid_argument(f"Expected {label} Tensor of {dt}. Got: {_dt_proto_name(arr)}")
        if arr.shape[0] != num_examples:
            raise invalid_argument(
                f"Expected {label} output batch size of {num_examples}. Got: {arr.shape[0]}"
            )
    if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
        raise invalid_argument(
            f"Tensors class and score should match in dim_size(1). Got {classes.shape[1]} vs. {scores.shape[1]}"
        )
    num_classes = (classes if classes is not None else scores).shape[1]
    labels = classes.tolist() if classes is not None else None
    tokens = decimal_tokens(scores.reshape(-1)) if scores is not None else None
    zero = decimal_token(0.0)
    rows = []
    for i in range(num_examples):
        pairs = []
        for c in range(num_classes):
            label = quote_bytes(labels[i][c]) if labels is not None else '""'
            score = tokens[i * num_classes + c] if tokens is not None else zero
            pairs.append("[" + label + "," + score + "]")
        rows.append("[" + ",".join(pairs) + "]")
    return '{"results":[' + ",".join(rows) + "]}"


def regress_response(outputs: Mapping[str, np.ndarray], num_examples: int) -> str:
    """`PostProcessRegressionResult` + `MakeJsonFromRegressionResult`: `{"results": [v, ...]}`."""
    arr = outputs[REGRESS_IO]
    if not (arr.ndim == 1 or (arr.ndim == 2 and arr.shape[1] == 1)):
        raise invalid_argument(
            f"Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but got {_shape_debug(arr)}"
        )
    if arr.shape[0] != num_examples:
        raise invalid_argument(
            f"Input batch size did not match output batch size: {num_examples} vs. {arr.shape[0]}"
        )
    if arr.dtype != np.float32:
        raise invalid_argument(f"Expected output Tensor of DT_FLOAT.  Got: {_dt_proto_name(arr)}")
    return '{"results":[' + ",".join(decimal_tokens(arr.reshape(-1))) + "]}"
