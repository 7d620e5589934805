"""TFX shell of the serving pusher: publish a blessed model's SavedModel, record where it went."""

import os

from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types import standard_artifacts

from components.serving_pusher import core

_SERVING_DIR = "Format-Serving"  # Where the Trainer writes the SavedModel inside the Model artifact.


@component
def ServingPusher(
    model: InputArtifact[standard_artifacts.Model],
    model_blessing: InputArtifact[standard_artifacts.ModelBlessing],
    pushed_model: OutputArtifact[standard_artifacts.PushedModel],
    base_path: Parameter[str],
) -> None:
    """Publishes the model to `<base_path>/<version>/` unless the latest version is identical.

    The pipeline guards this component with `tfx.dsl.Cond` on the blessing; the check here is a second
    line of defence, so that a mis-wired pipeline still cannot push an unblessed model.

    Args:
        model: The trained model.
        model_blessing: The Evaluator's verdict on it.
        pushed_model: Records the version, destination and content digest.
        base_path: The TF Serving model base path.
    """
    if model_blessing.get_int_custom_property("blessed") != 1:
        raise core.PushError(f"model {model.uri} is not blessed; refusing to push it to {base_path}.")
    result = core.publish_version(os.path.join(model.uri, _SERVING_DIR), base_path)
    pushed_model.set_int_custom_property("pushed", 1)
    pushed_model.set_int_custom_property("pushed_version", result.version)
    pushed_model.set_string_custom_property("pushed_destination", result.path)
    pushed_model.set_string_custom_property("digest", result.digest)
    pushed_model.set_int_custom_property("written", int(result.written))
