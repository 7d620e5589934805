"""`dxpipe sync`: decide a champion alias set outside dxpipe, finish interrupted promotions, repair drift."""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING

from pipelines.identity import Identity, server_recorded_approver
from pipelines.mlflow_store import (
    TrackingConfig,
    mlflow_errors,
)
from pipelines.promotion import journal
from pipelines.promotion.audit_log import (
    CHAMPION_EVENTS,
    PromotionRecord,
    champion_history,
)
from pipelines.promotion.context import (
    acting_identity,
    context,
    decision_for,
    require_model,
    served,
)
from pipelines.promotion.errors import (
    PromotionError,
    TamperingError,
)
from pipelines.promotion.evidence import load_verified
from pipelines.promotion.pinned import pinned_policy
from pipelines.promotion.policy import (
    FOUR_EYES,
    PinnedPolicy,
)
from pipelines.promotion.publish import (
    TAG_APPROVAL_SEQ,
    approval_tags,
    promote_locked,
    recover_locked,
    refuse,
    set_champion_alias,
    tag_version,
)
from pipelines.promotion.service import ERRORS, decision_fields
from pipelines.registry import (
    CHAMPION,
    aliases_of,
    get_version,
)

if TYPE_CHECKING:
    pass

_log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class SyncResult:
    """What `sync_ui_alias` did.

    Attributes:
        action: "none", "approved" (an approval made in the MLflow UI of a shared server, checked there and
            re-decided here on the evidence, was published), "refused" (an alias set outside dxpipe was
            put back), "repaired" (production, the
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
    - Alias moved outside dxpipe (MLflow UI or REST API) to version V: on a shared server whose dxpipe app
      recorded the reviewer who set it (checked there: a reviewer, not an author), the approval is decided
      as `dxpipe approve` by that reviewer would be, and published when the evidence allows it. Otherwise
      (the embedded store cannot tell who moved it) it is refused and put back, whatever V's tags say; the
      refusal lists every reason V could not serve anyway.
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
            # On a shared server the dxpipe app checked who set the alias (a reviewer, not an author) and
            # recorded it: such a UI approval is decided like `dxpipe approve` by that reviewer, on the same
            # evidence and pinned policy, against the champion it replaces.
            approver = server_recorded_approver(ctx.cfg.tracking_uri, model_name, mv.version)
            if approver is not None:
                decision, evidence = decision_for(
                    ctx, records, mv, approver, champion=promoted, action="approve"
                )
                if decision.allowed and evidence is not None:
                    pinned = pinned_policy(ctx, records) or PinnedPolicy.of(evidence)
                    note = mv.tags.get("approval.note", "")
                    fields = {
                        **decision_fields(approver, note, "ui", evidence, decision, pinned.four_eyes),
                        "previous_champion": promoted,
                        "reason": f"approved in the MLflow UI by {approver.name} (checked and recorded by "
                        "the server); published by sync",
                    }
                    record = promote_locked(
                        ctx, mv, evidence, event="approve", fields=fields, alias_before=alias
                    )
                    return SyncResult(
                        "approved",
                        f"'{model_name}' version {mv.version}, approved in the MLflow UI by {approver.name}, "
                        f"now serves as production version {record.production_version} (log entry "
                        f"{record.seq}).",
                        record,
                    )
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
                ERRORS[error_kind],
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
            warning = tag_version(ctx, promoted, approval_tags(last))
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
