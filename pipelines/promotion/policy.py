"""The approval policy, pure: verified evidence, tags, the reviewer and the pinned policy in; a decision out.

No MLflow, no files, no clock. `decide` re-derives the gate verdict from the evidence recorded at
registration under the policy pinned for the model, compares every display tag with it (a disagreement
is tampering), applies the pinned four-eyes rule to normalised names, and returns every reason at once.
The service (`pipelines.promotion.service`) gathers the inputs, calls `decide` and applies the decision.

Order of precedence of the decision's `kind` (all reasons are listed whatever the kind):
no evidence > tampering > model card > gate failed > four-eyes.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

from components.registry_gate.core import OVERALL, GatePolicy, GateVerdict, evaluate_gate
from pipelines.identity import Identity, normalise_name
from pipelines.promotion.evidence import Evidence, VerifiedEvidence

# The tags the registration writes as a display of the evidence; any other key with these prefixes that
# was not written then is a forgery.
DISPLAY_PREFIXES = ("gate.fail.", "metric.")
TAG_GATE = "gate"
TAG_AUTHOR = "dxpipe.author"
TAG_DIGEST = "model.digest"

OK = "ok"
NOT_GATED = "not_gated"
TAMPERED = "tampered"
GATE_FAILED = "gate_failed"
FOUR_EYES = "four_eyes"
MODEL_CARD = "model_card"


@dataclasses.dataclass(frozen=True)
class PinnedPolicy:
    """The gate policy and four-eyes rule that govern a registered model (recorded at its registration).

    Attributes:
        policy: The gate policy (`GatePolicy.to_dict()` form).
        four_eyes: Whether a second person must approve.
        digest: `GatePolicy.digest()` of the policy.
    """

    policy: Mapping[str, object]
    four_eyes: bool
    digest: str

    @classmethod
    def of(cls, evidence: Evidence) -> PinnedPolicy:
        """The policy an evidence record was gated under."""
        return cls(evidence.policy, evidence.four_eyes, evidence.policy_digest)

    def gate_policy(self) -> GatePolicy:
        """The policy as a GatePolicy."""
        return GatePolicy.from_dict(dict(self.policy))


@dataclasses.dataclass(frozen=True)
class Decision:
    """Whether a version may become (or be restored as) the served champion, and every reason why not.

    Attributes:
        allowed: True when nothing stands in the way.
        kind: OK, NOT_GATED, TAMPERED, MODEL_CARD, GATE_FAILED or FOUR_EYES (the most serious reason).
        reasons: Every reason, one sentence each.
        verdict: The verdict re-derived from the evidence (None without evidence).
        metrics: The overall test metrics from the evidence (what the audit log records).
        tampering: The subset of `reasons` that are discrepancies between tags/evidence/artifacts.
    """

    allowed: bool
    kind: str
    reasons: tuple[str, ...]
    verdict: GateVerdict | None
    metrics: Mapping[str, float]
    tampering: tuple[str, ...] = ()

    @property
    def gate(self) -> str | None:
        """The re-derived verdict as "passed"/"failed" (None without evidence)."""
        if self.verdict is None:
            return None
        return "passed" if self.verdict.passed else "failed"


def overall_metrics(evidence: Evidence) -> dict[str, float]:
    """The finite overall metrics of the evidence."""
    return {
        k: float(v)
        for k, v in evidence.candidate.get(OVERALL, {}).items()
        if v is not None and math.isfinite(float(v))
    }


def tag_discrepancies(evidence: Evidence, tags: Mapping[str, str], run_id: str | None) -> list[str]:
    """Every display tag (and the run link) that disagrees with the evidence recorded at registration."""
    found = []
    shown = evidence.display_tags
    for key, expected in sorted(shown.items()):
        actual = tags.get(key)
        if actual is None:
            found.append(f"tag '{key}' (recorded as {expected!r} at registration) was deleted")
        elif actual != expected:
            found.append(f"tag '{key}' says {actual!r} but the evidence recorded {expected!r}")
    for key in sorted(tags):
        if key.startswith(DISPLAY_PREFIXES) and key not in shown:
            found.append(f"tag '{key}' = {tags[key]!r} was added after registration")
    if run_id is not None and run_id != evidence.run_id:
        found.append(f"the version's run is {run_id} but it was registered by run {evidence.run_id}")
    return found


def rederive_verdict(
    evidence: Evidence,
    pinned: PinnedPolicy,
    *,
    champion: str | None,
    champion_evidence: Evidence | None,
    compare_with_current: bool,
) -> GateVerdict:
    """The gate verdict from the evidence under the pinned policy.

    Args:
        evidence: The version's verified evidence.
        pinned: The model's pinned policy.
        champion: The champion this version would replace (None when there is none).
        champion_evidence: That champion's verified evidence.
        compare_with_current: True for an approval: non-inferiority is checked against `champion`, the
            one actually replaced, not the one that happened to be champion at registration. False for a
            rollback, which restores a version on its own recorded verdict.
    """
    clinical = evidence.clinical
    if not compare_with_current or champion in (evidence.champion, evidence.version):
        baseline, label = evidence.baseline, evidence.champion
    elif champion is None:
        baseline, label = None, None
    elif (
        champion_evidence is not None
        and evidence.test_digest
        and champion_evidence.test_digest == evidence.test_digest
    ):
        # Same examples scored by the same model give the same metrics: the champion's recorded metrics
        # on an identical test split are its re-score.
        baseline, label = champion_evidence.candidate, champion
    else:
        baseline, label = None, champion
    if label != evidence.champion and clinical is not None:
        # The paired comparison was made with the champion of registration time, per row; no recorded
        # figure re-scores another champion on the same rows, so its criteria fail with the reason.
        clinical = {**clinical, "noninferiority": None}
    verdict = evaluate_gate(
        pinned.gate_policy(),
        evidence.candidate,
        baseline=baseline,
        champion=None if label is None else f"version {label}",
        blessed=evidence.blessed,
        clinical=clinical,
    )
    if compare_with_current and champion != evidence.champion and champion is not None and baseline is None:
        verdict = dataclasses.replace(
            verdict,
            notes=(
                *verdict.notes,
                f"registered against {evidence.compared_with}, but the champion is now version {champion} "
                "and it was not scored on the same test split; re-run the pipeline to compare with it",
            ),
        )
    return verdict


def decide(
    model: str,
    version: str,
    verified: VerifiedEvidence,
    tags: Mapping[str, str],
    run_id: str | None,
    reviewer: Identity,
    pinned: PinnedPolicy | None,
    *,
    champion: str | None,
    champion_evidence: Evidence | None = None,
    action: str = "approve",
    card_problems: Sequence[str] = (),
) -> Decision:
    """Decides whether `version` may be served as champion.

    Args:
        model: Registered model name.
        version: Registry version.
        verified: Its evidence with the integrity problems found verifying it.
        tags: Its current registry tags (display only; compared, never trusted).
        run_id: Its run id in the registry.
        reviewer: Who acts.
        pinned: The model's pinned policy (None: the version's own evidence policy applies).
        champion: The served champion it would replace.
        champion_evidence: The champion's verified evidence (for non-inferiority against it).
        action: "approve" (four-eyes applies; compared with the current champion) or "rollback".
        card_problems: Why the version's model card cannot be approved (missing, deleted, edited), as
            `pipelines.model_card.attach.card_problems` found; the caller checks it for approvals.

    Returns:
        The decision with every reason.
    """
    who = f"'{model}' version {version}"
    evidence = verified.evidence
    if evidence is None:
        if verified.missing:
            reason = (
                f"{who} was never gated by dxpipe (no evidence recorded at registration): only versions "
                "registered by the pipeline can be approved. Re-run the pipeline to register a gated version"
            )
            return Decision(False, NOT_GATED, (reason,), None, {})
        problems = tuple(f"{who}: {p}" for p in verified.problems)
        return Decision(False, TAMPERED, problems, None, {}, problems)

    pinned = pinned or PinnedPolicy.of(evidence)
    verdict = rederive_verdict(
        evidence,
        pinned,
        champion=champion,
        champion_evidence=champion_evidence,
        compare_with_current=action == "approve",
    )
    metrics = overall_metrics(evidence)
    tampering = [f"{who}: {p}" for p in verified.problems]
    tampering += [f"{who}: {p}" for p in tag_discrepancies(evidence, tags, run_id)]
    reasons = list(tampering)
    reasons += [p.rstrip(".") for p in card_problems]
    if not verdict.passed:
        failures = [f.message.rstrip(".") for f in verdict.failures] or ["no criterion was checked"]
        reasons.append(
            f"{who} fails the gate re-derived from its evidence and can never become the served champion: "
            + "; ".join(failures)
        )
    if action == "approve" and pinned.four_eyes:
        author = normalise_name(evidence.author)
        if not author:
            reasons.append(
                f"{who} cannot be approved: the author of its run is unknown, so the four-eyes rule cannot "
                "be checked"
            )
        elif author == reviewer.key:
            reasons.append(
                f"{who} cannot be approved: the reviewer '{reviewer.name}' is the author of its run; a "
                "second person must approve (four-eyes rule, pinned at registration)"
            )
    if tampering:
        kind = TAMPERED
    elif card_problems:
        kind = MODEL_CARD
    elif not verdict.passed:
        kind = GATE_FAILED
    elif reasons:
        kind = FOUR_EYES
    else:
        kind = OK
    return Decision(kind == OK, kind, tuple(reasons), verdict, metrics, tuple(tampering))
