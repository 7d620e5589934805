"""Hyperparameters of the tabular model: the model owns their type, the pipeline's config composes it.

Typed with pydantic (the library the pipeline's config model uses), so `pipelines.config` validates the
`training:` section by composing this type, with no second description of its fields.

`models/` imports nothing from `pipelines/` (see `.importlinter`): `pipelines.config` embeds `TrainingConfig`
as its `training:` section, and the Trainer rebuilds it from the `custom_config` the pipeline passes.
"""

from __future__ import annotations

from pydantic import ConfigDict, StrictBool, StrictFloat, StrictInt
from pydantic.dataclasses import dataclass

from schemas.errors import ConfigError

# Hyperparameters are typed strictly (no "3" for 3, no true for 1) and refuse unknown keys, so a typo in a
# config or in a Trainer's `custom_config` fails with the key's name instead of training something else.
# The ranges are checked in `__post_init__`, which pydantic runs after the types.
HPARAMS = ConfigDict(extra="forbid")


class HparamsError(ConfigError):
    """A hyperparameter is out of range; a `ConfigError`, so the CLI reports it as one line."""


def _check_range(name: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise HparamsError(f"{name} is {value}; it must be between {low} and {high}.")


@dataclass(frozen=True, config=HPARAMS)
class TrainingConfig:
    """Model and optimisation settings.

    Attributes:
        hidden_units: Widths of the hidden layers; empty means logistic regression on scaled features.
        dropout: Dropout rate after each hidden layer.
        l2: L2 penalty on the kernel weights.
        learning_rate: Adam learning rate.
        epochs: Maximum epochs; early stopping on the eval split usually ends sooner.
        batch_size: Mini-batch size.
        early_stopping_patience: Epochs without eval-loss improvement before stopping; the best epoch's
            weights are restored.
        operating_threshold: Probability at or above which `predicted_label` is 1.
        seed: Seed for weight initialisation and shuffling, so runs are reproducible.
        shuffle_labels: Train on permuted labels. Only for tests of the gates: it makes a useless model.
    """

    hidden_units: tuple[StrictInt, ...] = ()
    dropout: StrictFloat = 0.0
    l2: StrictFloat = 0.0
    learning_rate: StrictFloat = 0.05
    epochs: StrictInt = 300
    batch_size: StrictInt = 64
    early_stopping_patience: StrictInt = 20
    operating_threshold: StrictFloat = 0.5
    seed: StrictInt = 42
    shuffle_labels: StrictBool = False

    def __post_init__(self):
        _check_range("training.dropout", self.dropout, 0.0, 0.95)
        _check_range("training.operating_threshold", self.operating_threshold, 0.0, 1.0)
        for name in ("epochs", "batch_size", "early_stopping_patience"):
            if getattr(self, name) < 1:
                raise HparamsError(f"training.{name} is {getattr(self, name)}; it must be at least 1.")
        if self.learning_rate <= 0:
            raise HparamsError(f"training.learning_rate is {self.learning_rate}; it must be positive.")
        if self.l2 < 0:
            raise HparamsError(f"training.l2 is {self.l2}; it must be zero or positive.")
        if any(width < 1 for width in self.hidden_units):
            raise HparamsError(
                f"training.hidden_units is {list(self.hidden_units)}; every layer needs a width of at least 1."
            )
