"""Hyperparameters of the image CNN; the model owns their type, the pipeline's config composes it."""

from __future__ import annotations

from pydantic import StrictBool, StrictFloat, StrictInt, StrictStr
from pydantic.dataclasses import dataclass

from models.hparams import HPARAMS, HparamsError

# Encodings a serving request or an example may carry, by the name the config and error messages use.
IMAGE_FORMATS = ("png", "jpeg")


@dataclass(frozen=True, config=HPARAMS)
class CnnConfig:
    """The CNN's architecture and training settings.

    Attributes:
        input_size: Side of the square grayscale image the network sees; every input image is
            converted to grayscale and resized (area averaging) to it inside the model.
        filters: Filters of each stage (two 3x3 convolutions, batch norm, ReLU, then 2x2 max pooling).
        dropout: Dropout before the output unit.
        label_smoothing: Targets move this far towards 0.5 (0 and 1 become 0.05 and 0.95 at 0.1): the
            network is not pushed to certainty on 28-pixel images whose labels come from a whole study.
        learning_rate: Adam's initial learning rate (halved when the eval loss plateaus).
        epochs: Maximum epochs; early stopping on the eval split's loss usually ends sooner.
        batch_size: Mini-batch size.
        early_stopping_patience: Epochs without eval-loss improvement before stopping; the best epoch's
            weights are kept.
        augment: Random shifts, rotations, zoom and contrast on the training split only (see
            `models.image.network.build_augmenter`).
        class_weighting: `balanced` weighs each class by the inverse of its training frequency, so the
            model's probabilities assume a 50/50 prior rather than the training split's prevalence;
            `none` trains on the raw frequencies.
    """

    input_size: StrictInt = 28
    filters: tuple[StrictInt, ...] = (16, 32, 64)
    dropout: StrictFloat = 0.5
    label_smoothing: StrictFloat = 0.1
    learning_rate: StrictFloat = 0.001
    epochs: StrictInt = 30
    batch_size: StrictInt = 128
    early_stopping_patience: StrictInt = 6
    augment: StrictBool = True
    class_weighting: StrictStr = "balanced"

    def __post_init__(self):
        if self.input_size < 8:
            raise HparamsError(f"image.model.input_size is {self.input_size}; it must be at least 8.")
        if not self.filters or min(self.filters) < 1:
            raise HparamsError(
                f"image.model.filters is {list(self.filters)}; give at least one positive width."
            )
        if self.input_size >> len(self.filters) < 1:
            raise HparamsError(
                f"image.model.filters has {len(self.filters)} stages, too many for input_size "
                f"{self.input_size} (each halves it); remove stages or raise input_size."
            )
        if not 0.0 <= self.dropout < 1.0:
            raise HparamsError(f"image.model.dropout is {self.dropout}; it must be in [0, 1).")
        if not 0.0 <= self.label_smoothing < 0.5:
            raise HparamsError(
                f"image.model.label_smoothing is {self.label_smoothing}; it must be in [0, 0.5)."
            )
        for name in ("epochs", "batch_size", "early_stopping_patience"):
            if getattr(self, name) < 1:
                raise HparamsError(f"image.model.{name} is {getattr(self, name)}; it must be at least 1.")
        if self.learning_rate <= 0:
            raise HparamsError(f"image.model.learning_rate is {self.learning_rate}; it must be positive.")
        if self.class_weighting not in ("balanced", "none"):
            raise HparamsError(
                f"image.model.class_weighting is {self.class_weighting!r}; use 'balanced' or 'none'."
            )
