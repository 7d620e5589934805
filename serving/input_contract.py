"""The curated schema as the serving input contract: serving refuses what the data gate refuses in training.

A dxpipe model version carries its schema (`assets.extra/dxpipe_schema.pbtxt`, written by
`write_schema_asset`); when it does, every request to a signature that takes the schema's features, in any
input form, is checked before the model runs:

* every feature is named in every instance / example (a missing feature is a 400 naming it); a value that is
  unknown is sent as JSON `null` (numeric and categorical alike; an empty list in a tf.Example), and the model
  imputes it as it imputes missing values in training;
* no unknown feature names (with a "did you mean");
* numbers are finite and fit a float32 (`NaN`, `Infinity`, `3.5e38` are refused: a model scores them as
  certainty);
* numbers inside the schema's `float_domain` / `int_domain`: refused, or with `out_of_domain="flag"` answered
  with an `"out_of_domain"` list beside the predictions;
* categories inside the schema's string domain (`""` also means missing, as before `null` was accepted);
* at least one feature has a value: a prediction from nothing would be the imputed "average patient".

Models without the asset (and signatures that do not take the schema's features) are served exactly as TF
Serving serves them. Feature names are matched by `InputContract.canonical_name`, the one place a naming rule
(say, normalised column names) plugs in.

This module is pure: plain Python values and numpy arrays in, `ApiError` out.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
from collections.abc import Mapping, Sequence

import numpy as np

from schemas.files import SCHEMA_ASSET
from serving.errors import ApiError, invalid_argument

LABEL = "label"
REFUSE, FLAG = "refuse", "flag"
# Sent with the metadata of a version that carries its schema, so clients know `null` is its missing value
# (a header: TF Serving's JSON stays as it is).
CONTRACT_HEADER = "X-Dxpipe-Input-Contract"
OUT_OF_DOMAIN_MODES = (REFUSE, FLAG)
_F32_MAX = float(np.finfo(np.float32).max)


@dataclasses.dataclass(frozen=True)
class FeatureRule:
    """What the schema allows for one feature.

    Attributes:
        name: The feature name (the serving signature's input alias).
        numeric: FLOAT/INT (True) or BYTES (False).
        low: Lower end of the domain (None: unbounded).
        high: Upper end of the domain (None: unbounded).
        vocabulary: Known categories (categorical features only; empty: any string).
    """

    name: str
    numeric: bool
    low: float | None = None
    high: float | None = None
    vocabulary: tuple[str, ...] = ()

    def domain_text(self) -> str:
        """The domain, for messages."""
        if self.numeric:
            return f"[{_fmt(self.low)}, {_fmt(self.high)}]"
        return ", ".join(repr(v) for v in self.vocabulary)


def _fmt(value: float | None) -> str:
    return "unbounded" if value is None else f"{value:g}"


class ContractError(ValueError):
    """A schema that cannot serve as a contract (raised when a version loads)."""


def write_schema_asset(export_dir: str, schema_text: str) -> str:
    """Stores the schema with an exported model, so the version carries its own contract.

    Args:
        export_dir: The SavedModel directory (before it is published to a base path).
        schema_text: The curated schema, in text format.

    Returns:
        The asset's path.

    Raises:
        ContractError: The schema cannot be a contract.
    """
    InputContract.from_schema_text(schema_text, "schema")  # refuse to ship what would not load
    path = os.path.join(export_dir, SCHEMA_ASSET)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(schema_text)
    return path


class InputContract:
    """The input rules of one model version.

    Args:
        rules: One rule per feature, in schema order.
        out_of_domain: `refuse` (400) or `flag` (answer, listing the values outside the domain).
    """

    def __init__(self, rules: Sequence[FeatureRule], out_of_domain: str = REFUSE):
        if out_of_domain not in OUT_OF_DOMAIN_MODES:
            raise ContractError(
                f"out_of_domain={out_of_domain!r}: use one of {', '.join(OUT_OF_DOMAIN_MODES)}."
            )
        if not rules:
            raise ContractError("The schema has no input feature.")
        self.rules = {r.name: r for r in rules}
        self.names = frozenset(self.rules)
        self.out_of_domain = out_of_domain
        self._numeric = [r.name for r in rules if r.numeric]
        self._numeric_set = frozenset(self._numeric)
        self._bounds_by_order: dict[tuple[str, ...], tuple[np.ndarray, np.ndarray]] = {}
        self._categorical = [r for r in rules if not r.numeric]
        self._vocab_bytes = {
            r.name: frozenset(v.encode() for v in r.vocabulary) | {b""}
            for r in self._categorical
            if r.vocabulary
        }
        # Per-feature bounds as a column, for [features x rows] blocks: the domain, clipped to the float32
        # range so that infinities (and doubles beyond float32, which became infinities) fail too.
        self._check_low = np.array(
            [
                [-_F32_MAX if self.rules[n].low is None else max(self.rules[n].low, -_F32_MAX)]
                for n in self._numeric
            ],
            dtype=np.float32,
        ).reshape(-1, 1)
        self._check_high = np.array(
            [
                [_F32_MAX if self.rules[n].high is None else min(self.rules[n].high, _F32_MAX)]
                for n in self._numeric
            ],
            dtype=np.float32,
        ).reshape(-1, 1)

    @classmethod
    def from_schema_text(cls, text: str, source: str, out_of_domain: str = REFUSE) -> InputContract:
        """Builds the contract from a text-format TFMD Schema (the label feature is not an input).

        Raises:
            ContractError: The text is not a schema, or a feature has a type serving cannot check.
        """
        from google.protobuf import text_format
        from tensorflow_metadata.proto.v0 import schema_pb2

        schema = schema_pb2.Schema()
        try:
            text_format.Parse(text, schema)
        except text_format.ParseError as exc:
            raise ContractError(f"{source} is not a text-format Schema: {exc}") from None
        domains = {d.name: tuple(d.value) for d in schema.string_domain}
        rules = []
        for feature in schema.feature:
            if feature.name == LABEL:
                continue
            if feature.type in (schema_pb2.FLOAT, schema_pb2.INT):
                low = high = None
                if feature.HasField("float_domain"):
                    dom = feature.float_domain
                    low = dom.min if dom.HasField("min") else None
                    high = dom.max if dom.HasField("max") else None
                elif feature.HasField("int_domain"):
                    dom = feature.int_domain
                    low = float(dom.min) if dom.HasField("min") else None
                    high = float(dom.max) if dom.HasField("max") else None
                rules.append(FeatureRule(feature.name, True, low, high))
            elif feature.type == schema_pb2.BYTES:
                vocabulary = tuple(feature.string_domain.value) or domains.get(
                    feature.domain or feature.name, ()
                )
                rules.append(FeatureRule(feature.name, False, vocabulary=vocabulary))
            else:
                raise ContractError(f"{source}: feature {feature.name!r} has a type serving cannot check.")
        return cls(rules, out_of_domain)

    # ------------------------------------------------------------------------------------------ names

    def canonical_name(self, name: str) -> str | None:
        """The feature a client's name refers to, or None. The one place names are matched."""
        return name if name in self.rules else None

    def _unknown(self, where: str, name: str) -> ApiError:
        close = difflib.get_close_matches(name, sorted(self.names), n=1)
        hint = (
            f" (did you mean {close[0]!r}?)"
            if close
            else f"; the model's features are {', '.join(sorted(self.names))}"
        )
        return invalid_argument(f"{where}: {name!r} is not a feature of this model{hint}")

    def _missing(self, where: str, missing: set[str]) -> ApiError:
        names = ", ".join(repr(n) for n in sorted(missing))
        return invalid_argument(
            f"{where}: missing feature(s) {names}; send every feature, with null for a value that is unknown"
        )

    @staticmethod
    def _nothing(where: str) -> ApiError:
        return invalid_argument(
            f"{where}: every feature is null; a prediction needs at least one known value (it would otherwise "
            "be the imputed average patient)"
        )

    def _canonical_keys(self, where: str, item: Mapping, allow_label: bool = False) -> dict:
        out = {}
        for key, value in item.items():
            if allow_label and key == LABEL:
                continue  # tf.Examples from the pipeline carry their label; the model does not read it
            name = self.canonical_name(key) if type(key) is str else None
            if name is None:
                raise self._unknown(where, key)
            if name in out:
                raise invalid_argument(f"{where}: feature {name!r} is given twice")
            out[name] = value
        missing = self.names - out.keys()
        if missing:
            raise self._missing(where, missing)
        return out

    # ------------------------------------------------------------------------------------------ values

    def _null_value(self, name: str) -> object:
        return math.nan if self.rules[name].numeric else ""

    def prepare_instances(self, instances: object) -> tuple[object, dict[str, list[int]]]:
        """Row format (`instances`): checks the names and turns `null` into the missing marker.

        Returns:
            The instances to convert (a new list only when something changed) and the rows each feature
            was `null` in.

        Raises:
            ApiError: A missing or unknown feature, or an instance with no value at all.
        """
        if type(instances) is not list or not instances or type(instances[0]) is not dict:
            return instances, {}  # not the feature form: tensors' own errors apply
        names = self.names
        nulls: dict[str, list[int]] = {}
        out = None
        for i, item in enumerate(instances):
            if type(item) is not dict:
                return instances, {}
            fixed = item
            if item.keys() != names:
                fixed = self._canonical_keys(f"instance {i}", item)
            if None in fixed.values():
                fixed = dict(fixed)
                unknown = 0
                for name, value in fixed.items():
                    if value is None:
                        fixed[name] = self._null_value(name)
                        nulls.setdefault(name, []).append(i)
                        unknown += 1
                if unknown == len(names):
                    raise self._nothing(f"instance {i}")
            if fixed is not item:
                if out is None:
                    out = list(instances[:i])
                out.append(fixed)
            elif out is not None:
                out.append(item)
        return (instances if out is None else out), nulls

    def prepare_columns(self, inputs: object) -> tuple[object, dict[str, list[int]]]:
        """Columnar format (`inputs`): the same checks, column by column.

        Raises:
            ApiError: A missing or unknown feature, or a row with no value at all.
        """
        if type(inputs) is not dict:
            return inputs, {}
        fixed = inputs if inputs.keys() == self.names else self._canonical_keys("inputs", inputs)
        nulls: dict[str, list[int]] = {}
        out = dict(fixed)
        for name, column in fixed.items():
            if type(column) is list and None in column:
                rows = [i for i, v in enumerate(column) if v is None]
                nulls[name] = rows
                marker = self._null_value(name)
                out[name] = [marker if v is None else v for v in column]
            elif column is None:
                nulls[name] = [0]
                out[name] = self._null_value(name)
        if len(nulls) == len(self.names):
            common = set.intersection(*(set(r) for r in nulls.values()))
            if common:
                raise self._nothing(f"inputs row {min(common)}")
        return out, nulls

    def check_feeds(self, feeds: Mapping[str, np.ndarray], nulls: Mapping[str, list[int]]) -> list[dict]:
        """Checks converted feature tensors: finite numbers, domains, categories.

        Args:
            feeds: One [n] array per feature.
            nulls: Rows each feature was `null` in (their markers are not errors).

        Returns:
            The values outside their domain (empty unless `out_of_domain` is `flag`).

        Raises:
            ApiError: A non-finite number, a value outside the domain (`refuse`), an unknown category.
        """
        flags: list[dict] = []
        if self._numeric:
            found = self._numeric_block(feeds)
            if found is None:
                return flags  # ragged or higher-rank: shapes the model refuses with its own error
            order, block, low, high = found
            # One comparison decides the common case: the bounds are the domain clipped to the float32 range,
            # so a value passes only if it is finite and inside its domain (NaN fails every comparison).
            # (numpy does not warn about NaN in comparisons: no errstate, which would cost more than the check).
            inside = (block >= low) & (block <= high)
            if not inside.all():
                flags = self._explain(order, block, inside, nulls)
        for rule in self._categorical:
            vocab = self._vocab_bytes.get(rule.name)
            column = feeds.get(rule.name)
            if vocab is None or column is None or column.ndim != 1:
                continue
            for row, value in enumerate(column):
                if value not in vocab:
                    raise self._unknown_category(f"instance {row}", rule, value)
        return flags

    def _bounds(self, order: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        bounds = self._bounds_by_order.get(order)
        if bounds is None:
            index = [self._numeric.index(n) for n in order]
            bounds = self._bounds_by_order[order] = (self._check_low[index], self._check_high[index])
        return bounds

    def _numeric_block(self, feeds: Mapping[str, np.ndarray]):
        """(feature order, [features x rows] float block, low, high), or None for shapes the model refuses."""
        for aliases, block in getattr(feeds, "blocks", ()):
            bounds = self._bounds_by_order.get(aliases)
            if bounds is not None or (set(aliases) == self._numeric_set and block.dtype == np.float32):
                return (aliases, block, *(bounds or self._bounds(aliases)))  # the table path's block: no copy
        columns = [feeds[n] for n in self._numeric]
        shapes = {c.shape for c in columns}
        if len(shapes) != 1 or len(next(iter(shapes))) != 1:
            return None
        block = np.concatenate(columns).reshape(len(columns), columns[0].shape[0])
        order = tuple(self._numeric)
        return (order, block, *self._bounds(order))

    def _explain(
        self, order: Sequence[str], block: np.ndarray, inside: np.ndarray, nulls: Mapping[str, list[int]]
    ) -> list[dict]:
        """The slow path of `check_feeds`: what each failing value is (null, not finite, outside)."""
        null_cells = {(name, row) for name, rows in nulls.items() for row in rows}
        outside = []
        for j, row in np.argwhere(~inside):
            name, value = order[j], float(block[j, row])
            if (name, int(row)) in null_cells:
                continue
            if not math.isfinite(value):
                raise invalid_argument(
                    f"instance {row}: feature {name!r} is {self._number_text(value)}, not a finite number "
                    "that fits a float32; send null for a value that is unknown"
                )
            outside.append((int(row), name, value))
        return [self._outside(f"instance {row}", row, name, value) for row, name, value in sorted(outside)]

    @staticmethod
    def _number_text(value: float) -> str:
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity (or beyond float32)" if value > 0 else "-Infinity (or beyond float32)"
        return repr(value)

    def _outside(self, where: str, row: int, name: str, value: float) -> dict:
        rule = self.rules[name]
        if self.out_of_domain == REFUSE:
            raise invalid_argument(
                f"{where}: feature {name!r} = {value:g} is outside the schema's domain {rule.domain_text()}; "
                "the data gate refuses such values in training (check the unit, or send null if unknown)"
            )
        return {"instance": row, "feature": name, "value": value, "domain": [rule.low, rule.high]}

    @staticmethod
    def _unknown_category(where: str, rule: FeatureRule, value: object) -> ApiError:
        text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
        return invalid_argument(
            f"{where}: feature {rule.name!r} = {text!r} is not a known category ({rule.domain_text()}); "
            "send null if unknown"
        )

    # ------------------------------------------------------------------------------------------ examples

    def _check_value(self, where: str, row: int, name: str, values: list) -> dict | None:
        """One feature of one example, as a list of 0 or 1 values (0: missing)."""
        rule = self.rules[name]
        if len(values) > 1:
            raise invalid_argument(f"{where}: feature {name!r} has {len(values)} values; send one (or null)")
        if not values:
            return None
        value = values[0]
        if rule.numeric:
            if type(value) not in (int, float):
                raise invalid_argument(f"{where}: feature {name!r} must be a number, got {value!r}")
            number = float(value)
            if not math.isfinite(number) or abs(number) > _F32_MAX:
                raise invalid_argument(
                    f"{where}: feature {name!r} is {self._number_text(number)}"
                    ", not a finite number that fits a float32; send null for a value that is unknown"
                )
            low = -math.inf if rule.low is None else rule.low
            high = math.inf if rule.high is None else rule.high
            if not low <= number <= high:
                return self._outside(where, row, name, number)
            return None
        text = (
            value
            if type(value) is str
            else value.decode("utf-8", "replace")
            if type(value) is bytes
            else None
        )
        if text is None:
            raise invalid_argument(f"{where}: feature {name!r} must be a string, got {value!r}")
        if rule.vocabulary and text and text not in rule.vocabulary:
            raise self._unknown_category(where, rule, text)
        return None

    def _check_example(self, where: str, row: int, features: Mapping[str, list]) -> list[dict]:
        features = self._canonical_keys(where, features, allow_label=True)
        if not any(features.values()):
            raise self._nothing(where)
        flags = []
        for name, values in features.items():
            flag = self._check_value(where, row, name, values)
            if flag is not None:
                flags.append(flag)
        return flags

    def prepare_json_examples(self, doc: dict) -> tuple[dict, list[dict]]:
        """`:classify` / `:regress` bodies: checks each example (context merged) and drops its `null`s.

        Returns:
            The body to serialize (features renamed to their canonical names, `null` features left out so
            the model imputes them) and the out-of-domain flags.

        Raises:
            ApiError: Any contract violation, naming the example and the feature.
        """
        examples = doc.get("examples")
        if type(examples) is not list or any(type(e) is not dict for e in examples):
            return doc, []  # TF Serving's own errors apply
        context = doc.get("context", {})
        if type(context) is not dict:
            return doc, []
        flags: list[dict] = []
        cleaned = []
        for i, example in enumerate(examples):
            merged = {**context, **example}
            view = {}
            for key, value in merged.items():
                if value is None:
                    view[key] = []
                elif type(value) is list:
                    view[key] = [v.get("b64") if type(v) is dict else v for v in value]
                elif type(value) is dict:
                    view[key] = [value]
                else:
                    view[key] = [value]
            flags.extend(self._check_example(f"example {i}", i, view))
            cleaned.append(self._present(example))
        clean_context = self._present(context)
        if all(map(dict.__eq__, cleaned, examples)) and clean_context == context:
            return doc, flags  # nothing left out or renamed: the caller can keep the examples it built
        out = dict(doc)
        out["examples"] = cleaned
        if "context" in doc:
            out["context"] = clean_context
        return out, flags

    def _present(self, example: Mapping) -> dict:
        """The features that have a value, under their canonical names (a `null` one is left out)."""
        return {self.canonical_name(k) or k: v for k, v in example.items() if v is not None and v != []}

    def check_serialized_examples(self, serialized: Sequence[bytes]) -> list[dict]:
        """Serialized tf.Examples (the `from_examples` / `classification` signatures' input).

        Raises:
            ApiError: Bytes that are not a tf.Example, or any contract violation.
        """
        from google.protobuf.message import DecodeError
        from tensorflow.core.example import example_pb2

        flags: list[dict] = []
        for i, data in enumerate(serialized):
            example = example_pb2.Example()
            try:
                example.ParseFromString(bytes(data))
            except (DecodeError, TypeError):
                raise invalid_argument(f"instance {i}: the bytes are not a serialized tf.Example") from None
            features = {}
            for name, feature in example.features.feature.items():
                kind = feature.WhichOneof("kind")
                values = list(getattr(feature, kind).value) if kind else []
                features[name] = values
            flags.extend(self._check_example(f"instance {i}", i, features))
        return flags


def add_flags(body: str, flags: list[dict]) -> str:
    """Adds `"out_of_domain": [...]` to a JSON response object (only when there are flags)."""
    if not flags:
        return body
    import orjson

    return body[:-1] + ',"out_of_domain":' + orjson.dumps(flags).decode() + "}"
