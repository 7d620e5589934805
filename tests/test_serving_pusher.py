"""The atomic, idempotent publish of a SavedModel into a TF Serving model base path."""

import os
from pathlib import Path
from unittest import mock

import pytest

from components.serving_pusher.core import DIGEST_FILE, PushError, list_versions, publish_version, read_digest


def _model(path: Path, payload: bytes = b"graph") -> Path:
    (path / "variables").mkdir(parents=True)
    (path / "saved_model.pb").write_bytes(payload)
    (path / "variables" / "variables.index").write_bytes(b"index")
    return path


def test_publish_writes_a_complete_numbered_version(tmp_path):
    model = _model(tmp_path / "m")
    result = publish_version(model, tmp_path / "base", version=7)
    assert result.written and result.version == 7
    assert sorted(os.listdir(tmp_path / "base")) == ["7"]
    assert (tmp_path / "base" / "7" / "variables" / "variables.index").read_bytes() == b"index"
    assert read_digest(result.path) == result.digest


def test_identical_model_is_not_pushed_twice(tmp_path):
    model = _model(tmp_path / "m")
    first = publish_version(model, tmp_path / "base")
    second = publish_version(model, tmp_path / "base")
    assert not second.written and second.version == first.version
    assert list_versions(tmp_path / "base") == [first.version]


def test_changed_model_gets_a_higher_version(tmp_path):
    first = publish_version(_model(tmp_path / "a"), tmp_path / "base", version=5)
    second = publish_version(_model(tmp_path / "b", b"other graph"), tmp_path / "base")
    assert second.written and second.version > first.version
    assert second.digest != first.digest


def test_versions_are_immutable(tmp_path):
    publish_version(_model(tmp_path / "a"), tmp_path / "base", version=3)
    with pytest.raises(PushError, match="version 3 already exists"):
        publish_version(_model(tmp_path / "b", b"x"), tmp_path / "base", version=3)


def test_not_a_saved_model_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(PushError, match="is not a SavedModel"):
        publish_version(tmp_path / "empty", tmp_path / "base")
    assert not (tmp_path / "base").exists()


def test_failed_copy_leaves_no_partial_version(tmp_path):
    model = _model(tmp_path / "m")
    publish_version(model, tmp_path / "base", version=1)
    new_model = _model(tmp_path / "n", b"new")
    with (
        mock.patch("components.serving_pusher.core.os.rename", side_effect=OSError("disk full")),
        pytest.raises(OSError, match="disk full"),
    ):
        publish_version(new_model, tmp_path / "base", version=2)
    # Only the earlier, complete version is there: no staging directory, no half-written version 2.
    assert sorted(os.listdir(tmp_path / "base")) == ["1"]
    assert DIGEST_FILE in os.listdir(tmp_path / "base" / "1")
