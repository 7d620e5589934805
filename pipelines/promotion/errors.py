"""The errors a promotion, rollback, sync or status reports; each message names the version and the fix."""

from __future__ import annotations

from pipelines.errors import DxpipeError


class PromotionError(DxpipeError):
    """A promotion, rollback or sync was refused or could not complete; nothing inconsistent was left."""


class VersionNotFoundError(PromotionError):
    """The model or version does not exist in the registry."""


class NotGatedError(PromotionError):
    """The version has no evidence recorded at registration, so no verdict can be derived for it."""


class GateFailedError(PromotionError):
    """The verdict re-derived from the evidence is "failed": the version can never be the served champion."""


class TamperingError(PromotionError):
    """Tags, evidence or artifacts disagree with what was recorded at registration."""


class ModelCardError(PromotionError):
    """The version's model card is missing, deleted or no longer the one recorded at registration."""


class FourEyesError(PromotionError):
    """The reviewer is the run's author (or the author is unknown) under the pinned four-eyes rule."""


class ConcurrentPromotionError(PromotionError):
    """Another promotion changed the champion while this one waited for the lock."""


class AlreadyChampionError(PromotionError):
    """The version is already the champion and is being served."""


class RollbackError(PromotionError):
    """There is no previous champion to roll back to, or it can no longer be served."""


class ModelUnavailableError(PromotionError):
    """The version's SavedModel cannot be found or does not match its registered digest."""


class AuditLogError(PromotionError):
    """The promotion log is unreadable or broken; dxpipe will not promote past it."""
