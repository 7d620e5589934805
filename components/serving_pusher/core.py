"""Writes SavedModels into TF Serving model base paths, atomically and idempotently.

TF Serving (and `dxpipe serve`) watch `<base_path>/<version>/` for numbered directories and load the
highest one. A directory that appears before it is complete can be picked up half-written, so a version is
staged under a dot-prefixed name (ignored by TF Serving, whose version scan only accepts all-digit names)
and renamed into place: on one filesystem `rename` is atomic, so the version is either absent or whole.

Pushing a model whose content equals the version already served is a no-op: a re-run of a cached pipeline
must not multiply identical versions.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import time
from pathlib import Path

# Written next to saved_model.pb; TF Serving ignores unknown files in a version directory.
DIGEST_FILE = "dxpipe_digest.txt"
_STAGING_PREFIX = ".incoming-"


class PushError(RuntimeError):
    """A model could not be published; the base path is left as it was."""


@dataclasses.dataclass(frozen=True)
class PushResult:
    """What a push did.

    Attributes:
        version: The version directory that now holds the model (new or already present).
        path: Absolute path of that directory.
        digest: Content digest of the SavedModel.
        written: False when an identical model was already the latest version.
    """

    version: int
    path: str
    digest: str
    written: bool


def saved_model_digest(model_dir: str | os.PathLike) -> str:
    """Returns a SHA-256 over the relative paths and bytes of every file of a SavedModel.

    Args:
        model_dir: A SavedModel directory.

    Raises:
        PushError: If the directory holds no saved_model.pb.
    """
    root = Path(model_dir)
    if not (root / "saved_model.pb").is_file():
        raise PushError(f"{root} is not a SavedModel (no saved_model.pb); nothing was pushed.")
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.name != DIGEST_FILE):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(b"\0")
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def list_versions(base_path: str | os.PathLike) -> list[int]:
    """Returns the numbered version directories under a model base path, ascending."""
    base = Path(base_path)
    if not base.is_dir():
        return []
    return sorted(int(p.name) for p in base.iterdir() if p.is_dir() and p.name.isdigit())


def read_digest(version_dir: str | os.PathLike) -> str | None:
    """Returns the digest recorded in a version directory, or None if it has none."""
    marker = Path(version_dir) / DIGEST_FILE
    return marker.read_text().strip() if marker.is_file() else None


def _fsync_tree(root: Path) -> None:
    # Flush file contents before the rename so a crash cannot expose a directory of empty files.
    for path in root.rglob("*"):
        if path.is_file():
            with path.open("rb") as handle:
                os.fsync(handle.fileno())


def publish_version(
    model_dir: str | os.PathLike,
    base_path: str | os.PathLike,
    version: int | None = None,
    *,
    skip_if_latest_identical: bool = True,
) -> PushResult:
    """Copies a SavedModel into `<base_path>/<version>/` atomically.

    Args:
        model_dir: The SavedModel to publish.
        base_path: The TF Serving model base path (created if missing).
        version: The version number to use; by default one more than both the highest existing version
            and the current Unix time, so versions stay increasing and sortable like TFX Pusher's.
        skip_if_latest_identical: Return the latest version instead of writing a new one when its content
            digest equals this model's.

    Returns:
        A PushResult describing the version that holds the model.

    Raises:
        PushError: If the source is not a SavedModel or the requested version already exists.
    """
    digest = saved_model_digest(model_dir)
    base = Path(base_path)
    base.mkdir(parents=True, exist_ok=True)
    existing = list_versions(base)
    if skip_if_latest_identical and existing:
        latest_dir = base / str(existing[-1])
        if read_digest(latest_dir) == digest:
            return PushResult(existing[-1], str(latest_dir.resolve()), digest, written=False)
    if version is None:
        version = max([int(time.time()), *(v + 1 for v in existing)])
    target = base / str(version)
    if target.exists():
        raise PushError(
            f"version {version} already exists under {base}; versions are immutable, choose a new number."
        )
    staging = base / f"{_STAGING_PREFIX}{version}-{os.getpid()}"
    try:
        shutil.copytree(model_dir, staging)
        (staging / DIGEST_FILE).write_text(digest + "\n")
        _fsync_tree(staging)
        os.rename(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return PushResult(version, str(target.resolve()), digest, written=True)
