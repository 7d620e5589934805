"""Reviewer approval, promotion to the production serving path, rollback, sync and status.

One idea per module:

- `policy`: pure: verified evidence + tags + reviewer + pinned policy -> a decision with every reason.
- `evidence`: what each version was gated on, recorded at registration and verified at every use.
- `audit_log`: the hash-chained promotion log.
- `journal`: the promotion lock, the write-ahead journal and the fault-injection hook.
- `pinned`: the pinned gate policy and four-eyes rule, and their two-person change.
- `context`: the model's context, the acting identity, what is served, the inputs of a decision.
- `publish`: the journalled promotion (alias, publish, log, tags) and its crash recovery.
- `service`: approve, rollback and policy changes: gathers inputs, asks `policy`, applies the decision.
- `sync`: refuses aliases set outside dxpipe, finishes interrupted promotions, repairs drift.
- `status`: what `dxpipe status` reports, after verifying everything it reports on.
"""

from pipelines.promotion.audit_log import PromotionLog, PromotionRecord, champion_history
from pipelines.promotion.errors import (
    AlreadyChampionError,
    AuditLogError,
    ConcurrentPromotionError,
    FourEyesError,
    GateFailedError,
    ModelCardError,
    ModelUnavailableError,
    NotGatedError,
    PromotionError,
    RollbackError,
    TamperingError,
    VersionNotFoundError,
)
from pipelines.promotion.publish import recover
from pipelines.promotion.service import accept_policy, approve, propose_policy, rollback
from pipelines.promotion.status import ModelStatus, ServingStatus, VersionStatus, status
from pipelines.promotion.sync import SyncResult, sync_ui_alias

__all__ = [
    "AlreadyChampionError",
    "AuditLogError",
    "ConcurrentPromotionError",
    "FourEyesError",
    "GateFailedError",
    "ModelCardError",
    "ModelStatus",
    "ModelUnavailableError",
    "NotGatedError",
    "PromotionError",
    "PromotionLog",
    "PromotionRecord",
    "RollbackError",
    "ServingStatus",
    "SyncResult",
    "TamperingError",
    "VersionNotFoundError",
    "VersionStatus",
    "accept_policy",
    "approve",
    "champion_history",
    "propose_policy",
    "recover",
    "rollback",
    "status",
    "sync_ui_alias",
]
