"""Which model a candidate is compared against: the champion, else the latest blessed model, never itself.

Pure logic on artifact ids and URIs; the TFX shell (`strategy.py`) reads them from ML Metadata.

Why never itself: a re-run whose Trainer hit the cache has the previous run's model as its candidate,
and that model was blessed by the previous run. TFX's LatestBlessedModelStrategy returns it as the
baseline, so the Evaluator's inputs change (baseline none -> the candidate), it misses the cache,
spends a full TFMA run comparing the model with itself (a zero change always passes) and the Pusher
behind it re-runs too. Skipping the candidate gives the re-run the same baseline the first run had.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable


@dataclasses.dataclass(frozen=True)
class ModelRef:
    """A Model artifact as the choice needs it.

    Attributes:
        id: ML Metadata artifact id (later artifacts have larger ids).
        uri: Where the SavedModel directory lives.
    """

    id: int
    uri: str


def _same(a: ModelRef, b: ModelRef) -> bool:
    # An Importer re-registers a known URI as the existing artifact, but compare URIs too: the champion
    # may have been imported into another metadata store, where its id means nothing.
    return a.id == b.id or a.uri.rstrip("/") == b.uri.rstrip("/")


def choose_baseline(
    *,
    candidates: Iterable[ModelRef],
    champion: ModelRef | None,
    models: Iterable[ModelRef],
    blessed_model_ids: Iterable[int],
) -> ModelRef | None:
    """Returns the baseline for this run's candidate, or None to evaluate without one.

    Args:
        candidates: This run's trained model (one; empty if the Trainer produced none).
        champion: The registry's production model, if the runner knows it.
        models: Every Model artifact of the pipeline.
        blessed_model_ids: Ids of models some Evaluator blessed.

    Returns:
        The champion unless it is the candidate; otherwise the most recent blessed model that is not
        the candidate; None if there is none.
    """
    own = list(candidates)

    def is_candidate(model: ModelRef) -> bool:
        return any(_same(model, c) for c in own)

    if champion is not None and not is_candidate(champion):
        return champion
    blessed = set(blessed_model_ids)
    for model in sorted(models, key=lambda m: m.id, reverse=True):
        if model.id in blessed and not is_candidate(model):
            return model
    return None
