"""Attaches the model card to a version at registration and checks it at approval.

At registration the card (Markdown, HTML and the facts it was rendered from) is logged to the version's
MLflow run under `model_card/`, and what was logged is recorded in the write-once evidence: the
SHA-256 of each file, the card's digest (that of the Markdown) and its summary. An approval downloads
the files from MLflow again, whatever store holds them, and refuses when one is missing or its bytes
differ: a reviewer approves the card that was generated from the run, not a file someone edited since.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipelines.model_card import render

ARTIFACT_DIR = "model_card"
MARKDOWN = "model_card.md"
HTML = "model_card.html"
FACTS = "facts.json"


@dataclasses.dataclass(frozen=True)
class Card:
    """A rendered card.

    Attributes:
        markdown: The Markdown text.
        html: The HTML page.
        facts: The canonical JSON of the facts it was rendered from.
        summary: The reviewer's summary lines.
    """

    markdown: str
    html: str
    facts: str
    summary: tuple[str, ...]

    def files(self) -> dict[str, bytes]:
        """File name -> bytes, as logged."""
        return {
            MARKDOWN: self.markdown.encode(),
            HTML: self.html.encode(),
            FACTS: self.facts.encode(),
        }

    def record(self) -> dict[str, Any]:
        """What the evidence records: where the card is, each file's SHA-256, the card digest, the summary."""
        files = {name: hashlib.sha256(raw).hexdigest() for name, raw in self.files().items()}
        return {
            "artifact_path": ARTIFACT_DIR,
            "digest": files[MARKDOWN],
            "files": files,
            "summary": list(self.summary),
        }


def build(facts: Mapping[str, Any]) -> Card:
    """Renders a card from complete facts (those of `facts.gather` plus "model" and "gate")."""
    sections = render.document(facts)
    return Card(
        markdown=render.to_markdown(sections),
        html=render.to_html(sections),
        facts=json.dumps(facts, sort_keys=True, indent=1, default=str),
        summary=render.summary(facts),
    )


def log_card(client: Any, run_id: str, card: Card) -> dict[str, Any]:
    """Logs the card's files to the run under `model_card/` and returns `card.record()`."""
    with tempfile.TemporaryDirectory(prefix="dxpipe-card-") as tmp:
        for name, raw in card.files().items():
            Path(tmp, name).write_bytes(raw)
        client.log_artifacts(run_id, tmp, ARTIFACT_DIR)
    return card.record()


def card_problems(client: Any, run_id: str, recorded: Mapping[str, Any] | None, who: str) -> list[str]:
    """Every way the card logged for a version differs from what its evidence recorded.

    Args:
        client: An MlflowClient of the tracking store.
        run_id: The run the evidence says registered the version (never the registry's editable link).
        recorded: The evidence's `model_card` record, None for a version registered without a card.
        who: "'model' version N", for the messages.

    Returns:
        One sentence per problem, each naming the file and the fix; empty when the card is intact.
    """
    if not recorded:
        return [
            f"{who} has no model card: it was registered before dxpipe attached cards, so there is no "
            "reviewed summary of its data, metrics and intended use to approve. Re-run the pipeline to "
            "register it with a card"
        ]
    path = str(recorded.get("artifact_path") or ARTIFACT_DIR)
    files = dict(recorded.get("files") or {})
    problems = []
    with tempfile.TemporaryDirectory(prefix="dxpipe-card-check-") as tmp:
        try:
            local = Path(client.download_artifacts(run_id, path, tmp))
        except Exception as exc:  # noqa: BLE001 - every store error means the same: the card cannot be read.
            local = None
            reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            problems.append(
                f"the model card of {who} (run {run_id}, artifacts '{path}/') cannot be read ({reason}): it was "
                "deleted after registration. A card cannot be re-attached to a version; re-run the pipeline "
                "to register a new version with its card"
            )
        if local is not None:
            for name, digest in sorted(files.items()):
                file = local / name
                if not file.is_file():
                    problems.append(
                        f"the model card file '{path}/{name}' of {who} (run {run_id}) was deleted after "
                        "registration; re-run the pipeline to register a new version with its card"
                    )
                elif hashlib.sha256(file.read_bytes()).hexdigest() != digest:
                    problems.append(
                        f"the model card file '{path}/{name}' of {who} (run {run_id}) was changed after "
                        f"registration (recorded SHA-256 {digest[:12]}…): the card is stale or edited, so it "
                        "is not the one generated from the run; re-run the pipeline to register a new version"
                    )
    return problems
