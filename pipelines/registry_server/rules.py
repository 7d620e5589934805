"""The approval rules the shared MLflow server enforces: plain values in, a decision with its reason out.

Nothing here touches Flask, MLflow or a database, so every branch is unit-tested directly; `app.py` parses
the request, looks up who authored the version and applies the decision before MLflow's handler runs.

What is protected, and why:

- The `champion` alias (what production serves): set only by a reviewer who is not an author of the
  version (four-eyes); put back on a version a four-eyes approval already made champion (a rollback, a
  repair) by any reviewer; removed only by a reviewer. A look-alike of it (`Champion`, `champion` with a
  zero-width space) is refused outright: it could only exist to fool a human reading the UI.
- `approval.*` version tags (the record of a review): the same rule as the alias; never at creation.
- Evidence tags (`gate`, `gate.*`, `metric.*`, `model.digest`, `data.test_digest`, `tfx.*`, `mlmd.*`,
  `policy.*`, `serving.staging_version`): written once, in the call that creates the version (as
  `pipelines.registry` does), then immutable for everyone, reviewers and admins included.
- `dxpipe.author` (and `dxpipe.author.*`, e.g. its source) on versions and runs, `mlflow.user` on runs:
  set at creation only; the server then writes `dxpipe.author` itself from the authenticated creator and
  nobody sets or deletes them through the API.
- Registered-model policy tags (`dxpipe.*`, `gate*`, `policy*`, `approval*`, `four_eyes*`): free at
  creation, then reviewer-only: loosening a pinned policy is a reviewer's act.
- Deleting or renaming a registered model, deleting a version and stage transitions: reviewer-only
  (a version is evidence; a rename would move the champion out from under its name).

Names are compared after Unicode NFKC, case folding and removal of invisible characters, so `Alice`,
`alice` and `a\u200blice` are one person for the four-eyes rule.
"""

from __future__ import annotations

import dataclasses
import enum
import unicodedata
from collections.abc import Iterable

CHAMPION = "champion"
AUTHOR_TAG = "dxpipe.author"
APPROVAL_PREFIX = "approval."
EVIDENCE_KEYS = frozenset({"gate", "model.digest", "data.test_digest", "serving.staging_version"})
EVIDENCE_PREFIXES = ("gate.", "metric.", "tfx.", "mlmd.", "policy.")
RUN_IDENTITY_TAGS = frozenset({AUTHOR_TAG, "mlflow.user"})
MODEL_POLICY_PREFIXES = ("dxpipe.", "gate", "policy", "approval", "four_eyes")

UNAUTHENTICATED = 401
FORBIDDEN = 403


def normalize(name: str) -> str:
    """The form in which names, tag keys and aliases are compared: NFKC, no invisible characters, casefolded.

    Args:
        name: A user name, tag key or alias as received.

    Returns:
        The comparison key (may be empty).
    """
    folded = unicodedata.normalize("NFKC", name)
    # Cf (format: zero-width spaces and joiners, bidi marks), Cc (controls) and whitespace are invisible in
    # the UI and in a terminal, so they must not make two names differ.
    kept = (c for c in folded if unicodedata.category(c) not in ("Cf", "Cc") and not c.isspace())
    return "".join(kept).casefold()


class TagKind(enum.Enum):
    """What a model-version tag key is, for the rules."""

    FREE = "free"
    AUTHOR = "author"
    APPROVAL = "approval"
    EVIDENCE = "evidence"


def version_tag_kind(key: str) -> TagKind:
    """Classifies a model-version tag key (after normalisation, so look-alikes count as the real key)."""
    norm = normalize(key)
    if norm == AUTHOR_TAG or norm.startswith(AUTHOR_TAG + "."):
        return TagKind.AUTHOR
    if norm.startswith(APPROVAL_PREFIX) or norm == APPROVAL_PREFIX.rstrip("."):
        return TagKind.APPROVAL
    if norm in EVIDENCE_KEYS or norm.startswith(EVIDENCE_PREFIXES):
        return TagKind.EVIDENCE
    return TagKind.FREE


def is_champion_like(alias: str) -> bool:
    """True for `champion` and anything a reader would take for it."""
    return normalize(alias) == CHAMPION


@dataclasses.dataclass(frozen=True)
class Actor:
    """Who sends the request, as authenticated by MLflow's basic-auth app.

    Attributes:
        user: The authenticated user name, or None without valid credentials.
        is_reviewer: Whether the user holds dxpipe's reviewer role.
    """

    user: str | None
    is_reviewer: bool = False


@dataclasses.dataclass(frozen=True)
class Decision:
    """Whether a request may reach MLflow's handler.

    Attributes:
        allowed: True to let it through.
        reason: Why (recorded in the audit table; returned to the client when refused).
        status: The HTTP status of a refusal (401 without credentials, 403 otherwise).
        guarded: False when nothing protected was touched (such requests are not audited).
        restores: True when `champion` goes back to a version a four-eyes approval already put there.
    """

    allowed: bool
    reason: str
    status: int = FORBIDDEN
    guarded: bool = True
    restores: bool = False


def allow(reason: str) -> Decision:
    """An accepted request with its reason."""
    return Decision(True, reason, 200)


def unguarded(reason: str) -> Decision:
    """A request that touches nothing protected."""
    return Decision(True, reason, 200, guarded=False)


def _refuse(reason: str, status: int = FORBIDDEN) -> Decision:
    return Decision(False, reason, status)


def _no_credentials(what: str) -> Decision:
    return _refuse(
        f"{what} needs an authenticated MLflow user; send basic-auth credentials "
        "(MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD).",
        UNAUTHENTICATED,
    )


def reviewer_only(actor: Actor, what: str) -> Decision:
    """A change any reviewer may make, and nobody else."""
    if actor.user is None:
        return _no_credentials(what)
    if not actor.is_reviewer:
        return _refuse(
            f"{what} is a reviewer's act and '{actor.user}' is not a reviewer; ask a reviewer "
            "(an admin grants the role with `POST /api/2.0/dxpipe/reviewers/grant`)."
        )
    return allow(f"{what} by reviewer '{actor.user}'")


def four_eyes(actor: Actor, what: str, authors: Iterable[str] | None) -> Decision:
    """A reviewer's approval of a version: a reviewer who is not one of its authors.

    Args:
        actor: The requester.
        what: The change, for messages ("setting alias 'champion' on 'wdbc' version 3").
        authors: The authenticated creators of the version and of its run, as recorded by the server;
            None or empty when the server never recorded them.

    Returns:
        The decision.
    """
    decision = reviewer_only(actor, what)
    if not decision.allowed:
        return decision
    known = {normalize(a) for a in authors or () if a}
    if not known:
        return _refuse(
            f"{what}: the server has no record of who created this version or its run (registered "
            "before dxpipe's server app recorded authors), so the four-eyes rule cannot be checked; "
            "re-register it through this server."
        )
    if normalize(actor.user or "") in known:
        return _refuse(
            f"{what}: reviewer '{actor.user}' is an author of this version (authors: "
            f"{', '.join(sorted(known))}); a second person must approve (four-eyes rule)."
        )
    return allow(f"{what} by reviewer '{actor.user}', not an author ({', '.join(sorted(known))})")


def set_alias(
    actor: Actor, alias: str, what: str, authors: Iterable[str] | None, approved_by: str | None = None
) -> Decision:
    """Setting an alias on a version: only `champion` is guarded; its look-alikes are refused.

    Args:
        actor: The requester.
        alias: The alias as sent.
        what: The change, for messages.
        authors: The version's recorded authors (see `four_eyes`).
        approved_by: Who approved this version as champion earlier, through this server (four-eyes held
            then), or None. Putting `champion` back on it is a rollback or a repair: any reviewer may,
            even one of its authors (rollback is the emergency brake), but nobody else.

    Returns:
        The decision.
    """
    if not is_champion_like(alias):
        return unguarded(f"{what}: alias '{alias}' is not protected")
    if alias != CHAMPION:
        return _refuse(
            f"{what}: alias {alias!r} imitates '{CHAMPION}'; use '{CHAMPION}' itself or another name."
        )
    decision = four_eyes(actor, what, authors)
    if decision.allowed or approved_by is None or not reviewer_only(actor, what).allowed:
        return decision
    return Decision(
        True,
        f"{what}: restoring a version '{approved_by}' approved earlier (four-eyes held then), by reviewer "
        f"'{actor.user}'",
        200,
        restores=True,
    )


def delete_alias(actor: Actor, alias: str, what: str) -> Decision:
    """Removing an alias: removing `champion` takes the model out of production, a reviewer's act."""
    if not is_champion_like(alias):
        return unguarded(f"{what}: alias '{alias}' is not protected")
    return reviewer_only(actor, what)


def version_tag_change(actor: Actor, key: str, what: str, authors: Iterable[str] | None) -> Decision:
    """Setting or deleting a tag on an existing model version."""
    kind = version_tag_kind(key)
    if kind is TagKind.FREE:
        return unguarded(f"{what}: tag '{key}' is not protected")
    if actor.user is None:
        return _no_credentials(what)
    if kind is TagKind.AUTHOR:
        return _refuse(
            f"{what}: '{AUTHOR_TAG}' is written by the server from the authenticated creator; nobody sets it."
        )
    if kind is TagKind.EVIDENCE:
        return _refuse(
            f"{what}: '{key}' is gate evidence, written once when the version is created; to change it, "
            "re-run the pipeline and register a new version."
        )
    return four_eyes(actor, what, authors)


def creation_tags(actor: Actor, keys: Iterable[str], what: str) -> Decision:
    """Tags sent with a new model version: evidence is welcome, an approval is not (nobody reviewed it yet)."""
    approvals = sorted(k for k in keys if version_tag_kind(k) is TagKind.APPROVAL)
    if approvals:
        return _refuse(
            f"{what}: approval tags ({', '.join(approvals)}) cannot be set when a version is created; a "
            "reviewer approves it afterwards (`dxpipe approve`)."
        )
    return allow(f"{what} by '{actor.user}'")


def run_tag_change(actor: Actor, keys: Iterable[str], what: str) -> Decision:
    """Setting or deleting run tags: the identity tags are the server's."""
    identity = sorted(
        k for k in keys if normalize(k) in RUN_IDENTITY_TAGS or normalize(k).startswith(AUTHOR_TAG + ".")
    )
    if not identity:
        return unguarded(f"{what}: no protected run tag")
    if actor.user is None:
        return _no_credentials(what)
    return _refuse(
        f"{what}: {', '.join(identity)} record(s) who created the run and are written by the server from the "
        "authenticated user; nobody changes them."
    )


def model_tag_change(actor: Actor, key: str, what: str) -> Decision:
    """Setting or deleting a registered-model tag: policy tags are reviewer-only."""
    if not normalize(key).startswith(MODEL_POLICY_PREFIXES):
        return unguarded(f"{what}: tag '{key}' is not protected")
    return reviewer_only(actor, what)
