"""The evidence a verdict is re-derived from, recorded once at registration and verified at every use.

At registration dxpipe writes `<production base>/.evidence/<version>.json` (write-once) holding what the
gate decided on: the run's lineage (MLflow run id, TFX run id), the author, the SavedModel digest, the
candidate's and baseline's metrics as the Evaluator produced them, the TFX Evaluator's output and blessing
locations with a digest of each, the gate policy and four-eyes rule in force, and the display tags written
on the version. The SHA-256 of that file goes into the hash-chained promotion log ("register" line).

Approve, sync, rollback and status then trust nothing a user can edit through MLflow: they read the file,
check it against the digest in the log, check the Evaluator's artifacts against the digests in the file,
and re-derive the verdict (`policy.decide`). Tags and aliases are only compared with it.

What this cannot protect against: someone with write access to the serving root's filesystem can rewrite
evidence and log together. The threat it covers is an ordinary MLflow user (REST API, UI, client).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipelines.promotion.audit_log import PromotionRecord, fsync_dir, registration_of

EVIDENCE_DIR = ".evidence"


@dataclasses.dataclass(frozen=True)
class Evidence:
    """What a version was gated on, as recorded at registration.

    Attributes:
        model: Registered model name.
        version: Registry version.
        run_id: The MLflow run that registered it.
        tfx_run_id: The TFX pipeline run that produced the model.
        author: Who ran the pipeline (see `pipelines.identity`).
        author_authenticated: Whether a server authenticated the author.
        author_source: Where the author's name came from.
        model_digest: SHA-256 of the SavedModel's files.
        policy: The gate policy in force (`GatePolicy.to_dict()`).
        policy_digest: `GatePolicy.digest()` of it.
        four_eyes: Whether the four-eyes rule was in force.
        candidate: The candidate's metrics per slice, as the Evaluator produced them.
        baseline: The compared champion's metrics per slice, or None.
        champion: The champion version the candidate was compared with, or None.
        compared_with: A description of that comparison.
        blessed: The TFX Evaluator's blessing, or None when there was none.
        evaluation_uri: The Evaluator's output directory (ML Metadata lineage), or None.
        evaluation_digest: `tree_digest` of it at registration.
        blessing_uri: The ModelBlessing artifact directory, or None.
        blessing_digest: `tree_digest` of it at registration.
        test_digest: Digest of the test split the metrics were computed on.
        passed: The verdict at registration.
        failures: The failed criteria at registration.
        display_tags: The gate/metric/author/digest tags written on the version (a display of this record).
        registered_at: UTC time of registration.
        clinical: The clinical evaluation the gate read (`clinical_evaluation.json`, its paired comparison
            kept only when made against the champion), or None (no ClinicalEvaluator; older records).
        clinical_uri: The ClinicalEvaluator's output directory, or None.
        clinical_digest: `tree_digest` of it at registration.
        model_card: The model card logged with the version (`pipelines.model_card.attach.Card.record`):
            its artifact path, each file's SHA-256, the card digest and summary; None for versions
            registered before cards (their approval is refused).
        tflite: The TFLite export attached to the version: the parity report and each file's SHA-256
            (`pipelines.tflite_step.evidence_record`); None when there was none.
    """

    model: str
    version: str
    run_id: str
    tfx_run_id: str
    author: str
    author_authenticated: bool
    author_source: str
    model_digest: str
    policy: Mapping[str, Any]
    policy_digest: str
    four_eyes: bool
    candidate: Mapping[str, Mapping[str, float]]
    baseline: Mapping[str, Mapping[str, float]] | None
    champion: str | None
    compared_with: str
    blessed: bool | None
    evaluation_uri: str | None
    evaluation_digest: str | None
    blessing_uri: str | None
    blessing_digest: str | None
    test_digest: str | None
    passed: bool
    failures: tuple[str, ...]
    display_tags: Mapping[str, str]
    registered_at: str
    clinical: Mapping[str, Any] | None = None
    clinical_uri: str | None = None
    clinical_digest: str | None = None
    model_card: Mapping[str, Any] | None = None
    tflite: Mapping[str, Any] | None = None

    def to_json(self) -> bytes:
        """The canonical bytes of the record."""
        data = dataclasses.asdict(self)
        data["failures"] = list(self.failures)
        for later in ("model_card", "tflite"):
            if data[later] is None:
                del data[later]  # records written before these fields keep their exact bytes and digest
        return json.dumps(data, sort_keys=True, indent=1).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Evidence:
        """Parses `to_json` output.

        Raises:
            ValueError, TypeError, KeyError: The bytes are not an evidence record.
        """
        data = json.loads(raw)
        data["failures"] = tuple(data["failures"])
        return cls(**data)


def tree_digest(root: str | os.PathLike) -> str:
    """SHA-256 over the relative paths and bytes of every file under `root` (a file: its bytes)."""
    root = Path(root)
    digest = hashlib.sha256()
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    for path in files:
        digest.update(path.relative_to(root).as_posix().encode() if path != root else b".")
        digest.update(b"\0")
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def optional_digest(uri: str | None) -> str | None:
    """`tree_digest` of a local artifact directory, or None when there is none."""
    if not uri or not Path(uri).exists():
        return None
    return tree_digest(uri)


def evidence_path(base: Path, version: str) -> Path:
    """Where the evidence of `version` lives under the model's production base path."""
    return base / EVIDENCE_DIR / f"{int(version)}.json"


def write_evidence(base: Path, evidence: Evidence) -> str:
    """Writes the record once (never overwrites) and returns its SHA-256.

    Raises:
        FileExistsError: Evidence for this version already exists (a registry version is never reused).
    """
    path = evidence_path(base, evidence.version)
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = evidence.to_json()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
    try:
        os.write(fd, raw)
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_dir(path.parent)
    return hashlib.sha256(raw).hexdigest()


@dataclasses.dataclass(frozen=True)
class VerifiedEvidence:
    """The evidence of a version and every problem found verifying it (empty when it can be trusted).

    Attributes:
        evidence: The record, or None when there is none (or it cannot be read).
        problems: Each integrity problem, one sentence each.
        missing: True when the version has no evidence at all (never registered by the pipeline).
    """

    evidence: Evidence | None
    problems: tuple[str, ...]
    missing: bool = False


def load_verified(base: Path, version: str, records: list[PromotionRecord]) -> VerifiedEvidence:
    """Reads a version's evidence and checks it against the log and the Evaluator's artifacts."""
    path = evidence_path(base, version)
    registered = registration_of(records, version)
    if registered is None and not path.exists():
        return VerifiedEvidence(None, (), missing=True)
    if registered is None:
        return VerifiedEvidence(
            None,
            (
                f"{path} exists but the promotion log has no registration of version {version}: the evidence "
                "was not written by dxpipe's registration",
            ),
        )
    if not path.is_file():
        return VerifiedEvidence(
            None, (f"the evidence of version {version} ({path}) was deleted after registration",)
        )
    raw = path.read_bytes()
    if hashlib.sha256(raw).hexdigest() != registered.evidence_digest:
        return VerifiedEvidence(
            None,
            (
                f"the evidence of version {version} ({path}) was altered after registration (its digest "
                f"differs from log entry {registered.seq})",
            ),
        )
    try:
        evidence = Evidence.from_json(raw)
    except (ValueError, TypeError, KeyError) as exc:
        return VerifiedEvidence(None, (f"the evidence of version {version} is unreadable ({exc})",))
    problems = []
    for label, uri, recorded in (
        ("Evaluator output", evidence.evaluation_uri, evidence.evaluation_digest),
        ("Evaluator blessing", evidence.blessing_uri, evidence.blessing_digest),
        ("clinical evaluation", evidence.clinical_uri, evidence.clinical_digest),
    ):
        if not uri or recorded is None:
            continue
        if not Path(uri).exists():
            problems.append(
                f"the {label} of version {version} ({uri}) is gone, so its verdict cannot be re-derived"
            )
        elif tree_digest(uri) != recorded:
            problems.append(f"the {label} of version {version} ({uri}) changed after registration")
    return VerifiedEvidence(evidence, tuple(problems))
