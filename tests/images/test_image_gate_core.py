"""The image gate's pure core: every kind of bad image is named, with its examples and the fix."""

from __future__ import annotations

import pytest

from components.data_gate.core import enforce
from components.image_validation.core import ImageContract, ImageFacts, check_split
from pipelines.errors import DataGateError

CONTRACT = ImageContract(28, 28, 1, ("png",))
GOOD = [ImageFacts(f"train-{i:05d}", "png", (28, 28, 1)) for i in range(10)]


def test_clean_images_pass():
    assert check_split("train", GOOD, CONTRACT) == []


@pytest.mark.parametrize(
    ("bad", "found", "fix"),
    [
        (
            ImageFacts("train-00003", "jpeg", (28, 28, 1)),
            "JPEG in 1 of 11 examples (train-00003)",
            "re-encode",
        ),
        (ImageFacts("train-00003", "", None), "not an image (no known image signature)", "re-encode"),
        (
            ImageFacts("train-00003", "png", None, "Invalid PNG data, size 60"),
            "Invalid PNG data, size 60 in 1 of 11 examples (train-00003)",
            "replace the corrupt",
        ),
        (
            ImageFacts("train-00003", "png", (64, 64, 1)),
            "64x64 pixels in 1 of 11",
            "resample the images to 28x28",
        ),
        (ImageFacts("train-00003", "png", (28, 28, 3)), "3 channel(s) in 1 of 11", "convert the images to 1"),
    ],
    ids=["unexpected-format", "not-an-image", "undecodable", "wrong-size", "wrong-channels"],
)
def test_each_problem_names_the_examples_and_the_fix(bad, found, fix):
    findings = check_split("train", [*GOOD, bad], CONTRACT)
    assert len(findings) == 1
    finding = findings[0]
    assert finding.column == "image"
    assert finding.expected == "PNG, 28x28 pixels, 1 channel(s)"
    assert found in finding.found
    assert fix in finding.fix
    with pytest.raises(
        DataGateError, match=r"(?s)1 problem\(s\) in pneumoniamnist\.npz.*column 'image' \[train\]"
    ):
        enforce(findings, "pneumoniamnist.npz")


def test_many_bad_examples_are_summarised_and_kinds_reported_separately():
    bad = [ImageFacts(f"train-{i:05d}", "png", (32, 32, 3)) for i in range(8)]
    findings = check_split("train", [*GOOD, *bad], CONTRACT)
    assert sorted(f.found.split(" in ")[0] for f in findings) == ["3 channel(s)", "32x32 pixels"]
    assert all(
        "(train-00000, train-00001, train-00002, train-00003, train-00004 and 3 more)" in f.found
        for f in findings
    )
