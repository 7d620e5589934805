"""dxpipe's ExampleGen executor (components/csv_examples) against TFX's CsvExampleGen executor.

The contract: the same tf.Examples per split (compared as multisets: the row order is not part of it),
the same artifact properties and file layout, a clear error naming the file and line for a bad record,
and a Beam graph in which reading, converting and writing a split is one fused stage of the direct
runner's plan, so no runner-side buffer (a GroupByKey, a side input's wait) holds the split's rows.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from components.csv_examples.core import (
    TYPES_FILE,
    ColumnType,
    CsvExamplesError,
    TypeInference,
    cell_type,
    file_types,
    sidecar_text,
)
from pipelines.data import DATA_FILE, SPLITS, materialize

BEAM_ARGS = ["--runner=DirectRunner", "--direct_running_mode=in_memory", "--direct_num_workers=1"]


def _exec_properties(input_base: Path, splits=SPLITS, pattern: str = DATA_FILE) -> dict:
    from tfx.proto import example_gen_pb2
    from tfx.utils import proto_utils

    input_config = example_gen_pb2.Input(
        splits=[example_gen_pb2.Input.Split(name=s, pattern=f"{s}/{pattern}") for s in splits]
    )
    return {
        "input_base": str(input_base),
        "input_config": proto_utils.proto_to_json(input_config),
        "output_config": proto_utils.proto_to_json(example_gen_pb2.Output()),
        "output_data_format": example_gen_pb2.FORMAT_TF_EXAMPLE,
        "output_file_format": example_gen_pb2.FORMAT_TFRECORDS_GZIP,
    }


def _executor(executor_class, tmp: Path):
    from tfx.dsl.components.base.base_beam_executor import BaseBeamExecutor

    context = BaseBeamExecutor.Context(beam_pipeline_args=BEAM_ARGS, tmp_dir=str(tmp), unique_id="test")
    return executor_class(context)


def _examples_artifact(uri: Path):
    from tfx.types import standard_artifacts

    examples = standard_artifacts.Examples()
    examples.uri = str(uri)
    return examples


def _run(executor_class, input_base: Path, out: Path, splits=SPLITS, pattern: str = DATA_FILE):
    from pipelines.beam_patches import no_tfx_sdist_for_direct_runner

    examples = _examples_artifact(out)
    with no_tfx_sdist_for_direct_runner("DirectRunner"):
        _executor(executor_class, out.parent / "tmp").Do(
            {}, {"examples": [examples]}, _exec_properties(input_base, splits, pattern)
        )
    return examples


def _split_contents(uri: Path) -> dict[str, tuple[list[str], Counter]]:
    """Split -> (its file names, a multiset of its examples in a canonical serialization)."""
    import tensorflow as tf

    result = {}
    for split_dir in sorted(uri.iterdir()):
        files = sorted(str(f) for f in split_dir.iterdir())
        examples = Counter()
        for record in tf.data.TFRecordDataset(files, compression_type="GZIP"):
            example = tf.train.Example.FromString(record.numpy())
            examples[example.SerializeToString(deterministic=True)] += 1
        result[split_dir.name] = ([Path(f).name for f in files], examples)
    return result


def _assert_same_as_csv_example_gen(
    input_base: Path, tmp: Path, splits=SPLITS, pattern: str = DATA_FILE
) -> dict:
    from tfx.components.example_gen.csv_example_gen.executor import Executor as TfxExecutor

    from components.csv_examples.executor import Executor

    ours = _run(Executor, input_base, tmp / "ours", splits, pattern)
    theirs = _run(TfxExecutor, input_base, tmp / "tfx", splits, pattern)
    ours_splits, theirs_splits = _split_contents(Path(ours.uri)), _split_contents(Path(theirs.uri))
    assert sorted(ours_splits) == sorted(theirs_splits) == sorted(f"Split-{s}" for s in splits)
    for split, (files, examples) in ours_splits.items():
        assert examples == theirs_splits[split][1], split
        assert all(f.startswith("data_tfrecord-") and f.endswith(".gz") for f in files), files
    # The properties TFX's base executor sets, in the same form.
    assert ours.split_names == theirs.split_names
    assert ours.get_string_custom_property("payload_format") == "FORMAT_TF_EXAMPLE"
    assert ours.mlmd_artifact.custom_properties == theirs.mlmd_artifact.custom_properties
    return ours_splits


@pytest.mark.parametrize("dataset", ["wdbc", "heart", "pima"])
def test_examples_equal_csv_example_gen_on_every_bundled_dataset(dataset, cfg_in, tmp_path):
    prepared = materialize(cfg_in(dataset).data, tmp_path / "data")
    splits = _assert_same_as_csv_example_gen(prepared.directory, tmp_path)
    assert {s: sum(c.values()) for s, (_, c) in splits.items()} == {
        f"Split-{s}": n for s, n in prepared.sizes.items()
    }


# Cells that probe every rule of tfx_bsl's inference and CsvExampleGen's handlers: blanks in every type, a
# column blank throughout (no type), an integer beyond int64 (text), numbers Python reads with spaces or
# underscores, nan/inf and exponents (float), non-ASCII text, a quoted cell holding a line break and
# quotes, and a blank line (skipped). Every split types its columns on its own, as CsvExampleGen does.
TRICKY = {
    "train": (
        "age,weight,code,none,note,big,label\n"
        "41,70.5,A,,plain,1,0\n"
        ",,,,,2,1\n"
        "\n"
        '7, 68 ,B,,"two\nlines, ""quoted""",99999999999999999999,0\n'
        "1_000,nan,é,,x,3,1\n"
        "-0,1e3,+5,,,4,0\n"
    ),
    "eval": "age,weight,code,none,note,big,label\n3,1,2,,9,5,1\n,inf,,,,,0\n",
    "test": "age,weight,code,none,note,big,label\n3.5,-1,C,,y, 12 ,1\n",
}


def _write_tricky(base: Path, contents: dict[str, str] = TRICKY) -> Path:
    """Writes hand-made split files and their column types, read back the way ExampleGen reads them."""
    typed = {}
    for split, text in contents.items():
        path = base / split / DATA_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text.encode())
        typed[f"{split}/{DATA_FILE}"] = file_types(text.encode())
    (base / TYPES_FILE).write_text(sidecar_text(typed))
    return base


def test_examples_equal_csv_example_gen_on_blank_int_float_and_text_cells(tmp_path):
    _assert_same_as_csv_example_gen(_write_tricky(tmp_path / "data"), tmp_path)


def test_a_split_of_several_files_is_typed_as_one(tmp_path):
    """A split's files are typed together (an INT column in one file and FLOAT in another is FLOAT)."""
    base = tmp_path / "data"
    header = "a,b,label\n"
    files = {"train/one.csv": header + "1,x,0\n2,,1\n", "train/two.csv": header + "2.5,3,1\n,4,0\n"}
    typed = {}
    for relative, text in files.items():
        (base / relative).parent.mkdir(parents=True, exist_ok=True)
        (base / relative).write_text(text)
        typed[relative] = file_types(text.encode())
    (base / TYPES_FILE).write_text(sidecar_text(typed))
    _assert_same_as_csv_example_gen(base, tmp_path, splits=("train",), pattern="*.csv")


def test_types_are_the_ones_tfx_bsl_infers():
    from tfx_bsl.coders.csv_decoder import ColumnTypeInferrer

    columns = ["a", "b", "c", "d", "e", "f"]
    rows = [
        [b"1", b"1.5", b"", b"x", b"9223372036854775807", b"1_0"],
        [b" 2 ", b"1e3", b"", b"3", b"9223372036854775808", b"nan"],
        [b"-3", b"7", b"", b"", b"1", b"inf"],
    ]
    inferrer = ColumnTypeInferrer(columns, skip_blank_lines=True)
    accumulator = inferrer.create_accumulator()
    ours = TypeInference(columns)
    for row in rows:
        accumulator = inferrer.add_input(accumulator, row)
        ours.add(row)
    expected = [int(info.type) for info in inferrer.extract_output(accumulator)]
    assert [int(t) for t in ours.types()] == expected
    int_, float_, unknown, string = ColumnType.INT, ColumnType.FLOAT, ColumnType.UNKNOWN, ColumnType.STRING
    assert ours.types() == [int_, float_, unknown, string, string, float_]
    assert cell_type(b"12345678901234567890123") is ColumnType.STRING  # beyond int64, even as a float


def test_data_py_records_the_types_and_digests_of_the_files_it_writes(cfg_in, tmp_path):
    """What data.py records is what the files it wrote read back as (CSV round trip included)."""
    import json

    prepared = materialize(cfg_in("heart").data, tmp_path)
    recorded = json.loads((tmp_path / TYPES_FILE).read_text())["files"]
    assert sorted(recorded) == [f"{s}/{DATA_FILE}" for s in sorted(SPLITS)]
    for split in SPLITS:
        written = file_types((prepared.directory / split / DATA_FILE).read_bytes())
        assert recorded[f"{split}/{DATA_FILE}"] == {
            "columns": list(written.columns),
            "types": [t.name for t in written.types],
            "sha256": written.sha256,
        }


def _bad(tmp_path: Path, split_text: str, types_from: str | None = None) -> Path:
    """A one-split input whose train file is `split_text`, typed from `types_from` (default: itself)."""
    base = _write_tricky(tmp_path / "data", {"train": types_from or split_text})
    (base / "train" / DATA_FILE).write_bytes(split_text.encode("latin-1"))
    return base


@pytest.mark.parametrize(
    ("text", "types_from", "message"),
    [
        ("a,b\n1,2\n3\n", "a,b\n1,2\n", r"train/data\.csv line 3 has 1 cells, but the header has 2 columns"),
        (
            'a,b\n1,2\n3,"x\n4,5\n',
            "a,b\n1,2\n",
            r"train/data\.csv: the record starting at line 3 has an unclosed quote",
        ),
        ("a,b\n1,2\n3,caf\xe9\n", "a,b\n1,2\n3,x\n", r"train/data\.csv line 3 is not UTF-8"),
        ("a,b\n1,2\n3,4.5\n", "a,b\n1,2\n3,4\n", r"train/data\.csv line 3, column 'b': '4\.5' is not INT"),
        ("a,c\n1,2\n", "a,b\n1,2\n", r"header \['a', 'c'\] is not the one .*column_types\.json records"),
        ("a,b\n1,2\n", "a,b\n1,2.5\n", r"train/data\.csv is not the file column_types\.json typed"),
    ],
    ids=["cell-count", "unclosed-quote", "not-utf8", "stale-types", "stale-header", "other-content"],
)
def test_a_bad_record_names_the_file_and_line(tmp_path, text, types_from, message):
    from components.csv_examples.executor import Executor

    base = _bad(tmp_path, text, types_from)
    with pytest.raises(Exception, match=message):
        _run(Executor, base, tmp_path / "out", splits=("train",))


def test_missing_column_types_name_the_file_and_the_fix(tmp_path):
    from components.csv_examples.executor import Executor

    base = _write_tricky(tmp_path / "data")
    (base / TYPES_FILE).unlink()
    with pytest.raises(CsvExamplesError, match=r"column_types\.json is missing.*dxpipe prepare-data"):
        _run(Executor, base, tmp_path / "out")


def _stages_of_each_split(executor_class, input_base: Path, out: Path, splits=SPLITS) -> dict[str, tuple]:
    """Split -> (the fused stage that reads its CSV, the fused stage that writes its TFRecords).

    The stages are the direct runner's own plan (FnApiRunner.create_stages on the pipeline proto). In a
    fused stage elements flow from transform to transform one at a time; between stages the runner
    buffers a PCollection whole, so a split whose read and write are one stage streams in bounded memory.
    """
    import apache_beam as beam
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    pipeline = beam.Pipeline(runner=FnApiRunner())
    executor = _executor(executor_class, out / "tmp")
    from tfx.types import artifact_utils

    examples = _examples_artifact(out)
    examples.split_names = artifact_utils.encode_split_names(list(splits))
    output_dict = {"examples": [examples]}
    if hasattr(executor, "write_splits"):
        executor.write_splits(pipeline, output_dict, _exec_properties(input_base, splits))
    else:  # TFX's executor: the same graph its `Do` builds.
        from tfx.components.example_gen import write_split

        for name, examples in executor.GenerateExamplesByBeam(pipeline, _exec_properties(input_base)).items():
            uri = artifact_utils.get_split_uri(output_dict["examples"], name)
            _ = examples | f"WriteSplit[{name}]" >> write_split.WriteSplit(uri, "tfrecords_gzip")
    _, stages = FnApiRunner().create_stages(pipeline.to_runner_api())

    def stage_of(prefix: str, suffix: str):
        (found,) = {
            id(stage): stage
            for stage in stages
            for t in stage.transforms
            if t.unique_name.startswith(prefix) and t.unique_name.endswith(suffix)
        }.values()
        return found

    return {
        split: (
            stage_of(
                f"InputToRecord[{split}]/",
                "ReadFromText" if executor_class.__module__.startswith("tfx") else "CsvToExamples",
            ),
            stage_of(f"WriteSplit[{split}]/", "/WriteBundles"),
        )
        for split in splits
    }


def test_each_split_streams_from_csv_to_tfrecords_in_one_fused_stage(tmp_path):
    """The memory bound, checked on the runner's plan: no GroupByKey or side input between read and write."""
    from tfx.components.example_gen.csv_example_gen.executor import Executor as TfxExecutor

    from components.csv_examples.executor import Executor

    base = _write_tricky(tmp_path / "data")
    for split, (read, write) in _stages_of_each_split(Executor, base, tmp_path / "ours").items():
        assert read is write, f"{split}: read in {read.name}, written in {write.name}"
    # The check can fail: on TFX's executor (its type-inference side input and its reshuffle) the rows
    # cross stages, which is what made CsvExampleGen's memory grow with the rows.
    for read, write in _stages_of_each_split(TfxExecutor, base, tmp_path / "tfx").values():
        assert read is not write


def _run_example_gen_node(cfg, data_dir: Path, tmp_path: Path):
    """Runs the pipeline's ExampleGen node alone on LocalDagRunner; returns (its state, its examples' URI)."""
    from tfx.orchestration import metadata
    from tfx.orchestration import pipeline as tfx_pipeline
    from tfx.orchestration.local.local_dag_runner import LocalDagRunner

    from pipelines.beam_patches import no_tfx_sdist_for_direct_runner
    from pipelines.mlflow_mlmd import collect_outputs
    from pipelines.pipeline import data_validation_nodes

    store = tmp_path / "metadata.sqlite"
    pipeline = tfx_pipeline.Pipeline(
        pipeline_name="examples",
        pipeline_root=str(tmp_path / "root"),
        components=[data_validation_nodes(cfg, str(data_dir), "test")[0]],
        enable_cache=True,
        metadata_connection_config=metadata.sqlite_metadata_connection_config(str(store)),
        beam_pipeline_args=BEAM_ARGS,
    )
    with no_tfx_sdist_for_direct_runner("DirectRunner"):
        LocalDagRunner().run(pipeline)
    outputs = collect_outputs(str(store), "examples")
    return outputs.execution_states["CsvExampleGen"], outputs.examples_uri


@pytest.mark.slow
def test_an_unchanged_rerun_is_cached_and_a_data_edit_reruns(cfg_in, tmp_path):
    import dataclasses

    from pipelines.config import SourceConfig
    from pipelines.data import canonical_csv

    cfg = cfg_in("wdbc")
    source = tmp_path / "wdbc.csv"
    source.write_text(canonical_csv(cfg.data))
    data = dataclasses.replace(
        cfg.data, source=SourceConfig(kind="csv", path=str(source)), label_column="label", label_map={}
    )
    cfg = dataclasses.replace(cfg, datasets={**cfg.datasets, "wdbc": data})
    data_dir = materialize(data, tmp_path / "data").directory
    assert _run_example_gen_node(cfg, data_dir, tmp_path)[0] == "COMPLETE"
    materialize(data, data_dir)  # unchanged data: data.py rewrites nothing
    state, uri = _run_example_gen_node(cfg, data_dir, tmp_path)
    assert state == "CACHED"
    total = sum(sum(examples.values()) for _, examples in _split_contents(Path(uri)).values())
    source.write_bytes(b"".join(source.read_bytes().splitlines(keepends=True)[:-1]))  # one row fewer
    materialize(data, data_dir)
    state, uri = _run_example_gen_node(cfg, data_dir, tmp_path)
    assert state == "COMPLETE"
    assert sum(sum(examples.values()) for _, examples in _split_contents(Path(uri)).values()) == total - 1
