"""Reading a curated schema file, with errors a user can act on.

Every layer may use this module (serving reads the schema as its input contract), so it imports nothing
from dxpipe and raises its own `SchemaFileError`; the CLI prints it as one line.
"""

from __future__ import annotations

import hashlib
import os
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # The proto modules load only where a schema is read, so config loading stays quick.
    from tensorflow_metadata.proto.v0 import schema_pb2

SCHEMA_FILE = "schema.pbtxt"
# Where an exported model carries its curated schema: TF Serving ignores `assets.extra/`, and `dxpipe serve`
# reads it as the version's input contract (serving/input_contract.py), so the endpoint refuses what the
# data gate refuses in training.
SCHEMA_ASSET = os.path.join("assets.extra", "dxpipe_schema.pbtxt")
# `schema_dir: bundled:wdbc` names a schema shipped inside the package, so a copied config keeps finding it.
BUNDLED_PREFIX = "bundled:"


class SchemaFileError(ValueError):
    """A schema directory or file is missing, unreadable or not a Schema in text format."""


def bundled_dir(name: str) -> Path:
    """Returns the directory of a schema shipped with dxpipe (`schemas/<name>/`)."""
    return Path(str(resources.files("schemas").joinpath(name)))


def resolve_dir(value: str, base_dir: Path) -> Path:
    """Resolves a configured `schema_dir`: `bundled:<name>`, absolute, or relative to `base_dir`."""
    if value.startswith(BUNDLED_PREFIX):
        return bundled_dir(value[len(BUNDLED_PREFIX) :])
    return (base_dir / value).resolve()


def schema_path(schema_dir: str | Path, *, must_exist: bool = True) -> Path:
    """Returns `<schema_dir>/schema.pbtxt`.

    Raises:
        SchemaFileError: If `must_exist` and the directory or the file is missing.
    """
    directory = Path(schema_dir)
    if must_exist and not directory.is_dir():
        raise SchemaFileError(
            f"directory {directory} does not exist; create it with `dxpipe schema draft` or fix "
            "`schema_dir` (a relative path is relative to the YAML file that names it)."
        )
    path = directory / SCHEMA_FILE
    if must_exist and path.exists() and not path.is_file():
        raise SchemaFileError(f"cannot read {path}: it is not a regular file; put the schema text there.")
    if must_exist and not path.is_file():
        raise SchemaFileError(
            f"{path} does not exist; write a first schema with `dxpipe schema draft` and review it."
        )
    return path


def read_schema(path: str | Path) -> tuple[schema_pb2.Schema, str]:
    """Reads a text-format Schema proto.

    Returns:
        The schema and the SHA-256 of the file's bytes (what the pipeline's cache key sees).

    Raises:
        SchemaFileError: If the file cannot be read or does not parse, naming the line TFDV's parser gave.
    """
    from google.protobuf import text_format
    from tensorflow_metadata.proto.v0 import schema_pb2

    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise SchemaFileError(
            f"{path} does not exist; write a first schema with `dxpipe schema draft`."
        ) from None
    except OSError as err:
        raise SchemaFileError(f"cannot read {path}: {err.strerror}; check its permissions.") from None
    schema = schema_pb2.Schema()
    try:
        text_format.Parse(raw.decode("utf-8"), schema)
    except UnicodeDecodeError:
        raise SchemaFileError(f"{path} is not UTF-8 text; a schema is a text-format proto.") from None
    except text_format.ParseError as err:
        raise SchemaFileError(
            f"{path} is not a valid schema ({err}); fix that line or re-draft it with `dxpipe schema draft`."
        ) from None
    check_contract(schema, path)
    return schema, hashlib.sha256(raw).hexdigest()


def check_contract(schema: schema_pb2.Schema, path: str | Path) -> None:
    """Checks what the trainer and serving need of a schema: a 0/1 `label`, a vocabulary per category.

    Raises:
        SchemaFileError: Naming the feature and the fix.
    """
    from tensorflow_metadata.proto.v0 import schema_pb2

    names = [f.name for f in schema.feature]
    if "label" not in names:
        raise SchemaFileError(
            f"{path} has no feature named 'label' (features: {', '.join(names) or 'none'}); the label column "
            "is always called `label` in the schema, whatever the CSV calls it."
        )
    domains = {d.name for d in schema.string_domain if d.value}
    for feature in schema.feature:
        if feature.type == schema_pb2.BYTES and not (
            feature.string_domain.value or (feature.domain and feature.domain in domains)
        ):
            raise SchemaFileError(
                f"{path}: feature {feature.name!r} is BYTES without a string domain listing its categories; "
                "add one (the model one-hot encodes exactly those values)."
            )
        if feature.type == schema_pb2.TYPE_UNKNOWN:
            raise SchemaFileError(
                f"{path}: feature {feature.name!r} has no type; set type: INT, FLOAT or BYTES."
            )
