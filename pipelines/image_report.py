"""What an image run adds to its MLflow run: bootstrap intervals and a grid of the most confident errors.

TFMA (the Evaluator) gives the gated point estimates and the ROC and confusion-matrix plots, as for tables.
A reader of a 624-image test split also needs to know how far those estimates could move (95 % bootstrap
intervals for AUC and accuracy, resampling test images with replacement) and what the model gets wrong
most confidently (false positives with the highest probability and false negatives with the lowest,
drawn with their ids so each can be found in the source file). Both are computed from the trained
model's `from_examples` signature on the test split's examples, the same inputs TFMA scored.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

BOOTSTRAP_SAMPLES = 1000
GRID = 16
INTERVALS_FILE = "test_intervals.json"


@dataclasses.dataclass(frozen=True)
class Interval:
    """A point estimate and its 95 % bootstrap percentile interval."""

    value: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"{self.value:.3f} (95% CI {self.low:.3f}-{self.high:.3f})"


def _auc(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """ROC AUC of each row (Mann-Whitney U over average ranks, so ties count one half); NaN for one class."""
    from scipy.stats import rankdata

    labels, scores = np.atleast_2d(labels), np.atleast_2d(scores)
    ranks = rankdata(scores, axis=1)
    positives = labels.sum(axis=1)
    negatives = labels.shape[1] - positives
    u = (ranks * labels).sum(axis=1) - positives * (positives + 1) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((positives > 0) & (negatives > 0), u / (positives * negatives), np.nan)


def bootstrap_intervals(
    labels: np.ndarray,
    probability: np.ndarray,
    threshold: float,
    samples: int = BOOTSTRAP_SAMPLES,
    seed: int = 0,
) -> dict[str, Interval]:
    """Returns AUC and accuracy with 95 % percentile intervals over `samples` resamples of the test set.

    Resamples holding a single class (possible for tiny sets) have no AUC and are left out of its interval.
    """
    labels, probability = np.asarray(labels), np.asarray(probability)
    index = np.random.default_rng(seed).integers(0, len(labels), (samples, len(labels)))
    correct = (probability >= threshold) == (labels == 1)
    aucs = _auc(labels[index], probability[index])
    aucs = aucs[~np.isnan(aucs)]
    accuracies = correct[index].mean(axis=1)

    def interval(value: float, draws: np.ndarray) -> Interval:
        low, high = np.percentile(draws, [2.5, 97.5]) if len(draws) else (float("nan"), float("nan"))
        return Interval(float(value), float(low), float(high))

    return {
        "auc": interval(float(_auc(labels, probability)[0]), aucs),
        "accuracy": interval(float(correct.mean()), accuracies),
    }


def confident_errors(
    labels: np.ndarray, probability: np.ndarray, threshold: float, count: int = GRID
) -> list[int]:
    """Returns the indices of the `count` wrong predictions made with the most confidence, most confident first."""
    wrong = np.flatnonzero((probability >= threshold) != (labels == 1))
    confidence = np.abs(probability[wrong] - threshold)
    return [int(i) for i in wrong[np.argsort(-confidence, kind="stable")][:count]]


def draw_errors(path: Path, images: list[np.ndarray], captions: list[str], title: str) -> Path:
    """Writes a grid of grayscale images with captions as a PNG (matplotlib's Agg canvas, no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    columns = 4
    rows = max(1, -(-len(images) // columns))
    fig = Figure(figsize=(2.2 * columns, 2.4 * rows + 0.4), dpi=100)
    FigureCanvasAgg(fig)
    fig.suptitle(title, fontsize=10)
    for i in range(rows * columns):
        ax = fig.add_subplot(rows, columns, i + 1)
        ax.axis("off")
        if i < len(images):
            ax.imshow(images[i], cmap="gray", vmin=0, vmax=255)
            ax.set_title(captions[i], fontsize=7)
    fig.savefig(path, format="png")
    return path


def _test_split(examples_uri: str) -> tuple[list[str], list[bytes], np.ndarray]:
    import tensorflow as tf

    files = sorted(tf.io.gfile.glob(str(Path(examples_uri) / "Split-test" / "*")))
    ids, images, labels = [], [], []
    for record in tf.data.TFRecordDataset(files, compression_type="GZIP"):
        feature = tf.train.Example.FromString(record.numpy()).features.feature
        ids.append(
            feature["image_id"].bytes_list.value[0].decode() if "image_id" in feature else f"#{len(ids)}"
        )
        images.append(feature["image"].bytes_list.value[0])
        labels.append(feature["label"].int64_list.value[0])
    return ids, images, np.array(labels)


def _examples(images: list[bytes]) -> list[bytes]:
    from pipelines.image_data import serialize_example

    return [serialize_example("", image, 0) for image in images]


def build_report(
    model_uri: str, examples_uri: str, threshold: float, positive_class: str, directory: Path
) -> dict[str, Interval]:
    """Scores the test split with the trained model, writes the error grid into `directory`, returns intervals."""
    import tensorflow as tf

    ids, images, labels = _test_split(examples_uri)
    model = tf.saved_model.load(str(Path(model_uri) / "Format-Serving"))
    score = model.signatures["from_examples"]
    probability = np.concatenate(
        [
            score(examples=tf.constant(_examples(images[i : i + 256])))["probability"].numpy()
            for i in range(0, len(images), 256)
        ]
    )
    intervals = bootstrap_intervals(labels, probability, threshold)
    chosen = confident_errors(labels, probability, threshold)
    pixels = [
        tf.io.decode_image(images[i], channels=1, expand_animations=False).numpy()[:, :, 0] for i in chosen
    ]
    captions = [f"{ids[i]}\ntrue {labels[i]}, p={probability[i]:.2f}" for i in chosen]
    draw_errors(
        directory / "most_confident_errors.png",
        pixels,
        captions,
        f"Most confident test-split errors (1 = {positive_class}, threshold {threshold})",
    )
    (directory / INTERVALS_FILE).write_text(
        json.dumps({k: dataclasses.asdict(v) for k, v in intervals.items()}, indent=2)
    )
    return intervals


def _log_in_session(session: Any, directory: str, metrics: dict[str, float]) -> None:
    """The MLflow side: the grid and interval file under `plots/`, the bounds as metrics."""
    session.log_metrics(metrics)
    session.client.log_artifacts(session.run_id, directory, "plots")


def _cached_report(
    model_uri: str, examples_uri: str, threshold: float, positive_class: str, cache: Path
) -> Path:
    """Returns a directory holding the report, built once per (model, examples, threshold, class name).

    A cached re-run scores the same model on the same examples: its report is the one already made, so
    the re-run logs those files instead of scoring 624 images again. The directory appears whole or not
    at all (built beside it, then renamed).
    """
    key = json.dumps([model_uri, examples_uri, threshold, positive_class]).encode()
    target = cache / hashlib.sha256(key).hexdigest()[:16]
    if (target / INTERVALS_FILE).is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".building-", dir=cache) as tmp:
        build_report(model_uri, examples_uri, threshold, positive_class, Path(tmp))
        with contextlib.suppress(OSError):  # Another run made it meanwhile: keep that one.
            Path(tmp).rename(target)
    return target


def log_image_report(
    run: Any, outputs: Any, threshold: float, positive_class: str, cache: Path
) -> dict[str, Interval] | None:
    """Builds (or reuses) the report of a run that trained an image model and logs it to its MLflow run.

    Args:
        run: The open tracked run.
        outputs: The TFX run's outputs (`pipelines.mlflow_mlmd.collect_outputs`).
        threshold: The operating threshold accuracy is measured at.
        positive_class: What label 1 means, for the grid's title.
        cache: Directory keeping reports by model and examples (under the workdir).

    Returns:
        The test-split intervals, or None when the run produced no model.
    """
    if not (outputs.model_uri and outputs.examples_uri):
        return None
    directory = _cached_report(outputs.model_uri, outputs.examples_uri, threshold, positive_class, cache)
    raw = json.loads((directory / INTERVALS_FILE).read_text())
    intervals = {name: Interval(**values) for name, values in raw.items()}
    metrics = {
        f"test_{name}_ci95_{side}": getattr(interval, side)
        for name, interval in intervals.items()
        for side in ("low", "high")
    }
    run.call("image_report", "logging the image report", _log_in_session, str(directory), metrics)
    return intervals
