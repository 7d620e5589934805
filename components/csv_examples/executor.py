"""The ExampleGen executor for dxpipe's canonical split CSVs: CsvExampleGen's output, in bounded memory.

Bound to TFX's `FileBasedExampleGen` through `custom_executor_spec`, so the node keeps ExampleGen's driver
(input fingerprint and span, hence the cache), its artifact and properties (`split_names`,
`payload_format`, `file_format`) and its file layout (`Split-<name>/data_tfrecord-*.gz`, gzipped TFRecords
of serialized tf.Examples). What differs is the Beam graph, and only where CsvExampleGen's costs memory:

- CsvExampleGen infers the column types with a global combine that the example-making step reads as a
  side input, so every parsed row waits in the runner until the last row is typed. Here the types come
  from `column_types.json` beside the splits (`core.py`; `pipelines/data.py` writes it), and each row
  becomes an example as it is read.
- TFX's `WriteSplit` reshuffles (a GroupByKey over every example) before writing; Beam's direct runner
  holds a GroupByKey's whole input in memory. Here the examples go straight to the TFRecord sink, so
  reading, converting and writing a split is one fused stage that streams row by row (a test checks the
  fusion on the runner's own plan). The files keep the CSV's row order: nothing downstream relies on
  ExampleGen's order, and training shuffles with its own seed.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import apache_beam as beam
import tensorflow as tf
from tfx import types
from tfx.components.example_gen import utils, write_split
from tfx.components.example_gen.base_example_gen_executor import BaseExampleGenExecutor
from tfx.components.util import examples_utils
from tfx.dsl.io import fileio
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import proto_utils

from components.csv_examples.core import (
    TYPES_FILE,
    ColumnType,
    CsvExamplesError,
    header_columns,
    parse_sidecar,
    records,
    widest,
)

_EXAMPLES = standard_component_specs.EXAMPLES_KEY
_REWRITE = "write the input directory again with `dxpipe prepare-data` or `dxpipe run`"


class _Converter:
    """Turns one record's cells into the tf.Example CsvExampleGen's cell handlers make."""

    def __init__(self, columns: Sequence[str], column_types: Sequence[ColumnType], origin: str):
        self._columns = list(zip(columns, column_types, strict=True))
        self._origin = origin

    def __call__(self, line: int, cells: list[bytes]) -> tf.train.Example:
        if len(cells) != len(self._columns):
            names = ", ".join(name for name, _ in self._columns)
            raise CsvExamplesError(
                f"{self._origin} line {line} has {len(cells)} cells, but the header has {len(self._columns)} "
                f"columns ({names}); every row needs one cell per column."
            )
        example = tf.train.Example()
        feature = example.features.feature
        try:
            for (name, kind), cell in zip(self._columns, cells, strict=True):
                # A blank cell is an empty list of the column's type; a column with no typed cell in its
                # split (UNKNOWN) is a feature without a list, as CsvExampleGen writes it.
                if kind is ColumnType.FLOAT:
                    values = feature[name].float_list
                    values.SetInParent()
                    if cell:
                        values.value.append(float(cell))
                elif kind is ColumnType.INT:
                    values = feature[name].int64_list
                    values.SetInParent()
                    if cell:
                        values.value.append(int(cell))
                elif kind is ColumnType.STRING:
                    values = feature[name].bytes_list
                    values.SetInParent()
                    if cell:
                        values.value.append(cell)
                else:
                    feature[name].SetInParent()
        except ValueError:
            # Only a cell the recorded types do not describe gets here: the file changed after its types
            # were written.
            raise CsvExamplesError(
                f"{self._origin} line {line}, column {name!r}: {cell.decode(errors='replace')!r} is not "
                f"{kind.name} as {TYPES_FILE} says; the split file changed after its column types were "
                f"written: {_REWRITE}."
            ) from None
        return example


class _ReadExamples(beam.DoFn):
    """Reads CSV files of one split and yields each record's tf.Example, one record at a time."""

    def __init__(self, columns: Sequence[str], column_types: Sequence[ColumnType], digests: dict[str, str]):
        self._columns = list(columns)
        self._types = list(column_types)
        self._digests = dict(digests)

    def process(self, path: str) -> Iterator[tf.train.Example]:
        convert = _Converter(self._columns, self._types, path)
        digest = hashlib.sha256()

        def hashed(lines: Iterable[bytes]) -> Iterator[bytes]:
            for line in lines:
                digest.update(line)
                yield line

        with beam.io.filesystems.FileSystems.open(path) as handle:
            # The header, checked against the recorded columns when the graph was built.
            digest.update(handle.readline())
            for line, cells in records(hashed(handle), path):
                if cells:  # CsvExampleGen skips blank lines.
                    yield convert(line, cells)
        # Checked at the end, as the bytes stream by: a file whose content is not the one its types were
        # inferred from fails the step (nothing is published) instead of being typed silently.
        if digest.hexdigest() != self._digests[path]:
            raise CsvExamplesError(
                f"{path} is not the file {TYPES_FILE} typed (its SHA-256 differs): it changed after its "
                f"column types were written; {_REWRITE}."
            )


def _read_header(path: str) -> list[str]:
    with fileio.open(path, "rb") as handle:
        return header_columns(handle.readline())


class _CsvToExamples(beam.PTransform):
    """One input split's CSV files -> tf.Examples, typed by `column_types.json` (no pass over the rows)."""

    def __init__(self, exec_properties: dict[str, Any], split_pattern: str):
        """Locates the split.

        Args:
            exec_properties: ExampleGen's execution properties (`input_base` is read).
            split_pattern: The split's glob, relative to `input_base`.
        """
        super().__init__()
        self._base = exec_properties[standard_component_specs.INPUT_BASE_KEY]
        self._pattern = os.path.join(self._base, split_pattern)

    def _column_types(self, files: list[str]) -> tuple[list[str], list[ColumnType], dict[str, str]]:
        """Returns the split's columns, their types (widest over its files) and each file's digest."""
        sidecar_path = os.path.join(self._base, TYPES_FILE)
        if not fileio.exists(sidecar_path):
            raise CsvExamplesError(
                f"{sidecar_path} is missing: dxpipe's ExampleGen reads each split's column types from it; "
                f"{_REWRITE}."
            )
        with fileio.open(sidecar_path, "r") as handle:
            recorded = parse_sidecar(handle.read(), sidecar_path)
        prefix = self._base.rstrip("/") + "/"
        columns: list[str] | None = None
        merged: list[ColumnType] = []
        digests = {}
        for path in files:
            relative = path[len(prefix) :] if path.startswith(prefix) else path
            if relative not in recorded:
                raise CsvExamplesError(f"{sidecar_path} has no column types for {relative}; {_REWRITE}.")
            entry = recorded[relative]
            header = _read_header(path)
            if header != list(entry.columns):
                raise CsvExamplesError(
                    f"{path}'s header {header} is not the one {sidecar_path} records ({list(entry.columns)}); "
                    f"{_REWRITE}."
                )
            if columns is not None and header != columns:
                raise CsvExamplesError(
                    f"files of split {self._pattern} have different headers: {header}, {columns}"
                )
            merged = list(entry.types) if columns is None else widest(merged, entry.types)
            columns = header
            digests[path] = entry.sha256
        return columns or [], merged, digests

    def expand(self, pipeline: beam.Pipeline) -> beam.PCollection:
        """Builds the read: the split's files, each streamed through `_ReadExamples`."""
        files = sorted(fileio.glob(self._pattern))
        if not files:
            raise CsvExamplesError(f"split pattern {self._pattern} matches no file.")
        columns, column_types, digests = self._column_types(files)
        return (
            pipeline
            | "CreateFilenames" >> beam.Create(files)
            | "CsvToExamples" >> beam.ParDo(_ReadExamples(columns, column_types, digests))
        )


@beam.ptransform_fn
def _WriteSplit(examples: beam.PCollection, split_uri: str) -> beam.pvalue.PDone:
    """Serializes and writes one split as CsvExampleGen names its files, without its reshuffle."""
    return (
        examples
        | "MaybeSerialize" >> beam.ParDo(write_split.MaybeSerialize())
        | "Write"
        >> beam.io.WriteToTFRecord(
            os.path.join(split_uri, write_split.DEFAULT_TF_RECORD_FILE_NAME), file_name_suffix=".gz"
        )
    )


class Executor(BaseExampleGenExecutor):
    """ExampleGen executor for dxpipe's split CSVs; see the module docstring for what differs from TFX's."""

    def GetInputSourceToExamplePTransform(self) -> beam.PTransform:
        """Returns the per-split read (`_CsvToExamples`), used by the base class's `GenerateExamplesByBeam`."""
        return _CsvToExamples

    def write_splits(
        self,
        pipeline: beam.Pipeline,
        output_dict: dict[str, list[types.Artifact]],
        exec_properties: dict[str, Any],
    ) -> None:
        """Adds every split's read, conversion and write to `pipeline` (built, not run: tests inspect it)."""
        splits = self.GenerateExamplesByBeam(pipeline, exec_properties)
        for name, examples in splits.items():
            split_uri = artifact_utils.get_split_uri(output_dict[_EXAMPLES], name)
            _ = examples | f"WriteSplit[{name}]" >> _WriteSplit(split_uri)

    def Do(
        self,
        input_dict: dict[str, list[types.Artifact]],
        output_dict: dict[str, list[types.Artifact]],
        exec_properties: dict[str, Any],
    ) -> None:
        """Writes the examples and sets the artifact's properties as TFX's base ExampleGen executor does.

        Raises:
            CsvExamplesError: A split's files, their header or `column_types.json` do not agree, a record
                is malformed (the message names the file and line), or a format other than gzipped
                TFRecords of tf.Examples was asked for.
        """
        self._log_startup(input_dict, output_dict, exec_properties)
        payload_format = exec_properties.get(standard_component_specs.OUTPUT_DATA_FORMAT_KEY)
        file_format = exec_properties.get(
            standard_component_specs.OUTPUT_FILE_FORMAT_KEY, example_gen_pb2.FILE_FORMAT_UNSPECIFIED
        )
        if payload_format not in (None, example_gen_pb2.FORMAT_TF_EXAMPLE):
            raise CsvExamplesError(
                f"output_data_format {payload_format} is not supported: this ExampleGen writes tf.Examples "
                f"(FORMAT_TF_EXAMPLE = {example_gen_pb2.FORMAT_TF_EXAMPLE})."
            )
        # Raises for any file format but gzipped TFRecords (TFX's check), before anything is written.
        file_format_name = write_split.to_file_format_str(file_format) if file_format else None
        input_config = example_gen_pb2.Input()
        proto_utils.json_to_proto(exec_properties[standard_component_specs.INPUT_CONFIG_KEY], input_config)
        output_config = example_gen_pb2.Output()
        proto_utils.json_to_proto(exec_properties[standard_component_specs.OUTPUT_CONFIG_KEY], output_config)
        artifact = artifact_utils.get_single_instance(output_dict[_EXAMPLES])
        artifact.split_names = artifact_utils.encode_split_names(
            utils.generate_output_split_names(input_config, output_config)
        )
        with self._make_beam_pipeline() as pipeline:
            self.write_splits(pipeline, output_dict, exec_properties)
        for examples in output_dict[_EXAMPLES]:
            if payload_format:
                examples_utils.set_payload_format(examples, payload_format)
            if file_format_name:
                examples_utils.set_file_format(examples, file_format_name)
