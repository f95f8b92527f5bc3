"""Exact top-share selection over a whole corpus, without gathering every score in one process.

"Keep the top 10%" keeps exactly the smallest set of best-ranked documents whose weight (1 per
document, or its characters) reaches the share: ⌊N x share⌋ documents, or the fewest documents
holding at least ⌈share x characters⌉. Documents rank by score, highest first, and equal scores by
id, lowest first (a NaN score ranks last), so every run makes the same choice and a tie group can be
cut exactly. The result is one boundary key `(score, id)`: a document is kept when it ranks at or
before it, a test each shard applies to its own rows.

The boundary is found by a distributed selection over per-shard key tables `(score, id, weight)`,
each sorted in rank order and kept in Ray's object store (no text). A window of candidate keys,
at first the whole corpus, narrows each round: every shard sends a few keys evenly spaced through
its part of the window, the driver takes ~`samples` of them as splitters, every shard counts the
weight below each splitter, and the window becomes the interval in which the cumulative weight
crosses the target. Each round cuts the window by a factor of about `samples`, so a billion
documents need one or two rounds before the window holds at most `gather_limit` keys, which the
driver then ranks exactly. The score range never needs to be known.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import pyarrow as pa

GATHER_LIMIT = 1 << 20  # keys ranked in the driver at the end (score, id, weight: tens of MB)
SAMPLES = 1024  # splitters per round

Key = tuple[float, str]  # (negated score, id): ascending order is rank order


def exact_share(value: float) -> Fraction:
    """A config's decimal share (0.3, or 1/tau) as the fraction the user wrote: 0.3 means 3/10, not the
    float just below it (⌊10 x 0.3⌋ must be 3)."""
    return Fraction(repr(float(value)))


def target_weight(total: int, share: Fraction, share_by: str) -> int:
    """Weight the kept set must reach: ⌊N x share⌋ documents, or ⌈share x characters⌉."""
    return math.floor(total * share) if share_by == "documents" else math.ceil(total * share)


def rank_scores(scores) -> np.ndarray:
    """Scores as float64 with NaN ranked last (as -inf)."""
    values = np.asarray(scores, dtype=np.float64)
    return np.where(np.isnan(values), -np.inf, values)


def key_table(scores, ids: pa.Array | pa.ChunkedArray, weights: np.ndarray) -> pa.Table:
    """One shard's selection keys sorted in rank order: the only data selection reads."""
    table = pa.table({"neg": pa.array(-rank_scores(scores)), "id": ids, "weight": pa.array(weights, pa.int64())})
    return table.sort_by([("neg", "ascending"), ("id", "ascending")])


@dataclass(frozen=True)
class Cutoff:
    """Keep a document when it ranks at or before (score, doc_id); `score` None keeps nothing."""

    score: float | None
    doc_id: str | None

    def keep(self, scores, ids: list[str]) -> np.ndarray:
        values = rank_scores(scores)
        if self.score is None:
            return np.zeros(len(values), dtype=bool)
        keep = values > self.score
        for i in np.flatnonzero(values == self.score):
            keep[i] = ids[i] <= self.doc_id
        return keep

    def describe(self) -> str:
        return "nothing" if self.score is None else f"score {self.score:.6g}, id {self.doc_id!r}"


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
                samples: int = SAMPLES) -> tuple[Cutoff, dict]:
    """The boundary of the smallest best-ranked set whose weight reaches `target`, and figures
    (kept weight, rounds, keys ranked in the driver)."""
    if target <= 0:
        return Cutoff(None, None), {"kept_weight": 0, "selection_rounds": 0, "keys_gathered": 0}
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
    cutoff = Cutoff(-float(window.column("neg")[i].as_py()), window.column("id")[i].as_py())
    return cutoff, {"kept_weight": int(cumulative[i]), "selection_rounds": rounds, "keys_gathered": window.num_rows}


def ray_runner(stage_name: str, key_refs: list) -> Runner:
    """Runs a selection step as one Ray task per shard, next to that shard's key table."""
    import ray

    from winnow.stages.runtime import get_phase

    def run(fn, *args):
        task = ray.remote(fn)
        return get_phase(stage_name, "selection", [task.remote(ref, *args) for ref in key_refs])

    return run
