"""The image dataset kind's nodes: ImportExampleGen on the official splits, image validation, the CNN.

`pipelines.pipeline.create_pipeline` calls `image_nodes` for a dataset of kind `image`; evaluation,
the baseline, the blessing and the push to staging are the tabular pipeline's own
(`evaluation_and_push_nodes`), so an image model is gated, approved and promoted by the same code.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import tensorflow_data_validation as tfdv
from tfx.components import ExampleValidator, ImportExampleGen, StatisticsGen, Trainer
from tfx.components.schema_gen.import_schema_gen.component import ImportSchemaGen
from tfx.proto import example_gen_pb2

from components.data_gate.component import DataGate
from components.image_validation.component import ImageGate
from pipelines.config import Config
from pipelines.image_data import EXAMPLES_FILE, SPLIT_KEYS

IMAGE_RUN_FN = "models.image.trainer.run_fn"


def image_nodes(
    cfg: Config, input_base: str, source_name: str, code_digest: str
) -> tuple[list, object, object]:
    """Returns (validation and training nodes, the ExampleGen node, the Trainer node).

    Args:
        cfg: The validated configuration (its dataset of kind `image`).
        input_base: Directory holding `<split>/examples.tfrecord.gz` (see `pipelines.image_data`).
        source_name: The data's user-facing name, for data-gate messages.
        code_digest: Digest of the model code, so a code change re-trains instead of hitting the cache.
    """
    data = cfg.data
    # The official splits stay as they are (so results compare with the MedMNIST paper): `eval` picks
    # the epoch, `test` gates, and no hash re-split mixes them.
    example_gen = ImportExampleGen(
        input_base=input_base,
        input_config=example_gen_pb2.Input(
            splits=[
                example_gen_pb2.Input.Split(name=split, pattern=f"{split}/{EXAMPLES_FILE}")
                for split in SPLIT_KEYS
            ]
        ),
    )
    # Semantic-domain statistics add TFDV's image statistics (format histogram by signature, largest
    # width/height), which ExampleValidator checks against the schema's `image_domain`.
    statistics_gen = StatisticsGen(
        examples=example_gen.outputs["examples"],
        stats_options=tfdv.StatsOptions(enable_semantic_domain_stats=True),
    )
    schema_gen = ImportSchemaGen(schema_file=str(Path(data.schema_dir) / "schema.pbtxt"))
    example_validator = ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"]
    )
    data_gate = DataGate(
        anomalies=example_validator.outputs["anomalies"],
        schema=schema_gen.outputs["schema"],
        source=source_name,
    )
    image = data.image
    image_gate = ImageGate(
        examples=example_gen.outputs["examples"],
        height=image.height,
        width=image.width,
        channels=image.channels,
        formats=",".join(image.formats),
        source=source_name,
    )
    trainer = Trainer(
        run_fn=IMAGE_RUN_FN,
        examples=example_gen.outputs["examples"],
        schema=schema_gen.outputs["schema"],
        custom_config={
            "model": dataclasses.asdict(image.model),
            "operating_threshold": data.training.operating_threshold,
            "operating_point": data.operating_point.to_dict(),
            "calibration": data.calibration,
            "seed": data.training.seed,
            "code_digest": code_digest,
        },
    )
    # Nothing is trained on data either gate rejected.
    trainer.add_upstream_node(data_gate)
    trainer.add_upstream_node(image_gate)
    nodes = [example_gen, statistics_gen, schema_gen, example_validator, data_gate, image_gate, trainer]
    return nodes, example_gen, trainer
