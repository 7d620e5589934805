"""The configuration of dxpipe: one typed, frozen model, validated in one place.

One YAML file per environment (the packaged default is `pipelines/configs/default.yaml`) is loaded once
into frozen pydantic dataclasses (`Config` and its sections; the hyperparameter types come from `models/`,
which owns them). pydantic checks every key, type, choice and range the model declares, and
`pipelines.config_errors` words its findings as one `ConfigError` (field, value, fix, "did you mean"), so a
typo fails at load, before any component runs. Rules across fields live in the sections'
`__post_init__`. Tests derive variants with `dataclasses.replace`, which validates again.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    TypeAdapter,
    ValidationError,
)
from pydantic.dataclasses import dataclass

from components.clinical_eval.core import ClinicalSettings
from components.registry_gate.core import GatePolicy
from models.calibration import CALIBRATIONS
from models.hparams import TrainingConfig
from models.image.hparams import IMAGE_FORMATS, CnnConfig
from models.operating_point import OperatingPointSpec
from pipelines import beam_options
from pipelines.config_errors import config_error, did_you_mean
from pipelines.errors import ConfigError
from pipelines.mlflow_store import TrackingConfig, check_model_name
from schemas.files import resolve_dir

__all__ = [
    "DEFAULT_CONFIG",
    "LABEL_DROP",
    "PROJECT_ROOT",
    "BeamConfig",
    "Config",
    "DataChecksConfig",
    "DatasetConfig",
    "EvaluationConfig",
    "ImageConfig",
    "ModelCardConfig",
    "ServingConfig",
    "SourceConfig",
    "SplitConfig",
    "TrainingConfig",
    "config_from_dict",
    "flatten",
    "load_config",
]

DEFAULT_CONFIG = Path(__file__).with_name("configs") / "default.yaml"
# Paths in the config (schemas, CSVs) are relative to the project root, which is where the packaged
# config's schemas/ live; an explicit config file resolves them relative to its own directory instead.
PROJECT_ROOT = Path(__file__).resolve().parent.parent
# A label_map value that removes the row (e.g. an invalid or inconclusive test result).
LABEL_DROP = "drop"
# Every section refuses keys it does not declare; frozen, so a loaded config cannot drift.
SECTION = ConfigDict(extra="forbid")


def _number_as_text(value: Any) -> Any:
    # Raw CSV values such as a label 0 are written unquoted in YAML; they are strings to us.
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return value


def _between(low: float, high: float) -> AfterValidator:
    def check(value: float) -> float:
        if not low <= value <= high:
            raise ValueError(f"it must be between {low} and {high}")
        return value

    return AfterValidator(check)


def _at_least(minimum: int, reason: str = "") -> AfterValidator:
    def check(value: int) -> int:
        if value < minimum:
            raise ValueError(reason or f"it must be at least {minimum}")
        return value

    return AfterValidator(check)


# The config's scalar types: strict (no "3" for 3, no true for 1), except that text accepts numbers.
Text = Annotated[StrictStr, BeforeValidator(_number_as_text)]
Fraction = Annotated[StrictFloat, _between(0.0, 1.0)]
Positive = Annotated[StrictInt, _at_least(1)]


@dataclass(frozen=True, config=SECTION)
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

    kind: Literal["sklearn", "package", "csv", "medmnist"]
    name: Text = ""
    package: Text = ""
    resource: Text = ""
    path: Text = ""
    md5: Text = ""
    dir_env: Text = ""

    def __post_init__(self):
        required = {
            "sklearn": ("name",),
            "package": ("package", "resource"),
            "csv": ("path",),
            "medmnist": ("path", "md5"),
        }
        for field in required[self.kind]:
            if not getattr(self, field):
                raise ConfigError(f"source.{field} is required when source.kind is {self.kind!r}.")


@dataclass(frozen=True, config=SECTION)
class EvaluationConfig:
    """Blessing thresholds for TFMA on the test split.

    Attributes:
        min_auc: Lowest acceptable ROC AUC.
        min_accuracy: Lowest acceptable accuracy at the operating threshold.
        min_recall: Lowest acceptable sensitivity at the operating threshold.
        min_specificity: Lowest acceptable specificity at the operating threshold.
        max_auc_drop: Largest AUC drop tolerated against the latest blessed model (the baseline).
    """

    min_auc: Fraction = 0.5
    min_accuracy: Fraction = 0.5
    min_recall: Fraction = 0.0
    min_specificity: Fraction = 0.0
    max_auc_drop: Fraction = 0.01


Buckets = Annotated[StrictInt, _at_least(1, "every split needs >= 1 bucket")]


@dataclass(frozen=True, config=SECTION)
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

    train: Buckets = 6
    eval: Buckets = 2
    test: Buckets = 2
    group_by: Text = ""
    order_by: Text = ""

    def __post_init__(self):
        if self.group_by and self.order_by:
            raise ConfigError(
                "split.group_by and split.order_by cannot both be set; a temporal split keeps a patient's "
                "later visits out of training only if you also drop repeated patients."
            )


@dataclass(frozen=True, config=SECTION)
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

    max_single_feature_auc: Annotated[StrictFloat, _between(0.5, 1.0)] = 0.99
    max_unique_fraction: Fraction = 0.9
    report_rows: Positive = 20


def _channels(value: int) -> int:
    if value not in (1, 3):
        raise ValueError("use 1 (grayscale) or 3 (RGB)")
    return value


def _formats(value: tuple[str, ...]) -> tuple[str, ...]:
    if not value or any(f not in IMAGE_FORMATS for f in value):
        raise ValueError(f"use some of {list(IMAGE_FORMATS)}")
    return value


@dataclass(frozen=True, config=SECTION)
class ImageConfig:
    """What an image dataset's examples must hold (checked at the data gate) and the CNN's settings.

    Attributes:
        height: Pixel rows every training image must have.
        width: Pixel columns every training image must have.
        channels: Channel count every training image must have (1 grayscale, 3 RGB).
        formats: Encodings accepted in the examples (`png`, `jpeg`).
        model: The CNN's hyperparameters (`models.image.hparams.CnnConfig` keys).
    """

    height: Positive = 28
    width: Positive = 28
    channels: Annotated[StrictInt, AfterValidator(_channels)] = 1
    formats: Annotated[tuple[Text, ...], AfterValidator(_formats)] = ("png",)
    model: CnnConfig = dataclasses.field(default_factory=CnnConfig)


# Screening's default: miss at most 1 in 20 diseased patients on the eval split, then be as specific as
# that allows. A dataset may set a specificity target or a fixed threshold instead.
SCREENING_OPERATING_POINT = OperatingPointSpec(target="sensitivity", value=0.95)


@dataclass(frozen=True, config=SECTION)
class ModelCardConfig:
    """What the model card says about use, written by people (the rest of the card is computed).

    Attributes:
        intended_use: The clinical question, setting and population the model is meant for.
        intended_users: Who acts on its output (e.g. "radiologists triaging a screening list").
        out_of_scope: Uses it must not be put to.
        limitations: Known limitations, one sentence each (the data's origin, what was not validated).
    """

    intended_use: Text = ""
    intended_users: Text = ""
    out_of_scope: Text = ""
    limitations: tuple[Text, ...] = ()

    def __post_init__(self):
        for name in ("intended_use", "intended_users", "out_of_scope"):
            if len(getattr(self, name)) > 2000:
                raise ConfigError(f"model_card.{name} is over 2000 characters; keep it to a paragraph.")
        if any(not item.strip() for item in self.limitations):
            raise ConfigError("model_card.limitations holds an empty entry; write one sentence per item.")


@dataclass(frozen=True, config=SECTION)
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
        clinical: The clinical evaluation's settings (`components.clinical_eval.core.ClinicalSettings`):
            the top-level `clinical:` merged the same way.
        model_card: Intended use and limitations for the model card attached at registration.
        operating_point: How the Trainer locks the decision threshold on the eval split:
            `{target: sensitivity, value: 0.95}` (the default for tables: screening), `{target:
            specificity, value: 0.9}` or `{fixed: 0.5}` (`models.operating_point`); image datasets default
            to `{fixed: training.operating_threshold}`. The threshold, the decision and the probability
            are built into the exported signatures.
        calibration: Recalibration fitted on the eval split and built into the served probabilities:
            `none`, `platt` or `temperature` (`models.calibration`).
    """

    source: SourceConfig
    label_column: Text
    schema_dir: Text
    # Values are 0, 1 or LABEL_DROP, checked below: a typed `int | str` would turn a YAML `true` into 1.
    label_map: dict[Text, Any] = dataclasses.field(default_factory=dict)
    positive_class: Text = "positive"
    missing_values: dict[Text, tuple[Text, ...]] = dataclasses.field(default_factory=dict)
    drop_columns: tuple[Text, ...] = ()
    filter_column: Text = ""
    filter_value: Text = ""
    slice_features: tuple[Text, ...] = ()
    training: TrainingConfig = dataclasses.field(default_factory=TrainingConfig)
    evaluation: EvaluationConfig = dataclasses.field(default_factory=EvaluationConfig)
    gate: dict[Text, Any] = dataclasses.field(default_factory=dict)
    clinical: dict[Text, Any] = dataclasses.field(default_factory=dict)
    split: SplitConfig = dataclasses.field(default_factory=SplitConfig)
    checks: DataChecksConfig = dataclasses.field(default_factory=DataChecksConfig)
    kind: Literal["table", "image"] = "table"
    image: ImageConfig = dataclasses.field(default_factory=ImageConfig)
    model_card: ModelCardConfig = dataclasses.field(default_factory=ModelCardConfig)
    operating_point: OperatingPointSpec | None = None
    calibration: Literal[CALIBRATIONS] = "none"

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


# A Beam option's value as YAML writes it; a list repeats the flag (e.g. `experiments`).
BeamValue = StrictBool | StrictInt | StrictFloat | StrictStr | tuple[StrictStr, ...]


@dataclass(frozen=True, config=SECTION)
class BeamConfig:
    """Apache Beam settings for the data components (ExampleGen, statistics, validation, the Evaluator).

    Attributes:
        runner: Beam runner. Naming DirectRunner stops Beam 2.74 from downloading its Prism runner; a
            cluster runner (`DataflowRunner`, `FlinkRunner`, `SparkRunner`, `PortableRunner`) needs its
            settings in `options` (see `pipelines.beam_options.REQUIRED`).
        direct_running_mode: DirectRunner only: `in_memory` avoids the multi-process overhead that
            doubles run time on small machines; `multi_processing` uses `direct_num_workers` processes.
        direct_num_workers: DirectRunner only: worker count.
        options: Further Beam pipeline options as Beam's flags without dashes (`project`, `region`,
            `temp_location`, `flink_master`, `environment_type`, `sdk_container_image`, ...), checked
            against Beam's option registry at load.
    """

    runner: Literal["DirectRunner", "DataflowRunner", "FlinkRunner", "SparkRunner", "PortableRunner"] = (
        "DirectRunner"
    )
    direct_running_mode: Literal["in_memory", "multi_threading", "multi_processing"] = "in_memory"
    direct_num_workers: Positive = 1
    options: dict[StrictStr, BeamValue] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        beam_options.check(self.runner, self.options)

    def args(self) -> list[str]:
        """Returns the Beam pipeline arguments every Beam-based component receives."""
        args = [f"--runner={self.runner}"]
        if self.runner == "DirectRunner":
            args += [
                f"--direct_running_mode={self.direct_running_mode}",
                f"--direct_num_workers={self.direct_num_workers}",
            ]
        return args + beam_options.option_flags(self.options)


@dataclass(frozen=True, config=SECTION)
class ServingConfig:
    """Where models are pushed for TF Serving.

    Attributes:
        root: Directory holding one model base path per served model; default `<workdir>/serving`.
        staging_suffix: Blessed candidates go to `<root>/<model><suffix>/<version>/`.
    """

    root: Text = ""
    staging_suffix: Text = "-staging"


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


@dataclass(frozen=True, config=SECTION, kw_only=True)
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
        clinical: Default clinical evaluation settings; each dataset's `clinical:` replaces single keys.
    """

    # Keyword-only, so the shared sections come before `datasets`: they are validated first, and a typo
    # in one is reported where it was written, not in the first dataset that inherits it.
    dataset: Text
    workdir: Text = ".dxpipe"
    split: SplitConfig = dataclasses.field(default_factory=SplitConfig)
    checks: DataChecksConfig = dataclasses.field(default_factory=DataChecksConfig)
    training: TrainingConfig = dataclasses.field(default_factory=TrainingConfig)
    evaluation: EvaluationConfig = dataclasses.field(default_factory=EvaluationConfig)
    beam: BeamConfig = dataclasses.field(default_factory=BeamConfig)
    serving: ServingConfig = dataclasses.field(default_factory=ServingConfig)
    tracking: dict[Text, Any] = dataclasses.field(default_factory=dict)
    gate: dict[Text, Any] = dataclasses.field(default_factory=dict)
    clinical: dict[Text, Any] = dataclasses.field(default_factory=dict)
    datasets: dict[Text, DatasetConfig]

    def __post_init__(self):
        if self.dataset not in self.datasets:
            raise ConfigError(
                f"dataset {self.dataset!r} is not configured; known datasets: {sorted(self.datasets)}"
                f"{did_you_mean(self.dataset, self.datasets)}. Add an entry under `datasets:` for your own CSV."
            )
        _check_serving_names(self.datasets, self.serving.staging_suffix)
        _check_tracking(self.tracking)
        # The shared section first, so its typo is named `clinical.x`, not after a dataset's copy of it.
        ClinicalSettings.from_dict(self.clinical, "clinical")
        for name, data in self.datasets.items():
            _gate_policy(name, data)
            ClinicalSettings.from_dict(data.clinical, f"datasets.{name}.clinical")

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
        return _gate_policy(self.dataset, self.data)

    def clinical_settings(self) -> ClinicalSettings:
        """The selected dataset's clinical evaluation settings (validated)."""
        return ClinicalSettings.from_dict(self.data.clinical, f"datasets.{self.dataset}.clinical")

    def with_dataset(self, name: str) -> Config:
        """Returns a copy that runs another configured dataset."""
        return dataclasses.replace(self, dataset=name)


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


def _gate_policy(name: str, data: DatasetConfig) -> GatePolicy:
    gate = data.gate
    if not gate:
        ev = data.evaluation
        bounds = {"auc": ev.min_auc, "binary_accuracy": ev.min_accuracy, "recall": ev.min_recall}
        bounds["specificity"] = ev.min_specificity
        gate = {"minimums": {k: v for k, v in bounds.items() if v > 0}}
    return GatePolicy.from_dict(gate, f"datasets.{name}.gate")


# Tracking settings that the rest of the config already decides; a second copy could only disagree.
_DERIVED_TRACKING_KEYS = {
    "workdir": "the top-level `workdir`",
    "serving_root": "`serving.root`",
    "operating_threshold": "`training.operating_threshold`",
    "test_split": "the pipeline's fixed `test` split",
}


def _check_tracking(tracking: Mapping[str, Any]) -> None:
    for key, owner in _DERIVED_TRACKING_KEYS.items():
        if key in tracking:
            raise ConfigError(f"tracking.{key} is not set here; it comes from {owner}. Remove it.")
    TrackingConfig.from_dict(tracking)


_CONFIG = TypeAdapter(Config)
_SECTIONS = ("training", "evaluation", "gate", "split", "checks", "clinical")


def config_from_dict(raw: Mapping, base_dir: Path = PROJECT_ROOT) -> Config:
    """Builds and validates a Config from a plain mapping: the one place a config is validated.

    Dataset entries inherit the top-level `training`, `evaluation`, `gate`, `split`, `checks` and
    `clinical` sections
    and override single keys. Relative `schema_dir` and CSV paths are resolved against `base_dir`.

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
    defaults = {k: raw.get(k) or {} for k in _SECTIONS}
    datasets = {}
    for name, entry in datasets_raw.items():
        if isinstance(entry, Mapping):
            entry = dict(entry)
            for section, default in defaults.items():
                override = entry.get(section) or {}
                # A section that is not a mapping is left as written: validation names it and its type.
                if isinstance(default, Mapping) and isinstance(override, Mapping):
                    entry[section] = _merge(default, override)
            if "schema_dir" in entry:
                entry["schema_dir"] = str(resolve_dir(str(entry["schema_dir"]), base_dir))
            source = entry.get("source")
            if isinstance(source, Mapping) and source.get("path"):
                entry["source"] = {**source, "path": _source_path(source, base_dir)}
        datasets[str(name)] = entry
    raw["datasets"] = datasets
    try:
        return _CONFIG.validate_python(raw)
    except ValidationError as err:
        raise config_error(err, Config) from None


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
