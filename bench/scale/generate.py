"""Tables with WDBC's schema and per-class distributions fitted to the real rows, at any size.

The fit is a Gaussian copula per class (benign, malignant): the class prior; each feature's empirical
distribution in that class (its sorted values, read back as a quantile function with linear
interpolation); and the correlation of the features' normal scores. WDBC's measurements are skewed, some
with a mass at zero (concavities of benign cells) and strongly correlated (radius, perimeter and area move
together): the copula keeps every marginal, including the zeros, and the dependence between them, where
a Gaussian on the raw values would produce negative areas and a Gaussian in log space would smear the
zeros. Generated values are interpolated between real ones (never copies of real rows) and clipped to
the curated schema's `float_domain`, so every row passes the data gate the real rows pass. Uniform noise
would not do: StatisticsGen's histograms and the Evaluator's metrics would then describe a table no
clinic produces.

Usage: python -m bench.scale.generate ROWS OUT.csv [--seed 0]
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
from pathlib import Path

import numpy as np
from scipy.special import ndtr, ndtri
from scipy.stats import rankdata

LABEL = "label"


@dataclasses.dataclass(frozen=True)
class FittedTable:
    """Per-class Gaussian copulas with empirical marginals, fitted to a real table.

    Attributes:
        features: Feature column names, in the real table's order.
        prior: P(label = 1).
        quantiles: Per label (0, 1), a [n_k, d] array: each feature's sorted values in that class.
        correlations: Per label, the [d, d] correlation of the features' normal scores.
        low: Per feature, the schema domain's lower bound (or the real minimum when none).
        high: Per feature, the schema domain's upper bound (or the real maximum when none).
        decimals: Per feature, the decimals the real table writes (so the CSV's size per row is realistic).
    """

    features: tuple[str, ...]
    prior: float
    quantiles: tuple[np.ndarray, np.ndarray]
    correlations: tuple[np.ndarray, np.ndarray]
    low: np.ndarray
    high: np.ndarray
    decimals: tuple[int, ...]


def read_csv(text: str) -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
    """Returns (feature names, [n, d] features, [n] 0/1 labels) of a canonical CSV with a `label` column."""
    rows = list(csv.reader(io.StringIO(text)))
    header, body = rows[0], rows[1:]
    label_at = header.index(LABEL)
    features = tuple(name for i, name in enumerate(header) if i != label_at)
    x = np.array([[float(v) for i, v in enumerate(row) if i != label_at] for row in body], dtype=np.float64)
    y = np.array([int(row[label_at]) for row in body], dtype=np.int64)
    return features, x, y


def _decimals(text_column: list[str]) -> int:
    return max((len(v.split(".", 1)[1]) if "." in v else 0) for v in text_column)


def fit(text: str, domains: dict[str, tuple[float, float]] | None = None) -> FittedTable:
    """Fits per-class Gaussian copulas with empirical marginals to a canonical CSV.

    Args:
        text: The real table (feature columns and a 0/1 `label` column).
        domains: Per feature, the schema's (min, max); features without one are clipped to the real range.

    Returns:
        The fitted table.
    """
    features, x, y = read_csv(text)
    rows = list(csv.reader(io.StringIO(text)))
    label_at = rows[0].index(LABEL)
    columns = [[row[i] for row in rows[1:]] for i in range(len(rows[0])) if i != label_at]
    quantiles, correlations = [], []
    for k in (0, 1):
        values = x[y == k]
        # Normal scores of the ranks (ties share their mean rank): the copula's view of the dependence.
        ranks = np.apply_along_axis(rankdata, 0, values)
        correlations.append(np.corrcoef(ndtri(ranks / (len(values) + 1)), rowvar=False))
        quantiles.append(np.sort(values, axis=0))
    domains = domains or {}
    low = np.array([domains.get(f, (x[:, i].min(), 0))[0] for i, f in enumerate(features)])
    high = np.array([domains.get(f, (0, x[:, i].max()))[1] for i, f in enumerate(features)])
    return FittedTable(
        features=features,
        prior=float(y.mean()),
        quantiles=tuple(quantiles),
        correlations=tuple(correlations),
        low=low,
        high=high,
        decimals=tuple(_decimals(c) for c in columns),
    )


def sample(table: FittedTable, rows: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Draws `rows` rows: (features [rows, d], labels [rows])."""
    rng = np.random.default_rng(seed)
    y = (rng.random(rows) < table.prior).astype(np.int64)
    x = np.empty((rows, len(table.features)))
    for k in (0, 1):
        mask = y == k
        dims = len(table.features)
        u = ndtr(rng.multivariate_normal(np.zeros(dims), table.correlations[k], size=int(mask.sum())))
        sorted_values = table.quantiles[k]
        grid = (np.arange(len(sorted_values)) + 0.5) / len(sorted_values)
        x[mask] = np.column_stack([np.interp(u[:, j], grid, sorted_values[:, j]) for j in range(dims)])
    return np.clip(x, table.low, table.high), y


def write_csv(table: FittedTable, rows: int, out: Path, seed: int = 0, chunk: int = 100_000) -> None:
    """Writes a generated table of `rows` rows to `out`, in chunks so memory stays flat at 10^6 rows."""
    formats = [f"%.{d}f" for d in table.decimals] + ["%d"]
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w") as f:
        f.write(",".join((*table.features, LABEL)) + "\n")
        for start in range(0, rows, chunk):
            x, y = sample(table, min(chunk, rows - start), seed=seed + start)
            np.savetxt(f, np.column_stack([x, y]), fmt=formats, delimiter=",")


def schema_domains(schema_file: Path) -> dict[str, tuple[float, float]]:
    """Per FLOAT feature with a `float_domain`, its (min, max) in a curated schema."""
    from tensorflow_metadata.proto.v0 import schema_pb2

    from schemas.files import read_schema

    schema, _digest = read_schema(schema_file)
    return {
        f.name: (f.float_domain.min, f.float_domain.max)
        for f in schema.feature
        if f.type == schema_pb2.FLOAT and f.HasField("float_domain")
    }


def fit_wdbc() -> FittedTable:
    """Fits the generator to the packaged WDBC table, clipped to its curated schema."""
    from pipelines.config import load_config
    from pipelines.data import canonical_csv
    from schemas.files import schema_path

    data = load_config(dataset="wdbc").data
    return fit(canonical_csv(data), schema_domains(schema_path(data.schema_dir)))


def main() -> None:
    """Command line: writes one generated table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rows", type=int)
    parser.add_argument("out", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    write_csv(fit_wdbc(), args.rows, args.out, seed=args.seed)


if __name__ == "__main__":
    main()
