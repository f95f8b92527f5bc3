"""Megatron-LM `IndexedDataset` files: `.bin` (token ids back to back) and `.idx` (the `MMIDIDX`
version-1 index: dtype code, sequence lengths, byte pointers, document indices)."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

HEADER = b"MMIDIDX\x00\x00"
VERSION = 1
DTYPE_CODES = {np.dtype(np.uint8): 1, np.dtype(np.int8): 2, np.dtype(np.int16): 3, np.dtype(np.int32): 4,
               np.dtype(np.int64): 5, np.dtype(np.float64): 6, np.dtype(np.float32): 7, np.dtype(np.uint16): 8}
CODE_DTYPES = {code: dtype for dtype, code in DTYPE_CODES.items()}


class MegatronWriter:
    """Append sequences (each a document, or a part of one) and close each document; then `finish()`."""

    def __init__(self, prefix: str | Path, dtype: np.dtype):
        self.prefix, self.dtype = Path(prefix), np.dtype(dtype)
        if self.dtype not in DTYPE_CODES:
            raise ValueError(f"Megatron has no dtype code for {self.dtype}")
        self.prefix.parent.mkdir(parents=True, exist_ok=True)
        self._bin = open(f"{self.prefix}.bin.tmp", "wb")
        self.lengths: list[int] = []
        self.document_indices = [0]

    def add(self, tokens: np.ndarray) -> None:
        self._bin.write(np.asarray(tokens, dtype=self.dtype).tobytes())
        self.lengths.append(len(tokens))

    def end_document(self) -> None:
        self.document_indices.append(len(self.lengths))

    def finish(self) -> None:
        """Write the index and make both files visible (temp names, then rename)."""
        self._bin.close()
        lengths = np.array(self.lengths, dtype=np.int32)
        pointers = np.concatenate([[0], np.cumsum(lengths.astype(np.int64))[:-1]]) * self.dtype.itemsize \
            if len(lengths) else np.zeros(0, np.int64)
        with open(f"{self.prefix}.idx.tmp", "wb") as f:
            f.write(HEADER)
            f.write(struct.pack("<Q", VERSION))
            f.write(struct.pack("<B", DTYPE_CODES[self.dtype]))
            f.write(struct.pack("<Q", len(lengths)))
            f.write(struct.pack("<Q", len(self.document_indices)))
            f.write(lengths.tobytes(order="C"))
            f.write(pointers.astype(np.int64).tobytes(order="C"))
            f.write(np.array(self.document_indices, dtype=np.int64).tobytes(order="C"))
        Path(f"{self.prefix}.bin.tmp").replace(f"{self.prefix}.bin")
        Path(f"{self.prefix}.idx.tmp").replace(f"{self.prefix}.idx")


def read_index(prefix: str | Path) -> tuple[np.dtype, np.ndarray, np.ndarray, np.ndarray]:
    """(dtype, sequence lengths, byte pointers, document indices) from an `.idx` file."""
    data = Path(f"{prefix}.idx").read_bytes()
    if data[:9] != HEADER:
        raise ValueError(f"{prefix}.idx is not a Megatron MMIDIDX index")
    version, = struct.unpack_from("<Q", data, 9)
    if version != VERSION:
        raise ValueError(f"{prefix}.idx: unsupported index version {version}")
    code, = struct.unpack_from("<B", data, 17)
    n_seq, n_doc = struct.unpack_from("<QQ", data, 18)
    offset = 34
    lengths = np.frombuffer(data, np.int32, n_seq, offset)
    pointers = np.frombuffer(data, np.int64, n_seq, offset + 4 * n_seq)
    documents = np.frombuffer(data, np.int64, n_doc, offset + 12 * n_seq)
    return CODE_DTYPES[code], lengths, pointers, documents


def read_sequences(prefix: str | Path) -> list[np.ndarray]:
    dtype, lengths, pointers, _ = read_index(prefix)
    tokens = np.memmap(f"{prefix}.bin", dtype=np.uint8, mode="r")
    return [np.frombuffer(tokens[p:p + n * dtype.itemsize], dtype) for p, n in zip(pointers, lengths, strict=True)]
