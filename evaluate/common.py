"""What the `winnow eval` commands share: reading the user's labels, and intervals. (A run's files are
read with `winnow.flows.inspect.row_groups`, a few columns and row groups at a time.)"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

TRUE_LABELS = ("1", "true", "yes", "positive")


def positive_mask(labels: list[str], positive: str | None, where: str) -> np.ndarray:
    """Which labels are the positive class: those equal to `positive`; without it, 1/true/yes/positive
    when the labels are two such values. Anything else needs `--positive`, named in the error."""
    values = sorted(set(labels))
    if positive is None:
        lowered = {v.lower() for v in values}
        found = [t for t in TRUE_LABELS if t in lowered]
        if len(values) > 2 or not found:
            raise ValueError(f"{where}: say which label is positive with --positive (labels: {values[:20]})")
        positive = next(v for v in values if v.lower() == found[0])
    if positive not in values:
        raise ValueError(f"{where}: no label {positive!r} among the labels {values[:20]}")
    return np.array([label == positive for label in labels], dtype=bool)


def read_labels(path: str, text_field: str | None, label_field: str, id_field: str | None = None,
                positive: str | None = None) -> tuple[list[str], np.ndarray]:
    """(texts or ids, positive mask) of a labelled .jsonl/.json/.parquet/.csv file (optionally .gz). Rows
    without a text/id or a label are left out; a file without the columns is an error naming them."""
    import polars as pl

    from winnow.scorers.data import read_table

    df = read_table(path)
    key = text_field or id_field
    missing = [c for c in (key, label_field) if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: no column {missing[0]!r} (columns: {df.columns})")
    df = df.select(pl.col(key).cast(pl.Utf8), pl.col(label_field).cast(pl.Utf8)).drop_nulls()
    df = df.filter(pl.col(key) != "")
    if df.height == 0:
        raise ValueError(f"{path}: no rows with both {key!r} and {label_field!r}")
    keys, labels = df[key].to_list(), df[label_field].to_list()
    return keys, positive_mask(labels, positive, path)


def bootstrap_interval(metric: Callable[[np.ndarray], float], n: int, resamples: int = 1000, seed: int = 0,
                       level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of `metric(indices)` over `resamples` resamples of n items with replacement
    (resamples where the metric is undefined, NaN, are left out)."""
    rng = np.random.default_rng(seed)
    values = [metric(rng.integers(0, n, n)) for _ in range(resamples)]
    values = np.array([v for v in values if not math.isnan(v)])
    if len(values) == 0:
        return math.nan, math.nan
    tail = (1 - level) / 2 * 100
    return float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))


def proportion_interval(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of k successes in n trials."""
    if n == 0:
        return math.nan, math.nan
    from scipy.stats import binomtest

    ci = binomtest(k, n).proportion_ci(confidence_level=level, method="wilson")
    return float(ci.low), float(ci.high)
