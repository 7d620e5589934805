"""Reviewer approval, promotion to the production serving path, rollback and status.

Layout under the serving root (TF Serving model base paths)::

    <serving_root>/<model>-staging/<version>/   blessed candidates, written by the pipeline's Pusher
    <serving_root>/<model>/<n>/                 production; written only here
    <serving_root>/<model>/.promotion.lock      serializes approvals, rollbacks and syncs (fcntl.flock)
    <serving_root>/<model>/promotion_log.jsonl  append-only audit log, one fsynced JSON line per event

Production version numbers are a promotion sequence (1, 2, 3, ...), independent of registry version
numbers: TF Serving serves the highest number, so every change of champion, a rollback included, is
published as a new, higher version directory. A rollback therefore uses the same atomic path as an
approval (stage under a dot-name, fsync, rename; `components.serving_pusher.core.publish_version`) and
TF Serving demonstrably switches to it; nothing is deleted, so the directory history matches the log.
Removing the bad directory instead would leave TF Serving's behaviour to its version-unload policy and
rewrite history.

The log lives next to the production model it describes (and next to the lock), so any machine that can
promote sees the same log; every record is also written as tags on the versions involved.

Order of a promotion, chosen so a failure at any step leaves registry, log and production consistent:
read and validate (nothing written) -> set alias `champion` (remote; if it fails nothing changed) ->
publish to production (local; if it fails the alias is put back) -> append the log record (the commit
point) -> version tags (a mirror of the log; if the server vanished here, `sync_ui_alias` re-applies them).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import errno
import fcntl
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from components.serving_pusher.core import (
    PushError,
    list_versions,
    publish_version,
    read_digest,
    saved_model_digest,
)
from pipelines.errors import DxpipeError
from pipelines.mlflow_store import (
    TrackingConfig,
    TrackingError,
    check_model_name,
    client_for,
    is_unreachable,
    mlflow_errors,
    tracking_error,
)
from pipelines.registry import (
    CANDIDATE,
    CHAMPION,
    MODEL_ARTIFACT_PATH,
    TAG_AUTHOR,
    TAG_DIGEST,
    TAG_GATE,
    RegistryError,
    VersionView,
    aliases_of,
    gate_failures,
    get_version,
    recorded_metrics,
    search_versions,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient

_log = logging.getLogger(__name__)

LOCK_NAME = ".promotion.lock"
LOG_NAME = "promotion_log.jsonl"
LOCK_TIMEOUT_S = 120.0
# Tags a reviewer sets in the MLflow UI next to the `champion` alias; the UI records no identity, and the
# four-eyes rule needs one.
TAG_UI_REVIEWER = "approval.reviewer"
TAG_UI_NOTE = "approval.note"
TAG_APPROVAL_STATUS = "approval.status"
TAG_APPROVAL_SEQ = "approval.seq"

CHAMPION_EVENTS = ("approve", "rollback")


class PromotionError(DxpipeError):
    """A promotion, rollback or sync was refused or could not complete; nothing inconsistent was left."""


class VersionNotFoundError(PromotionError):
    """The model or version does not exist in the registry."""


class NotGatedError(PromotionError):
    """The version carries no gate verdict."""


class GateFailedError(PromotionError):
    """The version failed the gate and can never become the served champion."""


class FourEyesError(PromotionError):
    """The reviewer is the run's author (or either is unknown)."""


class ConcurrentPromotionError(PromotionError):
    """Another promotion changed the champion while this one waited for the lock."""


class AlreadyChampionError(PromotionError):
    """The version is already the champion and is being served."""


class RollbackError(PromotionError):
    """There is no previous champion to roll back to, or it can no longer be served."""


class ModelUnavailableError(PromotionError):
    """The version's SavedModel cannot be found or does not match its recorded digest."""


@dataclasses.dataclass(frozen=True)
class PromotionRecord:
    """One line of the promotion log.

    Attributes:
        seq: Position in the log (1-based, gap-free).
        time: UTC timestamp, ISO 8601.
        event: "approve", "rollback", "refuse", "repair" or "error".
        model: Registered model name.
        version: The registry version acted on (for a rollback: the restored version).
        reviewer: Who approved, refused or rolled back.
        note: The reviewer's note.
        source: "cli", "ui" (alias set in the MLflow UI), "api" or "sync".
        author: The run's author.
        previous_champion: The champion before this event.
        production_version: The production version directory now serving (approve, rollback, repair).
        digest: The SavedModel digest served.
        gate: The version's gate verdict tag.
        metrics: The overall test metrics the decision was made on.
        reason: Why it was refused or failed; for other events, remarks.
        warning: Not persisted: a problem after the commit (e.g. tags not written), for the caller.
    """

    seq: int
    time: str
    event: str
    model: str
    version: str | None
    reviewer: str | None
    note: str = ""
    source: str = "api"
    author: str | None = None
    previous_champion: str | None = None
    production_version: int | None = None
    digest: str | None = None
    gate: str | None = None
    metrics: Mapping[str, float] = dataclasses.field(default_factory=dict)
    reason: str | None = None
    warning: str | None = dataclasses.field(default=None, compare=False)

    def to_json(self) -> str:
        """The log line (without `warning`)."""
        data = dataclasses.asdict(self)
        data.pop("warning")
        return json.dumps(data, sort_keys=True)


class PromotionLog:
    """The append-only JSON-lines log of one model. Append only while holding the promotion lock."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.torn_lines = 0

    def records(self) -> list[PromotionRecord]:
        """Reads every record; a line torn by a crash mid-append is skipped and counted in `torn_lines`."""
        if not self.path.is_file():
            return []
        records = []
        self.torn_lines = 0
        fields = {f.name for f in dataclasses.fields(PromotionRecord)}
        for line in self.path.read_text().splitlines():
            if not line.strip():
                continue
            try:
                data = json.loads(line)
                records.append(PromotionRecord(**{k: v for k, v in data.items() if k in fields}))
            except (ValueError, TypeError):
                self.torn_lines += 1
        return records

    def append(self, **fields: Any) -> PromotionRecord:
        """Appends one record with the next seq and the current time, fsynced before returning."""
        existing = self.records()
        record = PromotionRecord(
            seq=(existing[-1].seq + 1) if existing else 1,
            time=dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds"),
            **fields,
        )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        created = not self.path.exists()
        with self.path.open("ab") as handle:
            # A crash mid-append leaves a line without its newline; never glue the next record onto it.
            if handle.tell() > 0:
                with self.path.open("rb") as reader:
                    reader.seek(-1, os.SEEK_END)
                    if reader.read(1) != b"\n":
                        handle.write(b"\n")
            handle.write(record.to_json().encode() + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
        if created:
            _fsync_dir(self.path.parent)
        return record


def _fsync_dir(path: Path) -> None:
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


def four_eyes_problem(author: str | None, reviewer: str) -> str | None:
    """Returns why a reviewer may not approve a run by `author` under the four-eyes rule, or None."""
    if not author:
        return "the author of its run is unknown, so the four-eyes rule cannot be checked"
    if author.strip().casefold() == reviewer.strip().casefold():
        return (
            f"the reviewer '{reviewer}' is the author of its run; a second person must approve (four-eyes "
            "rule)"
        )
    return None


def _acquire_lock(fd: int, path: Path, timeout_s: float) -> None:
    """Takes an exclusive flock on `fd`, polling so a stuck holder produces an error, not a hang."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
        if time.monotonic() >= deadline:
            raise PromotionError(
                f"another promotion has held {path} for over {timeout_s:.0f} s; wait for it to finish and "
                "retry (the lock is released when its process exits)."
            )
        time.sleep(0.05)


@contextlib.contextmanager
def promotion_lock(base: Path, timeout_s: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Holds `<base>/.promotion.lock` exclusively; the kernel releases it if the process dies."""
    base.mkdir(parents=True, exist_ok=True)
    path = base / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        _acquire_lock(fd, path, timeout_s)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@dataclasses.dataclass
class _Context:
    cfg: TrackingConfig
    client: MlflowClient
    model: str
    base: Path
    log: PromotionLog


def _context(cfg: TrackingConfig, model_name: str) -> _Context:
    cfg = cfg.resolved()
    check_model_name(model_name)
    base = cfg.production_path(model_name)
    return _Context(cfg, client_for(cfg), model_name, base, PromotionLog(base / LOG_NAME))


def _check_reviewer(reviewer: str) -> str:
    if not isinstance(reviewer, str) or not reviewer.strip():
        raise PromotionError("a reviewer name is required (--reviewer NAME); approvals are recorded by name.")
    return reviewer.strip()


def _served(base: Path) -> tuple[int | None, str | None]:
    versions = list_versions(base)
    if not versions:
        return None, None
    latest = base / str(versions[-1])
    digest = read_digest(latest)
    if digest is None and (latest / "saved_model.pb").is_file():
        digest = saved_model_digest(latest)
    return versions[-1], digest


def _next_production_version(ctx: _Context, records: list[PromotionRecord]) -> int:
    # Never reuse a number, even if its directory was deleted: a client pinned to it must not silently
    # get another model.
    used = [*list_versions(ctx.base), *(r.production_version or 0 for r in records)]
    return max(used, default=0) + 1


def _author_of(ctx: _Context, mv: VersionView) -> str | None:
    author = mv.tags.get(TAG_AUTHOR)
    if author:
        return author
    if mv.run_id:
        try:
            run = ctx.client.get_run(mv.run_id)
        except Exception as exc:  # a deleted run just means the author is unknown.
            if is_unreachable(exc):
                raise
            return None
        return run.data.tags.get("mlflow.user") or None
    return None


def _approval_problem(
    ctx: _Context, mv: VersionView, reviewer: str | None
) -> tuple[type[PromotionError], str] | None:
    """Why `mv` may not become champion with this reviewer, or None. Gate first: it can never be waived."""
    gate = mv.tags.get(TAG_GATE)
    if gate is None:
        return NotGatedError, (
            f"'{ctx.model}' version {mv.version} was never gated (no '{TAG_GATE}' tag): only versions "
            "registered by the pipeline's register_and_gate can be approved. Re-run the pipeline to "
            "register a gated version."
        )
    if gate != "passed":
        failures = "; ".join(f.rstrip(".") for f in gate_failures(mv)) or "see its gate.* tags"
        return GateFailedError, (
            f"'{ctx.model}' version {mv.version} failed the gate and can never become the served champion: "
            f"{failures}"
        )
    if reviewer is None:
        return FourEyesError, (
            f"'{ctx.model}' version {mv.version} has the champion alias but no '{TAG_UI_REVIEWER}' tag "
            "naming the reviewer; set both in the MLflow UI (or use `dxpipe approve`)."
        )
    if ctx.cfg.four_eyes:
        problem = four_eyes_problem(_author_of(ctx, mv), reviewer)
        if problem:
            return FourEyesError, f"'{ctx.model}' version {mv.version} cannot be approved: {problem}."
    return None


def _materialize(ctx: _Context, mv: VersionView, scratch: Path) -> Path:
    """Returns a local SavedModel directory whose content digest equals the version's recorded digest.

    Looks in the staging and production base paths first (no download), then downloads the version's
    artifacts from MLflow. The digest check means a tampered or mismatched directory is never served.
    """
    expected = mv.tags.get(TAG_DIGEST)
    if not expected:
        raise ModelUnavailableError(
            f"'{ctx.model}' version {mv.version} has no '{TAG_DIGEST}' tag, so its SavedModel cannot be "
            "verified; register it with the pipeline."
        )
    for base in (ctx.cfg.staging_path(ctx.model), ctx.base):
        for number in reversed(list_versions(base)):
            candidate = base / str(number)
            if read_digest(candidate) == expected and saved_model_digest(candidate) == expected:
                return candidate
    if not mv.run_id:
        raise ModelUnavailableError(
            f"'{ctx.model}' version {mv.version} has no run to download its SavedModel from."
        )
    with mlflow_errors(ctx.cfg, f"downloading the SavedModel of '{ctx.model}' version {mv.version}"):
        try:
            local = Path(ctx.client.download_artifacts(mv.run_id, MODEL_ARTIFACT_PATH, str(scratch)))
        except Exception as exc:
            if is_unreachable(exc):
                raise
            raise ModelUnavailableError(
                f"the SavedModel of '{ctx.model}' version {mv.version} is not in staging or production and "
                f"could not be downloaded from MLflow ({str(exc).splitlines()[0][:200]}); it cannot be "
                "served."
            ) from exc
    try:
        actual = saved_model_digest(local)
    except PushError as exc:
        raise ModelUnavailableError(f"'{ctx.model}' version {mv.version}: {exc}") from exc
    if actual != expected:
        raise ModelUnavailableError(
            f"the SavedModel of '{ctx.model}' version {mv.version} does not match its recorded digest "
            f"({actual[:12]} != {expected[:12]}); refusing to serve it. Re-register the model."
        )
    return local


def _set_champion_alias(ctx: _Context, version: str | None) -> None:
    if version is None:
        ctx.client.delete_registered_model_alias(ctx.model, CHAMPION)
    else:
        ctx.client.set_registered_model_alias(ctx.model, CHAMPION, version)


def _tag_version(ctx: _Context, version: str | None, tags: Mapping[str, str]) -> str | None:
    """Best-effort version tags mirroring a log record; returns a warning instead of raising."""
    if version is None:
        return None
    try:
        for key, value in tags.items():
            ctx.client.set_model_version_tag(ctx.model, version, key, value)
    except Exception as exc:  # noqa: BLE001 - the log is the record of truth; tags are its mirror.
        return (
            f"recording tags on version {version} failed ({tracking_error(ctx.cfg, 'tagging', exc)}); the "
            f"promotion log has the record and `dxpipe sync {ctx.model}` re-applies them."
        )
    return None


def _record_tags(record: PromotionRecord) -> dict[str, str]:
    return {f"promotion.{record.seq:05d}": record.to_json()[:100_000]}


def _refuse(
    ctx: _Context,
    error: type[PromotionError],
    reason: str,
    *,
    version: str | None,
    reviewer: str | None,
    note: str,
    source: str,
    mv: VersionView | None = None,
) -> PromotionError:
    """Records a refusal (log + version tags) and returns the error to raise. Call under the lock."""
    record = ctx.log.append(
        event="refuse",
        model=ctx.model,
        version=version,
        reviewer=reviewer,
        note=note,
        source=source,
        author=None if mv is None else mv.tags.get(TAG_AUTHOR),
        gate=None if mv is None else mv.tags.get(TAG_GATE),
        metrics={} if mv is None else recorded_metrics(mv),
        reason=reason,
    )
    if mv is not None:
        tags = {
            "approval.refused_reason": reason[:5000],
            "approval.refused_by": reviewer or "",
            "approval.refused_at": record.time,
            **_record_tags(record),
        }
        # A refused attempt on a version that was approved (or superseded, or restored) must not overwrite
        # that status: the earlier decision stands; the refusal is on record in its own tags and the log.
        if mv.tags.get(TAG_APPROVAL_STATUS) in (None, "refused"):
            tags[TAG_APPROVAL_STATUS] = "refused"
        _tag_version(ctx, version, tags)
    return error(f"{reason} (refusal recorded as log entry {record.seq})")


def _promote_locked(
    ctx: _Context,
    mv: VersionView,
    *,
    event: str,
    reviewer: str,
    note: str,
    source: str,
    previous: str | None,
    alias_before: str | None,
    remark: str | None = None,
) -> PromotionRecord:
    """Makes `mv` the served champion. Call under the lock, after validation."""

    def log_error(reason: str) -> None:
        ctx.log.append(
            event="error",
            model=ctx.model,
            version=mv.version,
            reviewer=reviewer,
            note=note,
            source=source,
            previous_champion=previous,
            reason=reason,
        )

    records = ctx.log.records()
    with tempfile.TemporaryDirectory(prefix="dxpipe-promote-") as scratch:
        model_dir = _materialize(ctx, mv, Path(scratch))
        try:
            _set_champion_alias(ctx, mv.version)
        except Exception as exc:
            error = tracking_error(ctx.cfg, f"setting alias '{CHAMPION}' on version {mv.version}", exc)
            log_error(f"{event} aborted before any change: {error}")
            raise PromotionError(
                f"{event} of '{ctx.model}' version {mv.version} aborted, nothing changed: {error}"
            ) from exc
        try:
            pushed = publish_version(model_dir, ctx.base, version=_next_production_version(ctx, records))
        except (PushError, OSError) as exc:
            restored = "restored"
            try:
                _set_champion_alias(ctx, alias_before)
            except Exception as undo_exc:  # noqa: BLE001 - report both failures in one message.
                restored = f"could NOT be restored ({undo_exc}); run `dxpipe sync {ctx.model}`"
            log_error(f"publishing to {ctx.base} failed: {exc}; alias {restored}")
            raise PromotionError(
                f"publishing '{ctx.model}' version {mv.version} to {ctx.base} failed ({exc}); production is "
                f"unchanged and the champion alias was {restored}."
            ) from exc
    record = ctx.log.append(
        event=event,
        model=ctx.model,
        version=mv.version,
        reviewer=reviewer,
        note=note,
        source=source,
        author=mv.tags.get(TAG_AUTHOR),
        previous_champion=previous,
        production_version=pushed.version,
        digest=pushed.digest,
        gate=mv.tags.get(TAG_GATE),
        metrics=recorded_metrics(mv),
        reason=remark,
    )
    status = "approved" if event == "approve" else "restored by rollback"
    warning = _tag_version(
        ctx,
        mv.version,
        {
            TAG_APPROVAL_STATUS: status,
            "approval.by": reviewer,
            "approval.at": record.time,
            "approval.note": note[:5000],
            "approval.source": source,
            TAG_APPROVAL_SEQ: str(record.seq),
            "serving.production_version": str(pushed.version),
            **_record_tags(record),
        },
    )
    if previous is not None and previous != mv.version:
        verb = "superseded" if event == "approve" else "rolled back"
        warning = warning or _tag_version(
            ctx,
            previous,
            {
                TAG_APPROVAL_STATUS: f"{verb} by version {mv.version}",
                f"{verb}.at": record.time,
                **_record_tags(record),
            },
        )
    return dataclasses.replace(record, warning=warning)


def _last_change_seq(records: list[PromotionRecord]) -> int:
    return max((r.seq for r in records if r.event in CHAMPION_EVENTS), default=0)


def approve(
    cfg: TrackingConfig, model_name: str, version: str | int, reviewer: str, note: str, *, source: str = "api"
) -> PromotionRecord:
    """Approves a gated version: it becomes alias `champion` and is published to the production path.

    Args:
        cfg: The tracking config.
        model_name: Registered model name.
        version: Registry version to approve.
        reviewer: Who approves; must differ from the run's author when `cfg.four_eyes`.
        note: The reviewer's note (recorded).
        source: Recorded origin ("cli", "api").

    Returns:
        The log record of the approval (its `warning` says if mirroring it into tags failed).

    Raises:
        VersionNotFoundError: The model or version does not exist.
        NotGatedError, GateFailedError, FourEyesError: Refused (and recorded).
        ConcurrentPromotionError: Another promotion changed the champion while this one waited (recorded).
        AlreadyChampionError: The version is already the served champion.
        ModelUnavailableError: Its SavedModel cannot be found or verified.
        PromotionError, TrackingError: MLflow or the disk failed; nothing inconsistent was left.
    """
    ctx = _context(cfg, model_name)
    reviewer = _check_reviewer(reviewer)
    version = str(version).strip()
    with mlflow_errors(ctx.cfg, f"reading '{model_name}' from the registry"):
        try:
            aliases_of(ctx.client, model_name)
        except RegistryError as exc:
            raise VersionNotFoundError(str(exc)) from exc
    seen = _last_change_seq(ctx.log.records())
    with promotion_lock(ctx.base), mlflow_errors(ctx.cfg, f"approving '{model_name}' version {version}"):
        records = ctx.log.records()
        history = champion_history(records)
        served_champion = history[-1] if history else None
        try:
            mv = get_version(ctx.client, model_name, version)
        except RegistryError as exc:
            raise _refuse(
                ctx,
                VersionNotFoundError,
                str(exc),
                version=version,
                reviewer=reviewer,
                note=note,
                source=source,
            ) from exc
        if _last_change_seq(records) > seen:
            last = next(r for r in reversed(records) if r.event in CHAMPION_EVENTS)
            raise _refuse(
                ctx,
                ConcurrentPromotionError,
                f"while this approval of '{model_name}' version {mv.version} waited, {last.reviewer} made "
                f"version {last.version} champion ({last.event} at {last.time}); nothing was changed. Check "
                f"`dxpipe status {model_name}` and approve again if version {mv.version} should still "
                "replace it",
                version=mv.version,
                reviewer=reviewer,
                note=note,
                source=source,
                mv=mv,
            )
        problem = _approval_problem(ctx, mv, reviewer)
        if problem is not None:
            error, reason = problem
            raise _refuse(
                ctx, error, reason, version=mv.version, reviewer=reviewer, note=note, source=source, mv=mv
            )
        _, served_digest = _served(ctx.base)
        if served_champion == mv.version and served_digest == mv.tags.get(TAG_DIGEST):
            raise AlreadyChampionError(
                f"'{model_name}' version {mv.version} is already the champion and is being served; nothing "
                "to do."
            )
        alias_before = aliases_of(ctx.client, model_name).get(CHAMPION)
        remark = None
        if alias_before not in (None, served_champion):
            remark = (
                f"the champion alias pointed at version {alias_before}, which was never promoted; replaced"
            )
        return _promote_locked(
            ctx,
            mv,
            event="approve",
            reviewer=reviewer,
            note=note,
            source=source,
            previous=served_champion,
            alias_before=alias_before,
            remark=remark,
        )


def rollback(
    cfg: TrackingConfig, model_name: str, reviewer: str, note: str, *, source: str = "api"
) -> PromotionRecord:
    """Restores the previous champion: alias `champion` moves back and it is served as a new, higher version.

    The four-eyes rule is not applied: the restored version was approved under it before, and a rollback
    is the emergency brake. The reviewer is recorded.

    Raises:
        RollbackError: No previous champion, or it can no longer be served (gate tag changed).
        ConcurrentPromotionError: The champion changed while this rollback waited (recorded).
        ModelUnavailableError: Its SavedModel cannot be found or verified.
        PromotionError, TrackingError: MLflow or the disk failed; nothing inconsistent was left.
    """
    ctx = _context(cfg, model_name)
    reviewer = _check_reviewer(reviewer)
    with mlflow_errors(ctx.cfg, f"reading '{model_name}' from the registry"):
        try:
            aliases_of(ctx.client, model_name)
        except RegistryError as exc:
            raise VersionNotFoundError(str(exc)) from exc
    seen = _last_change_seq(ctx.log.records())
    with promotion_lock(ctx.base), mlflow_errors(ctx.cfg, f"rolling back '{model_name}'"):
        records = ctx.log.records()
        if _last_change_seq(records) > seen:
            # Two reviewers pressing rollback for the same incident must not roll back two champions.
            last = next(r for r in reversed(records) if r.event in CHAMPION_EVENTS)
            raise _refuse(
                ctx,
                ConcurrentPromotionError,
                f"while this rollback of '{model_name}' waited, {last.reviewer} made version {last.version} "
                f"champion ({last.event} at {last.time}); nothing was changed. Check `dxpipe status "
                f"{model_name}` and roll back again only if version {last.version} must go too",
                version=last.version,
                reviewer=reviewer,
                note=note,
                source=source,
            )
        history = champion_history(records)
        if not history:
            raise RollbackError(
                f"'{model_name}' has never had a champion promoted; there is nothing to roll back."
            )
        if len(history) < 2:
            raise RollbackError(
                f"'{model_name}' has had only one champion (version {history[0]}); there is no previous "
                "champion to roll back to. Approve another version instead."
            )
        current, target = history[-1], history[-2]
        mv = get_version(ctx.client, model_name, target)
        if mv.tags.get(TAG_GATE) != "passed":
            raise _refuse(
                ctx,
                RollbackError,
                f"the previous champion, '{model_name}' version {target}, is no longer tagged gate=passed "
                f"({mv.tags.get(TAG_GATE)!r}); it cannot be served again. Approve another version",
                version=target,
                reviewer=reviewer,
                note=note,
                source=source,
                mv=mv,
            )
        return _promote_locked(
            ctx,
            mv,
            event="rollback",
            reviewer=reviewer,
            note=note,
            source=source,
            previous=current,
            alias_before=aliases_of(ctx.client, model_name).get(CHAMPION),
        )


@dataclasses.dataclass(frozen=True)
class SyncResult:
    """What `sync_ui_alias` did.

    Attributes:
        action: "none", "promoted" (a UI-set alias was valid), "refused" (it was not; the alias was put
            back), "repaired" (production or the alias was brought back to the promoted champion).
        message: One line for the user.
        record: The log record written, if any.
    """

    action: str
    message: str
    record: PromotionRecord | None = None


def sync_ui_alias(cfg: TrackingConfig, model_name: str) -> SyncResult:
    """Reconciles the registry's `champion` alias, the promotion log and the production directory.

    - Alias moved in the MLflow UI to version V: V is promoted if it passed the gate and the reviewer named
      in its `approval.reviewer` tag is not its author; otherwise the refusal is recorded and the alias is
      put back on the served champion (removed if there is none).
    - Alias removed in the UI: put back on the served champion.
    - Production does not serve the champion (a version directory was deleted or altered): the champion
      is re-published as a new version.
    - Approval tags missing on the champion (server went away after the commit): re-applied.

    Raises:
        VersionNotFoundError: The model is not registered.
        ModelUnavailableError: A needed SavedModel cannot be found or verified.
        PromotionError, TrackingError: MLflow or the disk failed; nothing inconsistent was left.
    """
    ctx = _context(cfg, model_name)
    with mlflow_errors(ctx.cfg, f"reading '{model_name}' from the registry"):
        try:
            aliases_of(ctx.client, model_name)
        except RegistryError as exc:
            raise VersionNotFoundError(str(exc)) from exc
    with promotion_lock(ctx.base), mlflow_errors(ctx.cfg, f"syncing '{model_name}'"):
        # No publish runs while we hold the lock, so any staging directory left now is from a crash.
        clean_leftovers(ctx.base)
        records = ctx.log.records()
        history = champion_history(records)
        promoted = history[-1] if history else None
        alias = aliases_of(ctx.client, model_name).get(CHAMPION)

        if alias is not None and alias != promoted:
            mv = get_version(ctx.client, model_name, alias)
            reviewer = (mv.tags.get(TAG_UI_REVIEWER) or "").strip() or None
            note = mv.tags.get(TAG_UI_NOTE, "")
            problem = _approval_problem(ctx, mv, reviewer)
            if problem is None:
                record = _promote_locked(
                    ctx,
                    mv,
                    event="approve",
                    reviewer=reviewer or "",
                    note=note,
                    source="ui",
                    previous=promoted,
                    alias_before=alias,
                )
                return SyncResult(
                    "promoted",
                    f"'{model_name}' version {alias} (alias set in the MLflow UI, reviewer {reviewer}) is "
                    f"now served as production version {record.production_version}.",
                    record,
                )
            error, reason = problem
            _set_champion_alias(ctx, promoted)
            kept = f"version {promoted} keeps serving" if promoted else "no champion is served"
            refusal = _refuse(
                ctx,
                error,
                f"the champion alias set outside dxpipe (MLflow UI) on version {mv.version} was refused: "
                f"{reason.rstrip('.')}. The alias was put back and {kept}",
                version=mv.version,
                reviewer=reviewer,
                note=note,
                source="ui",
                mv=mv,
            )
            return SyncResult("refused", str(refusal), ctx.log.records()[-1])

        if promoted is None:
            return SyncResult("none", f"'{model_name}' has no champion yet; nothing to sync.")

        mv = get_version(ctx.client, model_name, promoted)
        served_version, served_digest = _served(ctx.base)
        serving_ok = served_digest == mv.tags.get(TAG_DIGEST)
        found = [] if alias is not None else ["the champion alias had been removed in the registry"]
        if not serving_ok:
            served = (
                "nothing"
                if served_version is None
                else f"v{served_version} (digest {str(served_digest)[:12]})"
            )
            found.append(f"production served {served} instead of champion version {promoted}")
        if found:
            fields: dict[str, Any] = {"digest": served_digest}
            if serving_ok:
                _set_champion_alias(ctx, promoted)
                action = "alias restored"
            else:
                with tempfile.TemporaryDirectory(prefix="dxpipe-repair-") as scratch:
                    model_dir = _materialize(ctx, mv, Path(scratch))
                    _set_champion_alias(ctx, promoted)
                    pushed = publish_version(
                        model_dir, ctx.base, version=_next_production_version(ctx, records)
                    )
                fields = {"digest": pushed.digest, "production_version": pushed.version}
                action = f"champion version {promoted} re-published as production version {pushed.version}"
            reason = "; ".join(found) + f"; {action}"
            record = ctx.log.append(
                event="repair",
                model=model_name,
                version=promoted,
                reviewer=None,
                source="sync",
                reason=reason,
                **fields,
            )
            return SyncResult("repaired", f"'{model_name}': {reason} (log entry {record.seq}).", record)

        last = next(r for r in reversed(records) if r.event in CHAMPION_EVENTS)
        if mv.tags.get(TAG_APPROVAL_SEQ) != str(last.seq):
            status = "approved" if last.event == "approve" else "restored by rollback"
            warning = _tag_version(
                ctx,
                promoted,
                {
                    TAG_APPROVAL_STATUS: status,
                    "approval.by": last.reviewer or "",
                    "approval.at": last.time,
                    TAG_APPROVAL_SEQ: str(last.seq),
                    "serving.production_version": str(last.production_version),
                    **_record_tags(last),
                },
            )
            if warning:
                raise PromotionError(warning)
            return SyncResult(
                "repaired", f"'{model_name}': approval tags of version {promoted} re-applied.", last
            )
        return SyncResult(
            "none", f"'{model_name}': registry, log and production agree (champion version {promoted})."
        )


@dataclasses.dataclass(frozen=True)
class VersionStatus:
    """One registry version as `status` shows it."""

    version: str
    gate: str
    failures: tuple[str, ...]
    aliases: tuple[str, ...]
    author: str | None
    digest: str | None
    approval: str | None


@dataclasses.dataclass(frozen=True)
class ServingStatus:
    """What a TF Serving base path serves: its highest version directory."""

    base_path: str
    version: int | None
    digest: str | None
    registry_version: str | None


@dataclasses.dataclass(frozen=True)
class ModelStatus:
    """Champion, candidate, gate verdicts, what is served, recent log records and detected problems."""

    model: str
    champion: str | None
    candidate: str | None
    promoted_champion: str | None
    production: ServingStatus
    staging: ServingStatus
    versions: tuple[VersionStatus, ...]
    recent: tuple[PromotionRecord, ...]
    problems: tuple[str, ...]
    tracking_uri: str

    @property
    def consistent(self) -> bool:
        """True when registry, log and production agree."""
        return not self.problems

    def render(self) -> str:
        """A human-readable multi-line report."""
        lines = [
            f"model {self.model}  (MLflow: {self.tracking_uri})",
            f"  champion:  {self.champion or '-'}   candidate: {self.candidate or '-'}",
            f"  production: {self.production.base_path} serves "
            + (
                f"v{self.production.version} = registry version {self.production.registry_version or '?'}"
                if self.production.version is not None
                else "nothing"
            ),
            f"  staging:    {self.staging.base_path} serves "
            + (
                f"v{self.staging.version} = registry version {self.staging.registry_version or '?'}"
                if self.staging.version is not None
                else "nothing"
            ),
            "  versions:",
        ]
        for v in self.versions:
            aliases = f" [{', '.join(v.aliases)}]" if v.aliases else ""
            approval = f", {v.approval}" if v.approval else ""
            lines.append(f"    {v.version:>4}  gate {v.gate}{aliases}{approval}  author {v.author or '?'}")
            lines.extend(f"          - {f}" for f in v.failures)
        if self.recent:
            lines.append("  recent promotion log:")
            for r in self.recent:
                who = f" by {r.reviewer}" if r.reviewer else ""
                reason = r.reason if r.reason is None or len(r.reason) <= 160 else r.reason[:157] + "..."
                tail = f": {reason}" if reason else ""
                lines.append(f"    #{r.seq} {r.time} {r.event} v{r.version}{who}{tail}")
        lines.append("  problems:" if self.problems else "  consistent: registry, log and production agree")
        lines.extend(f"    ! {p}" for p in self.problems)
        return "\n".join(lines)


def _serving_status(base: Path, by_digest: Mapping[str, str]) -> ServingStatus:
    version, digest = _served(base)
    return ServingStatus(str(base), version, digest, None if digest is None else by_digest.get(digest))


def status(cfg: TrackingConfig, model_name: str, recent: int = 5) -> ModelStatus:
    """Reports champion, candidate, every version's gate verdict, what is served, and inconsistencies.

    Read-only: it takes no lock and changes nothing; `sync_ui_alias` repairs what it reports.

    Raises:
        VersionNotFoundError: The model is not registered.
        TrackingError: MLflow cannot be reached.
    """
    ctx = _context(cfg, model_name)
    with mlflow_errors(ctx.cfg, f"reading the status of '{model_name}'"):
        try:
            aliases = aliases_of(ctx.client, model_name)
        except RegistryError as exc:
            raise VersionNotFoundError(str(exc)) from exc
        versions = search_versions(ctx.client, model_name)
    alias_by_version: dict[str, list[str]] = {}
    for alias, number in aliases.items():
        alias_by_version.setdefault(number, []).append(alias)
    by_digest = {v.tags[TAG_DIGEST]: v.version for v in versions if v.tags.get(TAG_DIGEST)}
    rows = tuple(
        VersionStatus(
            version=v.version,
            gate=("never gated" if v.tags.get(TAG_GATE) is None else v.tags[TAG_GATE]),
            failures=gate_failures(v),
            aliases=tuple(sorted(alias_by_version.get(v.version, []))),
            author=v.tags.get(TAG_AUTHOR),
            digest=v.tags.get(TAG_DIGEST),
            approval=v.tags.get(TAG_APPROVAL_STATUS),
        )
        for v in versions
    )
    records = ctx.log.records()
    history = champion_history(records)
    promoted = history[-1] if history else None
    production = _serving_status(ctx.base, by_digest)
    staging = _serving_status(ctx.cfg.staging_path(model_name), by_digest)
    digest_of = {v.version: v.digest for v in rows}
    gate_of = {v.version: v.gate for v in rows}

    problems = []
    champion = aliases.get(CHAMPION)
    if champion != promoted:
        problems.append(
            f"the registry's champion alias is on version {champion or '(none)'} but the last promoted "
            f"champion is {promoted or '(none)'}: the alias was changed outside dxpipe (e.g. in the MLflow "
            f"UI); run `dxpipe sync {model_name}` to promote or refuse it."
        )
    if promoted is not None and production.digest != digest_of.get(promoted):
        served = (
            "nothing"
            if production.version is None
            else f"v{production.version} (registry version {production.registry_version or 'unknown'})"
        )
        problems.append(
            f"production serves {served}, not the champion version {promoted}: a version directory was "
            f"deleted or altered; run `dxpipe sync {model_name}` to re-publish the champion."
        )
    if promoted is None and production.version is not None:
        problems.append(
            f"production serves v{production.version} but no promotion is recorded in {ctx.log.path}."
        )
    candidate = aliases.get(CANDIDATE)
    if candidate is not None and gate_of.get(candidate) != "passed":
        problems.append(
            f"the candidate alias is on version {candidate}, whose gate is {gate_of.get(candidate)}."
        )
    if ctx.log.torn_lines:
        problems.append(f"{ctx.log.torn_lines} unreadable line(s) in {ctx.log.path} (a crash mid-write).")
    leftovers = sorted(p.name for p in ctx.base.glob(".incoming-*")) if ctx.base.is_dir() else []
    if leftovers:
        problems.append(
            f"interrupted publish left {', '.join(leftovers)} in {ctx.base} (ignored by TF Serving; safe to "
            "delete)."
        )
    return ModelStatus(
        model=model_name,
        champion=champion,
        candidate=candidate,
        promoted_champion=promoted,
        production=production,
        staging=staging,
        versions=rows,
        recent=tuple(records[-recent:]) if recent > 0 else (),
        problems=tuple(problems),
        tracking_uri=ctx.cfg.tracking_uri or "",
    )


def clean_leftovers(base: Path) -> list[str]:
    """Removes `.incoming-*` directories left by a crashed publish; call only under the promotion lock."""
    removed = []
    for path in sorted(base.glob(".incoming-*")):
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path.name)
    return removed


__all__ = [
    "AlreadyChampionError",
    "ConcurrentPromotionError",
    "FourEyesError",
    "GateFailedError",
    "ModelStatus",
    "ModelUnavailableError",
    "NotGatedError",
    "PromotionError",
    "PromotionLog",
    "PromotionRecord",
    "RollbackError",
    "SyncResult",
    "TrackingError",
    "VersionNotFoundError",
    "approve",
    "rollback",
    "status",
    "sync_ui_alias",
]
