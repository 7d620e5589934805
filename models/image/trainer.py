"""Training the image CNN: the TFX Trainer's `run_fn` and the array-level `train` it wraps.

`run_fn` is the only TFX-aware function. Images are decoded once per split with the model's own
`decode_images` (the function the export serves with), so training sees exactly what serving sees.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from models.image.hparams import CnnConfig
from models.image.network import (
    IMAGE,
    LABEL,
    ImageModel,
    build_augmenter,
    build_cnn,
    decode_images,
    parse_examples,
)
from models.operating_point import OperatingPointSpec, fit_operating_point

HISTORY_FILE = "training_history.json"


@dataclasses.dataclass
class TrainResult:
    """A trained image model and how training went.

    Attributes:
        model: The exportable model.
        history: Per-epoch metrics (`loss`, `auc`, `val_loss`, `val_auc`, `learning_rate`).
        best_epoch: 1-based epoch whose weights were kept (highest eval AUC).
        operating_point: The locked operating point (`dxpipe_operating_point.json`'s content).
    """

    model: ImageModel
    history: dict[str, list[float]]
    best_epoch: int
    operating_point: dict


def read_split(file_patterns: list[str], size: int) -> tuple[np.ndarray, np.ndarray]:
    """Reads an ExampleGen split's gzipped TFRecords; returns decoded [n, size, size, 1] images and labels."""
    files = sorted(f for pattern in file_patterns for f in tf.io.gfile.glob(pattern))
    if not files:
        raise FileNotFoundError(f"no example files match {file_patterns}")
    dataset = tf.data.TFRecordDataset(files, compression_type="GZIP").batch(1024)
    images, labels = [], []
    for serialized in dataset:
        parsed = parse_examples(serialized, with_label=True)
        images.append(decode_images(parsed[IMAGE], size).numpy())
        labels.append(parsed[LABEL].numpy())
    return np.concatenate(images), np.concatenate(labels)


def class_weights(labels: np.ndarray, weighting: str) -> dict[int, float] | None:
    """Returns Keras class weights: `balanced` makes each class weigh half of the loss.

    MedMNIST's PneumoniaMNIST training split is 74 % pneumonia but its test split 62.5 %; trained on the raw
    frequencies the model's probabilities carry the training prior and over-call pneumonia on the test
    population. Balanced weights give probabilities for an even prior, so the 0.5 operating threshold
    does not depend on any one split's prevalence.
    """
    if weighting == "none":
        return None
    positive = float(np.mean(labels))
    if positive in (0.0, 1.0):
        raise ValueError(f"the training split holds one class only (positive fraction {positive}).")
    return {0: 0.5 / (1.0 - positive), 1: 0.5 / positive}


def train(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_eval: np.ndarray,
    y_eval: np.ndarray,
    cfg: CnnConfig,
    *,
    threshold: float = 0.5,
    seed: int = 42,
    operating_point: OperatingPointSpec | None = None,
    calibration: str = "none",
) -> TrainResult:
    """Fits the CNN; the eval split picks the epoch and the learning-rate schedule, it never gates.

    Args:
        x_train: Decoded training images, [n, size, size, 1] in [0, 1].
        y_train: 0/1 training labels.
        x_eval: Decoded eval-split images.
        y_eval: Eval-split labels.
        cfg: Hyperparameters.
        threshold: Fixed operating threshold, used when `operating_point` is None.
        seed: Seed for initial weights, shuffling and augmentation.
        operating_point: How the threshold is chosen on the eval split (`models.operating_point`).
        calibration: `none`, `platt` or `temperature`, fitted on the eval split.

    Returns:
        The trained model and its history.
    """
    keras.utils.set_random_seed(seed)
    cnn = build_cnn(cfg)
    cnn.compile(
        optimizer=keras.optimizers.Adam(cfg.learning_rate),
        loss=keras.losses.BinaryCrossentropy(label_smoothing=cfg.label_smoothing),
        metrics=[keras.metrics.AUC(name="auc")],
    )
    train_data = tf.data.Dataset.from_tensor_slices((x_train, y_train.astype(np.float32)))
    train_data = train_data.shuffle(len(y_train), seed=seed).batch(cfg.batch_size)
    if cfg.augment:
        augmenter = build_augmenter(seed)
        train_data = train_data.map(lambda x, y: (augmenter(x, training=True), y))
    callbacks = [
        # AUC, not loss: with balanced class weights the unweighted eval loss rewards the training prior.
        keras.callbacks.EarlyStopping(
            monitor="val_auc", mode="max", patience=cfg.early_stopping_patience, restore_best_weights=True
        ),
        keras.callbacks.ReduceLROnPlateau(monitor="val_auc", mode="max", factor=0.5, patience=2),
    ]
    fitted = cnn.fit(
        train_data.prefetch(2),
        validation_data=(x_eval, y_eval.astype(np.float32)),
        validation_batch_size=512,
        epochs=cfg.epochs,
        class_weight=class_weights(y_train, cfg.class_weighting),
        callbacks=callbacks,
        verbose=0,
    )
    history = {k: [float(v) for v in values] for k, values in fitted.history.items()}
    best_epoch = int(np.argmax(history["val_auc"])) + 1
    model = ImageModel(cnn, cfg.input_size, threshold)
    raw = np.concatenate(
        [model.cnn_probability(x_eval[i : i + 512]).numpy() for i in range(0, len(x_eval), 512)]
    )
    fitted, record = fit_operating_point(
        raw, y_eval, operating_point or OperatingPointSpec(fixed=threshold), calibration
    )
    model.lock(fitted, record)
    return TrainResult(model, history, best_epoch, record)


def run_fn(fn_args: Any) -> None:
    """TFX Trainer entry point (referenced as `models.image.trainer.run_fn`).

    Args:
        fn_args: TFX FnArgs: `train_files`, `eval_files`, `serving_model_dir` and `custom_config`
            (`{"model": {...CnnConfig fields...}, "operating_threshold": float, "seed": int,
            "operating_point": {...}, "calibration": str}`).
    """
    config = fn_args.custom_config
    model_cfg = dict(config["model"])
    model_cfg["filters"] = tuple(model_cfg["filters"])
    cfg = CnnConfig(**model_cfg)
    x_train, y_train = read_split(fn_args.train_files, cfg.input_size)
    x_eval, y_eval = read_split(fn_args.eval_files, cfg.input_size)
    result = train(
        x_train,
        y_train,
        x_eval,
        y_eval,
        cfg,
        threshold=config["operating_threshold"],
        seed=config["seed"],
        operating_point=OperatingPointSpec.from_dict(
            config.get("operating_point") or {"fixed": config["operating_threshold"]}
        ),
        calibration=config.get("calibration", "none"),
    )
    result.model.save(fn_args.serving_model_dir)
    summary = {
        "history": result.history,
        "best_epoch": result.best_epoch,
        "train_examples": len(y_train),
        "eval_examples": len(y_eval),
        "operating_point": result.operating_point,
        # The locked threshold as a scalar too: MLflow then shows it as the run's `train/operating_threshold`.
        "operating_threshold": result.operating_point["threshold"],
    }
    with tf.io.gfile.GFile(os.path.join(os.path.dirname(fn_args.serving_model_dir), HISTORY_FILE), "w") as f:
        json.dump(summary, f)
