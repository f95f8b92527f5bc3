"""Exact top-share selection over a whole corpus, without gathering every score in one process.

A stage that keeps "the top 10%" gives each shard's selection keys, a table `(neg, id, weight)` sorted
in rank order (negated score ascending, then id; see `winnow.stages.scoring.key_table`), kept in Ray's
object store (no text), and the weight to reach. The result is one boundary key `(neg, id)`: a
document is kept when it ranks at or before it, a test each shard applies to its own rows.

The boundary is found by a distributed selection. A window of candidate keys, at first the whole
corpus, narrows each round: every shard sends a few keys evenly spaced through its part of the
window, the driver takes ~`samples` of them as splitters, every shard counts the weight below each
splitter, and the window becomes the interval in which the cumulative weight crosses the target.
Each round cuts the window by a factor of about `samples`, so a billion documents need one or two
rounds before the window holds at most `gather_limit` keys, which the driver then ranks exactly. The
score range never needs to be known.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable

import numpy as np
import pyarrow as pa

GATHER_LIMIT = 1 << 20  # keys ranked in the driver at the end (score, id, weight: tens of MB)
SAMPLES = 1024  # splitters per round

Key = tuple[float, str]  # (negated score, id): ascending order is rank order


# ---------------------------------------------------------------- per shard (run where the key table lives)


def _position(table: pa.Table, neg: np.ndarray, key: Key | None, default: int) -> int:
    """Rows of a sorted key table ranked at or before `key` (`default` for no bound)."""
    if key is None:
        return default
    left, right = np.searchsorted(neg, key[0], "left"), np.searchsorted(neg, key[0], "right")
    if left == right:
        return int(left)
    return int(left) + bisect.bisect_right(table.column("id").slice(left, right - left).to_pylist(), key[1])


def _window(table: pa.Table, lo: Key | None, hi: Key | None) -> tuple[np.ndarray, int, int]:
    neg = table.column("neg").to_numpy()
    return neg, _position(table, neg, lo, 0), _position(table, neg, hi, table.num_rows)


def window_sample(table: pa.Table, lo: Key | None, hi: Key | None, samples: int) -> tuple[int, list[Key]]:
    """How many keys of this shard lie in (lo, hi], and up to `samples` of them evenly spaced."""
    neg, start, end = _window(table, lo, hi)
    picks = np.unique(np.linspace(start, end - 1, min(samples, end - start)).astype(np.int64)) if end > start else []
    ids = table.column("id")
    return end - start, [(float(neg[i]), ids[int(i)].as_py()) for i in picks]


def window_weights(table: pa.Table, lo: Key | None, hi: Key | None, splitters: list[Key]) -> np.ndarray:
    """Weight of this shard's keys in (lo, splitter] for each splitter."""
    neg, start, end = _window(table, lo, hi)
    cumulative = np.concatenate([[0], np.cumsum(table.column("weight").to_numpy())])
    ends = [min(max(_position(table, neg, s, end), start), end) for s in splitters]
    return cumulative[ends] - cumulative[start]


def window_keys(table: pa.Table, lo: Key | None, hi: Key | None) -> pa.Table:
    _, start, end = _window(table, lo, hi)
    return table.slice(start, end - start)


# ---------------------------------------------------------------- driver

Runner = Callable[..., list]  # run(fn, *args) -> [fn(key table of shard s, *args) for every shard s]


def find_cutoff(run: Runner, target: int, gather_limit: int = GATHER_LIMIT,
                samples: int = SAMPLES) -> tuple[Key | None, dict]:
    """The boundary key `(neg, id)` of the smallest best-ranked set whose weight reaches `target` (None:
    keep nothing), and figures (kept weight, rounds, keys ranked in the driver)."""
    if target <= 0:
        return None, {"kept_weight": 0, "selection_rounds": 0, "keys_gathered": 0}
    lo: Key | None = None
    hi: Key | None = None
    before, rounds, previous = 0, 0, None  # weight ranked at or before lo: kept for sure
    while True:
        rounds += 1
        sampled = run(window_sample, lo, hi, samples)
        count = sum(n for n, _ in sampled)
        if count <= gather_limit or count == previous:  # (no progress: duplicate keys) rank what is left
            break
        previous = count
        keys = sorted({k for _, ks in sampled for k in ks})
        splitters = [keys[i] for i in np.unique(np.linspace(0, len(keys) - 1, min(samples, len(keys))).astype(int))]
        weights = np.sum(run(window_weights, lo, hi, splitters), axis=0)
        j = int(np.searchsorted(before + weights, target, "left"))  # first splitter reaching the target
        if j == len(splitters):
            lo, before = splitters[-1], before + int(weights[-1])
        else:
            hi = splitters[j]
            if j > 0:
                lo, before = splitters[j - 1], before + int(weights[j - 1])
    window = pa.concat_tables(run(window_keys, lo, hi)).sort_by([("neg", "ascending"), ("id", "ascending")])
    cumulative = before + np.cumsum(window.column("weight").to_numpy())
    i = int(np.searchsorted(cumulative, target, "left"))
    if i == len(cumulative):
        raise ValueError(f"selection target {target} exceeds the corpus weight {int(cumulative[-1]) if i else before}")
    boundary = (float(window.column("neg")[i].as_py()), window.column("id")[i].as_py())
    return boundary, {"kept_weight": int(cumulative[i]), "selection_rounds": rounds, "keys_gathered": window.num_rows}
