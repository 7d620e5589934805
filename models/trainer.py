"""Training: the TFX Trainer's `run_fn` and the framework-free `train` it wraps.

`run_fn` is the only TFX-aware function: it reads the split files, calls `train`, and writes the
SavedModel and the per-epoch history. Everything else works on numpy arrays and is tested directly.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from models.features import LABEL, Feature, features_from_schema, load_schema, parse_examples
from models.hparams import TrainingConfig
from models.network import DiagnosticModel, Preprocess, build_classifier, fit_statistics
from models.operating_point import OperatingPointSpec, fit_operating_point
from schemas.files import SCHEMA_ASSET

HISTORY_FILE = "training_history.json"


@dataclasses.dataclass
class TrainResult:
    """A trained model and how training went.

    Attributes:
        model: The exportable model.
        history: Per-epoch metrics (`loss`, `auc`, `val_loss`, `val_auc`, ...).
        best_epoch: 1-based epoch whose weights were kept (lowest eval loss).
        operating_point: The locked operating point (`dxpipe_operating_point.json`'s content).
    """

    model: DiagnosticModel
    history: dict[str, list[float]]
    best_epoch: int
    operating_point: dict


def read_split(file_patterns: list[str], features: list[Feature]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Reads gzipped TFRecord tf.Examples (an ExampleGen split) fully into memory.

    The datasets are clinic-sized (hundreds to thousands of rows), so one batch holds them all and
    training iterates over numpy arrays instead of a tf.data pipeline.
    """
    files = sorted(f for pattern in file_patterns for f in tf.io.gfile.glob(pattern))
    if not files:
        raise FileNotFoundError(f"no example files match {file_patterns}")
    serialized = [r.numpy() for r in tf.data.TFRecordDataset(files, compression_type="GZIP")]
    parsed = parse_examples(tf.constant(serialized), features, with_label=True)
    labels = parsed.pop(LABEL).numpy()
    return {k: v.numpy() for k, v in parsed.items()}, labels


def train(
    features: list[Feature],
    train_raw: dict[str, np.ndarray],
    train_labels: np.ndarray,
    eval_raw: dict[str, np.ndarray],
    eval_labels: np.ndarray,
    cfg: TrainingConfig,
    operating_point: OperatingPointSpec | None = None,
    calibration: str = "none",
) -> TrainResult:
    """Fits the classifier, then locks its operating point; the eval split steers, it never gates.

    The eval split picks the epoch (early stopping), fits the optional recalibration and chooses the
    threshold (`models.operating_point`); the test split, which gates, is never seen here.

    Args:
        features: Model features from the schema.
        train_raw: Training features as [n] arrays.
        train_labels: 0/1 training labels.
        eval_raw: Eval-split features.
        eval_labels: Eval-split labels.
        cfg: Hyperparameters.
        operating_point: How the threshold is chosen; None keeps `cfg.operating_threshold` fixed.
        calibration: `none`, `platt` or `temperature`, fitted on the eval split.

    Returns:
        The trained model (operating point locked), its history and the operating point's record.

    Raises:
        OperatingPointError: The eval split cannot support the target (no row of the class it needs).
        CalibrationError: A fitted calibration on an eval split without both classes.
    """
    keras.utils.set_random_seed(cfg.seed)
    if cfg.shuffle_labels:
        # Test-only switch: destroys the feature/label relation to produce a model the gates must reject.
        train_labels = np.random.default_rng(cfg.seed).permutation(train_labels)
    mean, std = fit_statistics(features, train_raw)
    preprocess = Preprocess(features, mean, std)
    # Preprocess once: the classifier then trains on a small dense matrix with no per-step parsing.
    x_train = preprocess(train_raw).numpy()
    x_eval = preprocess(eval_raw).numpy()
    classifier, history = fit_classifier(x_train, train_labels, x_eval, eval_labels, cfg)
    best_epoch = int(np.argmin(history["val_loss"])) + 1
    spec = operating_point or OperatingPointSpec(fixed=cfg.operating_threshold)
    model = DiagnosticModel(preprocess, classifier, features, cfg.operating_threshold)
    fitted, record = fit_operating_point(
        model.classifier_probability(eval_raw).numpy(), eval_labels, spec, calibration
    )
    model.lock(fitted, record)
    return TrainResult(model, history, best_epoch, record)


def fit_classifier(
    x_train: np.ndarray,
    train_labels: np.ndarray,
    x_eval: np.ndarray,
    eval_labels: np.ndarray,
    cfg: TrainingConfig,
) -> tuple[keras.Model, dict[str, list[float]]]:
    """Fits the dense classifier on preprocessed matrices; early stopping on the eval split's loss.

    The caller seeds Keras (`keras.utils.set_random_seed(cfg.seed)`) first, so the initial weights follow
    from the seed alone.

    Returns:
        The classifier with its best epoch's weights, and the per-epoch history.
    """
    classifier = build_classifier(x_train.shape[1], cfg.hidden_units, cfg.dropout, cfg.l2)
    classifier.compile(
        optimizer=keras.optimizers.Adam(cfg.learning_rate),
        loss="binary_crossentropy",
        metrics=[keras.metrics.AUC(name="auc"), keras.metrics.BinaryAccuracy(name="accuracy")],
    )
    stopper = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=cfg.early_stopping_patience, restore_best_weights=True
    )
    fitted = classifier.fit(
        x_train,
        train_labels.astype(np.float32),
        validation_data=(x_eval, eval_labels.astype(np.float32)),
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        callbacks=[stopper],
        verbose=0,
    )
    return classifier, {k: [float(v) for v in values] for k, values in fitted.history.items()}


def run_fn(fn_args: Any) -> None:
    """TFX Trainer entry point (referenced as `models.trainer.run_fn`).

    Args:
        fn_args: TFX FnArgs: `train_files`, `eval_files`, `schema_path`, `serving_model_dir` and
            `custom_config` (`{"training": {...TrainingConfig fields...}, "operating_point": {...},
            "calibration": str}`; without `operating_point`, `training.operating_threshold` is fixed).
    """
    training = dict(fn_args.custom_config["training"])
    training["hidden_units"] = tuple(training.get("hidden_units", ()))
    cfg = TrainingConfig(**training)
    features = features_from_schema(load_schema(fn_args.schema_path))
    train_raw, train_labels = read_split(fn_args.train_files, features)
    eval_raw, eval_labels = read_split(fn_args.eval_files, features)
    result = train(
        features,
        train_raw,
        train_labels,
        eval_raw,
        eval_labels,
        cfg,
        OperatingPointSpec.from_dict(
            fn_args.custom_config.get("operating_point") or {"fixed": cfg.operating_threshold}
        ),
        fn_args.custom_config.get("calibration", "none"),
    )
    result.model.save(fn_args.serving_model_dir)
    # The curated schema travels with the model as its input contract: `dxpipe serve` then refuses at the
    # endpoint what the data gate refused in training (missing, unknown, out-of-domain or non-finite values).
    contract = os.path.join(fn_args.serving_model_dir, SCHEMA_ASSET)
    tf.io.gfile.makedirs(os.path.dirname(contract))
    tf.io.gfile.copy(fn_args.schema_path, contract, overwrite=True)
    summary = {
        "history": result.history,
        "best_epoch": result.best_epoch,
        "train_examples": len(train_labels),
        "eval_examples": len(eval_labels),
        "operating_point": result.operating_point,
        # The locked threshold as a scalar too: MLflow then shows it as the run's `train/operating_threshold`.
        "operating_threshold": result.operating_point["threshold"],
    }
    with tf.io.gfile.GFile(os.path.join(os.path.dirname(fn_args.serving_model_dir), HISTORY_FILE), "w") as f:
        json.dump(summary, f)
