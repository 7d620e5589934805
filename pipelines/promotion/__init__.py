"""Reviewer approval, promotion to the production serving path, rollback, sync and status.

One idea per module:

- `policy`: pure: verified evidence + tags + reviewer + pinned policy -> a decision with every reason.
- `evidence`: what each version was gated on, recorded at registration and verified at every use.
- `audit_log`: the hash-chained promotion log.
- `journal`: the promotion lock, the write-ahead journal and the fault-injection hook.
- `service`: approve, rollback, sync and crash recovery: gathers inputs, asks `policy`, applies it.
- `status`: what `dxpipe status` reports, after verifying everything it reports on.
"""

from pipelines.promotion.audit_log import PromotionLog, PromotionRecord, champion_history
from pipelines.promotion.errors import (
    AlreadyChampionError,
    AuditLogError,
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
from pipelines.promotion.service import SyncResult, approve, recover, rollback, sync_ui_alias
from pipelines.promotion.status import ModelStatus, ServingStatus, VersionStatus, status

__all__ = [
    "AlreadyChampionError",
    "AuditLogError",
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
    "ServingStatus",
    "SyncResult",
    "TamperingError",
    "VersionNotFoundError",
    "VersionStatus",
    "approve",
    "champion_history",
    "recover",
    "rollback",
    "status",
    "sync_ui_alias",
]
