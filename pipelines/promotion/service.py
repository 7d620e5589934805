"""Applies approval decisions: approve, rollback, sync and crash recovery, under the lock, journalled.

Layout under the serving root (TF Serving model base paths)::

    <serving_root>/<model>-staging/<version>/      blessed candidates, written by the pipeline's Pusher
    <serving_root>/<model>/<n>/                    production; written only here
    <serving_root>/<model>/.promotion.lock         serialises registrations, approvals, rollbacks, syncs
    <serving_root>/<model>/.promotion.journal.json write-ahead record of a promotion in progress
    <serving_root>/<model>/.evidence/<version>.json what each version was gated on (write-once)
    <serving_root>/<model>/promotion_log.jsonl     hash-chained audit log, one fsynced JSON line per event

Production version numbers are a promotion sequence (1, 2, 3, ...), independent of registry version
numbers: TF Serving serves the highest number, so every change of champion, a rollback included, is
published as a new, higher version directory (atomically: `components.serving_pusher.core.publish_version`).

Every decision is re-derived from the evidence (`policy.decide`): tags and aliases are a display that is
compared with it, never trusted. Order of a promotion: decide (nothing written) -> journal the intended
outcome -> set alias `champion` -> publish -> append the log record (the commit point) -> tags -> clear
the journal. A crash anywhere is completed or undone by the next command (`recover`).
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
from pipelines.identity import Identity, current_identity
from pipelines.mlflow_native import download_saved_model
from pipelines.mlflow_store import (
    TrackingConfig,
    check_model_name,
    client_for,
    is_unreachable,
    mlflow_errors,
    tracking_error,
)
from pipelines.promotion import journal
from pipelines.promotion.audit_log import (
    CHAMPION_EVENTS,
    LOG_NAME,
    PromotionLog,
    PromotionRecord,
    champion_history,
    last_change_seq,
)
from pipelines.promotion.errors import (
    AlreadyChampionError,
    ConcurrentPromotionError,
    FourEyesError,
    GateFailedError,
    ModelUnavailableError,
    NotGatedError,
    PromotionError,
    RollbackError,
    TamperingError,
    VersionNotFoundError,
)
from pipelines.promotion.evidence import Evidence, VerifiedEvidence, load_verified
from pipelines.promotion.policy import (
    FOUR_EYES,
    GATE_FAILED,
    NOT_GATED,
    TAMPERED,
    Decision,
    PinnedPolicy,
    decide,
)
from pipelines.redact import redact_uri
from pipelines.registry import (
    CHAMPION,
    RegistryError,
    VersionView,
    aliases_of,
    get_version,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient

_log = logging.getLogger(__name__)

TAG_APPROVAL_STATUS = "approval.status"
TAG_APPROVAL_SEQ = "approval.seq"
_ERRORS = {
    NOT_GATED: NotGatedError,
    TAMPERED: TamperingError,
    GATE_FAILED: GateFailedError,
    FOUR_EYES: FourEyesError,
}


@dataclasses.dataclass
class Context:
    """What every operation on one model needs."""

    cfg: TrackingConfig
    client: MlflowClient
    model: str
    base: Path
    log: PromotionLog

    @property
    def uri(self) -> str:
        """The tracking URI, safe to print."""
        return redact_uri(self.cfg.tracking_uri)


def context(cfg: TrackingConfig, model_name: str) -> Context:
    """Resolves the config and binds a client for `model_name` (checked before anything is created)."""
    cfg = cfg.resolved()
    check_model_name(model_name)
    base = cfg.production_path(model_name)
    return Context(cfg, client_for(cfg), model_name, base, PromotionLog(base / LOG_NAME))


def acting_identity(cfg: TrackingConfig, identity: Identity | None) -> Identity:
    """The identity to act as: the one given (API), else who the tracking store says we are."""
    if identity is None:
        return current_identity(cfg.resolved().tracking_uri)
    if not isinstance(identity, Identity):
        raise PromotionError(
            f"the reviewer must be an Identity (pipelines.identity.current_identity), not {identity!r}: "
            "free-text reviewer names are not accepted."
        )
    if not identity.key:
        raise PromotionError(
            f"no reviewer identity: the name {identity.name!r} is empty once invisible characters and "
            "spaces are removed."
        )
    return identity


def require_model(ctx: Context) -> dict[str, str]:
    """The model's aliases; VersionNotFoundError when it is not registered."""
    with mlflow_errors(ctx.cfg, f"reading '{ctx.model}' from the registry"):
        try:
            return aliases_of(ctx.client, ctx.model)
        except RegistryError as exc:
            raise VersionNotFoundError(str(exc)) from exc


def served(base: Path) -> tuple[int | None, str | None]:
    """The highest production version and the digest of its files (computed, not read from its marker)."""
    versions = list_versions(base)
    if not versions:
        return None, None
    latest = base / str(versions[-1])
    try:
        return versions[-1], saved_model_digest(latest)
    except PushError:
        return versions[-1], None


def next_production_version(ctx: Context, records: list[PromotionRecord]) -> int:
    """One more than any number ever used (a client pinned to a number never silently gets another)."""
    used = [*list_versions(ctx.base), *(r.production_version or 0 for r in records)]
    return max(used, default=0) + 1


def pinned_policy(ctx: Context, records: list[PromotionRecord]) -> PinnedPolicy | None:
    """The gate policy and four-eyes rule pinned for the model: those of its first registration.

    Raises:
        TamperingError: The pinned policy's evidence cannot be verified.
    """
    first = next((r for r in records if r.event == "register"), None)
    if first is None:
        return None
    verified = load_verified(ctx.base, str(first.version), records)
    if verified.evidence is None or verified.evidence.policy_digest != first.policy_digest:
        problems = "; ".join(verified.problems) or "its evidence is missing"
        raise TamperingError(
            f"the gate policy pinned for '{ctx.model}' at its first registration (version {first.version}, "
            f"log entry {first.seq}) cannot be verified: {problems}. Nothing can be approved until it is "
            "restored."
        )
    return PinnedPolicy.of(verified.evidence)


def decision_for(
    ctx: Context,
    records: list[PromotionRecord],
    mv: VersionView,
    reviewer: Identity,
    *,
    champion: str | None,
    action: str,
) -> tuple[Decision, Evidence | None]:
    """Gathers the evidence of `mv` (and of the champion it would replace) and decides."""
    verified = load_verified(ctx.base, mv.version, records)
    champion_evidence = None
    if champion is not None and champion != mv.version:
        champion_evidence = load_verified(ctx.base, champion, records).evidence
    try:
        pinned = pinned_policy(ctx, records)
    except TamperingError as exc:
        verified = VerifiedEvidence(None, (*verified.problems, str(exc)))
        pinned = None
    decision = decide(
        ctx.model,
        mv.version,
        verified,
        mv.tags,
        mv.run_id,
        reviewer,
        pinned,
        champion=champion,
        champion_evidence=champion_evidence,
        action=action,
    )
    return decision, verified.evidence


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


def _approval_tags(record: PromotionRecord) -> dict[str, str]:
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


def _commit_tags(ctx: Context, record: PromotionRecord) -> str | None:
    """Tags the champion (and the one it replaced) after the commit; a warning when MLflow failed."""
    if record.event == "repair":
        return None
    warning = tag_version(ctx, record.version, _approval_tags(record))
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
    warning = _commit_tags(ctx, record)
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
        _commit_tags(ctx, committed)
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
        _commit_tags(ctx, record)
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


def served_digest_of(version_dir: Path) -> str | None:
    """The digest of a version directory's files, None when it is not a SavedModel."""
    try:
        return saved_model_digest(version_dir)
    except PushError:
        return None


def recover(cfg: TrackingConfig, model_name: str) -> str | None:
    """Runs recovery for one model if a promotion was interrupted (any dxpipe command calls it first)."""
    ctx = context(cfg, model_name)
    if not journal.journal_path(ctx.base).exists() and not list(ctx.base.glob(".incoming-*")):
        return None
    with journal.promotion_lock(ctx.base), mlflow_errors(ctx.cfg, f"recovering '{model_name}'"):
        return recover_locked(ctx)


def _decision_fields(
    reviewer: Identity, note: str, source: str, evidence: Evidence, decision: Decision, pinned_four_eyes: bool
) -> dict[str, Any]:
    return {
        "reviewer": reviewer.name,
        "reviewer_authenticated": reviewer.authenticated,
        "note": note,
        "source": source,
        "author": evidence.author,
        "gate": decision.gate,
        "metrics": dict(decision.metrics),
        "four_eyes": pinned_four_eyes,
        "policy_digest": evidence.policy_digest,
    }


def _refuse_decision(
    ctx: Context,
    decision: Decision,
    *,
    mv: VersionView,
    evidence: Evidence | None,
    reviewer: Identity | None,
    note: str,
    source: str,
    prefix: str = "",
    error: type[PromotionError] | None = None,
) -> PromotionError:
    reason = prefix + "; ".join(r.rstrip(".") for r in decision.reasons)
    return refuse(
        ctx,
        error or _ERRORS[decision.kind],
        reason,
        version=mv.version,
        reviewer=reviewer,
        note=note,
        source=source,
        decision=decision,
        evidence=evidence,
        mv=mv,
    )


def approve(
    cfg: TrackingConfig,
    model_name: str,
    version: str | int,
    reviewer: Identity | None,
    note: str,
    *,
    source: str = "api",
) -> PromotionRecord:
    """Approves a gated version: it becomes alias `champion` and is published to the production path.

    The verdict is re-derived from the evidence recorded at registration, under the policy pinned for
    the model, against the champion it would replace; the reviewer must not be the author when the
    pinned four-eyes rule holds. Nothing in `cfg` loosens those rules.

    Args:
        cfg: The tracking config (where the registry and serving root are).
        model_name: Registered model name.
        version: Registry version to approve.
        reviewer: Who approves; None asks the tracking store (`pipelines.identity.current_identity`).
        note: The reviewer's note (recorded).
        source: Recorded origin ("cli", "api").

    Returns:
        The log record of the approval (its `warning` says if mirroring it into tags failed).

    Raises:
        VersionNotFoundError: The model or version does not exist.
        NotGatedError, TamperingError, GateFailedError, FourEyesError: Refused (and recorded).
        ConcurrentPromotionError: Another promotion changed the champion while this one waited (recorded).
        AlreadyChampionError: The version is already the served champion.
        ModelUnavailableError: Its SavedModel cannot be found or verified.
        PromotionError, TrackingError: MLflow or the disk failed; nothing inconsistent was left.
    """
    ctx = context(cfg, model_name)
    who = acting_identity(ctx.cfg, reviewer)
    version = str(version).strip()
    require_model(ctx)
    recover(cfg, model_name)
    # Compare-and-swap: the champion this reviewer saw before waiting for the lock must still be the one
    # replaced; otherwise they never compared against the new one.
    seen = last_change_seq(ctx.log.records())
    with (
        journal.promotion_lock(ctx.base),
        mlflow_errors(ctx.cfg, f"approving '{model_name}' version {version}"),
    ):
        recover_locked(ctx)
        records = ctx.log.records()
        history = champion_history(records)
        served_champion = history[-1] if history else None
        try:
            mv = get_version(ctx.client, model_name, version)
        except RegistryError as exc:
            raise refuse(
                ctx, VersionNotFoundError, str(exc), version=version, reviewer=who, note=note, source=source
            ) from exc
        if last_change_seq(records) > seen:
            last = next(r for r in reversed(records) if r.event in CHAMPION_EVENTS)
            raise refuse(
                ctx,
                ConcurrentPromotionError,
                f"while this approval of '{model_name}' version {mv.version} waited, {last.reviewer} made "
                f"version {last.version} champion ({last.event} at {last.time}); nothing was changed. Check "
                f"`dxpipe status {model_name}` and approve again if version {mv.version} should still "
                "replace it",
                version=mv.version,
                reviewer=who,
                note=note,
                source=source,
                mv=mv,
            )
        decision, evidence = decision_for(ctx, records, mv, who, champion=served_champion, action="approve")
        if not decision.allowed or evidence is None:
            raise _refuse_decision(
                ctx, decision, mv=mv, evidence=evidence, reviewer=who, note=note, source=source
            )
        _, served_digest = served(ctx.base)
        if served_champion == mv.version and served_digest == evidence.model_digest:
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
        pinned = pinned_policy(ctx, records) or PinnedPolicy.of(evidence)
        fields = {
            **_decision_fields(who, note, source, evidence, decision, pinned.four_eyes),
            "previous_champion": served_champion,
            "reason": remark,
        }
        return promote_locked(ctx, mv, evidence, event="approve", fields=fields, alias_before=alias_before)


def rollback(
    cfg: TrackingConfig, model_name: str, reviewer: Identity | None, note: str, *, source: str = "api"
) -> PromotionRecord:
    """Restores the previous champion: alias `champion` moves back and it is served as a new, higher version.

    The four-eyes rule is not applied: the restored version was approved under it before, and a rollback
    is the emergency brake. Its verdict is still re-derived from its evidence, which must be intact.

    Raises:
        RollbackError: No previous champion.
        TamperingError, GateFailedError: The previous champion's evidence no longer supports serving it.
        ConcurrentPromotionError: The champion changed while this rollback waited (recorded).
        ModelUnavailableError: Its SavedModel cannot be found or verified.
        PromotionError, TrackingError: MLflow or the disk failed; nothing inconsistent was left.
    """
    ctx = context(cfg, model_name)
    who = acting_identity(ctx.cfg, reviewer)
    require_model(ctx)
    recover(cfg, model_name)
    seen = last_change_seq(ctx.log.records())
    with journal.promotion_lock(ctx.base), mlflow_errors(ctx.cfg, f"rolling back '{model_name}'"):
        recover_locked(ctx)
        records = ctx.log.records()
        if last_change_seq(records) > seen:
            # Two reviewers pressing rollback for the same incident must not roll back two champions.
            last = next(r for r in reversed(records) if r.event in CHAMPION_EVENTS)
            raise refuse(
                ctx,
                ConcurrentPromotionError,
                f"while this rollback of '{model_name}' waited, {last.reviewer} made version {last.version} "
                f"champion ({last.event} at {last.time}); nothing was changed. Check `dxpipe status "
                f"{model_name}` and roll back again only if version {last.version} must go too",
                version=last.version,
                reviewer=who,
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
        decision, evidence = decision_for(ctx, records, mv, who, champion=current, action="rollback")
        if not decision.allowed or evidence is None:
            raise _refuse_decision(
                ctx,
                decision,
                mv=mv,
                evidence=evidence,
                reviewer=who,
                note=note,
                source=source,
                prefix="the previous champion cannot be served again (approve another version): ",
            )
        pinned = pinned_policy(ctx, records) or PinnedPolicy.of(evidence)
        fields = {
            **_decision_fields(who, note, source, evidence, decision, pinned.four_eyes),
            "previous_champion": current,
        }
        alias_before = aliases_of(ctx.client, model_name).get(CHAMPION)
        return promote_locked(ctx, mv, evidence, event="rollback", fields=fields, alias_before=alias_before)


@dataclasses.dataclass(frozen=True)
class SyncResult:
    """What `sync_ui_alias` did.

    Attributes:
        action: "none", "refused" (an alias set outside dxpipe was put back), "repaired" (production, the
            alias or the tags were brought back to the promoted champion) or "recovered" (an interrupted
            promotion was completed or undone).
        message: One line for the user.
        record: The log record written, if any.
    """

    action: str
    message: str
    record: PromotionRecord | None = None


def sync_ui_alias(cfg: TrackingConfig, model_name: str, actor: Identity | None = None) -> SyncResult:
    """Reconciles the registry's `champion` alias, the promotion log and the production directory.

    - An interrupted promotion is completed or undone first (`recover_locked`).
    - Alias moved outside dxpipe (MLflow UI or REST API) to version V: refused and put back, whatever V's
      tags say. The embedded store cannot tell who moved it, so an approval is only ever `dxpipe approve`
      (authenticated on a shared server). The refusal lists every reason V could not serve anyway.
    - Alias removed outside dxpipe: put back on the served champion.
    - Production does not serve the champion's registered digest: re-published as a new version.
    - Approval tags missing on the champion: re-applied.

    Raises:
        VersionNotFoundError: The model is not registered.
        ModelUnavailableError: A needed SavedModel cannot be found or verified.
        PromotionError, TrackingError: MLflow or the disk failed; nothing inconsistent was left.
    """
    ctx = context(cfg, model_name)
    require_model(ctx)
    who = acting_identity(ctx.cfg, actor)
    with journal.promotion_lock(ctx.base), mlflow_errors(ctx.cfg, f"syncing '{model_name}'"):
        recovered = recover_locked(ctx)
        records = ctx.log.records()
        history = champion_history(records)
        promoted = history[-1] if history else None
        alias = aliases_of(ctx.client, model_name).get(CHAMPION)

        if alias is not None and alias != promoted:
            mv = get_version(ctx.client, model_name, alias)
            decision, evidence = decision_for(ctx, records, mv, who, champion=promoted, action="approve")
            set_champion_alias(ctx, promoted)
            kept = f"version {promoted} keeps serving" if promoted else "no champion is served"
            extra = (
                "" if decision.allowed else "; besides: " + "; ".join(r.rstrip(".") for r in decision.reasons)
            )
            reason = (
                f"the champion alias set outside dxpipe (MLflow UI or REST API) on version {mv.version} was "
                f"refused: nobody accountable approved it (approve with `dxpipe approve {model_name} "
                f"{mv.version}`){extra}. The alias was put back and {kept}"
            )
            error_kind = decision.kind if not decision.allowed else FOUR_EYES
            refusal = refuse(
                ctx,
                _ERRORS[error_kind],
                reason,
                version=mv.version,
                reviewer=None,
                note=mv.tags.get("approval.note", ""),
                source="ui",
                decision=decision,
                evidence=evidence,
                mv=mv,
            )
            return SyncResult("refused", str(refusal), ctx.log.records()[-1])

        if promoted is None:
            if recovered:
                return SyncResult("recovered", f"'{model_name}': {recovered}.")
            return SyncResult("none", f"'{model_name}' has no champion yet; nothing to sync.")

        mv = get_version(ctx.client, model_name, promoted)
        verified = load_verified(ctx.base, promoted, records)
        evidence = verified.evidence
        if evidence is None:
            raise TamperingError(
                f"the evidence of champion version {promoted} of '{model_name}' cannot be verified: "
                f"{'; '.join(verified.problems) or 'it is missing'}; sync cannot re-publish it. Approve "
                "another version or roll back."
            )
        served_version, served_digest = served(ctx.base)
        serving_ok = served_digest == evidence.model_digest
        found = [] if alias is not None else ["the champion alias had been removed in the registry"]
        if not serving_ok:
            shown = (
                "nothing"
                if served_version is None
                else f"v{served_version} (digest {str(served_digest)[:12]})"
            )
            found.append(f"production served {shown} instead of champion version {promoted}")
        if found:
            if serving_ok:
                set_champion_alias(ctx, promoted)
                reason = "; ".join(found) + "; alias restored"
                record = ctx.log.append(
                    event="repair",
                    model=model_name,
                    version=promoted,
                    reviewer=who.name,
                    reviewer_authenticated=who.authenticated,
                    source="sync",
                    digest=served_digest,
                    reason=reason,
                )
            else:
                record = promote_locked(
                    ctx,
                    mv,
                    evidence,
                    event="repair",
                    fields={
                        "reviewer": who.name,
                        "reviewer_authenticated": who.authenticated,
                        "source": "sync",
                        "previous_champion": promoted,
                        "reason": "; ".join(found) + f"; champion version {promoted} re-published",
                    },
                    alias_before=alias,
                )
                reason = f"{record.reason} as production version {record.production_version}"
            return SyncResult("repaired", f"'{model_name}': {reason} (log entry {record.seq}).", record)

        last = next(r for r in reversed(records) if r.event in CHAMPION_EVENTS)
        if mv.tags.get(TAG_APPROVAL_SEQ) != str(last.seq):
            warning = tag_version(ctx, promoted, _approval_tags(last))
            if warning:
                raise PromotionError(warning)
            return SyncResult(
                "repaired", f"'{model_name}': approval tags of version {promoted} re-applied.", last
            )
        if recovered:
            return SyncResult("recovered", f"'{model_name}': {recovered}.")
        return SyncResult(
            "none", f"'{model_name}': registry, log and production agree (champion version {promoted})."
        )
