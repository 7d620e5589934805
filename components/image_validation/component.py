"""TFX shell of the image gate: decode every example's image, call the core, stop the run on findings."""

import os

import tensorflow as tf
from tfx.dsl.component.experimental.annotations import InputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types import artifact_utils, standard_artifacts

from components.data_gate.core import enforce
from components.image_validation import core

IMAGE_FEATURE = "image"
ID_FEATURE = "image_id"
# Leading bytes of the encodings we can name (the signatures TFDV's image statistics use).
_SIGNATURES = {
    "png": b"\x89PNG\r\n\x1a\n",
    "jpeg": b"\xff\xd8\xff",
    "gif": b"GIF8",
    "bmp": b"BM",
}


def sniff_format(encoded: bytes) -> str:
    """Returns the encoding the first bytes announce, or "" if none we know."""
    return next((name for name, magic in _SIGNATURES.items() if encoded.startswith(magic)), "")


def image_facts(example_id: str, encoded: bytes) -> core.ImageFacts:
    """Decodes one image as the model does (TensorFlow's decoder) and returns what was found."""
    kind = sniff_format(encoded)
    if not kind:
        return core.ImageFacts(example_id, "", None)
    try:
        pixels = tf.io.decode_image(encoded, channels=0, expand_animations=False)
    except (tf.errors.InvalidArgumentError, tf.errors.DataLossError) as err:
        return core.ImageFacts(example_id, kind, None, err.message.splitlines()[0].strip())
    height, width, channels = (int(d) for d in pixels.shape)
    return core.ImageFacts(example_id, kind, (height, width, channels))


def split_facts(file_pattern: str) -> list[core.ImageFacts]:
    """Returns the facts of every example in one split's gzipped TFRecord files."""
    facts = []
    files = sorted(tf.io.gfile.glob(file_pattern))
    for position, record in enumerate(tf.data.TFRecordDataset(files, compression_type="GZIP")):
        example = tf.train.Example.FromString(record.numpy())
        features = example.features.feature
        ids = features[ID_FEATURE].bytes_list.value if ID_FEATURE in features else []
        example_id = ids[0].decode("utf-8", "replace") if ids else f"#{position}"
        images = features[IMAGE_FEATURE].bytes_list.value if IMAGE_FEATURE in features else []
        # A missing image is the schema's business (presence); ExampleValidator reports it.
        if images:
            facts.append(image_facts(example_id, images[0]))
    return facts


@component
def ImageGate(
    examples: InputArtifact[standard_artifacts.Examples],
    height: Parameter[int],
    width: Parameter[int],
    channels: Parameter[int],
    formats: Parameter[str],
    source: Parameter[str],
) -> None:
    """Fails the run, naming the examples, when any image is corrupt or breaks the declared contract.

    Args:
        examples: ExampleGen output (every split is checked).
        height: Required pixel rows.
        width: Required pixel columns.
        channels: Required channel count.
        formats: Accepted encodings, comma-separated (`png,jpeg`).
        source: The user-facing name of the data, for the report.
    """
    contract = core.ImageContract(height, width, channels, tuple(formats.split(",")))
    findings = []
    for split in artifact_utils.decode_split_names(examples.split_names):
        pattern = os.path.join(artifact_utils.get_split_uri([examples], split), "*")
        findings.extend(core.check_split(split, split_facts(pattern), contract))
    enforce(findings, source)
