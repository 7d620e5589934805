"""What every promotion operation needs: the model's context, the acting identity and what is served.

`decision_for` gathers a version's evidence, the champion's and the pinned policy for `policy.decide`.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from components.serving_pusher.core import (
    PushError,
    list_versions,
    saved_model_digest,
)
from pipelines.identity import Identity, current_identity
from pipelines.mlflow_store import (
    TrackingConfig,
    check_model_name,
    client_for,
    mlflow_errors,
)
from pipelines.promotion.audit_log import (
    LOG_NAME,
    PromotionLog,
    PromotionRecord,
)
from pipelines.promotion.errors import (
    PromotionError,
    TamperingError,
    VersionNotFoundError,
)
from pipelines.promotion.evidence import Evidence, VerifiedEvidence, load_verified
from pipelines.promotion.pinned import pinned_policy
from pipelines.promotion.policy import (
    Decision,
    decide,
)
from pipelines.redact import redact_uri
from pipelines.registry import (
    RegistryError,
    VersionView,
    aliases_of,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient

_log = logging.getLogger(__name__)


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


def served_digest_of(version_dir: Path) -> str | None:
    """The digest of a version directory's files, None when it is not a SavedModel."""
    try:
        return saved_model_digest(version_dir)
    except PushError:
        return None


def next_production_version(ctx: Context, records: list[PromotionRecord]) -> int:
    """One more than any number ever used (a client pinned to a number never silently gets another)."""
    used = [*list_versions(ctx.base), *(r.production_version or 0 for r in records)]
    return max(used, default=0) + 1


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
    card_problems: list[str] = []
    if action == "approve" and verified.evidence is not None:
        # The card is fetched from the run the evidence names (the registry's run link is editable).
        from pipelines.model_card.attach import card_problems as check_card

        evidence = verified.evidence
        card_problems = check_card(
            ctx.client, evidence.run_id, evidence.model_card, f"'{ctx.model}' version {mv.version}"
        )
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
        card_problems=card_problems,
    )
    return decision, verified.evidence
