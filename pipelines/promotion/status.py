"""`dxpipe status`: champion, candidate, verdicts re-derived from evidence, what is served, every discrepancy.

"consistent" is said only after verifying: the log's hash chain, each version's evidence against the log
and the Evaluator's artifacts, each version's tags against its evidence, the served bytes against the
champion's registered digest, and the registry's alias against the log. An interrupted promotion is
completed or undone first (the only write status makes, under the lock).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path

from pipelines.identity import Identity, os_account
from pipelines.mlflow_store import TrackingConfig, mlflow_errors
from pipelines.promotion import journal
from pipelines.promotion.audit_log import PromotionRecord, champion_history
from pipelines.promotion.context import context, require_model, served
from pipelines.promotion.errors import AuditLogError, PromotionError, TamperingError
from pipelines.promotion.evidence import load_verified
from pipelines.promotion.pinned import pinned_policy
from pipelines.promotion.policy import decide
from pipelines.promotion.publish import recover
from pipelines.registry import CANDIDATE, CHAMPION, search_versions

# Status is read-only with respect to identities: decisions it shows use a placeholder reviewer, and the
# four-eyes outcome is not part of a version's status.
_NOBODY = Identity(name="", authenticated=False, source="status")


@dataclasses.dataclass(frozen=True)
class VersionStatus:
    """One registry version as `status` shows it.

    Attributes:
        version: Registry version.
        gate: The verdict re-derived from the evidence ("passed", "failed", "never gated", "unverifiable").
        gate_tag: What the version's `gate` tag says (display only).
        failures: The re-derived failures.
        aliases: Its aliases.
        author: The author recorded at registration.
        digest: The registered SavedModel digest.
        approval: Its approval status tag.
        discrepancies: Tags or evidence that disagree with the record (tampering).
    """

    version: str
    gate: str
    gate_tag: str | None
    failures: tuple[str, ...]
    aliases: tuple[str, ...]
    author: str | None
    digest: str | None
    approval: str | None
    discrepancies: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class ServingStatus:
    """What a TF Serving base path serves: its highest version directory."""

    base_path: str
    version: int | None
    digest: str | None
    registry_version: str | None


@dataclasses.dataclass(frozen=True)
class ModelStatus:
    """Champion, candidate, re-derived verdicts, what is served, recent log records and every problem."""

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
    recovered: str | None = None
    identity_mode: str = ""

    @property
    def consistent(self) -> bool:
        """True when registry, log, evidence and production agree."""
        return not self.problems

    def render(self) -> str:
        """A human-readable multi-line report."""

        def serves(s: ServingStatus) -> str:
            if s.version is None:
                return "nothing"
            return f"v{s.version} = registry version {s.registry_version or '? (unknown digest)'}"

        lines = [
            f"model {self.model}  (MLflow: {self.tracking_uri}; {self.identity_mode})",
            f"  champion:  {self.champion or '-'}   candidate: {self.candidate or '-'}",
            f"  production: {self.production.base_path} serves {serves(self.production)}",
            f"  staging:    {self.staging.base_path} serves {serves(self.staging)}",
            "  versions (gate re-derived from the evidence recorded at registration):",
        ]
        if self.recovered:
            lines.insert(1, f"  recovered: {self.recovered}")
        for v in self.versions:
            aliases = f" [{', '.join(v.aliases)}]" if v.aliases else ""
            approval = f", {v.approval}" if v.approval else ""
            tag = f" (tag says {v.gate_tag})" if v.gate_tag not in (None, v.gate) else ""
            lines.append(
                f"    {v.version:>4}  gate {v.gate}{tag}{aliases}{approval}  author {v.author or '?'}"
            )
            lines.extend(f"          - {f}" for f in v.failures)
        if self.recent:
            lines.append("  recent promotion log:")
            for r in self.recent:
                who = f" by {r.reviewer}" if r.reviewer else ""
                reason = r.reason if r.reason is None or len(r.reason) <= 160 else r.reason[:157] + "..."
                tail = f": {reason}" if reason else ""
                lines.append(f"    #{r.seq} {r.time} {r.event} v{r.version}{who}{tail}")
        lines.append(
            "  problems:"
            if self.problems
            else "  consistent: log chain, evidence, tags, registry and production verified and agree"
        )
        lines.extend(f"    ! {p}" for p in self.problems)
        return "\n".join(lines)


def _serving_status(base: Path, by_digest: Mapping[str, str]) -> ServingStatus:
    version, digest = served(base)
    return ServingStatus(str(base), version, digest, None if digest is None else by_digest.get(digest))


def _max_mirrored_seq(tags_by_version: Mapping[str, Mapping[str, str]]) -> int:
    best = 0
    for tags in tags_by_version.values():
        for key in tags:
            if key.startswith("promotion.") and key[len("promotion.") :].isdigit():
                best = max(best, int(key[len("promotion.") :]))
    return best


def status(cfg: TrackingConfig, model_name: str, recent: int = 5) -> ModelStatus:
    """Reports champion, candidate, every version's re-derived verdict, what is served, and discrepancies.

    Raises:
        VersionNotFoundError: The model is not registered.
        TrackingError: MLflow cannot be reached.
    """
    ctx = context(cfg, model_name)
    aliases = require_model(ctx)
    recovered = recover(cfg, model_name)
    with mlflow_errors(ctx.cfg, f"reading the status of '{model_name}'"):
        versions = search_versions(ctx.client, model_name)
        aliases = require_model(ctx)
    problems: list[str] = []
    try:
        records = ctx.log.records()
    except AuditLogError as exc:
        records = []
        problems.append(str(exc))
    else:
        problems.extend(ctx.log.verify())
    try:
        pinned = pinned_policy(ctx, records)
    except TamperingError as exc:
        pinned = None
        problems.append(str(exc))
    history = champion_history(records)
    promoted = history[-1] if history else None
    champion_evidence = load_verified(ctx.base, promoted, records).evidence if promoted else None

    alias_by_version: dict[str, list[str]] = {}
    for alias, number in aliases.items():
        alias_by_version.setdefault(number, []).append(alias)
    rows = []
    registered_digest: dict[str, str] = {}
    passed_at_registration: dict[str, bool] = {}
    for v in versions:
        verified = load_verified(ctx.base, v.version, records)
        decision = decide(
            model_name,
            v.version,
            verified,
            v.tags,
            v.run_id,
            _NOBODY,
            pinned,
            champion=promoted,
            champion_evidence=champion_evidence,
            action="rollback" if v.version == promoted else "approve",
        )
        evidence = verified.evidence
        if evidence is not None:
            registered_digest[v.version] = evidence.model_digest
            passed_at_registration[v.version] = evidence.passed
        gate = "never gated" if verified.missing else (decision.gate or "unverifiable")
        rows.append(
            VersionStatus(
                version=v.version,
                gate=gate,
                gate_tag=v.tags.get("gate"),
                failures=()
                if decision.verdict is None
                else tuple(f.message for f in decision.verdict.failures),
                aliases=tuple(sorted(alias_by_version.get(v.version, []))),
                author=None if evidence is None else evidence.author,
                digest=None if evidence is None else evidence.model_digest,
                approval=v.tags.get("approval.status"),
                discrepancies=decision.tampering,
            )
        )
        problems.extend(f"tampering: {d}" for d in decision.tampering)

    candidate = aliases.get("candidate")
    candidate_evidence = load_verified(ctx.base, candidate, records).evidence if candidate else None
    if candidate_evidence is not None and candidate_evidence.model_card:
        # The card a reviewer would approve next: edited or deleted since registration is a discrepancy.
        from pipelines.model_card.attach import card_problems

        who = f"'{model_name}' version {candidate}"
        problems.extend(
            f"model card: {p}"
            for p in card_problems(ctx.client, candidate_evidence.run_id, candidate_evidence.model_card, who)
        )

    by_digest = {d: v for v, d in registered_digest.items()}
    production = _serving_status(ctx.base, by_digest)
    staging = _serving_status(ctx.cfg.staging_path(model_name), by_digest)
    gate_of = {v.version: v.gate for v in rows}

    champion = aliases.get(CHAMPION)
    if champion != promoted:
        problems.append(
            f"the registry's champion alias is on version {champion or '(none)'} but the last promoted "
            f"champion is {promoted or '(none)'}: the alias was changed outside dxpipe; run `dxpipe sync "
            f"{model_name}` to refuse it and put it back."
        )
    if promoted is not None and gate_of.get(promoted) != "passed":
        problems.append(
            f"the promoted champion, version {promoted}, no longer passes the gate re-derived from its "
            f"evidence ({gate_of.get(promoted)}); roll back or approve another version."
        )
    if promoted is not None and production.digest != registered_digest.get(promoted):
        shown = (
            "nothing"
            if production.version is None
            else f"v{production.version} (registry version {production.registry_version or 'unknown'})"
        )
        problems.append(
            f"production serves {shown}, not the champion version {promoted}'s registered bytes: a version "
            f"directory was deleted or altered; run `dxpipe sync {model_name}` to re-publish the champion."
        )
    if promoted is None and production.version is not None:
        problems.append(
            f"production serves v{production.version} but no approval is recorded in {ctx.log.path}."
        )
    candidate = aliases.get(CANDIDATE)
    if candidate is not None and not passed_at_registration.get(candidate, False):
        problems.append(
            f"the candidate alias is on version {candidate}, which did not pass the gate at registration "
            "(or has no verifiable evidence)."
        )
    mirrored = _max_mirrored_seq({v.version: v.tags for v in versions})
    last_seq = records[-1].seq if records else 0
    if mirrored > last_seq:
        problems.append(
            f"the registry mirrors promotion log entry {mirrored} but {ctx.log.path} ends at entry "
            f"{last_seq}: lines were deleted from the end of the log."
        )
    if journal.journal_path(ctx.base).exists():
        problems.append(f"an interrupted promotion is pending in {journal.journal_path(ctx.base)}.")
    leftovers = sorted(p.name for p in ctx.base.glob(".incoming-*")) if ctx.base.is_dir() else []
    if leftovers:
        problems.append(f"interrupted publish left {', '.join(leftovers)} in {ctx.base}.")
    identity_mode = (
        "identities authenticated by the MLflow server"
        if ctx.uri.startswith(("http://", "https://"))
        else f"embedded single-user store: identities are OS accounts (you are {os_account().name})"
    )
    return ModelStatus(
        model=model_name,
        champion=champion,
        candidate=candidate,
        promoted_champion=promoted,
        production=production,
        staging=staging,
        versions=tuple(rows),
        recent=tuple(records[-recent:]) if recent > 0 else (),
        problems=tuple(problems),
        tracking_uri=ctx.uri,
        recovered=recovered,
        identity_mode=identity_mode,
    )


def to_json(report: ModelStatus) -> str:
    """The report as JSON (`dxpipe status --json`)."""

    def plain(value: object) -> object:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, Mapping):
            return {k: plain(v) for k, v in value.items()}
        return value

    return json.dumps({**plain(report), "consistent": report.consistent}, indent=2, sort_keys=True)


__all__ = ["ModelStatus", "PromotionError", "ServingStatus", "VersionStatus", "status", "to_json"]
