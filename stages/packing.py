"""Packing token sequences into training sequences: pure functions over document lengths.

Each returns sequences as lists of pieces `(document index, start, end)`, so callers can build
`input_ids`, `position_ids` (restarting at every piece) and loss masks from any token store.

- `concat`: documents in a seeded shuffled order, concatenated and cut every `seq_len` tokens.
- `bfd`: best-fit decreasing: documents longer than `seq_len` are first cut into `seq_len` chunks
  (the remainder is a chunk too); chunks, longest first, go into the fullest open bin they fit
  (smallest remaining capacity >= the chunk), found in O(log seq_len) with a segment tree over
  remaining capacities.
- `decompose`: dataset decomposition (Pouransari et al. 2024): each document is cut into pieces
  whose lengths are the powers of two of its length's binary expansion, at most 2^max_log2;
  pieces shorter than 2^min_log2 are dropped; each piece is a sequence in bucket log2(length).
"""

from __future__ import annotations

import random
from collections import defaultdict

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


def decompose(lengths: list[int], min_log2: int, max_log2: int) -> dict[int, list[list[Piece]]]:
    """Bucket k -> sequences of exactly 2^k tokens, each from one document."""
    buckets: dict[int, list[list[Piece]]] = defaultdict(list)
    for doc, n in enumerate(lengths):
        start = 0
        for k in range(max_log2, min_log2 - 1, -1):
            size = 1 << k
            while n - start >= size and (k == max_log2 or (n - start) & size):
                buckets[k].append([(doc, start, start + size)])
                start += size
                if k != max_log2:
                    break
    return dict(buckets)
