"""The gate policy and four-eyes rule pinned for a model, and their audited, two-person change.

The policy in force is the one recorded at the model's first registration, unless a later change was
proposed by one person and accepted by another: `propose` records the new policy (written once to
`.evidence/policy-<digest>.json`, its SHA-256 in a "policy-proposed" log line) and `accept` by a different
identity makes it the pinned one (a "policy" log line). Nothing on an approver's command line takes part.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Protocol

from pipelines.identity import Identity, normalise_name
from pipelines.promotion.audit_log import PromotionLog, PromotionRecord, fsync_dir
from pipelines.promotion.errors import FourEyesError, PromotionError, TamperingError
from pipelines.promotion.evidence import EVIDENCE_DIR, load_verified
from pipelines.promotion.policy import PinnedPolicy


class _Where(Protocol):
    model: str
    base: Path


def _policy_file(base: Path, digest: str, four_eyes: bool) -> Path:
    return base / EVIDENCE_DIR / f"policy-{digest}-{'4eyes' if four_eyes else 'solo'}.json"


def _load_policy(where: _Where, record: PromotionRecord) -> PinnedPolicy:
    path = _policy_file(where.base, record.policy_digest or "", bool(record.four_eyes))
    raw = path.read_bytes() if path.is_file() else b""
    if hashlib.sha256(raw).hexdigest() != record.evidence_digest:
        raise TamperingError(
            f"the gate policy of '{where.model}' recorded in log entry {record.seq} ({path}) is missing or was "
            "altered; nothing can be approved until it is restored."
        )
    data = json.loads(raw)
    return PinnedPolicy(data["policy"], bool(data["four_eyes"]), str(record.policy_digest))


def pinned_policy(where: _Where, records: list[PromotionRecord]) -> PinnedPolicy | None:
    """The policy in force: the last accepted change, else the first registration's (None before any).

    Raises:
        TamperingError: The policy's record cannot be verified.
    """
    accepted = next((r for r in reversed(records) if r.event == "policy"), None)
    if accepted is not None:
        return _load_policy(where, accepted)
    first = next((r for r in records if r.event == "register"), None)
    if first is None:
        return None
    verified = load_verified(where.base, str(first.version), records)
    if verified.evidence is None or verified.evidence.policy_digest != first.policy_digest:
        problems = "; ".join(verified.problems) or "its evidence is missing"
        raise TamperingError(
            f"the gate policy pinned for '{where.model}' at its first registration (version {first.version}, "
            f"log entry {first.seq}) cannot be verified: {problems}. Nothing can be approved until it is "
            "restored."
        )
    return PinnedPolicy.of(verified.evidence)


def pending_proposal(records: list[PromotionRecord]) -> PromotionRecord | None:
    """The latest proposal not yet accepted (or superseded by an accepted change)."""
    for record in reversed(records):
        if record.event == "policy":
            return None
        if record.event == "policy-proposed":
            return record
    return None


def propose(
    where: _Where, log: PromotionLog, policy: PinnedPolicy, proposer: Identity, note: str
) -> PromotionRecord:
    """Records a proposed policy; it governs nothing until another person accepts it. Call under the lock."""
    path = _policy_file(where.base, policy.digest, policy.four_eyes)
    raw = json.dumps({"policy": dict(policy.policy), "four_eyes": policy.four_eyes}, sort_keys=True).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
        try:
            os.write(fd, raw)
            os.fsync(fd)
        finally:
            os.close(fd)
        fsync_dir(path.parent)
    elif path.read_bytes() != raw:
        raise TamperingError(f"{path} exists with other content; restore it before proposing this policy.")
    return log.append(
        event="policy-proposed",
        model=where.model,
        version=None,
        reviewer=proposer.name,
        reviewer_authenticated=proposer.authenticated,
        note=note,
        source="cli",
        four_eyes=policy.four_eyes,
        policy_digest=policy.digest,
        evidence_digest=hashlib.sha256(raw).hexdigest(),
        reason=f"proposed gate policy {policy.digest} with four_eyes {policy.four_eyes}",
    )


def accept(where: _Where, log: PromotionLog, reviewer: Identity, note: str) -> PromotionRecord:
    """Makes the pending proposal the pinned policy; the reviewer must not be its proposer. Under the lock.

    Raises:
        PromotionError: Nothing is pending.
        FourEyesError: The reviewer proposed it.
        TamperingError: The proposal's file was altered.
    """
    records = log.records()
    proposal = pending_proposal(records)
    if proposal is None:
        raise PromotionError(f"no policy change is pending for '{where.model}'; propose one first.")
    if normalise_name(proposal.reviewer or "") == reviewer.key:
        raise FourEyesError(
            f"'{proposal.reviewer}' proposed this policy change (log entry {proposal.seq}) and '{reviewer.name}' "
            "is the same person; a second person must accept it."
        )
    policy = _load_policy(where, proposal)
    return log.append(
        event="policy",
        model=where.model,
        version=None,
        reviewer=reviewer.name,
        reviewer_authenticated=reviewer.authenticated,
        note=note,
        source="cli",
        four_eyes=policy.four_eyes,
        policy_digest=policy.digest,
        evidence_digest=proposal.evidence_digest,
        reason=f"accepted the policy proposed by {proposal.reviewer} in log entry {proposal.seq}",
    )
