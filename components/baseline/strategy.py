"""TFX shell of the baseline choice: a ResolverStrategy over ML Metadata artifacts.

Inputs (Resolver channels): `candidate` (the Trainer's model), `model` (every Model), `model_blessing`
(every ModelBlessing) and, when the runner knows the registry's champion, `champion` (an Importer's
output). Output: `model` holds the chosen baseline or nothing; the other keys pass through unchanged.

Kubeflow's v2 compiler accepts only TFX's two built-in strategies, so a compiled pipeline keeps
LatestBlessedModelStrategy (see `pipelines.pipeline.create_pipeline`).
"""

from __future__ import annotations

from tfx import types
from tfx.components.evaluator import constants
from tfx.dsl.components.common import resolver

from components.baseline.core import ModelRef, choose_baseline

CANDIDATE = "candidate"
CHAMPION = "champion"
MODEL = "model"
MODEL_BLESSING = "model_blessing"


def _ref(artifact: types.Artifact) -> ModelRef:
    return ModelRef(id=artifact.id, uri=artifact.uri)


class BaselineStrategy(resolver.ResolverStrategy):
    """The champion, else the latest blessed model, never the candidate itself (see `core`)."""

    def resolve_artifacts(self, store, input_dict: dict[str, list[types.Artifact]]):
        """Returns `input_dict` with `model` narrowed to the chosen baseline (or emptied)."""
        models = list(input_dict.get(MODEL, []))
        blessed_ids = {
            b.get_int_custom_property(constants.ARTIFACT_PROPERTY_CURRENT_MODEL_ID_KEY)
            for b in input_dict.get(MODEL_BLESSING, [])
            if b.get_int_custom_property(constants.ARTIFACT_PROPERTY_BLESSED_KEY) == 1
        }
        champions = input_dict.get(CHAMPION, [])
        chosen = choose_baseline(
            candidates=[_ref(a) for a in input_dict.get(CANDIDATE, [])],
            champion=_ref(champions[0]) if champions else None,
            models=[_ref(m) for m in models + list(champions)],
            blessed_model_ids=blessed_ids,
        )
        by_id = {a.id: a for a in models + list(champions)}
        return {**input_dict, MODEL: [by_id[chosen.id]] if chosen else []}
