"""`dxpipe approve | rollback | status | sync | policy | ui`: the reviewer's side of the model registry.

`register(subparsers)` adds the subcommands to the main `dxpipe` parser; each handler returns an exit
code. User errors are `DxpipeError`s: the main CLI prints them as one line and exits 2 (`main` here does
the same for running this module alone and for tests).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipelines.errors import DxpipeError
from pipelines.identity import Identity, current_identity, normalise_name
from pipelines.mlflow_store import DEFAULT_WORKDIR, TrackingConfig
from pipelines.redact import redact_uri


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML config file (its `tracking:` section and workdir are used)")
    parser.add_argument(
        "--workdir", help=f"working directory holding the embedded MLflow store (default {DEFAULT_WORKDIR})"
    )
    parser.add_argument(
        "--tracking-uri", help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else the embedded store)"
    )
    parser.add_argument(
        "--serving-root", help="root of the TF Serving model base paths (default <workdir>/serving)"
    )


def tracking_config(args: argparse.Namespace) -> TrackingConfig:
    """Builds the TrackingConfig from `--config` (when given) and the command-line overrides."""
    cfg = TrackingConfig()
    if getattr(args, "config", None):
        from pipelines.config import load_config

        full = load_config(args.config, workdir=getattr(args, "workdir", None))
        cfg = dataclasses.replace(
            TrackingConfig.from_dict(full.tracking),
            workdir=str(full.workdir),
            serving_root=str(full.serving_root),
        )
    overrides = {
        "workdir": getattr(args, "workdir", None),
        "tracking_uri": getattr(args, "tracking_uri", None),
        "serving_root": getattr(args, "serving_root", None),
    }
    return dataclasses.replace(cfg, **{k: v for k, v in overrides.items() if v})


def acting_identity(args: argparse.Namespace, cfg: TrackingConfig) -> Identity:
    """Who runs this command, from the tracking store; `--reviewer`, if given, must be that person."""
    identity = current_identity(cfg.resolved().tracking_uri)
    claimed = getattr(args, "reviewer", None)
    if claimed is not None and normalise_name(claimed) != identity.key:
        kind = (
            "authenticated by the MLflow server"
            if identity.authenticated
            else "the OS account running dxpipe"
        )
        raise DxpipeError(
            f"--reviewer {claimed!r} is not you: you are {identity.name!r} ({kind}). Reviewers are "
            "identified by the tracking store, not by a name typed on the command line; drop --reviewer, "
            "or run the command as that person."
        )
    return identity


def cmd_approve(args: argparse.Namespace) -> int:
    """Approves a version and promotes it to production."""
    from pipelines.promotion import approve

    cfg = tracking_config(args)
    record = approve(cfg, args.model, args.version, acting_identity(args, cfg), args.note, source="cli")
    previous = f" (replacing version {record.previous_champion})" if record.previous_champion else ""
    _out(
        f"approved '{record.model}' version {record.version}{previous} by {record.reviewer}: production now "
        f"serves it as version {record.production_version} (log entry {record.seq})."
    )
    if record.warning:
        _out(f"warning: {record.warning}")
    _print_card(cfg, record)
    return 0


def _print_card(cfg, record) -> None:
    """The approved version's model card: its digest (now in the log) and summary, from the evidence."""
    from pipelines.promotion.evidence import Evidence, evidence_path

    if not record.model_card_digest:
        return
    path = evidence_path(cfg.resolved().production_path(record.model), record.version)
    card = Evidence.from_json(path.read_bytes()).model_card or {}
    _out(
        f"model card {card.get('artifact_path', 'model_card')}/model_card.html, sha256 {record.model_card_digest}:"
    )
    for line in card.get("summary") or ():
        _out(f"  {line}")


def cmd_rollback(args: argparse.Namespace) -> int:
    """Restores the previous champion."""
    from pipelines.promotion import rollback

    cfg = tracking_config(args)
    record = rollback(cfg, args.model, acting_identity(args, cfg), args.note, source="cli")
    _out(
        f"rolled back '{record.model}' from version {record.previous_champion} to version {record.version}: "
        f"production now serves it as version {record.production_version} (log entry {record.seq})."
    )
    if record.warning:
        _out(f"warning: {record.warning}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """Shows champion, candidate, re-derived verdicts and what is served; exit 1 when inconsistent."""
    from pipelines.promotion.status import status, to_json

    report = status(tracking_config(args), args.model)
    _out(to_json(report) if args.json else report.render())
    return 0 if report.consistent else 1


def cmd_sync(args: argparse.Namespace) -> int:
    """Refuses a champion alias set outside dxpipe, repairs drift (once, or every --watch seconds)."""
    from pipelines.promotion import sync_ui_alias

    cfg = tracking_config(args)
    while True:
        result = sync_ui_alias(cfg, args.model)
        if result.action != "none" or not args.watch:
            _out(result.message)
        if not args.watch:
            return 2 if result.action == "refused" else 0
        time.sleep(args.watch)


def cmd_policy(args: argparse.Namespace) -> int:
    """Proposes a new pinned gate policy from a config, or accepts the pending proposal."""
    from pipelines.promotion.policy import PinnedPolicy
    from pipelines.promotion.service import accept_policy, propose_policy

    cfg = tracking_config(args)
    who = acting_identity(args, cfg)
    if args.accept:
        record = accept_policy(cfg, args.model, who, args.note)
        _out(
            f"'{args.model}': gate policy {record.policy_digest} (four_eyes {record.four_eyes}) is pinned from "
            f"now on, accepted by {record.reviewer} (log entry {record.seq})."
        )
        return 0
    if not args.config:
        raise DxpipeError("pass --config FILE with the new `gate:` policy to propose, or --accept.")
    from pipelines.config import load_config

    full = load_config(args.config, dataset=args.model, workdir=getattr(args, "workdir", None))
    gate = full.gate_policy()
    four_eyes = TrackingConfig.from_dict(full.tracking).four_eyes
    record = propose_policy(
        cfg, args.model, PinnedPolicy(gate.to_dict(), four_eyes, gate.digest()), who, args.note
    )
    _out(
        f"'{args.model}': gate policy {gate.digest()} (four_eyes {four_eyes}) proposed by {record.reviewer} (log "
        f"entry {record.seq}); it applies once another person runs `dxpipe policy {args.model} --accept`."
    )
    return 0


def ui_command(cfg: TrackingConfig, port: int) -> list[str]:
    """The `mlflow ui` command over the embedded store, bound to loopback only."""
    cfg = cfg.resolved()
    return [
        sys.executable,
        "-m",
        "mlflow",
        "ui",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--backend-store-uri",
        cfg.tracking_uri or "",
        # Experiments created from the UI keep their artifacts in the workdir too, not in the current directory.
        "--artifacts-destination",
        str(Path(cfg.workdir) / "mlartifacts"),
        "--workers",
        "1",
    ]


def cmd_ui(args: argparse.Namespace) -> int:
    """Replaces this process with the MLflow UI over the embedded store."""
    cfg = tracking_config(args).resolved()
    if not cfg.is_embedded:
        raise DxpipeError(
            f"tracking goes to the MLflow server at {redact_uri(cfg.tracking_uri)}; open that URL in a browser instead "
            "of `dxpipe ui`."
        )
    if not Path((cfg.tracking_uri or "").removeprefix("sqlite:///")).is_file():
        raise DxpipeError(
            f"no MLflow store at {cfg.tracking_uri} yet; run the pipeline first (`dxpipe run`) or pass "
            "--workdir."
        )
    command = ui_command(cfg, args.port)
    _out(f"MLflow UI on http://127.0.0.1:{args.port} over {cfg.tracking_uri} (Ctrl-C to stop)")
    # The UI needs no background job workers (several processes on a laptop) and sends no telemetry.
    os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.execv(command[0], command)
    return 0  # pragma: no cover - execv does not return


def register(subparsers: Any) -> None:
    """Adds `approve`, `rollback`, `status`, `sync`, `policy` and `ui` to the dxpipe subcommands."""
    p = subparsers.add_parser("approve", help="approve a gated registry version and promote it to production")
    p.add_argument("model", help="registered model name, e.g. wdbc")
    p.add_argument("version", help="registry version number")
    p.add_argument(
        "--reviewer",
        help="optional check: fail unless this is who the tracking store says you are (the reviewer is "
        "always that identity; it must differ from the run's author under the four-eyes rule)",
    )
    p.add_argument("--note", required=True, help="why this version may serve patients")
    _add_common(p)
    p.set_defaults(func=cmd_approve)

    p = subparsers.add_parser("rollback", help="restore the previous champion in production")
    p.add_argument("model")
    p.add_argument("--reviewer", help="optional check: fail unless this is who you are")
    p.add_argument("--note", required=True)
    _add_common(p)
    p.set_defaults(func=cmd_rollback)

    p = subparsers.add_parser("status", help="champion, candidate, gate verdicts and what is served")
    p.add_argument("model")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    _add_common(p)
    p.set_defaults(func=cmd_status)

    p = subparsers.add_parser(
        "sync", help="refuse a champion alias set outside dxpipe, finish interrupted promotions, repair drift"
    )
    p.add_argument("model")
    p.add_argument("--watch", type=float, default=0.0, metavar="SECONDS", help="repeat every SECONDS")
    _add_common(p)
    p.set_defaults(func=cmd_sync)

    p = subparsers.add_parser(
        "policy", help="propose a new pinned gate policy (from --config) or accept one (a second person)"
    )
    p.add_argument("model")
    p.add_argument("--accept", action="store_true", help="accept the pending proposal (not your own)")
    p.add_argument("--reviewer", help="optional check: fail unless this is who you are")
    p.add_argument("--note", required=True)
    _add_common(p)
    p.set_defaults(func=cmd_policy)

    p = subparsers.add_parser("ui", help="start the MLflow UI on 127.0.0.1 over the embedded store")
    p.add_argument("--port", type=int, default=5000)
    _add_common(p)
    p.set_defaults(func=cmd_ui)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs one registry subcommand (the same handling as the main `dxpipe` CLI)."""
    parser = argparse.ArgumentParser(prog="dxpipe")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except DxpipeError as err:
        sys.stderr.write(f"dxpipe: error: {err}\n")
        return 2


if __name__ == "__main__":
    sys.exit(main())
