"""The journalled promotion and its recovery.

Order of a promotion: journal the intended outcome -> set alias `champion` -> publish
`<serving root>/<model>/<n>/` atomically -> append the log record (the commit point) -> tags -> clear the
journal. `recover_locked` completes (published) or undoes (not published) one that was interrupted. Also
the refusal record and the tags that mirror log records on versions.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from components.serving_pusher.core import (
    PushError,
    list_versions,
    publish_version,
    read_digest,
    saved_model_digest,
)
from pipelines.identity import Identity
from pipelines.mlflow_native import download_saved_model
from pipelines.mlflow_store import (
    TrackingConfig,
    is_unreachable,
    mlflow_errors,
    tracking_error,
)
from pipelines.promotion import journal
from pipelines.promotion.audit_log import (
    PromotionRecord,
)
from pipelines.promotion.context import (
    Context,
    context,
    next_production_version,
    served_digest_of,
)
from pipelines.promotion.errors import (
    ModelUnavailableError,
    PromotionError,
)
from pipelines.promotion.evidence import Evidence
from pipelines.promotion.policy import (
    Decision,
)
from pipelines.registry import (
    CHAMPION,
    VersionView,
)

if TYPE_CHECKING:
    pass

_log = logging.getLogger(__name__)

TAG_APPROVAL_STATUS = "approval.status"
TAG_APPROVAL_SEQ = "approval.seq"


def materialize(ctx: Context, mv: VersionView, expected: str, scratch: Path) -> Path:
    """A local SavedModel directory whose content digest equals the registered digest `expected`.

    Looks in the staging and production base paths first (no download), then downloads the version's
    artifacts from MLflow. The digest check means a tampered or mismatched directory is never served.
    """
    for base in (ctx.cfg.staging_path(ctx.model), ctx.base):
        for number in reversed(list_versions(base)):
            candidate = base / str(number)
            if read_digest(candidate) == expected and saved_model_digest(candidate) == expected:
                return candidate
    with mlflow_errors(ctx.cfg, f"downloading the SavedModel of '{ctx.model}' version {mv.version}"):
        try:
            # The bytes the version's MLflow Model holds (what `mlflow.pyfunc.load_model` loads).
            local = download_saved_model(ctx.client, ctx.model, mv.version, scratch)
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
            f"the SavedModel of '{ctx.model}' version {mv.version} does not match its registered digest "
            f"({actual[:12]} != {expected[:12]}); refusing to serve it. Re-register the model."
        )
    return local


def set_champion_alias(ctx: Context, version: str | None) -> None:
    """Points `champion` at `version` (None removes it)."""
    if version is None:
        with contextlib.suppress(Exception):  # removing an alias that is not there is not a failure
            ctx.client.delete_registered_model_alias(ctx.model, CHAMPION)
    else:
        ctx.client.set_registered_model_alias(ctx.model, CHAMPION, version)


def tag_version(ctx: Context, version: str | None, tags: Mapping[str, str]) -> str | None:
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


def record_tags(record: PromotionRecord) -> dict[str, str]:
    """The tag that mirrors one log record on a version."""
    return {f"promotion.{record.seq:05d}": record.to_json()[:100_000]}


def refuse(
    ctx: Context,
    error: type[PromotionError],
    reason: str,
    *,
    version: str | None,
    reviewer: Identity | None,
    note: str,
    source: str,
    decision: Decision | None = None,
    evidence: Evidence | None = None,
    mv: VersionView | None = None,
) -> PromotionError:
    """Records a refusal (log + version tags) and returns the error to raise. Call under the lock."""
    record = ctx.log.append(
        event="refuse",
        model=ctx.model,
        version=version,
        reviewer=None if reviewer is None else reviewer.name,
        reviewer_authenticated=None if reviewer is None else reviewer.authenticated,
        note=note,
        source=source,
        author=None if evidence is None else evidence.author,
        gate=None if decision is None else decision.gate,
        metrics={} if decision is None else dict(decision.metrics),
        reason=reason,
    )
    if mv is not None:
        tags = {
            "approval.refused_reason": reason[:5000],
            "approval.refused_by": "" if reviewer is None else reviewer.name,
            "approval.refused_at": record.time,
            **record_tags(record),
        }
        # A refusal on a version that was approved (or superseded, or restored) must not overwrite that
        # status: the earlier decision stands; the refusal is on record in its own tags and the log.
        if mv.tags.get(TAG_APPROVAL_STATUS) in (None, "refused"):
            tags[TAG_APPROVAL_STATUS] = "refused"
        tag_version(ctx, version, tags)
    return error(f"{reason} (refusal recorded as log entry {record.seq})")


def approval_tags(record: PromotionRecord) -> dict[str, str]:
    """The tags an approval or rollback record sets on its version."""
    status = "approved" if record.event == "approve" else "restored by rollback"
    return {
        TAG_APPROVAL_STATUS: status,
        "approval.by": record.reviewer or "",
        "approval.at": record.time,
        "approval.note": record.note[:5000],
        "approval.source": record.source,
        TAG_APPROVAL_SEQ: str(record.seq),
        "serving.production_version": str(record.production_version),
        **record_tags(record),
    }


def commit_tags(ctx: Context, record: PromotionRecord) -> str | None:
    """Tags the champion (and the one it replaced) after the commit; a warning when MLflow failed."""
    if record.event == "repair":
        return None
    warning = tag_version(ctx, record.version, approval_tags(record))
    previous = record.previous_champion
    if previous is not None and previous != record.version:
        verb = "superseded" if record.event == "approve" else "rolled back"
        warning = warning or tag_version(
            ctx,
            previous,
            {
                TAG_APPROVAL_STATUS: f"{verb} by version {record.version}",
                f"{verb}.at": record.time,
                **record_tags(record),
            },
        )
    return warning


def promote_locked(
    ctx: Context,
    mv: VersionView,
    evidence: Evidence,
    *,
    event: str,
    fields: Mapping[str, Any],
    alias_before: str | None,
) -> PromotionRecord:
    """Makes `mv` the served champion, journalled. Call under the lock, after `decide` allowed it.

    Args:
        ctx: The model's context.
        mv: The version to serve.
        evidence: Its verified evidence (the digest to serve).
        event: "approve", "rollback" or "repair".
        fields: The log record's fields (reviewer, note, source, previous_champion, metrics, ...).
        alias_before: The champion alias before the change (restored if publishing fails).
    """
    records = ctx.log.records()
    with tempfile.TemporaryDirectory(prefix="dxpipe-promote-") as scratch:
        model_dir = materialize(ctx, mv, evidence.model_digest, Path(scratch))
        entry = journal.JournalEntry(
            op_id=journal.JournalEntry.new_id(),
            event=event,
            version=mv.version,
            alias_before=alias_before,
            production_version=next_production_version(ctx, records),
            digest=evidence.model_digest,
            record={"model": ctx.model, "version": mv.version, **fields},
            tags={},
            started=time.time(),
        )
        journal.write_journal(ctx.base, entry)
        journal.step("journal-written")

        def fail(reason: str, exc: BaseException) -> PromotionError:
            ctx.log.append(
                event="error",
                model=ctx.model,
                version=mv.version,
                reviewer=fields.get("reviewer"),
                source=fields.get("source", "api"),
                previous_champion=fields.get("previous_champion"),
                op_id=entry.op_id,
                reason=reason,
            )
            journal.clear_journal(ctx.base)
            return PromotionError(
                f"{event} of '{ctx.model}' version {mv.version} failed and was undone: {reason}"
            )

        try:
            set_champion_alias(ctx, mv.version)
        except Exception as exc:
            raise fail(
                tracking_error(ctx.cfg, f"setting alias '{CHAMPION}' on version {mv.version}", exc).args[0]
                + "; nothing changed",
                exc,
            ) from exc
        journal.step("alias-set")
        try:
            pushed = publish_version(
                model_dir, ctx.base, version=entry.production_version, skip_if_latest_identical=False
            )
        except (PushError, OSError) as exc:
            restored = "the champion alias was restored"
            try:
                set_champion_alias(ctx, alias_before)
            except Exception as undo_exc:  # noqa: BLE001 - report both failures in one message.
                restored = (
                    f"the champion alias could NOT be restored ({undo_exc}); run `dxpipe sync {ctx.model}`"
                )
            raise fail(
                f"publishing to {ctx.base} failed ({exc}); production is unchanged and {restored}", exc
            ) from exc
        journal.step("published")
    record = ctx.log.append(
        event=event,
        production_version=pushed.version,
        digest=pushed.digest,
        op_id=entry.op_id,
        **entry.record,
    )
    journal.step("logged")
    warning = commit_tags(ctx, record)
    journal.step("tagged")
    journal.clear_journal(ctx.base)
    return dataclasses.replace(record, warning=warning)


def clean_leftovers(base: Path) -> list[str]:
    """Removes `.incoming-*` directories left by a crashed publish; call only under the lock."""
    removed = []
    for path in sorted(base.glob(".incoming-*")):
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path.name)
    return removed


def recover_locked(ctx: Context) -> str | None:
    """Completes or undoes an interrupted promotion (call under the lock). Returns what it did, or None."""
    entry = journal.read_journal(ctx.base)
    clean_leftovers(ctx.base)
    if entry is None:
        return None
    # The journal proves an append may have been cut mid-line; only then is a torn tail expected.
    ctx.log.truncate_torn_tail()
    records = ctx.log.records()
    committed = next((r for r in records if r.op_id == entry.op_id and r.event == entry.event), None)
    target = ctx.base / str(entry.production_version)
    published = target.is_dir() and served_digest_of(target) == entry.digest
    if committed is not None:
        set_champion_alias(ctx, entry.version)
        commit_tags(ctx, committed)
        action = f"the interrupted {entry.event} of version {entry.version} was committed; its tags were re-applied"
    elif published:
        set_champion_alias(ctx, entry.version)
        record = ctx.log.append(
            event=entry.event,
            production_version=entry.production_version,
            digest=entry.digest,
            op_id=entry.op_id,
            **{**entry.record, "reason": "completed by recovery: the process stopped after publishing"},
        )
        commit_tags(ctx, record)
        action = (
            f"the interrupted {entry.event} of version {entry.version} had published production version "
            f"{entry.production_version}; it was completed and logged (entry {record.seq})"
        )
    else:
        set_champion_alias(ctx, entry.alias_before)
        record = ctx.log.append(
            event="abort",
            model=ctx.model,
            version=entry.version,
            reviewer=entry.record.get("reviewer"),
            source="recovery",
            previous_champion=entry.alias_before,
            op_id=entry.op_id,
            reason=(
                f"the {entry.event} of version {entry.version} stopped before publishing; undone (alias back "
                f"on {entry.alias_before or 'no version'})"
            ),
        )
        action = (
            f"the interrupted {entry.event} of version {entry.version} was undone (log entry {record.seq})"
        )
    journal.clear_journal(ctx.base)
    _log.warning("%s: %s", ctx.model, action)
    return action


def recover(cfg: TrackingConfig, model_name: str) -> str | None:
    """Runs recovery for one model if a promotion was interrupted (any dxpipe command calls it first)."""
    ctx = context(cfg, model_name)
    if not journal.journal_path(ctx.base).exists() and not list(ctx.base.glob(".incoming-*")):
        return None
    with journal.promotion_lock(ctx.base), mlflow_errors(ctx.cfg, f"recovering '{model_name}'"):
        return recover_locked(ctx)
