"""Typed, frozen, validated configuration for dxpipe.

One YAML file per environment (the packaged default is `pipelines/configs/default.yaml`) is loaded once
into frozen dataclasses. Unknown keys are refused with a "did you mean" hint and every value is type
checked, so a typo fails at load, before any component runs. Tests derive variants with
`dataclasses.replace`.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from components.registry_gate.core import GatePolicy
from models.calibration import CALIBRATIONS
from models.image.hparams import IMAGE_FORMATS, CnnConfig, HparamsError
from models.operating_point import OperatingPointError, OperatingPointSpec
from pipelines.errors import ConfigError
from pipelines.mlflow_store import TrackingConfig, check_model_name
from schemas.files import resolve_dir

DEFAULT_CONFIG = Path(__file__).with_name("configs") / "default.yaml"
# Paths in the config (schemas, CSVs) are relative to the project root, which is where the packaged
# config's schemas/ live; an explicit config file resolves them relative to its own directory instead.
PROJECT_ROOT = Path(__file__).resolve().parent.parent
# A label_map value that removes the row (e.g. an invalid or inconclusive test result).
LABEL_DROP = "drop"


def _hint(value: str, choices) -> str:
    close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _check_range(name: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise ConfigError(f"{name} is {value}; it must be between {low} and {high}.")


@dataclasses.dataclass(frozen=True)
class SourceConfig:
    """Where a dataset's rows come from.

    Attributes:
        kind: `sklearn` (a bundled scikit-learn loader), `package` (a CSV shipped inside an installed
            package), `csv` (a file of the user's) or `medmnist` (an official MedMNIST `.npz` file of
            images, for datasets of kind `image`).
        name: The scikit-learn loader, e.g. `load_breast_cancer` (kind `sklearn`).
        package: The installed package holding the CSV (kind `package`).
        resource: The CSV's path inside that package (kind `package`).
        path: The user's CSV file (kind `csv`) or the `.npz` file (kind `medmnist`); relative paths are
            relative to the config file (the packaged config: the project root).
        md5: The file's published MD5 (kind `medmnist`); it is verified before conversion.
        dir_env: An environment variable that, when set, names the directory holding the file instead
            of `path`'s directory (kind `medmnist`; e.g. `DXPIPE_MEDMNIST_DIR`).
    """

    kind: str
    name: str = ""
    package: str = ""
    resource: str = ""
    path: str = ""
    md5: str = ""
    dir_env: str = ""

    def __post_init__(self):
        required = {
            "sklearn": ("name",),
            "package": ("package", "resource"),
            "csv": ("path",),
            "medmnist": ("path", "md5"),
        }
        if self.kind not in required:
            raise ConfigError(
                f"source.kind is {self.kind!r}; use one of {sorted(required)}{_hint(self.kind, required)}."
            )
        for field in required[self.kind]:
            if not getattr(self, field):
                raise ConfigError(f"source.{field} is required when source.kind is {self.kind!r}.")


@dataclasses.dataclass(frozen=True)
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

    hidden_units: tuple[int, ...] = ()
    dropout: float = 0.0
    l2: float = 0.0
    learning_rate: float = 0.05
    epochs: int = 300
    batch_size: int = 64
    early_stopping_patience: int = 20
    operating_threshold: float = 0.5
    seed: int = 42
    shuffle_labels: bool = False

    def __post_init__(self):
        _check_range("training.dropout", self.dropout, 0.0, 0.95)
        _check_range("training.operating_threshold", self.operating_threshold, 0.0, 1.0)
        for name in ("epochs", "batch_size", "early_stopping_patience"):
            if getattr(self, name) < 1:
                raise ConfigError(f"training.{name} is {getattr(self, name)}; it must be at least 1.")
        if self.learning_rate <= 0:
            raise ConfigError(f"training.learning_rate is {self.learning_rate}; it must be positive.")


@dataclasses.dataclass(frozen=True)
class EvaluationConfig:
    """Blessing thresholds for TFMA on the test split.

    Attributes:
        min_auc: Lowest acceptable ROC AUC.
        min_accuracy: Lowest acceptable accuracy at the operating threshold.
        min_recall: Lowest acceptable sensitivity at the operating threshold.
        min_specificity: Lowest acceptable specificity at the operating threshold.
        max_auc_drop: Largest AUC drop tolerated against the latest blessed model (the baseline).
    """

    min_auc: float = 0.5
    min_accuracy: float = 0.5
    min_recall: float = 0.0
    min_specificity: float = 0.0
    max_auc_drop: float = 0.01

    def __post_init__(self):
        for field in dataclasses.fields(self):
            _check_range(f"evaluation.{field.name}", getattr(self, field.name), 0.0, 1.0)


@dataclasses.dataclass(frozen=True)
class SplitConfig:
    """Deterministic split: train fits, eval steers training (early stopping), test gates.

    Without `order_by`, each row goes to a split by a hash of its feature values (or of its `group_by`
    value) into `train + eval + test` buckets, so identical rows, and all rows of one patient, share a
    split, and a row keeps its split when other rows are added.

    Attributes:
        train: Hash buckets (or, with `order_by`, parts) for the training split.
        eval: Hash buckets for the split that picks the epoch (early stopping).
        test: Hash buckets for the held-out split the Evaluator gates on.
        group_by: A column naming the patient (or other unit) whose rows must stay together; it is used
            for the split only, never as a feature.
        order_by: A date column: the oldest rows train, the newest are tested (temporal validation); it
            is used for the split only, never as a feature.
    """

    train: int = 6
    eval: int = 2
    test: int = 2
    group_by: str = ""
    order_by: str = ""

    def __post_init__(self):
        for name in ("train", "eval", "test"):
            if getattr(self, name) < 1:
                raise ConfigError(f"split.{name} is {getattr(self, name)}; every split needs >= 1 bucket.")
        if self.group_by and self.order_by:
            raise ConfigError(
                "split.group_by and split.order_by cannot both be set; a temporal split keeps a patient's "
                "later visits out of training only if you also drop repeated patients."
            )


@dataclasses.dataclass(frozen=True)
class DataChecksConfig:
    """The data gate's identifier and leakage guards (before training).

    Attributes:
        max_single_feature_auc: A feature whose AUC on its own (on the training split) reaches this
            bound nearly determines the label: an outcome-derived or follow-up measurement. WDBC's
            strongest genuine predictor (worst perimeter) scores about 0.975.
        max_unique_fraction: An integer or text column with at least this fraction of distinct values per
            row behaves like an identifier.
        report_rows: How many offending rows (line and value) a report lists per column.
    """

    max_single_feature_auc: float = 0.99
    max_unique_fraction: float = 0.9
    report_rows: int = 20

    def __post_init__(self):
        _check_range("checks.max_single_feature_auc", self.max_single_feature_auc, 0.5, 1.0)
        _check_range("checks.max_unique_fraction", self.max_unique_fraction, 0.0, 1.0)
        if self.report_rows < 1:
            raise ConfigError(f"checks.report_rows is {self.report_rows}; it must be at least 1.")


@dataclasses.dataclass(frozen=True)
class ImageConfig:
    """What an image dataset's examples must hold (checked at the data gate) and the CNN's settings.

    Attributes:
        height: Pixel rows every training image must have.
        width: Pixel columns every training image must have.
        channels: Channel count every training image must have (1 grayscale, 3 RGB).
        formats: Encodings accepted in the examples (`png`, `jpeg`).
        model: The CNN's hyperparameters (`models.image.hparams.CnnConfig` keys).
    """

    height: int = 28
    width: int = 28
    channels: int = 1
    formats: tuple[str, ...] = ("png",)
    model: CnnConfig = dataclasses.field(default_factory=CnnConfig)

    def __post_init__(self):
        for name in ("height", "width"):
            if getattr(self, name) < 1:
                raise ConfigError(f"image.{name} is {getattr(self, name)}; it must be at least 1.")
        if self.channels not in (1, 3):
            raise ConfigError(f"image.channels is {self.channels}; use 1 (grayscale) or 3 (RGB).")
        unknown = [f for f in self.formats if f not in IMAGE_FORMATS]
        if unknown or not self.formats:
            raise ConfigError(f"image.formats is {list(self.formats)}; use some of {list(IMAGE_FORMATS)}.")


DATASET_KINDS = ("table", "image")
# Screening's default: miss at most 1 in 20 diseased patients on the eval split, then be as specific as
# that allows. A dataset may set a specificity target or a fixed threshold instead.
SCREENING_OPERATING_POINT = OperatingPointSpec(target="sensitivity", value=0.95)


@dataclasses.dataclass(frozen=True)
class DatasetConfig:
    """One dataset: where it comes from, how its label is read, and its curated schema.

    Attributes:
        source: Where the rows come from.
        kind: `table` (CSV rows) or `image` (encoded images and a label; see `image`).
        image: The image contract and CNN settings (kind `image` only).
        label_column: The column holding the label.
        label_map: Raw label value (as written in the file) to 0/1, or to `drop` to remove those rows
            (an invalid test result); the run reports how many. Values not in the map are kept, so the
            data gate reports them against the schema's label domain.
        positive_class: What a 1 means, for reports.
        missing_values: Per column, raw values that mean "not measured" (e.g. a glucose of 0).
        drop_columns: Columns left out (identifiers, provenance). Column names follow
            `schemas.naming`: the file's spelling or the feature name.
        filter_column: Keep only rows whose value in this column equals `filter_value`.
        filter_value: See `filter_column`.
        schema_dir: Directory with the curated `schema.pbtxt`: relative to the YAML file that names it,
            or `bundled:<name>` for a schema shipped with dxpipe.
        slice_features: Categorical features the Evaluator reports metrics per value of.
        training: Overrides of the top-level training settings.
        evaluation: Overrides of the top-level evaluation thresholds.
        gate: The registry gate policy (`components.registry_gate.core.GatePolicy.from_dict` format):
            the top-level `gate:` section with this entry's keys replacing its keys.
        split: The split: the top-level `split:` with this entry's keys replacing its keys.
        checks: The identifier and leakage guards: the top-level `checks:` merged the same way.
        operating_point: How the Trainer locks the decision threshold on the eval split:
            `{target: sensitivity, value: 0.95}` (the default for tables: screening), `{target:
            specificity, value: 0.9}` or `{fixed: 0.5}` (`models.operating_point`); image datasets default
            to `{fixed: training.operating_threshold}`. The threshold, the decision and the probability
            are built into the exported signatures.
        calibration: Recalibration fitted on the eval split and built into the served probabilities:
            `none`, `platt` or `temperature` (`models.calibration`).
    """

    source: SourceConfig
    label_column: str
    schema_dir: str
    label_map: dict[str, int | str] = dataclasses.field(default_factory=dict)
    positive_class: str = "positive"
    missing_values: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    drop_columns: tuple[str, ...] = ()
    filter_column: str = ""
    filter_value: str = ""
    slice_features: tuple[str, ...] = ()
    training: TrainingConfig = TrainingConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    gate: dict[str, Any] = dataclasses.field(default_factory=dict)
    split: SplitConfig = SplitConfig()
    checks: DataChecksConfig = DataChecksConfig()
    kind: str = "table"
    image: ImageConfig = ImageConfig()
    operating_point: OperatingPointSpec | None = None
    calibration: str = "none"

    def __post_init__(self):
        if self.operating_point is None:
            # Images keep their configured fixed threshold unless they set a target: their gates were
            # tuned at it (balanced class weights make 0.5 prevalence-independent, models/image/trainer.py).
            default = (
                OperatingPointSpec(fixed=self.training.operating_threshold)
                if self.kind == "image"
                else SCREENING_OPERATING_POINT
            )
            object.__setattr__(self, "operating_point", default)
        if self.calibration not in CALIBRATIONS:
            raise OperatingPointError(
                f"calibration is {self.calibration!r}; use one of {list(CALIBRATIONS)}"
                f"{_hint(self.calibration, CALIBRATIONS)}."
            )
        if self.kind not in DATASET_KINDS:
            raise ConfigError(
                f"kind is {self.kind!r}; use one of {list(DATASET_KINDS)}{_hint(self.kind, DATASET_KINDS)}."
            )
        if (self.kind == "image") != (self.source.kind == "medmnist"):
            raise ConfigError(
                f"a dataset of kind {self.kind!r} cannot read source.kind {self.source.kind!r}; image datasets "
                "read `medmnist` files and tables read CSV sources."
            )
        bad = {
            k: v
            for k, v in self.label_map.items()
            if isinstance(v, bool) or (v not in (0, 1) and v != LABEL_DROP)
        }
        if bad:
            raise ConfigError(
                f"label_map maps {bad} to values other than 0, 1 or {LABEL_DROP!r}; map every label to 0 "
                f"or 1, or to {LABEL_DROP!r} to remove its rows."
            )
        if bool(self.filter_column) != bool(self.filter_value):
            raise ConfigError("filter_column and filter_value go together; set both or neither.")


@dataclasses.dataclass(frozen=True)
class BeamConfig:
    """Apache Beam settings for the data components.

    Attributes:
        runner: Beam runner. Naming DirectRunner stops Beam 2.74 from downloading its Prism runner.
        direct_running_mode: `in_memory` avoids the multi-process overhead that doubles run time on
            small machines.
        direct_num_workers: Worker count for the direct runner.
    """

    runner: str = "DirectRunner"
    direct_running_mode: str = "in_memory"
    direct_num_workers: int = 1

    def args(self) -> list[str]:
        """Returns the Beam pipeline arguments."""
        return [
            f"--runner={self.runner}",
            f"--direct_running_mode={self.direct_running_mode}",
            f"--direct_num_workers={self.direct_num_workers}",
        ]


@dataclasses.dataclass(frozen=True)
class ServingConfig:
    """Where models are pushed for TF Serving.

    Attributes:
        root: Directory holding one model base path per served model; default `<workdir>/serving`.
        staging_suffix: Blessed candidates go to `<root>/<model><suffix>/<version>/`.
    """

    root: str = ""
    staging_suffix: str = "-staging"


_SUFFIX = re.compile(r"^[A-Za-z0-9_.-]{1,50}$")


def _check_serving_names(datasets: Mapping[str, Any], suffix: str) -> None:
    """Every name that becomes a registered model or a serving directory, checked before anything is made.

    Raises:
        ConfigError: A dataset name is not a usable model name, or the staging suffix is empty, unsafe in
            a path, or makes one model's staging path another model's production path.
    """
    for name in datasets:
        try:
            check_model_name(name)
        except ConfigError as exc:
            raise ConfigError(f"datasets.{name}: {exc}") from None
    if not isinstance(suffix, str) or not _SUFFIX.match(suffix) or set(suffix) <= {"."}:
        raise ConfigError(
            f"serving.staging_suffix: {suffix!r} is not usable: unapproved candidates go to "
            "`<serving root>/<model><suffix>/`, so an empty suffix would push them straight into the production "
            "path. Use letters, digits, '_', '.', '-', e.g. '-staging'."
        )
    clash = sorted(name for name in datasets if f"{name}{suffix}" in datasets)
    if clash:
        raise ConfigError(
            f"serving.staging_suffix: {suffix!r} makes the staging path of '{clash[0]}' the production path of "
            f"'{clash[0]}{suffix}'; choose another suffix or rename the dataset."
        )


@dataclasses.dataclass(frozen=True)
class Config:
    """The whole configuration of a dxpipe run.

    Attributes:
        dataset: Name of the dataset entry to run.
        datasets: All known datasets by name.
        workdir: Directory for the pipeline root, metadata, MLflow store and serving directories.
        split: Default train/eval/test split (a dataset may override single keys).
        checks: Default identifier and leakage guards (a dataset may override single keys).
        training: Default training settings (a dataset may override them).
        evaluation: Default blessing thresholds (a dataset may override them).
        beam: Beam settings.
        serving: Serving paths.
        tracking: MLflow settings (`pipelines.mlflow_store.TrackingConfig` keys other than the paths and
            threshold, which come from this config); validated at load.
        gate: Default registry gate policy; each dataset's `gate:` replaces single keys. Validated at
            load, per dataset.
    """

    dataset: str
    datasets: dict[str, DatasetConfig]
    workdir: str = ".dxpipe"
    split: SplitConfig = SplitConfig()
    checks: DataChecksConfig = DataChecksConfig()
    training: TrainingConfig = TrainingConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    beam: BeamConfig = BeamConfig()
    serving: ServingConfig = ServingConfig()
    tracking: dict[str, Any] = dataclasses.field(default_factory=dict)
    gate: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if self.dataset not in self.datasets:
            raise ConfigError(
                f"dataset {self.dataset!r} is not configured; known datasets: {sorted(self.datasets)}"
                f"{_hint(self.dataset, self.datasets)}. Add an entry under `datasets:` for your own CSV."
            )
        _check_serving_names(self.datasets, self.serving.staging_suffix)

    @property
    def data(self) -> DatasetConfig:
        """The selected dataset's entry."""
        return self.datasets[self.dataset]

    @property
    def pipeline_name(self) -> str:
        """One pipeline (and one MLflow experiment) per dataset."""
        return f"dxpipe-{self.dataset}"

    @property
    def model_name(self) -> str:
        """The registered and served model name."""
        return self.dataset

    @property
    def serving_root(self) -> Path:
        """The directory holding TF Serving model base paths."""
        return Path(self.serving.root or Path(self.workdir) / "serving").absolute()

    @property
    def staging_base_path(self) -> Path:
        """Model base path of the staging model."""
        return self.serving_root / f"{self.model_name}{self.serving.staging_suffix}"

    @property
    def production_base_path(self) -> Path:
        """Model base path of the production model."""
        return self.serving_root / self.model_name

    def tracking_config(self) -> TrackingConfig:
        """The MLflow settings of this run: the `tracking:` section plus this config's paths."""
        return dataclasses.replace(
            TrackingConfig.from_dict(self.tracking),
            workdir=str(Path(self.workdir).absolute()),
            serving_root=str(self.serving_root),
            operating_threshold=self.data.training.operating_threshold,
        )

    def gate_policy(self) -> GatePolicy:
        """The selected dataset's registry gate policy.

        Without a `gate:` section the Evaluator's value thresholds become the gate's minimums, so a model
        is never registered ungated.
        """
        gate = self.data.gate
        if not gate:
            ev = self.data.evaluation
            bounds = {"auc": ev.min_auc, "binary_accuracy": ev.min_accuracy, "recall": ev.min_recall}
            bounds["specificity"] = ev.min_specificity
            gate = {"minimums": {k: v for k, v in bounds.items() if v > 0}}
        return GatePolicy.from_dict(gate, f"datasets.{self.dataset}.gate")

    def with_dataset(self, name: str) -> Config:
        """Returns a copy that runs another configured dataset."""
        return dataclasses.replace(self, dataset=name)


def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp, where: str) -> Any:
    """Checks `value` against the annotation `tp`, converting YAML lists to tuples and nested dicts."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, where)
    if origin in (tuple,):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where} is {value!r}; expected a list.")
        (item_type, _ellipsis) = typing.get_args(tp)
        return tuple(_coerce(v, item_type, f"{where}[{i}]") for i, v in enumerate(value))
    if origin in (dict,):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where} is {value!r}; expected a mapping.")
        key_type, value_type = typing.get_args(tp)
        return {
            _coerce(str(k) if key_type is str else k, key_type, f"{where} key"): _coerce(
                v, value_type, f"{where}.{k}"
            )
            for k, v in value.items()
        }
    if origin in (typing.Union, types.UnionType):
        # An optional section (`X | None`) given as a mapping is built and validated like any section.
        for arg in typing.get_args(tp):
            if dataclasses.is_dataclass(arg) and value is not None:
                if not isinstance(value, Mapping):
                    raise ConfigError(f"{where} is {value!r}; expected a mapping.")
                return _build(arg, value, where)
        return value
    if tp is Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is str and isinstance(value, int | float) and not isinstance(value, bool):
        # Raw CSV values such as a label 0 are written unquoted in YAML; they are strings to us.
        return str(value)
    if (tp is int and isinstance(value, bool)) or not isinstance(value, tp):
        raise ConfigError(f"{where} is {value!r} ({type(value).__name__}); expected {_type_name(tp)}.")
    return value


def _build(cls, data: Any, where: str):
    if isinstance(data, cls):
        return data
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where or 'the config'} must be a mapping of keys to values, got {data!r}.")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            raise ConfigError(
                f"unknown key {_join(where, key)!r}{_hint(key, fields)}; "
                f"valid keys here: {', '.join(sorted(fields))}."
            )
    kwargs = {}
    for name, field in fields.items():
        if name in data:
            kwargs[name] = _coerce(data[name], hints[name], _join(where, name))
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{_join(where, name)!r} is required.")
    try:
        return cls(**kwargs)
    except (
        HparamsError,
        OperatingPointError,
    ) as err:  # A model's own check, reported like every config error.
        raise ConfigError(f"{where}: {err}") from None


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else str(key)


def _merge(base: Mapping, override: Mapping) -> dict:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _source_path(source: Mapping, base_dir: Path) -> str:
    """Resolves a source file: in `$<dir_env>` when that variable is set, else relative to `base_dir`.

    The variable is read here, at load, so the rest of the code sees one resolved path (CI and each
    engineer's checkout keep the shared read-only data in different places).
    """
    path = Path(str(source["path"]))
    directory = os.environ.get(str(source.get("dir_env") or "")) if source.get("dir_env") else None
    if directory:
        return str((Path(directory) / path.name).resolve())
    return str((base_dir / path).resolve())


def config_from_dict(raw: Mapping, base_dir: Path = PROJECT_ROOT) -> Config:
    """Builds and validates a Config from a plain mapping.

    Dataset entries inherit the top-level `training` and `evaluation` sections and override single keys.
    Relative `schema_dir` and CSV paths are resolved against `base_dir`.

    Args:
        raw: The parsed YAML.
        base_dir: Directory that relative paths in the mapping are relative to.

    Returns:
        The validated, frozen Config.

    Raises:
        ConfigError: On an unknown key, a wrong type, a value out of range or an unknown dataset.
    """
    if not isinstance(raw, Mapping):
        raise ConfigError(f"the config must be a mapping at the top level, got {type(raw).__name__}.")
    raw = dict(raw)
    datasets_raw = raw.get("datasets")
    if not isinstance(datasets_raw, Mapping) or not datasets_raw:
        raise ConfigError("`datasets:` is missing or empty; configure at least one dataset.")
    defaults = {k: raw.get(k, {}) or {} for k in ("training", "evaluation", "gate", "split", "checks")}
    # Check the shared sections on their own first, so an error names `training.x`, not a dataset copy.
    _build(TrainingConfig, defaults["training"], "training")
    _build(EvaluationConfig, defaults["evaluation"], "evaluation")
    _build(SplitConfig, defaults["split"], "split")
    _build(DataChecksConfig, defaults["checks"], "checks")
    datasets = {}
    for name, entry in datasets_raw.items():
        if not isinstance(entry, Mapping):
            raise ConfigError(f"datasets.{name} must be a mapping, got {entry!r}.")
        entry = dict(entry)
        for section, default in defaults.items():
            entry[section] = _merge(default, entry.get(section) or {})
        if "schema_dir" in entry:
            entry["schema_dir"] = str(resolve_dir(str(entry["schema_dir"]), base_dir))
        source = entry.get("source")
        if isinstance(source, Mapping) and source.get("path"):
            entry["source"] = {**source, "path": _source_path(source, base_dir)}
        datasets[str(name)] = _build(DatasetConfig, entry, f"datasets.{name}")
    raw["datasets"] = datasets
    cfg = _build(Config, raw, "")
    _check_tracking_and_gates(cfg)
    return cfg


# Tracking settings that the rest of the config already decides; a second copy could only disagree.
_DERIVED_TRACKING_KEYS = {
    "workdir": "the top-level `workdir`",
    "serving_root": "`serving.root`",
    "operating_threshold": "`training.operating_threshold`",
    "test_split": "the pipeline's fixed `test` split",
}


def _check_tracking_and_gates(cfg: Config) -> None:
    """Validates the MLflow and gate sections at load, so a typo fails before any component runs."""
    if not isinstance(cfg.tracking, Mapping):
        raise ConfigError(f"tracking must be a mapping, got {cfg.tracking!r}.")
    for key, owner in _DERIVED_TRACKING_KEYS.items():
        if key in cfg.tracking:
            raise ConfigError(f"tracking.{key} is not set here; it comes from {owner}. Remove it.")
    TrackingConfig.from_dict(cfg.tracking)
    for name in cfg.datasets:
        cfg.with_dataset(name).gate_policy()


def load_config(path: str | Path | None = None, *, dataset: str | None = None, **overrides: Any) -> Config:
    """Loads a YAML config file (the packaged default when `path` is None).

    Args:
        path: A YAML file; relative paths inside it are relative to the file's directory.
        dataset: Selects a dataset entry, overriding the file's `dataset:`.
        **overrides: Top-level keys to replace before validation (e.g. `workdir`).

    Returns:
        The validated Config.

    Raises:
        ConfigError: If the file cannot be read or parsed, or fails validation.
    """
    file = Path(path) if path else DEFAULT_CONFIG
    try:
        raw = yaml.safe_load(file.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {file} does not exist; pass an existing YAML file.") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {file} is not valid YAML: {err}") from None
    raw = dict(raw or {})
    if dataset:
        raw["dataset"] = dataset
    raw.update({k: v for k, v in overrides.items() if v is not None})
    base_dir = PROJECT_ROOT if path is None else file.resolve().parent
    return config_from_dict(raw, base_dir)


def flatten(cfg: Config) -> dict[str, str]:
    """Returns the resolved config of the selected dataset as flat `a.b.c -> str` pairs (for tracking)."""
    out: dict[str, str] = {}

    def walk(prefix: str, value: Any) -> None:
        if dataclasses.is_dataclass(value):
            value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        if isinstance(value, Mapping):
            for key, item in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), item)
        else:
            out[prefix] = str(value)

    walk("", {k: v for k, v in dataclasses.asdict(cfg).items() if k != "datasets"})
    walk("data", cfg.data)
    return out
