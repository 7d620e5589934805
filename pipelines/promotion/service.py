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

import logging
from typing import TYPE_CHECKING, Any

from pipelines.identity import Identity
from pipelines.mlflow_store import (
    TrackingConfig,
    mlflow_errors,
)
from pipelines.promotion import journal
from pipelines.promotion.audit_log import (
    CHAMPION_EVENTS,
    PromotionRecord,
    champion_history,
    last_change_seq,
)
from pipelines.promotion.context import (
    Context,
    acting_identity,
    context,
    decision_for,
    require_model,
    served,
)
from pipelines.promotion.errors import (
    AlreadyChampionError,
    ConcurrentPromotionError,
    FourEyesError,
    GateFailedError,
    ModelCardError,
    NotGatedError,
    PromotionError,
    RollbackError,
    TamperingError,
    VersionNotFoundError,
)
from pipelines.promotion.evidence import Evidence
from pipelines.promotion.pinned import pinned_policy
from pipelines.promotion.policy import (
    FOUR_EYES,
    GATE_FAILED,
    MODEL_CARD,
    NOT_GATED,
    TAMPERED,
    Decision,
    PinnedPolicy,
)
from pipelines.promotion.publish import promote_locked, recover, recover_locked, refuse
from pipelines.registry import (
    CHAMPION,
    RegistryError,
    VersionView,
    aliases_of,
    get_version,
)

if TYPE_CHECKING:
    pass

_log = logging.getLogger(__name__)

ERRORS = {
    NOT_GATED: NotGatedError,
    TAMPERED: TamperingError,
    GATE_FAILED: GateFailedError,
    FOUR_EYES: FourEyesError,
    MODEL_CARD: ModelCardError,
}


def decision_fields(
    reviewer: Identity, note: str, source: str, evidence: Evidence, decision: Decision, pinned_four_eyes: bool
) -> dict[str, Any]:
    """The log fields every approval records: who, from where, on what evidence and under which rule."""
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
        # The card the reviewer approved, by digest (checked against MLflow's copy by `decide`).
        "model_card_digest": (evidence.model_card or {}).get("digest"),
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
        error or ERRORS[decision.kind],
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
            **decision_fields(who, note, source, evidence, decision, pinned.four_eyes),
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
            **decision_fields(who, note, source, evidence, decision, pinned.four_eyes),
            "previous_champion": current,
        }
        alias_before = aliases_of(ctx.client, model_name).get(CHAMPION)
        return promote_locked(ctx, mv, evidence, event="rollback", fields=fields, alias_before=alias_before)


def propose_policy(
    cfg: TrackingConfig, model_name: str, policy: PinnedPolicy, proposer: Identity | None, note: str
) -> PromotionRecord:
    """Proposes a new pinned gate policy / four-eyes rule for a model; a second person must accept it."""
    from pipelines.promotion import pinned

    ctx = context(cfg, model_name)
    who = acting_identity(ctx.cfg, proposer)
    require_model(ctx)
    with journal.promotion_lock(ctx.base):
        return pinned.propose(ctx, ctx.log, policy, who, note)


def accept_policy(
    cfg: TrackingConfig, model_name: str, reviewer: Identity | None, note: str
) -> PromotionRecord:
    """Accepts the pending policy proposal (by someone other than its proposer); it governs from now on."""
    from pipelines.promotion import pinned

    ctx = context(cfg, model_name)
    who = acting_identity(ctx.cfg, reviewer)
    require_model(ctx)
    with journal.promotion_lock(ctx.base):
        return pinned.accept(ctx, ctx.log, who, note)
