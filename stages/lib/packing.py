"""Packing token sequences into training sequences: pure functions over document lengths.

Each returns sequences as lists of pieces `(document index, start, end)`, so callers can build
`input_ids`, `position_ids` (restarting at every piece) and loss masks from any token store.

- `concat`: documents in a seeded shuffled order, concatenated and cut every `seq_len` tokens.
- `bfd`: best-fit decreasing: documents longer than `seq_len` are first cut into `seq_len` chunks
  (the remainder is a chunk too); chunks, longest first, go into the fullest open bin they fit
  (smallest remaining capacity >= the chunk), found in O(log seq_len) with a segment tree over
  remaining capacities.
- `decompose`: dataset decomposition (Pouransari et al. 2024), as apple/ml-dataset-decomposition's
  `scripts/make_dd_buckets.py` (`get_binary`) cuts documents: repeatedly, the longest piece of 2^k
  targets that fits the rest of the document goes to bucket k; a piece holds 2^k + 1 token ids
  (`piece: targets`: 2^k inputs and 2^k next-token targets, the reference's convention) or 2^k ids
  (`piece: tokens`, consecutive pieces not sharing a token). While the rest is longer than
  2^max_log2, k is drawn at random between min_log2 and max_log2 with probability proportional to
  2^-k, so long documents spread their tokens evenly over the buckets (`overflow: random`, the
  reference's default, seeded here), or is max_log2 (`overflow: longest`). A rest shorter than
  2^min_log2 (+ 1) is dropped.
"""

from __future__ import annotations

import random
from collections import defaultdict

import numpy as np

Piece = tuple[int, int, int]  # (document, start, end)


def concat(lengths: list[int], seq_len: int, seed: int = 0) -> list[list[Piece]]:
    order = list(range(len(lengths)))
    random.Random(seed).shuffle(order)
    sequences: list[list[Piece]] = []
    current: list[Piece] = []
    room = seq_len
    for doc in order:
        start = 0
        while start < lengths[doc]:
            take = min(room, lengths[doc] - start)
            current.append((doc, start, start + take))
            start += take
            room -= take
            if room == 0:
                sequences.append(current)
                current, room = [], seq_len
    if current:
        sequences.append(current)
    return sequences


class _CapacityTree:
    """Segment tree over remaining capacities 0..seq_len: which capacities have open bins."""

    def __init__(self, seq_len: int):
        self.size = 1
        while self.size < seq_len + 1:
            self.size *= 2
        self.count = [0] * (2 * self.size)

    def add(self, capacity: int, delta: int) -> None:
        i = capacity + self.size
        while i:
            self.count[i] += delta
            i //= 2

    def smallest_at_least(self, need: int) -> int | None:
        """Smallest capacity >= need with an open bin, or None."""
        def search(node: int, lo: int, hi: int) -> int | None:
            if hi < need or self.count[node] == 0:
                return None
            if lo == hi:
                return lo
            mid = (lo + hi) // 2
            left = search(2 * node, lo, mid)
            return left if left is not None else search(2 * node + 1, mid + 1, hi)
        return search(1, 0, self.size - 1)


def bfd(lengths: list[int], seq_len: int) -> list[list[Piece]]:
    chunks = [(doc, s, min(s + seq_len, n)) for doc, n in enumerate(lengths) for s in range(0, n, seq_len)]
    chunks.sort(key=lambda c: (-(c[2] - c[1]), c[0], c[1]))
    bins: list[list[Piece]] = []
    room: list[int] = []
    by_capacity: dict[int, list[int]] = defaultdict(list)
    tree = _CapacityTree(seq_len)
    for chunk in chunks:
        size = chunk[2] - chunk[1]
        capacity = tree.smallest_at_least(size)
        if capacity is None:
            bins.append([])
            room.append(seq_len)
            by_capacity[seq_len].append(len(bins) - 1)
            tree.add(seq_len, 1)
            capacity = seq_len
        b = by_capacity[capacity].pop()
        tree.add(capacity, -1)
        bins[b].append(chunk)
        room[b] -= size
        if room[b] > 0:
            by_capacity[room[b]].append(b)
            tree.add(room[b], 1)
    return bins


def decompose(lengths: list[int], min_log2: int, max_log2: int, piece: str = "targets", overflow: str = "random",
              seed: int = 0) -> dict[int, list[list[Piece]]]:
    """Bucket k -> sequences of 2^k (+ 1 with `piece` "targets") tokens, each from one document."""
    extra = 1 if piece == "targets" else 0
    rng = np.random.default_rng(seed)
    ks = np.arange(max_log2, min_log2 - 1, -1)
    p = 2.0 ** np.arange(len(ks))  # P(k) proportional to 2^-k: equal tokens per bucket
    p /= p.sum()
    buckets: dict[int, list[list[Piece]]] = defaultdict(list)
    for doc, n in enumerate(lengths):
        start = 0
        while n - start - extra >= 1:
            k = (n - start - extra).bit_length() - 1  # the longest piece that fits
            if k < min_log2:
                break
            if k > max_log2:
                k = int(rng.choice(ks, p=p)) if overflow == "random" else max_log2
            size = (1 << k) + extra
            buckets[k].append([(doc, start, start + size)])
            start += size
    return dict(buckets)
