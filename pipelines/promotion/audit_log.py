"""The promotion log: one hash-chained JSON line per registration, approval, refusal, rollback and repair.

Each line carries `prev` (the hash of the line before it; "" for the first) and `hash` (SHA-256 over the
record's canonical JSON without `hash`). Editing a line breaks its own hash; deleting or reordering one
breaks the next line's `prev` and the gap-free `seq`. `verify` reports both; `status` says so. A line that
cannot be parsed is an error, never skipped: the one exception is a torn last line left by a crash while
it was being appended, which the write-ahead journal proves and recovery (`journal.recover`) truncates.

Append only while holding the promotion lock (`journal.promotion_lock`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipelines.promotion.errors import AuditLogError

LOG_NAME = "promotion_log.jsonl"
CHAMPION_EVENTS = ("approve", "rollback")


@dataclasses.dataclass(frozen=True)
class PromotionRecord:
    """One line of the promotion log.

    Attributes:
        seq: Position in the log (1-based, gap-free).
        time: UTC timestamp, ISO 8601.
        event: "register", "approve", "rollback", "refuse", "repair", "abort" or "error".
        model: Registered model name.
        version: The registry version acted on (for a rollback: the restored version).
        reviewer: Who approved, refused or rolled back (for "register": the author).
        reviewer_authenticated: True when an MLflow server authenticated `reviewer`; False for an OS account.
        note: The reviewer's note.
        source: "cli", "api", "sync" (dxpipe sync), "ui" (an alias set outside dxpipe) or "recovery".
        author: The run's author, as recorded at registration.
        previous_champion: The champion before this event.
        production_version: The production version directory now serving (approve, rollback, repair).
        digest: The SavedModel digest served (for "register": the registered model's digest).
        gate: The gate verdict re-derived from the evidence ("passed"/"failed").
        metrics: The overall test metrics re-derived from the evidence (never read from tags).
        four_eyes: Whether the pinned four-eyes rule applied to this decision.
        policy_digest: The pinned gate policy the decision was made under.
        evidence_digest: For "register": SHA-256 of the evidence record written for the version.
        model_card_digest: For approvals: the digest of the model card the reviewer approved.
        op_id: The write-ahead journal entry this record commits (empty when not journalled).
        reason: Why it was refused or failed; for other events, remarks.
        prev: Hash of the previous line ("" for the first).
        hash: SHA-256 of this record's canonical JSON without `hash`.
        warning: Not persisted: a problem after the commit (e.g. tags not written), for the caller.
    """

    seq: int
    time: str
    event: str
    model: str
    version: str | None
    reviewer: str | None
    reviewer_authenticated: bool | None = None
    note: str = ""
    source: str = "api"
    author: str | None = None
    previous_champion: str | None = None
    production_version: int | None = None
    digest: str | None = None
    gate: str | None = None
    metrics: Mapping[str, float] = dataclasses.field(default_factory=dict)
    four_eyes: bool | None = None
    policy_digest: str | None = None
    evidence_digest: str | None = None
    model_card_digest: str | None = None
    op_id: str = ""
    reason: str | None = None
    prev: str = ""
    hash: str = ""
    warning: str | None = dataclasses.field(default=None, compare=False)

    def body(self) -> dict[str, Any]:
        """The persisted fields except `hash` (what `hash` covers)."""
        data = dataclasses.asdict(self)
        data.pop("warning")
        data.pop("hash")
        if data["model_card_digest"] is None:
            # Lines written before cards carry no such key; their hashes must still verify.
            del data["model_card_digest"]
        return data

    def to_json(self) -> str:
        """The log line (without `warning`)."""
        return json.dumps({**self.body(), "hash": self.hash}, sort_keys=True)


def record_hash(body: Mapping[str, Any]) -> str:
    """SHA-256 of a record body's canonical JSON."""
    return hashlib.sha256(json.dumps(dict(body), sort_keys=True).encode()).hexdigest()


_FIELDS = {f.name for f in dataclasses.fields(PromotionRecord)} - {"warning"}


def _parse(line: str, number: int, path: Path) -> PromotionRecord:
    try:
        data = json.loads(line)
        if not isinstance(data, dict) or not _FIELDS.issuperset(data):
            raise ValueError(f"unexpected fields {sorted(set(data) - _FIELDS)}")
        return PromotionRecord(**data)
    except (ValueError, TypeError) as exc:
        raise AuditLogError(
            f"line {number} of the promotion log {path} is unreadable ({str(exc)[:120]}); the log is the "
            "record of every promotion and cannot be trusted past it. Restore it from a backup; dxpipe will "
            "not promote or roll back until it is readable."
        ) from exc


class PromotionLog:
    """The append-only, hash-chained JSON-lines log of one model."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def raw_lines(self) -> list[str]:
        """The file's lines (empty lines dropped)."""
        if not self.path.is_file():
            return []
        return [line for line in self.path.read_text(errors="replace").splitlines() if line.strip()]

    def torn_tail(self) -> bool:
        """True when the file ends in a partial line (a crash mid-append)."""
        if not self.path.is_file() or self.path.stat().st_size == 0:
            return False
        with self.path.open("rb") as handle:
            handle.seek(-1, os.SEEK_END)
            return handle.read(1) != b"\n"

    def truncate_torn_tail(self) -> bool:
        """Drops a partial last line; call only under the lock, when the journal proves an append was cut.

        Returns:
            Whether anything was dropped.
        """
        if not self.torn_tail():
            return False
        data = self.path.read_bytes()
        keep = data[: data.rfind(b"\n") + 1]
        with self.path.open("r+b") as handle:
            handle.truncate(len(keep))
            handle.flush()
            os.fsync(handle.fileno())
        return True

    def records(self) -> list[PromotionRecord]:
        """Every record, in order.

        Raises:
            AuditLogError: A line cannot be parsed (the error names it).
        """
        return [_parse(line, i, self.path) for i, line in enumerate(self.raw_lines(), start=1)]

    def verify(self) -> list[str]:
        """Every break in the chain: edited lines, deleted or reordered lines, unreadable lines."""
        problems: list[str] = []
        prev = ""
        expected_seq = 1
        for number, line in enumerate(self.raw_lines(), start=1):
            try:
                record = _parse(line, number, self.path)
            except AuditLogError as exc:
                problems.append(str(exc))
                return problems
            if record_hash(record.body()) != record.hash:
                problems.append(
                    f"line {number} (seq {record.seq}) of {self.path} was edited: its hash does not match its "
                    "content."
                )
            if record.prev != prev:
                problems.append(
                    f"line {number} (seq {record.seq}) of {self.path} does not follow the line before it: a "
                    "line was deleted, inserted or reordered."
                )
            if record.seq != expected_seq:
                problems.append(
                    f"line {number} of {self.path} has seq {record.seq}, expected {expected_seq}: a line is "
                    "missing."
                )
            prev = record.hash
            expected_seq = record.seq + 1
        return problems

    def append(self, **fields: Any) -> PromotionRecord:
        """Appends one record with the next seq, the chain hash and the current time, fsynced.

        Raises:
            AuditLogError: The log is unreadable or its tail is torn (recovery must run first).
        """
        if self.torn_tail():
            raise AuditLogError(
                f"the promotion log {self.path} ends in a partial line and no interrupted promotion explains "
                "it; restore the log from a backup before promoting."
            )
        existing = self.records()
        last = existing[-1] if existing else None
        record = PromotionRecord(
            seq=(last.seq + 1) if last else 1,
            time=dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds"),
            prev=last.hash if last else "",
            **fields,
        )
        record = dataclasses.replace(record, hash=record_hash(record.body()))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        created = not self.path.exists()
        with self.path.open("ab") as handle:
            handle.write(record.to_json().encode() + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
        if created:
            fsync_dir(self.path.parent)
        return record


def fsync_dir(path: Path) -> None:
    """Makes a directory entry (a new or renamed file) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def champion_history(records: list[PromotionRecord]) -> list[str]:
    """Replays the log into the stack of champions: approve pushes, rollback pops. Last is current."""
    stack: list[str] = []
    for record in records:
        if record.event == "approve" and record.version is not None:
            if not stack or stack[-1] != record.version:
                stack.append(record.version)
        elif record.event == "rollback" and record.version is not None:
            if stack:
                stack.pop()
            if not stack or stack[-1] != record.version:
                stack.append(record.version)
    return stack


def last_change_seq(records: list[PromotionRecord]) -> int:
    """The seq of the last record that changed the champion (0 when none did)."""
    return max((r.seq for r in records if r.event in CHAMPION_EVENTS), default=0)


def registration_of(records: list[PromotionRecord], version: str) -> PromotionRecord | None:
    """The "register" record of a version (its evidence digest is the anchor of its evidence)."""
    return next((r for r in records if r.event == "register" and r.version == version), None)
