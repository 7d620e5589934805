import dataclasses

import pytest
import yaml

from pipelines.config import DEFAULT_CONFIG, TrainingConfig, config_from_dict, flatten, load_config
from pipelines.errors import ConfigError


def _raw():
    return yaml.safe_load(DEFAULT_CONFIG.read_text())


def test_default_config_loads_every_dataset():
    cfg = load_config()
    assert cfg.dataset == "wdbc"
    assert set(cfg.datasets) == {"wdbc", "heart", "pima", "pneumoniamnist", "breastmnist"}
    # Dataset overrides merge over the top-level defaults key by key.
    assert cfg.datasets["heart"].training.l2 == 0.01
    assert cfg.datasets["heart"].training.epochs == cfg.training.epochs
    assert cfg.datasets["wdbc"].evaluation.min_auc == 0.97


def test_config_is_frozen_and_replaceable():
    cfg = load_config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.dataset = "heart"
    assert dataclasses.replace(cfg, dataset="heart").data.label_column == "num"


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (
            lambda r: r["training"].update(epochz=3),
            r"unknown key 'training.epochz' \(did you mean 'epochs'\?\)",
        ),
        (lambda r: r.update(datset="wdbc"), r"unknown key 'datset' \(did you mean 'dataset'\?\)"),
        (lambda r: r.update(dataset="hart"), r"dataset 'hart' is not configured.*did you mean 'heart'"),
        (lambda r: r["training"].update(epochs="ten"), r"training.epochs is 'ten' \(str\); expected int"),
        (lambda r: r["training"].update(dropout=1.5), r"training.dropout is 1.5; it must be between"),
        (lambda r: r["datasets"]["wdbc"].pop("label_column"), r"'datasets.wdbc.label_column' is required"),
        (lambda r: r["datasets"]["wdbc"]["source"].update(kind="excel"), r"source.kind is 'excel'"),
        (
            lambda r: r["datasets"]["wdbc"].update(label_map={0: 2}),
            r"label_map maps .* to values other than 0, 1 or 'drop'",
        ),
        (lambda r: r.pop("datasets"), r"`datasets:` is missing"),
    ],
    ids=[
        "typo-nested",
        "typo-top",
        "unknown-dataset",
        "wrong-type",
        "out-of-range",
        "missing-key",
        "bad-kind",
        "bad-label-map",
        "no-datasets",
    ],
)
def test_bad_config_fails_at_load_with_a_hint(mutate, match):
    raw = _raw()
    mutate(raw)
    with pytest.raises(ConfigError, match=match):
        config_from_dict(raw)


def test_missing_config_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_relative_paths_resolve_against_the_config_file(tmp_path):
    (tmp_path / "mine.csv").write_text("a,label\n1,0\n")
    raw = {
        "dataset": "mine",
        "datasets": {
            "mine": {
                "source": {"kind": "csv", "path": "mine.csv"},
                "label_column": "label",
                "schema_dir": "schemas/mine",
            }
        },
    }
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(raw))
    cfg = load_config(tmp_path / "cfg.yaml")
    assert cfg.data.source.path == str(tmp_path / "mine.csv")
    assert cfg.data.schema_dir == str(tmp_path / "schemas" / "mine")


def test_flatten_holds_the_selected_dataset_and_hyperparameters():
    flat = flatten(load_config(dataset="pima"))
    assert flat["dataset"] == "pima"
    assert flat["data.label_column"] == "Outcome"
    assert flat["data.training.learning_rate"] == "0.02"


def test_training_config_rejects_nonpositive_learning_rate():
    with pytest.raises(ConfigError, match="learning_rate is 0"):
        TrainingConfig(learning_rate=0)


def test_split_and_checks_merge_from_the_top_level_per_dataset():
    raw = _raw()
    raw["split"] = {"train": 8, "eval": 1, "test": 1}
    raw["checks"] = {"report_rows": 5}
    raw["datasets"]["heart"]["split"] = {"group_by": "id"}
    raw["datasets"]["heart"]["drop_columns"] = ["dataset"]
    cfg = config_from_dict(raw)
    heart = cfg.datasets["heart"]
    assert (heart.split.train, heart.split.group_by, heart.checks.report_rows) == (8, "id", 5)
    assert cfg.datasets["wdbc"].split.group_by == "" and cfg.datasets["wdbc"].split.train == 8


@pytest.mark.parametrize(
    ("section", "value", "match"),
    [
        ("split", {"group_by": "a", "order_by": "b"}, "cannot both be set"),
        ("split", {"groupby": "a"}, r"unknown key 'split.groupby' \(did you mean 'group_by'\?\)"),
        ("checks", {"max_single_feature_auc": 0.4}, "max_single_feature_auc is 0.4; it must be between 0.5"),
    ],
)
def test_bad_split_or_checks_fail_at_load(section, value, match):
    raw = _raw()
    raw[section] = value
    with pytest.raises(ConfigError, match=match):
        config_from_dict(raw)


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda r: r["training"].update(epochs=True), r"training.epochs is True \(bool\); expected int\.$"),
        (lambda r: r["training"].update(epochs="3"), r"training.epochs is '3' \(str\); expected int\.$"),
        (
            lambda r: r["training"].update(hidden_units=[16, 0]),
            r"training.hidden_units is \[16, 0\]; every layer",
        ),
        (
            lambda r: r["training"].update(hidden_units="16"),
            r"training.hidden_units is '16' \(str\); expected a list",
        ),
        (lambda r: r["training"].update(l2=-0.1), r"training.l2 is -0.1; it must be zero or positive"),
        (
            lambda r: r["training"].update(shuffle_labels="yes"),
            r"training.shuffle_labels is 'yes' \(str\); expected bool",
        ),
        (lambda r: r["datasets"]["wdbc"].update(label_map={0: True}), r"label_map maps \{'0': True\}"),
        (lambda r: r["datasets"]["wdbc"].update(kind="tabel"), r"datasets.wdbc.kind is 'tabel'; .*'table'\?"),
        (
            lambda r: r["datasets"].update(wdbc=["x"]),
            r"datasets.wdbc is \['x'\] \(list\); expected a mapping",
        ),
        (lambda r: r.update(training=5), r"^training is 5 \(int\); expected a mapping\.$"),
        (lambda r: r.update(workdir=["a"]), r"workdir is \['a'\] \(list\); expected str"),
        (
            lambda r: r["evaluation"].update(min_auc="high"),
            r"evaluation.min_auc is 'high' \(str\); expected float",
        ),
        (
            lambda r: r["datasets"]["pneumoniamnist"]["image"].update(channels=2),
            r"image.channels is 2; use 1 \(grayscale\) or 3 \(RGB\)",
        ),
        (
            lambda r: r["datasets"]["pneumoniamnist"]["image"].update(formats=["png", "gif"]),
            r"image.formats is \['png', 'gif'\]; use some of \['png', 'jpeg'\]",
        ),
        (
            lambda r: (r["training"].update(epochs="x"), r["split"].update(train=0)),
            r"split.train is 0; every split needs >= 1 bucket\. \(1 more problem\(s\) in this config",
        ),
    ],
    ids=[
        "bool-is-not-int",
        "text-is-not-int",
        "zero-width-layer",
        "text-is-not-a-list",
        "negative-l2",
        "text-is-not-bool",
        "bool-label",
        "dataset-kind-typo",
        "dataset-not-a-mapping",
        "section-not-a-mapping",
        "list-is-not-text",
        "text-is-not-float",
        "channels",
        "formats",
        "two-problems-counted",
    ],
)
def test_types_are_strict_and_every_finding_names_field_value_and_fix(mutate, match):
    raw = _raw()
    raw["datasets"]["pneumoniamnist"].setdefault("image", {})
    mutate(raw)
    with pytest.raises(ConfigError, match=match):
        config_from_dict(raw)


def test_a_top_level_typo_is_reported_once_not_per_inheriting_dataset():
    raw = _raw()
    raw["training"]["epochz"] = 3
    with pytest.raises(ConfigError) as err:
        config_from_dict(raw)
    assert str(err.value).startswith("unknown key 'training.epochz'")
    assert "more problem" not in str(err.value)


def test_replace_validates_again():
    cfg = load_config()
    with pytest.raises(ConfigError, match="dataset 'nope' is not configured"):
        dataclasses.replace(cfg, dataset="nope")
    with pytest.raises(ValueError, match="every split needs >= 1 bucket"):
        dataclasses.replace(cfg.split, train=0)


def test_models_own_their_hyperparameter_types():
    from models.hparams import HparamsError
    from models.hparams import TrainingConfig as ModelTraining

    assert TrainingConfig is ModelTraining  # pipelines.config composes the model's type, no copy
    assert issubclass(HparamsError, ConfigError)  # so the CLI prints it as one line
    assert load_config().training == ModelTraining(
        hidden_units=(), learning_rate=0.05, l2=0.001, epochs=300, batch_size=64, early_stopping_patience=20
    )
