"""Pure core of the image gate: facts about each example's image -> findings a person can act on.

TFDV's image-domain statistics (StatisticsGen with semantic-domain stats, checked by ExampleValidator
against the schema's `image_domain`) recognise a format by its first bytes only and record the largest
width and height: a truncated PNG with an intact signature passes, and no statistic says that one image
in thousands has the wrong size or channel count. This gate decodes every image and compares each one
with the dataset's declared contract, naming the examples, so a corrupt or mis-sized image stops the run
before training, in the data gate's report format.
"""

from __future__ import annotations

import dataclasses

from components.data_gate.core import Finding

COLUMN = "image"
# How many example ids a finding names before it summarises the rest as a count.
_SHOWN = 5


@dataclasses.dataclass(frozen=True)
class ImageContract:
    """What every image of the dataset must be.

    Attributes:
        height: Pixel rows.
        width: Pixel columns.
        channels: Channel count (1 grayscale, 3 RGB).
        formats: Accepted encodings (`png`, `jpeg`).
    """

    height: int
    width: int
    channels: int
    formats: tuple[str, ...]

    def describe(self) -> str:
        """Returns the contract in words, for reports."""
        kinds = " or ".join(f.upper() for f in self.formats)
        return f"{kinds}, {self.height}x{self.width} pixels, {self.channels} channel(s)"


@dataclasses.dataclass(frozen=True)
class ImageFacts:
    """What the shell found out about one example's image.

    Attributes:
        example: The example's id (or its position in the split when it has none).
        format: The encoding its first bytes announce (`png`, `jpeg`, `gif`, `bmp`), or "" if none.
        shape: (height, width, channels) when it decoded, else None.
        error: Why decoding failed ("" when it decoded, or when it was not tried).
    """

    example: str
    format: str
    shape: tuple[int, int, int] | None
    error: str = ""


def _ids(examples: list[str]) -> str:
    shown = ", ".join(examples[:_SHOWN])
    more = len(examples) - _SHOWN
    return f"{shown} and {more} more" if more > 0 else shown


def check_split(split: str, facts: list[ImageFacts], contract: ImageContract) -> list[Finding]:
    """Returns one finding per kind of problem in a split, naming the examples it affects.

    Args:
        split: The split's name, for the report.
        facts: One entry per example of the split.
        contract: What every image must be.

    Returns:
        Findings for unexpected formats, undecodable bytes, wrong sizes and wrong channel counts.
    """
    problems: dict[tuple[str, str], list[str]] = {}

    def add(kind: str, detail: str, example: str) -> None:
        problems.setdefault((kind, detail), []).append(example)

    for fact in facts:
        if fact.format not in contract.formats:
            add("format", fact.format.upper() or "not an image (no known image signature)", fact.example)
        elif fact.shape is None:
            add("decode", fact.error or "the bytes do not decode", fact.example)
        else:
            height, width, channels = fact.shape
            if (height, width) != (contract.height, contract.width):
                add("size", f"{height}x{width} pixels", fact.example)
            if channels != contract.channels:
                add("channels", f"{channels} channel(s)", fact.example)
    fixes = {
        "format": f"re-encode the images as {' or '.join(f.upper() for f in contract.formats)}, or list the "
        "format in the dataset's `image.formats` after review",
        "decode": "replace the corrupt or truncated files with intact copies from the source",
        "size": f"resample the images to {contract.height}x{contract.width}, or change `image.height`/"
        "`image.width` if the whole dataset really has another size",
        "channels": f"convert the images to {contract.channels} channel(s), or change `image.channels` if "
        "the whole dataset has another channel count",
    }
    findings = []
    for (kind, detail), examples in sorted(problems.items()):
        found = f"{detail} in {len(examples)} of {len(facts)} examples ({_ids(examples)})"
        findings.append(Finding(COLUMN, (split,), contract.describe(), found, fixes[kind]))
    return findings
