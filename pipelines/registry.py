"""Registers each trained model as a version in the MLflow model registry and applies the gate.

One registered model per dataset and model (`wdbc`, `heart`, ...). A version is an MLflow Model (the
run's LoggedModel: a pyfunc flavor over the SavedModel's unchanged bytes, see `pipelines.mlflow_native`),
with its overall test metrics, its TFX lineage and the gate verdict, all as
tags set *in the same call that creates the version*: a version is never visible half-gated. A version
that fails gets `gate=failed` and one `gate.fail.<criterion>` tag per failed criterion and no alias; one
that passes gets `gate=passed` and the alias `candidate`. Promotion to `champion` is a reviewer's act
(`pipelines.promotion`). MLflow stages are deprecated and not used.

Non-inferiority compares against the current champion (alias `champion`), re-scored on the same test
split. Two sources qualify, checked in order:

1. The Evaluator's baseline model, when its SavedModel digest equals the champion's recorded digest
   (so the baseline *is* the champion, whatever the Evaluator's resolver picked).
2. The champion's recorded overall metrics, when its recorded test-split digest equals this run's:
   identical examples scored by the same model give the same metrics, so this is a re-score.

Otherwise the comparison fails, naming the fix (give the Evaluator the champion as baseline, e.g. with
an Importer of `champion_model_uri(...)`), rather than comparing with whatever the baseline happened to be.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from components.registry_gate.core import OVERALL, CriterionResult, GatePolicy, GateVerdict, evaluate_gate
from components.serving_pusher.core import PushError, saved_model_digest
from pipelines.errors import DxpipeError
from pipelines.mlflow_mlmd import PipelineOutputs, split_digest
from pipelines.mlflow_native import log_native_model, registry_resolves_models_uris
from pipelines.mlflow_store import (
    TrackingConfig,
    check_model_name,
    client_for,
    error_code,
    mlflow_errors,
    sanitize_key,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

    from pipelines.mlflow_tfma import Evaluation
    from pipelines.promotion.evidence import Evidence
    from pipelines.tflite_step import TFLiteResult
    from pipelines.tracking import Session, TrackedRun

_log = logging.getLogger(__name__)

CANDIDATE = "candidate"
CHAMPION = "champion"

TAG_GATE = "gate"
TAG_GATE_FAIL_PREFIX = "gate.fail."
TAG_GATE_FAILURES = "gate.failures"
TAG_GATE_POLICY = "gate.policy"
TAG_GATE_COMPARED = "gate.compared_with"
TAG_GATE_NOTES = "gate.notes"
TAG_GATE_VERDICT = "gate.verdict"
TAG_METRIC_PREFIX = "metric."
TAG_DIGEST = "model.digest"
TAG_AUTHOR = "dxpipe.author"
TAG_TEST_DIGEST = "data.test_digest"
TAG_TFX_RUN = "tfx.run_id"
TAG_TFX_MODEL_URI = "tfx.model_uri"
TAG_TFX_ROOT = "tfx.pipeline_root"
TAG_MLMD_EXECUTIONS = "mlmd.execution_ids"
TAG_STAGING_VERSION = "serving.staging_version"
TAG_MODEL_CARD = "model_card"
TAG_TFLITE = "tflite"


class RegistryError(DxpipeError):
    """The registry cannot do what was asked; the message names the model, the version and the fix."""


@dataclasses.dataclass(frozen=True)
class VersionView:
    """A model version as dxpipe reads it (the SQL store returns int versions, the REST API strings).

    Attributes:
        name: Registered model name.
        version: Version number, always a string.
        tags: The version's tags.
        run_id: The MLflow run that registered it.
        source: Where its artifacts live.
        aliases: Its aliases.
        description: Its description.
    """

    name: str
    version: str
    tags: Mapping[str, str]
    run_id: str | None
    source: str
    aliases: tuple[str, ...] = ()
    description: str = ""

    @classmethod
    def of(cls, mv: ModelVersion) -> VersionView:
        """Converts an MLflow ModelVersion."""
        return cls(
            name=mv.name,
            version=str(mv.version),
            tags=dict(mv.tags or {}),
            run_id=mv.run_id or None,
            source=mv.source or "",
            aliases=tuple(str(a) for a in (getattr(mv, "aliases", None) or ())),
            description=mv.description or "",
        )


@dataclasses.dataclass(frozen=True)
class RegisteredVersion:
    """A new registry version and its gate verdict.

    Attributes:
        name: Registered model name.
        version: Registry version number (MLflow versions are strings).
        verdict: The full gate verdict.
        failures: One message per failed criterion (empty when it passed).
        aliases: Aliases the version got (("candidate",) or ()).
        digest: Content digest of its SavedModel.
        compared_with: What non-inferiority compared against.
        reused: True when this run's model is an existing version (a cached re-run): nothing new was
            registered.
    """

    name: str
    version: str
    verdict: GateVerdict
    failures: tuple[str, ...]
    aliases: tuple[str, ...]
    digest: str
    compared_with: str
    reused: bool = False

    @property
    def passed(self) -> bool:
        """Whether the version passed the gate."""
        return self.verdict.passed


def ensure_registered_model(client: MlflowClient, name: str) -> None:
    """Creates the registered model if it does not exist (tolerating a concurrent creation)."""
    try:
        client.get_registered_model(name)
        return
    except Exception as exc:
        if error_code(exc) != "RESOURCE_DOES_NOT_EXIST":
            raise
    try:
        client.create_registered_model(
            name,
            tags={"dxpipe.model": name},
            description=(
                f"dxpipe diagnostic model '{name}'. Aliases: candidate (passed the gate), champion (served)."
            ),
        )
    except Exception as exc:
        if error_code(exc) != "RESOURCE_ALREADY_EXISTS":
            raise


def aliases_of(client: MlflowClient, name: str) -> dict[str, str]:
    """Returns {alias: version} of a registered model.

    Raises:
        RegistryError: If the model is not registered (listing the ones that are).
    """
    try:
        aliases = client.get_registered_model(name).aliases
        return {str(alias): str(version) for alias, version in aliases.items()}
    except Exception as exc:
        if error_code(exc) == "RESOURCE_DOES_NOT_EXIST":
            known = sorted(m.name for m in client.search_registered_models(max_results=100))
            listing = ", ".join(known) if known else "none yet"
            raise RegistryError(
                f"no registered model '{name}' (registered models: {listing}); check the name or run the "
                "pipeline first."
            ) from exc
        raise


def search_versions(client: MlflowClient, name: str) -> list[VersionView]:
    """Every version of a registered model, oldest first."""
    found = client.search_model_versions(f"name='{name}'")
    return sorted((VersionView.of(v) for v in found), key=lambda v: int(v.version))


def get_version(client: MlflowClient, name: str, version: str) -> VersionView:
    """Returns one model version.

    Raises:
        RegistryError: If the version does not exist (listing the ones that do).
    """
    aliases_of(client, name)
    if not str(version).isdigit():
        raise RegistryError(f"version {version!r} of '{name}' is not a version number; use e.g. 3.")
    try:
        return VersionView.of(client.get_model_version(name, str(int(version))))
    except Exception as exc:
        if error_code(exc) == "RESOURCE_DOES_NOT_EXIST":
            versions = [v.version for v in search_versions(client, name)]
            listing = ", ".join(versions) if versions else "none"
            raise RegistryError(
                f"'{name}' has no version {version} (versions: {listing}); see `dxpipe status {name}`."
            ) from exc
        raise


def champion_model_uri(cfg: TrackingConfig, model_name: str) -> str | None:
    """Returns the TFX Model artifact URI of the current champion, or None when there is no champion.

    For the pipeline: feed it to the Evaluator as `baseline_model` (through an Importer) so non-inferiority
    compares against the champion re-scored on this run's test split. Inside an open run use
    `run.call(..., champion_in_session, model_name)` instead, which asks the run's MLflow process.
    """
    cfg = cfg.resolved()
    return _champion_uri(cfg, client_for(cfg), model_name)


def champion_in_session(session: Session, model_name: str) -> str | None:
    """`champion_model_uri` for an open run (runs where MLflow lives, see `TrackedRun.call`)."""
    with session.timed("champion"):
        return _champion_uri(session.config, session.client, model_name)


def _champion_uri(cfg: TrackingConfig, client: MlflowClient, model_name: str) -> str | None:
    check_model_name(model_name)
    with mlflow_errors(cfg, f"reading the champion of '{model_name}'"):
        try:
            champion = aliases_of(client, model_name).get(CHAMPION)
        except RegistryError:
            return None
        if champion is None:
            return None
        return get_version(client, model_name, champion).tags.get(TAG_TFX_MODEL_URI) or None


def _paired_with(outputs: PipelineOutputs, champion_evidence: Evidence | None) -> bool:
    """Whether the run's baseline (the one the ClinicalEvaluator paired with) is the verified champion."""
    baseline_dir = outputs.baseline_saved_model_dir
    return bool(
        champion_evidence is not None
        and baseline_dir
        and Path(baseline_dir, "saved_model.pb").is_file()
        and saved_model_digest(baseline_dir) == champion_evidence.model_digest
    )


def _baseline_for(
    client: MlflowClient,
    name: str,
    champion: str | None,
    champion_evidence: Evidence | None,
    outputs: PipelineOutputs,
    evaluation: Evaluation | None,
    test_digest: str | None,
) -> tuple[Mapping[str, Mapping[str, float]] | None, str]:
    if champion is None:
        return None, "none (no champion yet)"
    if champion_evidence is None:
        # The champion's tags are editable; without its verified evidence nothing stands for its scores.
        return None, f"champion version {champion}: its evidence cannot be verified"
    baseline_dir = outputs.baseline_saved_model_dir
    if (
        evaluation is not None
        and evaluation.baseline
        and baseline_dir
        and Path(baseline_dir, "saved_model.pb").is_file()
        and saved_model_digest(baseline_dir) == champion_evidence.model_digest
    ):
        return (
            evaluation.baseline,
            f"champion version {champion}, re-scored by the Evaluator on this test split",
        )
    if test_digest and champion_evidence.test_digest == test_digest:
        return (
            champion_evidence.candidate,
            f"champion version {champion}, its recorded metrics on an identical test split ({test_digest})",
        )
    return None, f"champion version {champion}: not re-scored on this test split"


def _fmt_metric(value: float) -> str:
    return repr(float(value))


def register_and_gate(
    run: TrackedRun,
    outputs: PipelineOutputs,
    gate_policy: GatePolicy,
    *,
    model_name: str,
    evaluation: Evaluation | None = None,
    card_context: Mapping[str, Any] | None = None,
    tflite: TFLiteResult | None = None,
) -> RegisteredVersion:
    """Registers the run's SavedModel as a new version, gates it and tags it with the verdict.

    Args:
        run: The open MLflow run of this pipeline run.
        outputs: The TFX run's outputs.
        gate_policy: The gate policy.
        model_name: Registered model name (one per dataset and model, e.g. "wdbc").
        evaluation: The TFMA evaluation; by default the one `log_pipeline_outputs` loaded, else loaded here.
        card_context: What the model card needs from the config (`pipelines.model_card.facts.gather`).
        tflite: The run's TFLite export (`pipelines.tflite_step.export_for_run`): its passing variants
            and parity report are attached to the version.

    Returns:
        The new version with its verdict. A failing version is registered too (with its reasons): the
        registry is the record of every trained model, and "can't be approved" is enforced at approval.

    Raises:
        RegistryError: If the run produced no SavedModel.
        TrackingError: If MLflow cannot be reached; no version is created then, or it is complete.
    """
    from pipelines.tracking import load_run_evaluation

    check_model_name(model_name)
    notes: list[str] = []
    if evaluation is None:
        evaluation, problem = load_run_evaluation(run, outputs)
        if problem:
            notes.append(problem)
    if evaluation is None and not notes:
        notes.append(f"TFX run {outputs.tfx_run_id} has no Evaluator output; every metric criterion fails.")
    return run.call(
        "register",
        f"registering a version of '{model_name}'",
        register_in_session,
        outputs,
        gate_policy,
        model_name,
        evaluation,
        tuple(notes),
        card_context,
        tflite,
    )


def register_in_session(
    session: Session,
    outputs: PipelineOutputs,
    gate_policy: GatePolicy,
    model_name: str,
    evaluation: Evaluation | None,
    notes: tuple[str, ...],
    card_context: Mapping[str, Any] | None = None,
    tflite: TFLiteResult | None = None,
) -> RegisteredVersion:
    """The MLflow side of `register_and_gate` (runs where MLflow lives).

    Under the model's promotion lock: the policy pinned at the model's first registration governs (a
    config that differs is noted, not obeyed); the version is created with its verdict tags in one call;
    its evidence is written once and its digest appended to the hash-chained promotion log.
    """
    from pipelines.clinical_report import ClinicalReportError, for_gate, load_clinical
    from pipelines.promotion import journal
    from pipelines.promotion.audit_log import LOG_NAME, PromotionLog
    from pipelines.promotion.evidence import Evidence, load_verified, optional_digest, write_evidence
    from pipelines.promotion.pinned import pinned_policy

    cfg = session.config
    saved_model = outputs.saved_model_dir
    if saved_model is None or not Path(saved_model, "saved_model.pb").is_file():
        raise RegistryError(
            f"TFX run {outputs.tfx_run_id} produced no SavedModel (looked for {saved_model}/saved_model.pb); "
            f"nothing to register for '{model_name}'. Check the Trainer's logs."
        )
    try:
        digest = saved_model_digest(saved_model)
    except PushError as exc:
        raise RegistryError(str(exc)) from exc
    candidate = evaluation.candidate if evaluation is not None else {}
    test_digest = split_digest(outputs.examples_uri, cfg.test_split)
    base = cfg.production_path(model_name)
    log = PromotionLog(base / LOG_NAME)

    client = session.client
    with (
        session.timed("register"),
        journal.promotion_lock(base),
        mlflow_errors(cfg, f"registering a version of '{model_name}'"),
    ):
        records = log.records()
        pinned = pinned_policy(_PinnedCtx(model_name, base), records)
        four_eyes = cfg.four_eyes
        if pinned is not None:
            if pinned.digest != gate_policy.digest() or pinned.four_eyes != cfg.four_eyes:
                notes = (
                    *notes,
                    f"the config's gate policy ({gate_policy.digest()}, four_eyes {cfg.four_eyes}) differs "
                    f"from the one pinned for '{model_name}' at its first registration ({pinned.digest}, "
                    f"four_eyes {pinned.four_eyes}); the pinned one applies.",
                )
            gate_policy, four_eyes = pinned.gate_policy(), pinned.four_eyes
        ensure_registered_model(client, model_name)
        champion = aliases_of(client, model_name).get(CHAMPION)
        champion_evidence = None if champion is None else load_verified(base, champion, records).evidence
        baseline, compared_with = _baseline_for(
            client, model_name, champion, champion_evidence, outputs, evaluation, test_digest
        )
        try:
            clinical = for_gate(load_clinical(outputs.clinical_uri), _paired_with(outputs, champion_evidence))
        except ClinicalReportError as exc:
            # Unreadable is absent: the gate's clinical criteria then fail, each with its reason.
            clinical, notes = None, (*notes, str(exc))
        verdict = evaluate_gate(
            gate_policy,
            candidate,
            baseline=baseline,
            champion=None if champion is None else f"version {champion}",
            blessed=outputs.blessed,
            clinical=clinical,
        )
        verdict = dataclasses.replace(verdict, notes=tuple(notes) + verdict.notes)

        # A cached re-run hands over the same SavedModel: gated under the same policy against the same
        # champion, it is the same registry version, not a new one. The champion itself re-run after its
        # approval is the champion, not a new candidate for reviewers to approve a second time.
        same = _identical_version(client, model_name, digest, gate_policy.digest(), compared_with)
        if (
            same is None
            and champion is not None
            and champion_evidence is not None
            and champion_evidence.model_digest == digest
            and champion_evidence.policy_digest == gate_policy.digest()
        ):
            same = get_version(client, model_name, champion)
        if same is not None and load_verified(base, same.version, records).evidence is not None:
            session.set_tags(
                {"registry.model": model_name, "registry.version": same.version, "registry.reused": "true"}
            )
            return dataclasses.replace(_registered_from_tags(same), reused=True)

        client.log_dict(
            session.run_id,
            {**verdict.to_dict(), "policy": gate_policy.to_dict(), "compared_with": compared_with},
            "gate/verdict.json",
        )
        session.set_tags({TAG_GATE: "passed" if verdict.passed else "failed", TAG_DIGEST: digest})

        tags = _version_tags(
            session, outputs, gate_policy, verdict, compared_with, digest, test_digest, candidate
        )
        failures = tuple(f.message for f in verdict.failures)
        # The version is an MLflow Model (pyfunc over the same SavedModel bytes) logged as the run's
        # LoggedModel, with its metrics, datasets, plots and the reviewer's report as its description.
        with session.timed("native_model"):
            native = log_native_model(
                session,
                outputs,
                model_name=model_name,
                verdict=verdict,
                compared_with=compared_with,
                candidate=candidate,
                champion=None if baseline is None else baseline.get(OVERALL),
                digest=digest,
                test_digest=test_digest,
            )
        # One call creates the version with its verdict: it is never visible un-gated.
        with registry_resolves_models_uris(client):
            created = client.create_model_version(
                model_name,
                native.source,
                run_id=session.run_id,
                tags=tags,
                description=native.description,
                await_creation_for=60,
                model_id=native.model_id,
            )
        number = str(created.version)
        # The card is logged before the evidence records its digest: a crash in between leaves a version
        # without evidence, which is never approvable (as for any registration cut short).
        with session.timed("model_card"):
            card = _model_card(
                session, outputs, evaluation, card_context, model_name, number, digest, verdict, gate_policy,
                compared_with,
            )  # fmt: skip
            tflite_record = _attach_tflite(session, tflite)
            # Display only (the evidence holds the digests): where a reader of the version page finds them.
            for key, value in _attachment_tags(card, tflite_record).items():
                client.set_model_version_tag(model_name, number, key, value)
        evidence = Evidence(
            model=model_name,
            version=number,
            run_id=session.run_id,
            tfx_run_id=outputs.tfx_run_id,
            author=session.author,
            author_authenticated=session.author_authenticated,
            author_source=session.author_source,
            model_digest=digest,
            policy=gate_policy.to_dict(),
            policy_digest=gate_policy.digest(),
            four_eyes=four_eyes,
            candidate={k: dict(v) for k, v in candidate.items()},
            baseline=None if baseline is None else {k: dict(v) for k, v in baseline.items()},
            champion=champion,
            compared_with=compared_with,
            blessed=outputs.blessed,
            evaluation_uri=outputs.evaluation_uri,
            evaluation_digest=optional_digest(outputs.evaluation_uri),
            blessing_uri=outputs.blessing_uri,
            blessing_digest=optional_digest(outputs.blessing_uri),
            test_digest=test_digest,
            passed=verdict.passed,
            failures=tuple(f.criterion for f in verdict.failures),
            display_tags=_display_tags(tags),
            registered_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds"),
            clinical=clinical,
            clinical_uri=outputs.clinical_uri,
            clinical_digest=optional_digest(outputs.clinical_uri),
            model_card=card,
            tflite=tflite_record,
        )
        evidence_digest = write_evidence(base, evidence)
        log.append(
            event="register",
            model=model_name,
            version=number,
            reviewer=session.author,
            reviewer_authenticated=session.author_authenticated,
            source="pipeline",
            author=session.author,
            digest=digest,
            gate="passed" if verdict.passed else "failed",
            metrics=_finite(candidate.get(OVERALL, {})),
            four_eyes=four_eyes,
            policy_digest=gate_policy.digest(),
            evidence_digest=evidence_digest,
            reason=f"run {session.run_id}, TFX run {outputs.tfx_run_id}",
        )
        aliases: tuple[str, ...] = ()
        if verdict.passed:
            client.set_registered_model_alias(model_name, CANDIDATE, number)
            aliases = (CANDIDATE,)
        session.set_tags({"registry.model": model_name, "registry.version": number})
    return RegisteredVersion(model_name, number, verdict, failures, aliases, digest, compared_with)


def _model_card(
    session: Session,
    outputs: PipelineOutputs,
    evaluation: Evaluation | None,
    card_context: Mapping[str, Any] | None,
    model_name: str,
    number: str,
    digest: str,
    verdict: GateVerdict,
    policy: GatePolicy,
    compared_with: str,
) -> dict[str, Any] | None:
    """Builds the version's model card from the run's artifacts and logs it; returns its evidence record.

    A card that cannot be built leaves the version without one (logged): it is then refused at approval,
    which is the safe direction, while the registration itself (the record of every model) still happens.
    """
    from google.protobuf.message import DecodeError
    from google.protobuf.text_format import ParseError

    from pipelines.model_card import attach, facts

    try:
        card_facts = facts.gather(outputs, evaluation, context=card_context)
        card_facts["model"] = {
            "name": model_name,
            "version": number,
            "digest": digest,
            "registered_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "author": session.author,
            "run_id": session.run_id,
            "tfx_run_id": outputs.tfx_run_id,
        }
        card_facts["gate"] = {
            "passed": verdict.passed,
            "failures": [f.message for f in verdict.failures],
            "policy_digest": policy.digest(),
            "compared_with": compared_with,
        }
        return attach.log_card(session.client, session.run_id, attach.build(card_facts))
    except (OSError, ValueError, KeyError, TypeError, DecodeError, ParseError) as exc:
        _log.warning("no model card for '%s' version %s: %s", model_name, number, exc)
        return None


def _attach_tflite(session: Session, tflite: TFLiteResult | None) -> dict[str, Any] | None:
    """Logs the TFLite export (passing variants and the parity report) under `tflite/` of the run."""
    import hashlib

    from pipelines.tflite_step import evidence_record

    if tflite is None or tflite.directory is None or tflite.report is None:
        return None
    directory = Path(tflite.directory)
    files = {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir()) if p.is_file()
    }
    session.client.log_artifacts(session.run_id, str(directory), "tflite")
    return evidence_record(tflite, files)


def _attachment_tags(card: Mapping[str, Any] | None, tflite: Mapping[str, Any] | None) -> dict[str, str]:
    tags = {}
    if card:
        tags[TAG_MODEL_CARD] = f"run artifacts model_card/model_card.html (sha256 {card['digest']})"
    if tflite:
        exported = ", ".join(tflite.get("exported") or ()) or "none (parity failed)"
        tags[TAG_TFLITE] = f"run artifacts tflite/: {exported}; parity on {tflite.get('rows')} test rows"
    return tags


@dataclasses.dataclass
class _PinnedCtx:
    """The two fields `pinned_policy` reads (registration has no promotion context)."""

    model: str
    base: Path


def _finite(values: Mapping[str, float]) -> dict[str, float]:
    return {k: float(v) for k, v in values.items() if v is not None and math.isfinite(float(v))}


# The version tags that display the evidence; changing or deleting one is reported as tampering.
_DISPLAY_KEYS = (TAG_GATE, TAG_GATE_FAILURES, TAG_GATE_POLICY, TAG_GATE_VERDICT, TAG_DIGEST, TAG_AUTHOR)


def _display_tags(tags: Mapping[str, str]) -> dict[str, str]:
    return {
        k: v
        for k, v in tags.items()
        if k in _DISPLAY_KEYS or k.startswith((TAG_GATE_FAIL_PREFIX, TAG_METRIC_PREFIX))
    }


def _identical_version(
    client: MlflowClient, name: str, digest: str, policy_digest: str, compared_with: str
) -> VersionView | None:
    for version in reversed(search_versions(client, name)):
        tags = version.tags
        if (
            tags.get(TAG_DIGEST) == digest
            and tags.get(TAG_GATE_POLICY) == policy_digest
            and tags.get(TAG_GATE_COMPARED) == compared_with
            and TAG_GATE_VERDICT in tags
        ):
            return get_version(client, name, version.version)  # search results carry no aliases
    return None


def _registered_from_tags(version: VersionView) -> RegisteredVersion:
    recorded = json.loads(version.tags[TAG_GATE_VERDICT])
    verdict = GateVerdict(
        tuple(CriterionResult(**r) for r in recorded["results"]), tuple(recorded.get("notes", ()))
    )
    return RegisteredVersion(
        version.name,
        version.version,
        verdict,
        tuple(f.message for f in verdict.failures),
        version.aliases,
        version.tags[TAG_DIGEST],
        version.tags.get(TAG_GATE_COMPARED, ""),
    )


def _version_tags(
    session: Session,
    outputs: PipelineOutputs,
    policy: GatePolicy,
    verdict: GateVerdict,
    compared_with: str,
    digest: str,
    test_digest: str | None,
    candidate: Mapping[str, Mapping[str, float]],
) -> dict[str, str]:
    tags: dict[str, str] = {
        TAG_GATE: "passed" if verdict.passed else "failed",
        TAG_GATE_FAILURES: str(len(verdict.failures)),
        TAG_GATE_POLICY: policy.digest(),
        TAG_GATE_COMPARED: compared_with,
        TAG_GATE_VERDICT: json.dumps(verdict.to_dict(), sort_keys=True),
        TAG_DIGEST: digest,
        TAG_AUTHOR: session.author,
        TAG_TFX_RUN: outputs.tfx_run_id,
        TAG_TFX_MODEL_URI: outputs.model_uri or "",
        TAG_MLMD_EXECUTIONS: json.dumps(dict(outputs.execution_ids), sort_keys=True),
        "mlflow.run_id": session.run_id,
    }
    if outputs.model_uri:
        tags[TAG_TFX_ROOT] = str(Path(outputs.model_uri).parents[2])
    if verdict.notes:
        tags[TAG_GATE_NOTES] = " | ".join(verdict.notes)
    if test_digest:
        tags[TAG_TEST_DIGEST] = test_digest
    if outputs.pushed and outputs.pushed_version:
        tags[TAG_STAGING_VERSION] = outputs.pushed_version
    for failure in verdict.failures:
        tags[sanitize_key(TAG_GATE_FAIL_PREFIX + failure.criterion)] = failure.message
    for name, value in candidate.get(OVERALL, {}).items():
        if value is not None and math.isfinite(value):
            tags[sanitize_key(TAG_METRIC_PREFIX + name)] = _fmt_metric(value)
    return tags
